//! Typed configuration tree with Centrifugo v6 key names and defaults, loaded from a
//! JSON/YAML/TOML file plus `ROTOR_*`/`CENTRIFUGO_*` environment variables (spec §8).
//!
//! Owns: the key names, defaults, value formats (Go durations, ports), unknown-key reporting,
//! the env overlay and startup validation. Must not: read the process environment itself
//! (callers pass it in), touch the network, or hold global state; the result is meant to be
//! frozen into an `Arc<Config>` before shards start.

mod codec;
pub mod duration;
mod env;
mod load;
mod unsupported;
mod validate;

use std::time::Duration;

use serde::de::MapAccess;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use codec::{
    DisablableDuration, GoDuration, OneOrMany, OptionalPort, Plain, Port, Section, SectionVisitor,
};

pub use env::parse_go_bool;
pub use load::{load, parse_file_text, Format, Loaded, DEFAULT_CONFIG_FILE};
pub use validate::validate;

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
    /// A semantic check failed; `key` is the dotted path.
    #[error("invalid config: {key}: {message}")]
    Invalid {
        /// Dotted key path, e.g. `channel.namespaces[chat].history_ttl`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

/// Declares a config section: the struct, its `Default` (Centrifugo's defaults) and its
/// key-by-key serde plumbing. Field syntax: `name ["json key"]? : Type [Codec] = default,`.
macro_rules! section {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[$fmeta:meta])*
                $field:ident $([$key:literal])? : $ty:ty [$codec:ty] = $default:expr,
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                Self { $( $field: $default, )* }
            }
        }

        impl Section for $name {
            fn read_key<'de, A: MapAccess<'de>>(
                &mut self,
                key: &str,
                map: &mut A,
            ) -> Result<bool, A::Error> {
                $(
                    if key == section!(@key $field $($key)?) {
                        self.$field = map.next_value_seed(codec::Seed::<$codec, $ty>::new())?;
                        return Ok(true);
                    }
                )*
                Ok(false)
            }

            fn write_keys<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
                $(
                    map.serialize_entry(
                        section!(@key $field $($key)?),
                        &codec::Ser::<$codec, $ty>::new(&self.$field),
                    )?;
                )*
                Ok(())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(None)?;
                self.write_keys(&mut map)?;
                map.end()
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_any(SectionVisitor::<Self>::new())
            }
        }
    };
    (@key $field:ident) => { stringify!($field) };
    (@key $field:ident $key:literal) => { $key };
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
        /// Graceful shutdown.
        shutdown: Shutdown [Plain] = Shutdown::default(),
        /// Rotor's own thread-per-core runtime settings (not a Centrifugo key).
        runtime: Runtime [Plain] = Runtime::default(),
    }
}

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
    }
}

section! {
    /// `log.*`.
    pub struct Log {
        /// One of none, trace, debug, info, warn, error.
        level: String [Plain] = "info".to_owned(),
        /// Log file path; `""` = stderr.
        file: String [Plain] = String::new(),
    }
}

section! {
    /// `engine.*`.
    pub struct Engine {
        /// `memory` (one node) or `redis` (broker and presence manager in Redis).
        type_ ["type"]: String [Plain] = "memory".to_owned(),
        /// Redis settings for `type: redis`.
        redis: Redis [Plain] = Redis::default(),
    }
}

section! {
    /// `broker.*`: a broker other than the engine's.
    pub struct Broker {
        /// Use this section instead of the engine's broker.
        enabled: bool [Plain] = false,
        /// `memory`, `redis` or `nats` (Rotor: `nats`, or the engine's own type).
        type_ ["type"]: String [Plain] = "memory".to_owned(),
        /// Redis settings for `type: redis`.
        redis: Redis [Plain] = Redis::default(),
        /// NATS settings for `type: nats`.
        nats: Nats [Plain] = Nats::default(),
    }
}

section! {
    /// `broker.nats.*`.
    pub struct Nats {
        /// `nats://[user:password@]host[:port]`.
        url: String [Plain] = "nats://localhost:4222".to_owned(),
        /// Subject prefix.
        prefix: String [Plain] = "centrifugo".to_owned(),
        /// Time to connect.
        dial_timeout: Duration [GoDuration] = Duration::from_secs(1),
        /// Time a write may take.
        write_timeout: Duration [GoDuration] = Duration::from_secs(1),
    }
}

