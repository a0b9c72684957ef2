//! The Centrifugo v6 configuration keys Rotor reads but does not implement yet: one list for
//! the file loader (which warns about them) and the environment overlay (which must not call
//! their variables unknown). Must not hold keys Rotor implements: those are read by `Config`.

/// Centrifugo v6 top-level sections Rotor does not implement yet.
const UNSUPPORTED_SECTIONS: &[&str] = &[
    "map_broker",
    "controller",
    "shared_poll",
    "grpc_api",
    "consumers",
    "webtransport",
    "uni_grpc",
    "swagger",
    "debug",
    "opentelemetry",
    "graphite",
    "usage_stats",
    "enable_unreleased_features",
];

/// Centrifugo v6 keys inside implemented sections that Rotor does not implement yet.
const UNSUPPORTED_KEYS: &[&str] = &[
    "http_server.tls_autocert",
    "http_server.http3",
    "http_server.h2c_external",
    "broker.nats.allow_wildcards",
    "broker.nats.raw_mode",
    "engine.redis.replica_client",
    "engine.redis.force_resp2",
    "engine.redis.presence_hash_field_ttl",
    "engine.redis.presence_user_mapping",
    "client.channel_position_max_time_lag",
    "client.connection_rate_limit",
    "channel.proxy.subscribe_stream",
    "channel.proxy.map_publish",
    "channel.proxy.map_remove",
    "channel.proxy.shared_poll_refresh",
    "websocket.compression_min_size",
    "uni_websocket.compression",
    "uni_websocket.compression_min_size",
    "uni_websocket.compression_level",
    "uni_websocket.read_buffer_size",
    "uni_websocket.write_buffer_size",
    "uni_websocket.use_write_buffer_pool",
    "uni_websocket.disable_closing_handshake",
    "uni_sse.connect_code_to_http_response",
    "uni_http_stream.connect_code_to_http_response",
    "websocket.compression_level",
    "websocket.use_write_buffer_pool",
    "websocket.decompressed_message_size_limit",
    "admin.web_path",
    "admin.web_proxy_address",
    "prometheus.instrument_http_handlers",
    "prometheus.recovered_publications_histogram",
    "prometheus.native_histograms",
];

/// Centrifugo channel option keys (namespace-level) Rotor does not implement yet.
const UNSUPPORTED_CHANNEL_OPTIONS: &[&str] = &[
    "subscribe_stream_proxy_enabled",
    "subscribe_stream_proxy_name",
    "subscribe_stream_proxy_bidirectional",
    "subscription_type",
    "map",
    "shared_poll",
    "map_clients_presence_channel_prefix",
    "map_users_presence_channel_prefix",
];

/// Unsupported keys an operator relies on for security: switched on (`true`, or an object
/// with `enabled: true`), Rotor refuses to start instead of ignoring them, since serving
/// cleartext on a port the operator believes is TLS fails open.
const REFUSED_WHEN_ON: &[&str] = &["http_server.tls_autocert"];

/// Whether an unsupported key's `value` switches on something Rotor must not ignore.
pub(super) fn refused_when_on(pattern: &str, value: &serde_json::Value) -> bool {
    let on = match value {
        serde_json::Value::Bool(b) => *b,
        serde_json::Value::Object(o) => o.get("enabled").is_some_and(|e| e == true),
        _ => false,
    };
    on && REFUSED_WHEN_ON.contains(&pattern)
}

/// Every not-yet-supported key as a dotted pattern (`*` = any array index).
pub(super) fn unsupported_patterns() -> Vec<String> {
    let mut patterns: Vec<String> = UNSUPPORTED_SECTIONS.iter().map(|s| (*s).to_owned()).collect();
    patterns.extend(UNSUPPORTED_KEYS.iter().map(|s| (*s).to_owned()));
    for option in UNSUPPORTED_CHANNEL_OPTIONS {
        patterns.push(format!("channel.without_namespace.{option}"));
        patterns.push(format!("channel.namespaces.*.{option}"));
    }
    patterns
}

/// Whether a key (a dotted pattern) is, or lies inside, a key Rotor does not implement yet.
pub(super) fn is_unsupported(pattern: &str) -> bool {
    unsupported_patterns().iter().any(|known| {
        pattern == known
            || pattern.strip_prefix(known.as_str()).is_some_and(|rest| rest.starts_with('.'))
    })
}
