//! Server-wide sections: listeners (`http_server`), `log`, the HTTP API, the internal
//! endpoints (`health`, `admin`, `prometheus`), `node`, client RPC (`rpc`), `shutdown` and
//! Rotor's own `runtime`.
//!
//! Owns: these key names and their defaults. Must not: validate values (that is
//! `validate.rs`), or import from `mod.rs`, which re-exports these types.

use std::time::Duration;

use serde::de::MapAccess;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::codec::{self, GoDuration, OptionalPort, Plain, Port, Section, SectionVisitor};
use super::proxy::Proxy;
use super::section::section;
use super::tls::Tls;

section! {
    /// `http_server.*`.
    pub struct HttpServer {
        /// Bind address; `""` = all interfaces.
        address: String [Plain] = String::new(),
        /// Main port (8000). 0 = ephemeral (tests). Number or numeric string.
        port: u16 [Port] = 8000,
        /// Bind address for internal endpoints (API, admin, metrics, health).
        internal_address: String [Plain] = String::new(),
        /// Port for internal endpoints; 0 (Centrifugo: `""`) = same as `port`.
        internal_port: u16 [OptionalPort] = 0,
        /// TLS of the main port, and of the internal port unless `tls_external` or
        /// `internal_tls` says otherwise.
        tls: Tls [Plain] = Tls::default(),
        /// The internal port serves cleartext even when `tls` is enabled.
        tls_external: bool [Plain] = false,
        /// TLS of the internal port of its own (wins over `tls` and `tls_external`).
        internal_tls: Tls [Plain] = Tls::default(),
    }
}

section! {
    /// `log.*`.
    pub struct Log {
        /// One of none, trace, debug, info, warn, error.
        level: String [Plain] = "info".to_owned(),
        /// Log file path; `""` = stderr. A file gets JSON lines, as upstream writes it.
        file: String [Plain] = String::new(),
        /// Rotor's: `text` or `json` lines on stderr.
        format: String [Plain] = "text".to_owned(),
    }
}

section! {
    /// `http_api.*`.
    pub struct HttpApi {
        /// Turn the HTTP API off.
        disabled: bool [Plain] = false,
        /// Path prefix; must start with `/`.
        handler_prefix: String [Plain] = "/api".to_owned(),
        /// API key (`Authorization: apikey <key>` or `X-API-Key`).
        key: String [Plain] = String::new(),
        /// "" or "transport".
        error_mode: String [Plain] = String::new(),
        /// Serve on the main port even when `internal_port` is set.
        external: bool [Plain] = false,
        /// No API key check.
        insecure: bool [Plain] = false,
    }
}

section! {
    /// `health.*`.
    pub struct Health {
        /// Serve the health endpoint.
        enabled: bool [Plain] = false,
        /// Endpoint path.
        handler_prefix: String [Plain] = "/health".to_owned(),
    }
}

section! {
    /// `admin.*`.
    pub struct Admin {
        /// Serve the admin UI.
        enabled: bool [Plain] = false,
        /// Path prefix; `""` = `/`.
        handler_prefix: String [Plain] = String::new(),
        /// Login password.
        password: String [Plain] = String::new(),
        /// Secret signing admin session tokens.
        secret: String [Plain] = String::new(),
        /// No admin auth (testing only).
        insecure: bool [Plain] = false,
        /// Serve on the main port even when `internal_port` is set.
        external: bool [Plain] = false,
    }
}

section! {
    /// `prometheus.*`.
    pub struct Prometheus {
        /// Serve metrics.
        enabled: bool [Plain] = false,
        /// Endpoint path.
        handler_prefix: String [Plain] = "/metrics".to_owned(),
    }
}

section! {
    /// `node.*`.
    pub struct Node {
        /// Node name; `""` = `<hostname>_<port>` computed at startup.
        name: String [Plain] = String::new(),
        /// How often the `info` API's per-node `metrics` are aggregated.
        info_metrics_aggregate_interval: Duration [GoDuration] = Duration::from_secs(60),
    }
}