section! {
    /// `presence_manager.*`: a presence manager other than the engine's.
    pub struct PresenceManager {
        /// Use this section instead of the engine's presence manager.
        enabled: bool [Plain] = false,
        /// `memory` or `redis`.
        type_ ["type"]: String [Plain] = "memory".to_owned(),
        /// Redis settings for `type: redis`.
        redis: Redis [Plain] = Redis::default(),
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

section! {
    /// A Redis object (`engine.redis`): where Redis is and how its keys are named.
    pub struct Redis {
        /// `redis://[user:password@]host:port[/db]` or `host:port`; several entries shard
        /// channels over several Redis servers. One bare string is accepted too.
        address: Vec<String> [OneOrMany] = vec!["redis://127.0.0.1:6379".to_owned()],
        /// Key and PUB/SUB channel prefix, shared with Centrifugo nodes on the same Redis.
        prefix: String [Plain] = "centrifugo".to_owned(),
        /// Time to establish a connection.
        connect_timeout: Duration [GoDuration] = Duration::from_secs(1),
        /// Time to wait for a reply before the connection is considered broken.
        io_timeout: Duration [GoDuration] = Duration::from_secs(4),
        /// Database number (when the address does not carry one).
        db: u32 [Plain] = 0,
        /// ACL user (when the address does not carry one).
        user: String [Plain] = String::new(),
        /// Password (when the address does not carry one).
        password: String [Plain] = String::new(),
        /// `CLIENT SETNAME` value.
        client_name: String [Plain] = String::new(),
        /// Redis Cluster seed addresses (`host:port`); when set, the masters and their slots
        /// are read from the first that answers at start, and `address` is not used.
        cluster_address: Vec<String> [OneOrMany] = Vec::new(),
        /// Rotor-only: with `cluster_address`, carry channel messages over sharded PUB/SUB
        /// (`SSUBSCRIBE`/`SPUBLISH`, Redis ≥ 7) so each stays on its slot's master. Centrifugo
        /// nodes cannot share a cluster used this way.
        sharded_pubsub: bool [Plain] = false,
        /// Redis Sentinel addresses (`host:port`); when set, the master named
        /// `sentinel_master_name` is asked of them and `address` is not used.
        sentinel_address: Vec<String> [OneOrMany] = Vec::new(),
        /// The monitored master's name.
        sentinel_master_name: String [Plain] = String::new(),
        /// ACL user for the Sentinels.
        sentinel_user: String [Plain] = String::new(),
        /// Password for the Sentinels.
        sentinel_password: String [Plain] = String::new(),
        /// `CLIENT SETNAME` on Sentinel connections.
        sentinel_client_name: String [Plain] = String::new(),
        /// Keep history in lists instead of streams (Rotor supports streams only).
        history_use_lists: bool [Plain] = false,
        /// How long a presence entry lives without refresh.
        presence_ttl: Duration [GoDuration] = Duration::from_secs(60),
    }
}

section! {
    /// `client.*`.
    pub struct Client {
        /// Glob patterns (gobwas syntax) matched against the lower-cased Origin header.
        allowed_origins: Vec<String> [Plain] = Vec::new(),
        /// Connection token verification (also subscription tokens unless
        /// `subscription_token.enabled`).
        token: Token [Plain] = Token::default(),
        /// Separate subscription token verification.
        subscription_token: SubscriptionToken [Plain] = SubscriptionToken::default(),
        /// Connect without a token as anonymous user.
        allow_anonymous_connect_without_token: bool [Plain] = false,
        /// Reject tokens with an empty user.
        disallow_anonymous_connection_tokens: bool [Plain] = false,
        /// Server ping period; ZERO = disabled (config -1).
        ping_interval: Duration [DisablableDuration] = Duration::from_secs(25),
        /// Wait for pong after a ping; ZERO = disabled (config -1).
        pong_timeout: Duration [DisablableDuration] = Duration::from_secs(8),
        /// Grace period after connection token expiry.
        expired_close_delay: Duration [GoDuration] = Duration::from_secs(25),
        /// Grace period after subscription token expiry.
        expired_sub_close_delay: Duration [GoDuration] = Duration::from_secs(25),
        /// Close connections that did not send connect within this time.
        stale_close_delay: Duration [GoDuration] = Duration::from_secs(10),
        /// Max channels per connection.
        channel_limit: usize [Plain] = 128,
        /// Max bytes queued for one connection before disconnecting it as slow.
        queue_max_size: usize [Plain] = 1_048_576,
        /// Presence refresh period.
        presence_update_interval: Duration [GoDuration] = Duration::from_secs(27),
        /// Commands processed concurrently per connection; 0 = sequential.
        concurrency: usize [Plain] = 0,
        /// Include server time in connect reply.
        connect_include_server_time: bool [Plain] = false,
        /// Max publications a client may request from history.
        history_max_publication_limit: usize [Plain] = 300,
        /// Max publications recovered on subscribe.
        recovery_max_publication_limit: usize [Plain] = 300,
        /// Parse tokens without verifying signatures (testing only).
        insecure_skip_token_signature_verify: bool [Plain] = false,
        /// Take the user id from this HTTP header (authenticating proxy setups).
        user_id_http_header: String [Plain] = String::new(),
        /// Insecure client mode: no auth, all permissions (testing only).
        insecure: bool [Plain] = false,
        /// Max connections per user; 0 = unlimited.
        user_connection_limit: usize [Plain] = 0,
        /// Max connections per node; 0 = unlimited.
        connection_limit: usize [Plain] = 0,
        /// How often each shard checks its channels' positions against their streams (and
        /// sweeps expired history); spec §6.3.
        channel_position_check_delay: Duration [GoDuration] = Duration::from_secs(40),
        /// Subscribe every connection to its user's personal channel.
        subscribe_to_user_personal_channel: PersonalChannel [Plain] = PersonalChannel::default(),
        /// Connect error codes → disconnects of unidirectional transports (spec §1.6).
        connect_code_to_unidirectional_disconnect: UniDisconnects [Plain] =
            UniDisconnects::default(),
    }
}

section! {
    /// `client.connect_code_to_unidirectional_disconnect`.
    pub struct UniDisconnects {
        /// Use `transforms` before the built-in mapping.
        enabled: bool [Plain] = false,
        /// Error code → disconnect.
        transforms: Vec<UniDisconnectTransform> [Plain] = Vec::new(),
    }
}

/// One `connect_code_to_unidirectional_disconnect.transforms[]` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UniDisconnectTransform {
    /// Connect error code.
    pub code: u32,
    /// The disconnect sent instead.
    pub to: UniDisconnectTo,
}

/// Target of a [`UniDisconnectTransform`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UniDisconnectTo {
    /// Disconnect code.
    pub code: u16,
    /// Disconnect reason.
    #[serde(default)]
    pub reason: String,
}

