//! Typed configuration tree with Centrifugo v6 key names and defaults, loaded from a
//! JSON/YAML/TOML file plus `ROTOR_*`/`CENTRIFUGO_*` environment variables (spec §8).
//!
//! Owns: the key names, defaults, value formats (Go durations, ports), unknown-key reporting,
//! the env overlay and startup validation. Must not: read the process environment itself
//! (callers pass it in), touch the network, or hold global state; the result is meant to be
//! frozen into an `Arc<Config>` before shards start.
//!
//! This file holds the root [`Config`], [`ConfigError`] and the engine resolution
//! ([`Config::engines`]); the sections live in topic files (`client.rs`, `channel.rs`,
//! `transport.rs`, `engine.rs`, `server.rs`), declared with the macros of `section.rs`, and
//! are re-exported here so every `config::X` path is the one callers use. Those files import
//! only leaf modules (`codec`, `section`), never this one.

mod channel;
mod client;
mod codec;
pub mod duration;
mod engine;
mod env;
mod jwks_safety;
mod load;
mod proxy;
mod section;
mod server;
mod tls;
mod transport;
mod unsupported;
mod validate;

use serde::de::MapAccess;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use codec::{Plain, Section, SectionVisitor};
use section::section;

pub use channel::{Channel, ChannelOptions, Namespace};
pub use client::{
    Client, PersonalChannel, SubscriptionToken, Token, UniDisconnectTo, UniDisconnectTransform,
    UniDisconnects,
};
pub use engine::{Broker, Engine, Nats, PresenceManager, Redis};
pub use env::parse_go_bool;
pub use load::{load, load_text, parse_file_text, Format, Loaded, DEFAULT_CONFIG_FILE};
pub use proxy::{
    ChannelProxies, ClientProxies, NamedProxy, Proxy, ProxyGrpc, ProxyHttp, StatusTransform,
    SwitchedProxy, TransformDisconnect, TransformError,
};
pub use server::{
    Admin, Health, HttpApi, HttpServer, Log, Node, Placement, Prometheus, Rpc, RpcNamespace,
    RpcOptions, RpcPing, Runtime, Shutdown,
};
pub use tls::Tls;
pub use transport::{
    ConnectCodeToHttp, ConnectHttpResponse, ConnectHttpTransform, Emulation, HttpStream, Init, Sse,
    UniHttpStream, UniSse, UniWebSocket, WebSocket,
};
pub use validate::validate;