section! {
    /// `rpc.*` (spec §5.4, §9).
    pub struct Rpc {
        /// The proxy RPC namespaces call `default`.
        proxy: Proxy [Plain] = Proxy::default(),
        /// Options of methods without a namespace.
        without_namespace: RpcOptions [Plain] = RpcOptions::default(),
        /// RPC namespaces (`<name>:<method>`).
        namespaces: Vec<RpcNamespace> [Plain] = Vec::new(),
        /// Separates the namespace from the method name.
        namespace_boundary: String [Plain] = ":".to_owned(),
        /// The built-in `ping` method.
        ping: RpcPing [Plain] = RpcPing::default(),
    }
}

section! {
    /// `rpc.without_namespace`.
    pub struct RpcOptions {
        /// Call the RPC proxy.
        proxy_enabled: bool [Plain] = false,
        /// Proxy name.
        proxy_name: String [Plain] = "default".to_owned(),
    }
}

section! {
    /// One `rpc.namespaces[]` entry.
    pub struct RpcNamespace {
        /// Namespace name.
        name: String [Plain] = String::new(),
        /// Call the RPC proxy.
        proxy_enabled: bool [Plain] = false,
        /// Proxy name.
        proxy_name: String [Plain] = "default".to_owned(),
    }
}

section! {
    /// `rpc.ping`: a built-in method answering an empty result.
    pub struct RpcPing {
        /// Register the method.
        enabled: bool [Plain] = false,
        /// Its name.
        method: String [Plain] = "ping".to_owned(),
    }
}

section! {
    /// `shutdown.*`.
    pub struct Shutdown {
        /// Max time for graceful shutdown.
        timeout: Duration [GoDuration] = Duration::from_secs(30),
    }
}

section! {
    /// `runtime.*` — Rotor's own thread-per-core settings.
    pub struct Runtime {
        /// Number of shards (executor threads); 0 = one per available core; max 256.
        shards: usize [Plain] = 0,
        /// How connections are spread over shards.
        placement: Placement [Plain] = Placement::ReusePort,
        /// Pin each shard to its own CPU.
        pin_cpus: bool [Plain] = true,
        /// Messages per cross-shard lane before spilling.
        lane_capacity: usize [Plain] = 1024,
        /// How long an idle shard spins before parking in io_uring; 0 = park at once. Spinning
        /// cuts cross-shard wake-up latency (see tuning.md) at the cost of idle CPU.
        spin_before_park: Duration [GoDuration] = Duration::ZERO,
        /// io_uring submission queue entries per shard. The kernel sizes its table of pending
        /// polls (one per idle connection) from the ring, so a deep ring keeps cancellations
        /// cheap with many connections (see tuning.md).
        ring_depth: usize [Plain] = 4096,
        /// Connections per shard and listener still in the HTTP stage (accepted, not yet a
        /// client transport); past it a new connection gets 503. 0 = no cap (see tuning.md).
        http_stage_connections: usize [Plain] = 1024,
        /// Bytes of request bodies one shard holds at once per listener while reading them; a
        /// body that would overdraw it gets 503. 0 = no cap (see tuning.md).
        http_body_budget: usize [Plain] = 64 * 1024 * 1024,
        /// Time a request head may take from its first byte (a new connection's: from
        /// accept) to its last; a slower one gets 408.
        http_head_timeout: Duration [GoDuration] = Duration::from_secs(10),
    }
}

/// `runtime.placement`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Placement {
    /// Each shard has its own `SO_REUSEPORT` listener; the kernel spreads connections.
    #[default]
    #[serde(rename = "reuseport")]
    ReusePort,
    /// Shard 0 accepts and hands the k-th connection to shard k % n (deterministic, tests).
    #[serde(rename = "round_robin")]
    RoundRobin,
}