section! {
    /// `client.subscribe_to_user_personal_channel` (spec §5.5).
    pub struct PersonalChannel {
        /// Subscribe each authenticated connection to `#<user>` server-side.
        enabled: bool [Plain] = false,
        /// Namespace of the channel (`<ns>:#<user>`); empty = no namespace.
        personal_channel_namespace: String [Plain] = String::new(),
        /// A new connection of the user disconnects the older ones (3504).
        single_connection: bool [Plain] = false,
    }
}

section! {
    /// Token verification keys (`client.token.*`, `client.subscription_token.*`).
    pub struct Token {
        /// HS256/384/512 secret (raw bytes of the string).
        hmac_secret_key: String [Plain] = String::new(),
        /// Previous HMAC secret tried on failure (key rotation).
        hmac_previous_secret_key: String [Plain] = String::new(),
        /// Unix seconds until which the previous key is accepted; 0 = no limit.
        hmac_previous_secret_key_valid_until: i64 [Plain] = 0,
        /// RSA public key PEM.
        rsa_public_key: String [Plain] = String::new(),
        /// ECDSA public key PEM.
        ecdsa_public_key: String [Plain] = String::new(),
        /// JWKS URL (http/https); replaces the static keys when set. `{{name}}` takes the
        /// named group `name` of `issuer_regex`/`audience_regex`.
        jwks_public_endpoint: String [Plain] = String::new(),
        /// Required `aud`.
        audience: String [Plain] = String::new(),
        /// Regex some `aud` element must match (not together with `audience`).
        audience_regex: String [Plain] = String::new(),
        /// Required `iss`.
        issuer: String [Plain] = String::new(),
        /// Regex `iss` must match (not together with `issuer`).
        issuer_regex: String [Plain] = String::new(),
        /// Claim holding the user id instead of `sub`.
        user_id_claim: String [Plain] = String::new(),
    }
}

/// `client.subscription_token.*`: `enabled` plus the [`Token`] keys side by side.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SubscriptionToken {
    /// Use these keys (not `client.token`) for subscription tokens.
    pub enabled: bool,
    /// The keys.
    pub token: Token,
}

impl Section for SubscriptionToken {
    fn read_key<'de, A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
    ) -> Result<bool, A::Error> {
        if key == "enabled" {
            self.enabled = map.next_value()?;
            return Ok(true);
        }
        self.token.read_key(key, map)
    }

    fn write_keys<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("enabled", &self.enabled)?;
        self.token.write_keys(map)
    }
}

