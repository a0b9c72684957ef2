//! Startup validation: semantic checks that a well-typed config can still fail. Every error
//! names the offending key path. Must not mutate the config or apply defaults.

use std::collections::HashSet;
use std::time::Duration;

use super::channel::ChannelOptions;
use super::client::Token;
use super::engine::Redis;
use super::{Config, ConfigError};

/// Hard cap on shards: shard ids travel as small integers and per-shard meshes are O(n²).
pub const SHARDS_MAX: usize = 256;

const LOG_LEVELS: &[&str] = &["none", "trace", "debug", "info", "warn", "error"];
const RECOVERY_MODES: &[&str] = &["", "stream", "cache"];
const DATA_FORMATS: &[&str] = &["", "json", "json_object", "binary"];
const DELTA_TYPES: &[&str] = &["fossil"];

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), message: message.into() }
}

/// Checks the whole config; returns the first problem found.
pub fn validate(config: &Config) -> Result<(), ConfigError> {
    let depth = config.runtime.ring_depth;
    if !(8..=32_768).contains(&depth) || !depth.is_power_of_two() {
        return Err(ConfigError::Invalid {
            key: "runtime.ring_depth".into(),
            message: format!("must be a power of two between 8 and 32768, got {depth}"),
        });
    }
    let client = &config.client;
    if !client.ping_interval.is_zero()
        && !client.pong_timeout.is_zero()
        && client.ping_interval <= client.pong_timeout
    {
        return Err(invalid(
            "client.ping_interval",
            format!(
                "must be greater than client.pong_timeout ({} <= {})",
                super::duration::format(client.ping_interval),
                super::duration::format(client.pong_timeout)
            ),
        ));
    }
    if client.queue_max_size == 0 {
        return Err(invalid("client.queue_max_size", "must be greater than 0"));
    }
    if config.websocket.message_size_limit == 0 {
        return Err(invalid("websocket.message_size_limit", "must be greater than 0"));
    }
    check_token("client.token", &client.token)?;
    for (key, map) in [
        ("uni_sse", &config.uni_sse.connect_code_to_http_response),
        ("uni_http_stream", &config.uni_http_stream.connect_code_to_http_response),
    ] {
        for (i, t) in map.transforms.iter().enumerate() {
            let at = format!("{key}.connect_code_to_http_response.transforms[{i}]");
            if t.code == 0 {
                return Err(invalid(format!("{at}.code"), "must be set"));
            }
            if !(100..=599).contains(&t.to.status_code) {
                return Err(invalid(format!("{at}.to.status_code"), "must be an HTTP status"));
            }
        }
    }
    if client.subscription_token.enabled {
        check_token("client.subscription_token", &client.subscription_token.token)?;
    }
    check_prefix("http_api.handler_prefix", &config.http_api.handler_prefix)?;
    check_prefix("websocket.handler_prefix", &config.websocket.handler_prefix)?;
    check_prefix("health.handler_prefix", &config.health.handler_prefix)?;
    check_prefix("prometheus.handler_prefix", &config.prometheus.handler_prefix)?;
    if !config.admin.handler_prefix.is_empty() {
        check_prefix("admin.handler_prefix", &config.admin.handler_prefix)?;
    }
    let admin = &config.admin;
    if admin.enabled && !admin.insecure {
        // Upstream starts and then refuses every login; an admin UI nobody can open is a
        // mistake to report now.
        for (key, value) in [("admin.password", &admin.password), ("admin.secret", &admin.secret)] {
            if value.is_empty() {
                return Err(invalid(key, "must be set when admin.enabled (or set admin.insecure)"));
            }
        }
    }
    if !["text", "json"].contains(&config.log.format.as_str()) {
        return Err(invalid("log.format", "must be \"text\" or \"json\""));
    }
    if !LOG_LEVELS.contains(&config.log.level.as_str()) {
        return Err(invalid(
            "log.level",
            format!("unknown level {:?} (one of {})", config.log.level, LOG_LEVELS.join(", ")),
        ));
    }
    crate::proxy::Proxies::from_config(config)?;
    let engines = config.engines()?;
    if let Some((path, redis)) = engines.redis {
        check_redis(path, redis)?;
    }
    if engines.broker == super::BrokerKind::Nats {
        if let Err(e) = crate::broker::nats::Settings::from_config(&config.broker.nats) {
            // TLS errors name their key; the rest is about the URL.
            return Err(match e.split_once(": ") {
                Some((key, message)) if key.starts_with("broker.nats.tls.") => {
                    invalid(key, message)
                }
                _ => invalid("broker.nats.url", e),
            });
        }
        if config.broker.nats.prefix.is_empty() {
            return Err(invalid("broker.nats.prefix", "must not be empty"));
        }
    }
    if config.runtime.shards > SHARDS_MAX {
        return Err(invalid("runtime.shards", format!("must be at most {SHARDS_MAX}")));
    }
    if config.runtime.lane_capacity == 0 {
        return Err(invalid("runtime.lane_capacity", "must be greater than 0"));
    }
    if config.runtime.http_head_timeout.is_zero() {
        return Err(invalid("runtime.http_head_timeout", "must be greater than 0"));
    }

    let channel = &config.channel;
    check_data_format("channel.publication_data_format", &channel.publication_data_format)?;
    if channel.namespace_boundary.is_empty() {
        return Err(invalid("channel.namespace_boundary", "must not be empty"));
    }
    check_options(
        "channel.without_namespace",
        &channel.without_namespace,
        channel.history_meta_ttl,
    )?;

    let mut seen = HashSet::new();
    for (index, namespace) in channel.namespaces.iter().enumerate() {
        if !valid_namespace_name(&namespace.name) {
            return Err(invalid(
                format!("channel.namespaces[{index}].name"),
                format!(
                    "invalid namespace name {:?} (must match ^[-a-zA-Z0-9_.]{{2,}}$)",
                    namespace.name
                ),
            ));
        }
        if !seen.insert(namespace.name.as_str()) {
            return Err(invalid(
                format!("channel.namespaces[{index}].name"),
                format!("duplicate namespace name {:?}", namespace.name),
            ));
        }
        check_options(
            &format!("channel.namespaces[{index}]"),
            &namespace.options,
            channel.history_meta_ttl,
        )?;
    }
    Ok(())
}

