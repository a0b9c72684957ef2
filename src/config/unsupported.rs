//! The Centrifugo v6 configuration keys Rotor reads but does not implement yet, each
//! classified: harmless to skip (one warning, whatever its value), or relied on for security
//! or delivery (switched on, Rotor refuses to start naming the key: it must never fail
//! open). One list for the file loader and the environment overlay. Must not hold keys Rotor
//! implements: those are read by `Config`.

use serde_json::Value;

/// What switches a relied-on key on.
#[derive(Clone, Copy, Debug)]
enum On {
    /// `true`, or an object whose `enabled` is true (a section with an on/off flag).
    Enabled,
    /// Any value but the zero value: `true`, a non-zero number or duration, a non-empty
    /// string or list.
    Set,
    /// A string other than this default (`""` counts as the default too).
    Not(&'static str),
    /// A list with an element whose `enabled` is true (`consumers`).
    AnyEnabled,
}

/// How Rotor treats an unimplemented key.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// Skipped with one warning: nothing a client or backend relies on changes without it.
    Harmless,
    /// Refused when switched on; the text says what Rotor would fail to do.
    Relied(On, &'static str),
}

use Kind::{Harmless, Relied};

const SUBSCRIPTIONS: &str = "serve this kind of subscription";

/// Top-level sections and keys inside implemented sections (dotted; `*` = any array index).
const KEYS: &[(&str, Kind)] = &[
    ("map_broker", Harmless), // used only by map subscriptions, refused below
    ("controller", Relied(On::Enabled, "coordinate nodes through the controller")),
    ("shared_poll", Relied(On::Enabled, SUBSCRIPTIONS)),
    ("grpc_api", Relied(On::Enabled, "serve the gRPC server API")),
    ("consumers", Relied(On::AnyEnabled, "consume commands from the configured queues")),
    ("webtransport", Relied(On::Enabled, "accept WebTransport clients")),
    ("uni_grpc", Relied(On::Enabled, "accept unidirectional gRPC clients")),
    ("swagger", Harmless),
    ("debug", Harmless),
    ("opentelemetry", Harmless),
    ("graphite", Harmless),
    ("usage_stats", Harmless),
    ("enable_unreleased_features", Harmless),
    ("http_server.tls_autocert", Relied(On::Enabled, "serve TLS with ACME certificates")),
    ("http_server.http3", Harmless), // clients keep using HTTP/1.1
    ("http_server.h2c_external", Harmless),
    ("broker.nats.allow_wildcards", Relied(On::Set, "deliver to wildcard subscriptions")),
    ("broker.nats.raw_mode", Relied(On::Enabled, "exchange raw NATS messages")),
    ("engine.redis.replica_client", Harmless), // reads go to the master
    ("engine.redis.force_resp2", Harmless),
    (
        "engine.redis.presence_hash_field_ttl",
        Relied(On::Set, "keep presence in Redis as Centrifugo nodes sharing it expect"),
    ),
    (
        "engine.redis.presence_user_mapping",
        Relied(On::Set, "keep presence in Redis as Centrifugo nodes sharing it expect"),
    ),
    (
        "client.channel_position_max_time_lag",
        Relied(On::Set, "disconnect positioned subscribers that lag behind"),
    ),
    // Named proxies of these kinds are used only by namespaces that switch them on (refused).
    ("channel.proxy.subscribe_stream", Harmless),
    ("channel.proxy.map_publish", Harmless),
    ("channel.proxy.map_remove", Harmless),
    ("channel.proxy.shared_poll_refresh", Harmless),
    ("websocket.use_write_buffer_pool", Harmless),
    ("uni_websocket.read_buffer_size", Harmless),
    ("uni_websocket.write_buffer_size", Harmless),
    ("uni_websocket.use_write_buffer_pool", Harmless),
    ("uni_websocket.disable_closing_handshake", Harmless),
    ("admin.web_path", Harmless), // Rotor serves its own embedded UI
    ("admin.web_proxy_address", Harmless),
    ("prometheus.instrument_http_handlers", Harmless),
    ("prometheus.recovered_publications_histogram", Harmless),
    ("prometheus.native_histograms", Harmless),
];

/// Namespace-level channel options (in `without_namespace` and every namespace).
const CHANNEL_OPTIONS: &[(&str, Kind)] = &[
    (
        "subscribe_stream_proxy_enabled",
        Relied(On::Set, "proxy subscriptions to a stream from the backend"),
    ),
    ("subscribe_stream_proxy_name", Harmless),
    ("subscribe_stream_proxy_bidirectional", Harmless),
    ("subscription_type", Relied(On::Not("stream"), SUBSCRIPTIONS)),
    // Settings of the subscription types above, unused while those are refused.
    ("map", Harmless),
    ("shared_poll", Harmless),
    ("map_clients_presence_channel_prefix", Harmless),
    ("map_users_presence_channel_prefix", Harmless),
];

fn all() -> impl Iterator<Item = (String, Kind)> {
    let keys = KEYS.iter().map(|(k, kind)| ((*k).to_owned(), *kind));
    let options = CHANNEL_OPTIONS.iter().flat_map(|(option, kind)| {
        [
            (format!("channel.without_namespace.{option}"), *kind),
            (format!("channel.namespaces.*.{option}"), *kind),
        ]
    });
    keys.chain(options)
}

/// Every not-yet-supported key as a dotted pattern (`*` = any array index).
pub(super) fn unsupported_patterns() -> Vec<String> {
    all().map(|(pattern, _)| pattern).collect()
}

fn find(pattern: &str) -> Option<(String, Kind)> {
    all().find(|(known, _)| {
        pattern == known
            || pattern.strip_prefix(known.as_str()).is_some_and(|rest| rest.starts_with('.'))
    })
}

/// Whether a key (a dotted pattern) is, or lies inside, a key Rotor does not implement yet.
pub(super) fn is_unsupported(pattern: &str) -> bool {
    find(pattern).is_some()
}

fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        // From the environment every value is a string: "false", "0" and a zero duration
        // ("0s") are off; a JSON list is judged as the list.
        Value::String(s) => {
            let s = s.trim();
            if let Ok(list @ Value::Array(_)) = serde_json::from_str::<Value>(s) {
                return truthy(&list);
            }
            let zero = s.starts_with('0')
                && s.chars().all(|c| c == '0' || c == '.' || c.is_ascii_alphabetic());
            !(s.is_empty() || s.eq_ignore_ascii_case("false") || zero)
        }
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn enabled(value: &Value) -> bool {
    match value {
        Value::Object(o) => o.get("enabled").is_some_and(truthy),
        other => truthy(other),
    }
}

/// When `pattern` (an ignored key of the config, or inside one) is relied on and `value`
/// switches it on: what Rotor would fail to do.
pub(super) fn refusal(pattern: &str, value: &Value) -> Option<&'static str> {
    let (known, kind) = find(pattern)?;
    let Relied(on, why) = kind else { return None };
    // A value below the key (from the environment: `uni_grpc.enabled`) is judged as the key.
    let inner = pattern.strip_prefix(known.as_str()).unwrap_or_default();
    let switched = match (on, inner) {
        (On::Enabled, "") => enabled(value),
        (On::Enabled, ".enabled") | (On::Set, _) => truthy(value),
        (On::Enabled, _) => false,
        (On::Not(default), _) => value.as_str().is_some_and(|s| !s.is_empty() && s != default),
        (On::AnyEnabled, _) => match value {
            Value::Array(items) => items.iter().any(enabled),
            Value::String(s) => serde_json::from_str::<Vec<Value>>(s)
                .map_or_else(|_| truthy(value), |items| items.iter().any(enabled)),
            other => truthy(other),
        },
    };
    switched.then_some(why)
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Map, Value};

    use super::{all, Kind, On};
    use crate::config::{load, ConfigError};

    /// A config tree with `value` at the dotted `pattern` (`*` = the first namespace).
    fn tree(pattern: &str, value: Value) -> Value {
        let mut node = value;
        for segment in pattern.split('.').rev() {
            node = if segment == "*" {
                if let Value::Object(o) = &mut node {
                    o.insert("name".into(), json!("ns"));
                }
                json!([node])
            } else {
                Value::Object(Map::from_iter([(segment.to_owned(), node)]))
            };
        }
        node
    }

    fn load_tree(tree: &Value) -> Result<crate::config::Loaded, ConfigError> {
        let path = std::env::temp_dir().join(format!(
            "rotor-unsupported-{}-{}.json",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::write(&path, tree.to_string()).unwrap();
        let result = load(Some(&path), &[]);
        std::fs::remove_file(&path).unwrap();
        result
    }

    #[test]
    fn every_key_is_skipped_with_a_warning_or_refused_when_on() {
        for (pattern, kind) in all() {
            let shown = pattern.replace(".*.", "[0].");
            let (on, off) = match kind {
                Kind::Harmless => (json!({"enabled": true}), None),
                Kind::Relied(On::Enabled, _) => (json!({"enabled": true}), Some(json!({}))),
                Kind::Relied(On::Set, _) => (json!(1), Some(json!(0))),
                Kind::Relied(On::Not(default), _) => (json!("other"), Some(json!(default))),
                Kind::Relied(On::AnyEnabled, _) => {
                    (json!([{"enabled": true}]), Some(json!([{"enabled": false}])))
                }
            };
            let loaded = load_tree(&tree(&pattern, on));
            match (kind, loaded) {
                (Kind::Harmless, Ok(l)) => {
                    let warned: Vec<_> = l.warnings.iter().filter(|w| w.contains(&shown)).collect();
                    assert_eq!(warned.len(), 1, "{pattern}: {:?}", l.warnings);
                }
                (Kind::Relied(..), Err(ConfigError::Refused { keys, .. })) => {
                    assert_eq!(keys.len(), 1, "{pattern}: {keys:?}");
                    assert_eq!(keys[0].0, shown, "{pattern}");
                }
                (kind, other) => panic!("{pattern} ({kind:?}): {other:?}"),
            }
            if let Some(off) = off {
                let loaded = load_tree(&tree(&pattern, off));
                assert!(loaded.is_ok(), "{pattern} off: {loaded:?}");
            }
        }
    }
}