section! {
    /// `channel.*`.
    pub struct Channel {
        /// Options of channels without a namespace.
        without_namespace: ChannelOptions [Plain] = ChannelOptions::default(),
        /// Namespaces.
        namespaces: Vec<Namespace> [Plain] = Vec::new(),
        /// Default lifetime of stream meta for namespaces that set 0.
        history_meta_ttl: Duration [GoDuration] = Duration::from_secs(720 * 3600),
        /// Published data validation: "", json, json_object, binary.
        publication_data_format: String [Plain] = String::new(),
        /// Max channel name length in bytes.
        max_length: usize [Plain] = 255,
        /// Private channel prefix.
        private_prefix: String [Plain] = "$".to_owned(),
        /// Separates namespace from the rest of the channel name.
        namespace_boundary: String [Plain] = ":".to_owned(),
        /// Starts the user list of user-limited channels.
        user_boundary: String [Plain] = "#".to_owned(),
        /// Separates users in user-limited channels.
        user_separator: String [Plain] = ",".to_owned(),
    }
}

section! {
    /// Per-namespace channel options (spec §5.3). All off/empty by default, except proxy
    /// names which default to `"default"` as in Centrifugo.
    pub struct ChannelOptions {
        /// Maintain presence.
        presence: bool [Plain] = false,
        /// Publish join/leave events.
        join_leave: bool [Plain] = false,
        /// Push join/leave to all subscribers.
        force_push_join_leave: bool [Plain] = false,
        /// Publications kept in history; set together with `history_ttl`.
        history_size: usize [Plain] = 0,
        /// History retention (whole seconds).
        history_ttl: Duration [GoDuration] = Duration::ZERO,
        /// Stream meta lifetime; ZERO = `channel.history_meta_ttl`.
        history_meta_ttl: Duration [GoDuration] = Duration::ZERO,
        /// Positioning for every subscriber.
        force_positioning: bool [Plain] = false,
        /// Clients may ask for positioning.
        allow_positioning: bool [Plain] = false,
        /// Recovery for every subscriber (needs history).
        force_recovery: bool [Plain] = false,
        /// Clients may ask for recovery (needs history).
        allow_recovery: bool [Plain] = false,
        /// "" (= stream), "stream" or "cache".
        force_recovery_mode: String [Plain] = String::new(),
        /// Cache mode: deliver the latest publication on every subscribe.
        auto_cache_recover: bool [Plain] = false,
        /// Delta types clients may negotiate; only "fossil".
        allowed_delta_types: Vec<String> [Plain] = Vec::new(),
        /// Every publication is delta-eligible.
        delta_publish: bool [Plain] = false,
        /// Clients may send tags filters.
        allow_tags_filter: bool [Plain] = false,
        /// Authenticated users may subscribe.
        allow_subscribe_for_client: bool [Plain] = false,
        /// Anonymous users may subscribe too.
        allow_subscribe_for_anonymous: bool [Plain] = false,
        /// Authenticated users may publish.
        allow_publish_for_client: bool [Plain] = false,
        /// Subscribers may publish.
        allow_publish_for_subscriber: bool [Plain] = false,
        /// Extend publish permissions to anonymous users.
        allow_publish_for_anonymous: bool [Plain] = false,
        /// Authenticated users may query presence.
        allow_presence_for_client: bool [Plain] = false,
        /// Subscribers may query presence.
        allow_presence_for_subscriber: bool [Plain] = false,
        /// Extend presence permissions to anonymous users.
        allow_presence_for_anonymous: bool [Plain] = false,
        /// Authenticated users may query history.
        allow_history_for_client: bool [Plain] = false,
        /// Subscribers may query history.
        allow_history_for_subscriber: bool [Plain] = false,
        /// Extend history permissions to anonymous users.
        allow_history_for_anonymous: bool [Plain] = false,
        /// Honour `#user1,user2` channel suffixes.
        allow_user_limited_channels: bool [Plain] = false,
        /// RE2 regex the post-namespace part must match in client subscribe/publish
        /// (presence/history once those exist); allows non-ASCII names.
        channel_regex: String [Plain] = String::new(),
        /// Overrides `channel.publication_data_format`.
        publication_data_format: String [Plain] = String::new(),
        /// Subscribe permission through a proxy.
        subscribe_proxy_enabled: bool [Plain] = false,
        /// Proxy used for subscribe.
        subscribe_proxy_name: String [Plain] = "default".to_owned(),
        /// Publish through a proxy.
        publish_proxy_enabled: bool [Plain] = false,
        /// Proxy used for publish.
        publish_proxy_name: String [Plain] = "default".to_owned(),
        /// Subscription refresh through a proxy.
        sub_refresh_proxy_enabled: bool [Plain] = false,
        /// Proxy used for sub refresh.
        sub_refresh_proxy_name: String [Plain] = "default".to_owned(),
    }
}