/// Regex and JWKS keys of one token section (`client.token` or `client.subscription_token`).
fn check_token(base: &str, token: &Token) -> Result<(), ConfigError> {
    let key = |name: &str| format!("{base}.{name}");
    for (exact, exact_value, pattern, regex_value) in [
        ("audience", &token.audience, "audience_regex", &token.audience_regex),
        ("issuer", &token.issuer, "issuer_regex", &token.issuer_regex),
    ] {
        check_regex(&key(pattern), regex_value)?;
        if !exact_value.is_empty() && !regex_value.is_empty() {
            return Err(invalid(key(pattern), format!("cannot be combined with {}", key(exact))));
        }
    }
    let endpoint = &token.jwks_public_endpoint;
    let web = endpoint.starts_with("http://") || endpoint.starts_with("https://");
    if !endpoint.is_empty() && !web {
        return Err(invalid(key("jwks_public_endpoint"), "must be an http:// or https:// URL"));
    }
    // A placeholder no regex group fills would make every token invalid.
    let groups: Vec<String> = [&token.issuer_regex, &token.audience_regex]
        .into_iter()
        .filter_map(|pattern| regex::Regex::new(pattern).ok())
        .flat_map(|re| re.capture_names().flatten().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    if let Some(name) =
        super::jwks_safety::placeholders(endpoint).find(|name| !groups.iter().any(|g| g == name))
    {
        return Err(invalid(
            key("jwks_public_endpoint"),
            format!(
                "placeholder {{{{{name}}}}} is not a named group of issuer_regex or audience_regex"
            ),
        ));
    }
    if let Err((pattern, message)) =
        super::jwks_safety::check(endpoint, &token.issuer_regex, &token.audience_regex)
    {
        if !token.insecure_skip_jwks_endpoint_safety_check {
            return Err(invalid(key(pattern), message));
        }
    }
    Ok(())
}

/// Empty means "not configured". Go RE2 syntax is (nearly) a subset of what `regex` accepts.
fn check_regex(key: &str, pattern: &str) -> Result<(), ConfigError> {
    if pattern.is_empty() {
        return Ok(());
    }
    regex::Regex::new(pattern)
        .map(|_| ())
        .map_err(|e| invalid(key, format!("not a valid regular expression: {e}")))
}

fn check_prefix(key: &str, prefix: &str) -> Result<(), ConfigError> {
    if prefix.starts_with('/') {
        Ok(())
    } else {
        Err(invalid(key, format!("{prefix:?} must start with \"/\"")))
    }
}

fn check_data_format(key: &str, format: &str) -> Result<(), ConfigError> {
    if DATA_FORMATS.contains(&format) {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("unknown format {format:?} (one of \"\", json, json_object, binary)"),
        ))
    }
}

