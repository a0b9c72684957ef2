//! Proxy sections (spec §9.1): one proxy object, the containers that hold the default ones
//! (`client.proxy`, `channel.proxy`, `rpc.proxy`) and the named `proxies[]`.
//!
//! Owns: these key names and their defaults, as upstream's `configtypes.Proxy` spells them.
//! Must not: resolve which proxy an event uses or check endpoints (that is `crate::proxy`), or
//! import from `mod.rs`, which re-exports these types.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::de::MapAccess;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::codec::{self, GoDuration, Plain, Section, SectionVisitor};
use super::section::{section, side_by_side};
use super::tls::Tls;

section! {
    /// One proxy: where events go and what travels with them.
    pub struct Proxy {
        /// `http://…`, `https://…` (or `grpc://…`, refused until gRPC proxies exist).
        endpoint: String [Plain] = String::new(),
        /// Budget of one call, connection and queueing included.
        timeout: Duration [GoDuration] = Duration::from_secs(1),
        /// Headers of the connection's own HTTP request to forward (case-insensitive).
        http_headers: Vec<String> [Plain] = Vec::new(),
        /// Keys of the client's emulated headers (`ConnectRequest.headers`) to forward.
        emulated_headers: Vec<String> [Plain] = Vec::new(),
        /// gRPC metadata keys to forward (gRPC transports only; Rotor has none).
        grpc_metadata: Vec<String> [Plain] = Vec::new(),
        /// Payloads travel as `b64data` instead of `data`.
        binary_encoding: bool [Plain] = false,
        /// Send the connection's `meta` (from the connect proxy) with this proxy's requests.
        include_connection_meta: bool [Plain] = false,
        /// HTTP-specific settings.
        http: ProxyHttp [Plain] = ProxyHttp::default(),
        /// gRPC-specific settings (accepted for config compatibility; gRPC is refused).
        grpc: ProxyGrpc [Plain] = ProxyGrpc::default(),
    }
}

section! {
    /// `<proxy>.http`.
    pub struct ProxyHttp {
        /// TLS of the backend connection (`https://`).
        tls: Tls [Plain] = Tls::default(),
        /// Headers set on every request, before forwarded ones.
        static_headers: BTreeMap<String, String> [Plain] = BTreeMap::new(),
        /// HTTP status → protocol error or disconnect.
        status_to_code_transforms: Vec<StatusTransform> [Plain] = Vec::new(),
    }
}

section! {
    /// `<proxy>.grpc`.
    pub struct ProxyGrpc {
        /// TLS of the gRPC connection.
        tls: Tls [Plain] = Tls::default(),
        /// Per-RPC credentials key.
        credentials_key: String [Plain] = String::new(),
        /// Per-RPC credentials value.
        credentials_value: String [Plain] = String::new(),
        /// gzip compression.
        compression: bool [Plain] = false,
        /// Metadata set on every call.
        static_metadata: BTreeMap<String, String> [Plain] = BTreeMap::new(),
    }
}

/// One `status_to_code_transforms[]` entry: exactly one of `to_error` / `to_disconnect`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatusTransform {
    /// HTTP status of the backend's answer.
    pub status_code: u16,
    /// The protocol error the client gets instead (used when `code` > 0).
    pub to_error: TransformError,
    /// The disconnect the client gets instead (used when `code` > 0).
    pub to_disconnect: TransformDisconnect,
}

/// `to_error` of a [`StatusTransform`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TransformError {
    /// Error code.
    pub code: u32,
    /// Message.
    pub message: String,
    /// Whether the client may retry.
    pub temporary: bool,
}

/// `to_disconnect` of a [`StatusTransform`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TransformDisconnect {
    /// Disconnect code.
    pub code: u32,
    /// Reason.
    pub reason: String,
}

/// `client.proxy.connect` / `client.proxy.refresh`: `enabled` plus the proxy keys side by side.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SwitchedProxy {
    /// Use the proxy.
    pub enabled: bool,
    /// The proxy.
    pub proxy: Proxy,
}

/// One `proxies[]` entry: `name` plus the proxy keys side by side.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NamedProxy {
    /// What namespaces call it by (`*_proxy_name`, `proxy_name`).
    pub name: String,
    /// The proxy.
    pub proxy: Proxy,
}

side_by_side!(SwitchedProxy { enabled: "enabled", proxy });
side_by_side!(NamedProxy { name: "name", proxy });

section! {
    /// `client.proxy`.
    pub struct ClientProxies {
        /// Connect without a token → the backend decides.
        connect: SwitchedProxy [Plain] = SwitchedProxy::default(),
        /// Server-side refresh of connections the connect proxy made.
        refresh: SwitchedProxy [Plain] = SwitchedProxy::default(),
    }
}

section! {
    /// `channel.proxy`: the proxies namespaces call `default`.
    pub struct ChannelProxies {
        /// Subscribe.
        subscribe: Proxy [Plain] = Proxy::default(),
        /// Publish.
        publish: Proxy [Plain] = Proxy::default(),
        /// Subscription refresh.
        sub_refresh: Proxy [Plain] = Proxy::default(),
    }
}