fn refused_message(keys: &[(String, &'static str)]) -> String {
    let each: Vec<String> =
        keys.iter().map(|(key, why)| format!("{key} (rotor cannot {why} yet)")).collect();
    format!(
        "refusing to start rather than run without what these keys switch on: {}; remove them \
         or switch them off",
        each.join("; ")
    )
}

/// Errors from loading or validating the configuration. Every message names the file,
/// key path or environment variable at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// An explicitly requested config file does not exist.
    #[error("config file {path} not found")]
    NotFound {
        /// The path as given.
        path: std::path::PathBuf,
    },
    /// The file exists but could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The path as given.
        path: std::path::PathBuf,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// The extension is not one of json, yaml, yml, toml.
    #[error("config file {path}: unsupported format (use .json, .yaml, .yml or .toml)")]
    UnsupportedFormat {
        /// The path as given.
        path: std::path::PathBuf,
    },
    /// The file is not valid JSON/YAML/TOML, or its top level is not an object.
    #[error("config file {path}: {message}")]
    Parse {
        /// The path as given.
        path: std::path::PathBuf,
        /// Parser message.
        message: String,
    },
    /// A value has the wrong type or format; `key` is the dotted path.
    #[error("{key}: {message}")]
    Value {
        /// Dotted key path, e.g. `client.channel_limit`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// An environment variable could not be applied.
    #[error("environment variable {var}: {message}")]
    Env {
        /// Variable name, e.g. `ROTOR_CLIENT_CHANNEL_LIMIT`.
        var: String,
        /// What is wrong with it.
        message: String,
    },
    /// Keys (or environment variables) Rotor relies on but does not implement yet are
    /// switched on: each with what Rotor would fail to do.
    #[error("{}", refused_message(.keys))]
    Refused {
        /// Key or variable, and what Rotor would fail to do.
        keys: Vec<(String, &'static str)>,
        /// The warnings of the same load (harmless keys skipped, unknown keys), for
        /// `checkconfig` to report both lists.
        warnings: Vec<String>,
    },
    /// A semantic check failed; `key` is the dotted path.
    #[error("invalid config: {key}: {message}")]
    Invalid {
        /// Dotted key path, e.g. `channel.namespaces[chat].history_ttl`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

section! {
    /// The whole configuration. `Default` is Centrifugo v6's defaults plus Rotor's `runtime`.
    pub struct Config {
        /// Listening addresses and ports.
        http_server: HttpServer [Plain] = HttpServer::default(),
        /// Logging.
        log: Log [Plain] = Log::default(),
        /// Broker + presence engine: `memory` or `redis`.
        engine: Engine [Plain] = Engine::default(),
        /// A broker replacing the engine's (`enabled`): `nats`.
        broker: Broker [Plain] = Broker::default(),
        /// A presence manager replacing the engine's (`enabled`).
        presence_manager: PresenceManager [Plain] = PresenceManager::default(),
        /// Client connection behaviour and authentication.
        client: Client [Plain] = Client::default(),
        /// Channel options and namespaces.
        channel: Channel [Plain] = Channel::default(),
        /// HTTP server API.
        http_api: HttpApi [Plain] = HttpApi::default(),
        /// Bidirectional WebSocket transport.
        websocket: WebSocket [Plain] = WebSocket::default(),
        /// HTTP-streaming emulation transport.
        http_stream: HttpStream [Plain] = HttpStream::default(),
        /// SSE emulation transport.
        sse: Sse [Plain] = Sse::default(),
        /// The client-to-server half of emulation.
        emulation: Emulation [Plain] = Emulation::default(),
        /// Unidirectional WebSocket transport.
        uni_websocket: UniWebSocket [Plain] = UniWebSocket::default(),
        /// Unidirectional SSE transport.
        uni_sse: UniSse [Plain] = UniSse::default(),
        /// Unidirectional HTTP-streaming transport.
        uni_http_stream: UniHttpStream [Plain] = UniHttpStream::default(),
        /// `GET /connection/init` helper.
        init: Init [Plain] = Init::default(),
        /// Health endpoint.
        health: Health [Plain] = Health::default(),
        /// Admin web UI.
        admin: Admin [Plain] = Admin::default(),
        /// Prometheus metrics endpoint.
        prometheus: Prometheus [Plain] = Prometheus::default(),
        /// Node identity.
        node: Node [Plain] = Node::default(),
        /// Client RPC: namespaces and the built-in `ping` extension.
        rpc: Rpc [Plain] = Rpc::default(),
        /// Named proxies that namespaces and RPC namespaces refer to by name.
        proxies: Vec<NamedProxy> [Plain] = Vec::new(),
        /// Graceful shutdown.
        shutdown: Shutdown [Plain] = Shutdown::default(),
        /// File to write the process id to once listening (removed at exit); `""` = none.
        pid_file: String [Plain] = String::new(),
        /// Rotor's own thread-per-core runtime settings (not a Centrifugo key).
        runtime: Runtime [Plain] = Runtime::default(),
    }
}

/// Where publications travel between nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// One node, everything on the channel's home shard.
    Memory,
    /// Redis PUB/SUB, history in Redis streams.
    Redis,
    /// NATS subjects, no history.
    Nats,
}

/// The broker and presence manager a configuration asks for (the `broker` and
/// `presence_manager` sections override the engine's), and the Redis object in use.
#[derive(Debug, Clone, Copy)]
pub struct Engines<'a> {
    /// The broker.
    pub broker: BrokerKind,
    /// Presence kept in Redis (else in memory on each node).
    pub redis_presence: bool,
    /// The Redis object of the Redis broker or presence manager, and its key path.
    pub redis: Option<(&'a str, &'a Redis)>,
}

impl Config {
    /// Resolves the engine, broker and presence manager sections (validated at start).
    pub fn engines(&self) -> Result<Engines<'_>, ConfigError> {
        let invalid =
            |key: &str, message: String| ConfigError::Invalid { key: key.to_owned(), message };
        let engine = self.engine.type_.as_str();
        let (broker_type, broker_redis) = if self.broker.enabled {
            (self.broker.type_.as_str(), ("broker.redis", &self.broker.redis))
        } else {
            (engine, ("engine.redis", &self.engine.redis))
        };
        let broker = match broker_type {
            "memory" => BrokerKind::Memory,
            "redis" => BrokerKind::Redis,
            "nats" => BrokerKind::Nats,
            other => {
                let key = if self.broker.enabled { "broker.type" } else { "engine.type" };
                return Err(invalid(
                    key,
                    format!("{other:?} is not supported (memory, redis or nats)"),
                ));
            }
        };
        let (presence_type, presence_redis) = if self.presence_manager.enabled {
            (
                self.presence_manager.type_.as_str(),
                ("presence_manager.redis", &self.presence_manager.redis),
            )
        } else {
            (engine, ("engine.redis", &self.engine.redis))
        };
        let redis_presence = match presence_type {
            "memory" => false,
            "redis" => true,
            other => {
                let key = if self.presence_manager.enabled {
                    "presence_manager.type"
                } else {
                    "engine.type"
                };
                return Err(invalid(key, format!("{other:?} is not supported (memory or redis)")));
            }
        };
        if engine == "nats" {
            return Err(invalid(
                "engine.type",
                "\"nats\" is a broker type (broker.type), not an engine".into(),
            ));
        }
        let redis = match (broker == BrokerKind::Redis, redis_presence) {
            (true, true) if broker_redis.1 != presence_redis.1 => {
                return Err(invalid(
                    presence_redis.0,
                    format!("must equal {}: rotor shares one set of Redis connections between broker and presence", broker_redis.0),
                ))
            }
            (true, _) => Some(broker_redis),
            (false, true) => Some(presence_redis),
            (false, false) => None,
        };
        if redis_presence && broker == BrokerKind::Memory {
            return Err(invalid(
                "presence_manager.type",
                "Redis presence with the memory broker is not supported by rotor (use a Redis or NATS broker)".into(),
            ));
        }
        Ok(Engines { broker, redis_presence, redis })
    }
}

impl Config {
    /// The config as a generic value tree with Go-style duration strings.
    pub fn to_value(&self) -> serde_json::Value {
        // Serializing plain strings, numbers and bools into a Value cannot fail.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

#[cfg(test)]
pub(crate) mod tests;