fn valid_namespace_name(name: &str) -> bool {
    name.len() >= 2
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn check_options(
    base: &str,
    options: &ChannelOptions,
    global_meta_ttl: Duration,
) -> Result<(), ConfigError> {
    let key = |name: &str| format!("{base}.{name}");
    check_regex(&key("channel_regex"), &options.channel_regex)?;
    let has_size = options.history_size > 0;
    let has_ttl = !options.history_ttl.is_zero();
    if has_size && !has_ttl {
        return Err(invalid(key("history_ttl"), "must be set when history_size is set"));
    }
    if has_ttl && !has_size {
        return Err(invalid(key("history_size"), "must be set when history_ttl is set"));
    }
    for (name, ttl) in
        [("history_ttl", options.history_ttl), ("history_meta_ttl", options.history_meta_ttl)]
    {
        if ttl.subsec_nanos() != 0 {
            return Err(invalid(key(name), "must be a whole number of seconds"));
        }
    }
    let meta_ttl =
        if options.history_meta_ttl.is_zero() { global_meta_ttl } else { options.history_meta_ttl };
    if options.history_ttl > meta_ttl {
        return Err(invalid(
            key("history_ttl"),
            format!(
                "{} exceeds history_meta_ttl {}",
                super::duration::format(options.history_ttl),
                super::duration::format(meta_ttl)
            ),
        ));
    }
    if options.force_recovery && !has_size {
        return Err(invalid(
            key("force_recovery"),
            "requires history (history_size and history_ttl)",
        ));
    }
    if options.allow_recovery && !has_size {
        return Err(invalid(
            key("allow_recovery"),
            "requires history (history_size and history_ttl)",
        ));
    }
    if !RECOVERY_MODES.contains(&options.force_recovery_mode.as_str()) {
        return Err(invalid(
            key("force_recovery_mode"),
            format!("unknown mode {:?} (one of \"\", stream, cache)", options.force_recovery_mode),
        ));
    }
    if options.auto_cache_recover
        && !(options.force_recovery && options.force_recovery_mode == "cache")
    {
        return Err(invalid(
            key("auto_cache_recover"),
            "requires force_recovery with force_recovery_mode \"cache\"",
        ));
    }
    if let Some(bad) =
        options.allowed_delta_types.iter().find(|t| !DELTA_TYPES.contains(&t.as_str()))
    {
        return Err(invalid(
            key("allowed_delta_types"),
            format!("unknown delta type {bad:?} (only \"fossil\")"),
        ));
    }
    check_data_format(&key("publication_data_format"), &options.publication_data_format)
}

fn check_redis(path: &str, redis: &Redis) -> Result<(), ConfigError> {
    if redis.address.is_empty() {
        return Err(invalid(format!("{path}.address"), "needs at least one address"));
    }
    for (i, a) in redis.address.iter().enumerate() {
        if let Err(e) = crate::broker::redis::Form::parse(a, redis) {
            return Err(invalid(format!("{path}.address[{i}]"), e));
        }
    }
    for (i, a) in redis.cluster_address.iter().enumerate() {
        if let Err(e) = crate::broker::redis::Address::parse(a, redis) {
            return Err(invalid(format!("{path}.cluster_address[{i}]"), e));
        }
    }
    if !redis.cluster_address.is_empty() && !redis.sentinel_address.is_empty() {
        return Err(invalid(
            format!("{path}.cluster_address"),
            "cannot be combined with sentinel_address",
        ));
    }
    for (i, a) in redis.sentinel_address.iter().enumerate() {
        if let Err(e) = crate::broker::redis::Address::parse(a, redis) {
            return Err(invalid(format!("{path}.sentinel_address[{i}]"), e));
        }
    }
    if !redis.sentinel_address.is_empty() && redis.sentinel_master_name.is_empty() {
        return Err(invalid(
            format!("{path}.sentinel_master_name"),
            "required with sentinel_address",
        ));
    }
    if redis.history_use_lists {
        return Err(invalid(
            format!("{path}.history_use_lists"),
            "lists are not supported by rotor (history uses Redis streams)",
        ));
    }
    if redis.prefix.is_empty() {
        return Err(invalid(format!("{path}.prefix"), "must not be empty"));
    }
    // How the addresses combine, and the TLS objects (errors name their full key).
    if let Err(e) = crate::broker::redis::Settings::from_section(path, redis) {
        let (key, message) = match e.split_once(": ") {
            Some((key, message)) if key.starts_with(path) => (key, message),
            _ => (path, e.as_str()),
        };
        return Err(invalid(key.to_owned(), message.to_owned()));
    }
    Ok(())
}