/// One `channel.namespaces[]` entry: `name` plus the [`ChannelOptions`] keys side by side.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Namespace {
    /// Namespace name (`^[-a-zA-Z0-9_.]{2,}$`).
    pub name: String,
    /// Its options.
    pub options: ChannelOptions,
}

impl Section for Namespace {
    fn read_key<'de, A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
    ) -> Result<bool, A::Error> {
        if key == "name" {
            self.name = map.next_value()?;
            return Ok(true);
        }
        self.options.read_key(key, map)
    }

    fn write_keys<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("name", &self.name)?;
        self.options.write_keys(map)
    }
}

/// Serde for hand-written sections (the ones with keys "side by side").
macro_rules! section_serde {
    ($($name:ident),*) => {$(
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(None)?;
                self.write_keys(&mut map)?;
                map.end()
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_any(SectionVisitor::<Self>::new())
            }
        }
    )*};
}
section_serde!(SubscriptionToken, Namespace);

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
    /// `websocket.*`.
    pub struct WebSocket {
        /// Turn the WebSocket endpoint off.
        disabled: bool [Plain] = false,
        /// Endpoint path.
        handler_prefix: String [Plain] = "/connection/websocket".to_owned(),
        /// Max incoming message size in bytes.
        message_size_limit: usize [Plain] = 65_536,
        /// Write deadline per frame.
        write_timeout: Duration [GoDuration] = Duration::from_millis(1000),
        /// Socket read buffer; 0 = implementation default.
        read_buffer_size: usize [Plain] = 0,
        /// Socket write buffer; 0 = implementation default.
        write_buffer_size: usize [Plain] = 0,
        /// permessage-deflate.
        compression: bool [Plain] = false,
    }
}

/// Declares the section of an HTTP streaming transport: `enabled`, `handler_prefix` (with
/// the transport's default path) and `max_request_body_size`.
macro_rules! stream_section {
    ($(#[$meta:meta])* $name:ident, $path:literal) => {
        section! {
            $(#[$meta])*
            pub struct $name {
                /// Serve the endpoint.
                enabled: bool [Plain] = false,
                /// Endpoint path.
                handler_prefix: String [Plain] = $path.to_owned(),
                /// Largest connect request body (413 above).
                max_request_body_size: usize [Plain] = 65_536,
            }
        }
    };
}

stream_section!(
    /// `http_stream.*`.
    HttpStream,
    "/connection/http_stream"
);
stream_section!(
    /// `sse.*`.
    Sse,
    "/connection/sse"
);
stream_section!(
    /// `uni_sse.*`.
    UniSse,
    "/connection/uni_sse"
);
stream_section!(
    /// `uni_http_stream.*`.
    UniHttpStream,
    "/connection/uni_http_stream"
);

section! {
    /// `emulation.*` (on whenever `http_stream` or `sse` is).
    pub struct Emulation {
        /// Endpoint path.
        handler_prefix: String [Plain] = "/emulation".to_owned(),
        /// Largest request body (413 above).
        max_request_body_size: usize [Plain] = 65_536,
    }
}

section! {
    /// `uni_websocket.*`.
    pub struct UniWebSocket {
        /// Serve the endpoint.
        enabled: bool [Plain] = false,
        /// Endpoint path.
        handler_prefix: String [Plain] = "/connection/uni_websocket".to_owned(),
        /// Largest connect message.
        message_size_limit: usize [Plain] = 65_536,
        /// Write deadline per flush.
        write_timeout: Duration [GoDuration] = Duration::from_millis(1000),
        /// Send a flushed batch as one newline-joined message.
        join_push_messages: bool [Plain] = false,
        /// Close with the close frame only, without a `disconnect` push first.
        disable_disconnect_push: bool [Plain] = false,
    }
}

section! {
    /// `init.*`.
    pub struct Init {
        /// Serve `GET <handler_prefix>` → `{}`.
        enabled: bool [Plain] = false,
        /// Endpoint path.
        handler_prefix: String [Plain] = "/connection/init".to_owned(),
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
    }
}

section! {
    /// `rpc.*` (spec §5.4). RPC proxies are not implemented: a namespace with `proxy_enabled`
    /// answers 108.
    pub struct Rpc {
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

impl Config {
    /// The config as a generic value tree with Go-style duration strings.
    pub fn to_value(&self) -> serde_json::Value {
        // Serializing plain strings, numbers and bools into a Value cannot fail.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

#[cfg(test)]
pub(crate) mod tests;
