//! Behaviour tests for loading, env overlay and validation.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh, unique path under the system temp dir (the file is not created).
pub(crate) fn temp_path(ext: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    std::env::temp_dir().join(format!("rotor-config-test-{}-{n}-{nanos}.{ext}", std::process::id()))
}

fn write_temp(ext: &str, text: &str) -> PathBuf {
    let path = temp_path(ext);
    std::fs::write(&path, text).unwrap();
    path
}

fn load_text(ext: &str, text: &str) -> Result<Loaded, ConfigError> {
    let path = write_temp(ext, text);
    let result = load(Some(&path), &[]);
    std::fs::remove_file(&path).unwrap();
    result
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

const SAMPLE_JSON: &str = r#"{
  "http_server": {"port": "9001", "address": "127.0.0.1"},
  "log": {"level": "debug"},
  "client": {
    "token": {"hmac_secret_key": "secret"},
    "subscription_token": {"enabled": true, "hmac_secret_key": "subsecret"},
    "allowed_origins": ["http://localhost:3000"],
    "ping_interval": "10s",
    "pong_timeout": -1,
    "channel_limit": 64
  },
  "channel": {
    "without_namespace": {"presence": true},
    "namespaces": [
      {"name": "chat", "history_size": 10, "history_ttl": "300s", "force_recovery": true}
    ]
  },
  "runtime": {"shards": 3, "placement": "round_robin"}
}"#;

const SAMPLE_YAML: &str = r#"
http_server:
  port: "9001"
  address: 127.0.0.1
log:
  level: debug
client:
  token:
    hmac_secret_key: secret
  subscription_token:
    enabled: true
    hmac_secret_key: subsecret
  allowed_origins: ["http://localhost:3000"]
  ping_interval: 10s
  pong_timeout: -1
  channel_limit: 64
channel:
  without_namespace:
    presence: true
  namespaces:
    - name: chat
      history_size: 10
      history_ttl: 300s
      force_recovery: true
runtime:
  shards: 3
  placement: round_robin
"#;

const SAMPLE_TOML: &str = r#"
[http_server]
port = "9001"
address = "127.0.0.1"

[log]
level = "debug"

[client]
allowed_origins = ["http://localhost:3000"]
ping_interval = "10s"
pong_timeout = -1
channel_limit = 64

[client.token]
hmac_secret_key = "secret"

[client.subscription_token]
enabled = true
hmac_secret_key = "subsecret"

[channel.without_namespace]
presence = true

[[channel.namespaces]]
name = "chat"
history_size = 10
history_ttl = "300s"
force_recovery = true

[runtime]
shards = 3
placement = "round_robin"
"#;

#[test]
fn json_yaml_and_toml_load_to_the_same_config() {
    let json = load_text("json", SAMPLE_JSON).unwrap();
    let yaml = load_text("yaml", SAMPLE_YAML).unwrap();
    let yml = load_text("yml", SAMPLE_YAML).unwrap();
    let toml = load_text("toml", SAMPLE_TOML).unwrap();
    assert_eq!(json.config, yaml.config);
    assert_eq!(json.config, yml.config);
    assert_eq!(json.config, toml.config);
    assert!(json.unknown_keys.is_empty() && yaml.unknown_keys.is_empty());

    let c = &json.config;
    assert_eq!(c.http_server.port, 9001);
    assert_eq!(c.http_server.address, "127.0.0.1");
    assert_eq!(c.client.token.hmac_secret_key, "secret");
    assert!(c.client.subscription_token.enabled);
    assert_eq!(c.client.subscription_token.token.hmac_secret_key, "subsecret");
    assert_eq!(c.client.ping_interval, Duration::from_secs(10));
    assert_eq!(c.client.pong_timeout, Duration::ZERO);
    assert_eq!(c.client.channel_limit, 64);
    assert!(c.channel.without_namespace.presence);
    assert_eq!(c.channel.namespaces[0].name, "chat");
    assert_eq!(c.channel.namespaces[0].options.history_ttl, Duration::from_secs(300));
    assert_eq!(c.runtime.placement, Placement::RoundRobin);
    // untouched keys keep Centrifugo defaults
    assert_eq!(c.client.queue_max_size, 1_048_576);
    assert_eq!(c.channel.history_meta_ttl, Duration::from_secs(720 * 3600));
    validate(c).unwrap();
}

#[test]
fn defaults_match_centrifugo() {
    let c = Config::default();
    assert_eq!(c.http_server.port, 8000);
    assert_eq!(c.client.ping_interval, Duration::from_secs(25));
    assert_eq!(c.client.pong_timeout, Duration::from_secs(8));
    assert_eq!(c.client.channel_limit, 128);
    assert_eq!(c.websocket.write_timeout, Duration::from_millis(1000));
    assert_eq!(c.http_api.handler_prefix, "/api");
    assert_eq!(c.engine.type_, "memory");
    assert_eq!(c.runtime.placement, Placement::ReusePort);
    assert!(c.runtime.pin_cpus);
    validate(&c).unwrap();
    let v = c.to_value();
    assert_eq!(v["client"]["ping_interval"], "25s");
    assert_eq!(v["channel"]["history_meta_ttl"], "720h0m0s");
    assert_eq!(v["websocket"]["write_timeout"], "1s");
    assert_eq!(v["engine"]["type"], "memory");
    assert_eq!(v["runtime"]["placement"], "reuseport");
}

#[test]
fn default_config_round_trips_through_every_format() {
    let c = Config::default();
    let json = serde_json::to_string_pretty(&c).unwrap();
    let yaml = serde_yaml::to_string(&c).unwrap();
    let toml = toml::to_string(&c).unwrap();
    assert_eq!(load_text("json", &json).unwrap().config, c);
    assert_eq!(load_text("yaml", &yaml).unwrap().config, c);
    assert_eq!(load_text("toml", &toml).unwrap().config, c);
}

#[test]
fn durations_accept_strings_numbers_and_negative_disable() {
    let c = load_text(
        "json",
        r#"{"client": {"ping_interval": 2000000000, "pong_timeout": "-1s",
            "stale_close_delay": "1h30m", "presence_update_interval": "500ms"},
            "shutdown": {"timeout": "720h"}}"#,
    )
    .unwrap()
    .config;
    assert_eq!(c.client.ping_interval, Duration::from_secs(2));
    assert_eq!(c.client.pong_timeout, Duration::ZERO);
    assert_eq!(c.client.stale_close_delay, Duration::from_secs(5400));
    assert_eq!(c.client.presence_update_interval, Duration::from_millis(500));
    assert_eq!(c.shutdown.timeout, Duration::from_secs(720 * 3600));

    let c = load_text("json", r#"{"client": {"ping_interval": "-1", "pong_timeout": -1}}"#)
        .unwrap()
        .config;
    assert_eq!(c.client.ping_interval, Duration::ZERO);
    assert_eq!(c.client.pong_timeout, Duration::ZERO);
}

#[test]
fn bad_durations_name_the_key() {
    let err = load_text("json", r#"{"client": {"stale_close_delay": "10 parsecs"}}"#).unwrap_err();
    assert!(err.to_string().starts_with("client.stale_close_delay: "), "{err}");
    let err = load_text("json", r#"{"shutdown": {"timeout": "-5s"}}"#).unwrap_err();
    assert!(err.to_string().starts_with("shutdown.timeout: negative duration"), "{err}");
    let err =
        load_text("json", r#"{"channel": {"namespaces": [{"name": "ab", "history_ttl": true}]}}"#)
            .unwrap_err();
    assert!(err.to_string().starts_with("channel.namespaces[0].history_ttl: "), "{err}");
}

#[test]
fn type_errors_name_the_key() {
    let err = load_text("json", r#"{"client": {"channel_limit": "x"}}"#).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"client.channel_limit: invalid type: string "x", expected usize"#
    );
    let err = load_text("json", r#"{"http_server": {"port": "80x"}}"#).unwrap_err();
    assert!(err.to_string().starts_with("http_server.port: "), "{err}");
    let err = load_text("json", r#"{"runtime": {"placement": "random"}}"#).unwrap_err();
    assert!(err.to_string().starts_with("runtime.placement: unknown variant"), "{err}");
}

#[test]
fn unknown_keys_are_reported_with_full_path() {
    let loaded = load_text(
        "json",
        r#"{"client": {"tokn": {"hmac_secret_key": "x"}},
            "channel": {"namespaces": [{"name": "ab", "presense": true}]},
            "bogus": 1}"#,
    )
    .unwrap();
    let mut keys = loaded.unknown_keys.clone();
    keys.sort();
    assert_eq!(keys, ["bogus", "channel.namespaces[0].presense", "client.tokn.hmac_secret_key"]);
    assert!(loaded
        .warnings
        .iter()
        .any(|w| w.contains("unknown config key \"client.tokn.hmac_secret_key\"")));
}

#[test]
fn unsupported_centrifugo_keys_warn_but_are_not_unknown() {
    // Relied-on keys present but off are skipped like harmless ones.
    let loaded = load_text(
        "json",
        r#"{"uni_grpc": {"enabled": false, "port": 11000}, "usage_stats": {"disabled": true},
            "engine": {"redis": {"replica_client": {"enabled": true}}},
            "channel": {"namespaces": [{"name": "ab", "subscription_type": "stream"}]}}"#,
    )
    .unwrap();
    assert!(loaded.unknown_keys.is_empty(), "{:?}", loaded.unknown_keys);
    let unsupported: Vec<_> =
        loaded.warnings.iter().filter(|w| w.contains("not supported by rotor yet")).collect();
    assert_eq!(unsupported.len(), 4, "{:?}", loaded.warnings);
    assert!(unsupported.iter().any(|w| w.contains("\"uni_grpc\"")));
    assert!(unsupported.iter().any(|w| w.contains("engine.redis.replica_client")));
}

#[test]
fn relied_on_keys_switched_on_refuse_to_start_naming_every_one() {
    let err = load_text(
        "json",
        r#"{"uni_grpc": {"enabled": true}, "usage_stats": {"disabled": true},
            "client": {"channel_position_max_time_lag": "5s"},
            "consumers": [{"name": "a", "enabled": false}, {"name": "b", "enabled": true}],
            "channel": {"namespaces": [{"name": "ab", "subscription_type": "map"}]}}"#,
    )
    .unwrap_err();
    let ConfigError::Refused { keys, warnings } = &err else { panic!("{err:?}") };
    let named: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        named,
        [
            "channel.namespaces[0].subscription_type",
            "client.channel_position_max_time_lag",
            "consumers",
            "uni_grpc"
        ],
        "{err}"
    );
    assert!(warnings.iter().any(|w| w.contains("usage_stats")), "{warnings:?}");
    assert!(err.to_string().contains("uni_grpc (rotor cannot accept unidirectional gRPC"), "{err}");
    // A zero value is off.
    load_text("json", r#"{"client": {"channel_position_max_time_lag": "0s"}}"#).unwrap();
}

#[test]
fn broker_and_presence_manager_sections_are_checked() {
    let loaded = load_text(
        "json",
        r#"{"broker": {"enabled": true, "type": "nats", "nats": {"url": "nats://127.0.0.1:4333"}}}"#,
    )
    .unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(loaded.config.broker.nats.prefix, "centrifugo");
    validate(&loaded.config).unwrap();

    let mut cfg = loaded.config.clone();
    cfg.broker.nats.url = "tls://x".into();
    validate(&cfg).unwrap();
    cfg.broker.nats.url = "http://x".into();
    assert!(validate(&cfg).unwrap_err().to_string().contains("broker.nats.url"));
    cfg.broker.nats.tls.enabled = true;
    cfg.broker.nats.tls.server_ca_pem = "/nonexistent/ca.pem".into();
    cfg.broker.nats.url = "nats://x".into();
    let err = validate(&cfg).unwrap_err().to_string();
    assert!(err.contains("broker.nats.tls.server_ca_pem") && !err.contains("url"), "{err}");
    cfg.broker.nats.tls = crate::config::Tls::default();
    cfg.broker.nats.url = "nats://x".into();
    // NATS between nodes, presence in the engine's Redis.
    cfg.engine.type_ = "redis".into();
    let engines = cfg.engines().unwrap();
    assert_eq!(engines.broker, BrokerKind::Nats);
    assert!(engines.redis_presence);
    assert_eq!(engines.redis.map(|r| r.0), Some("engine.redis"));
    cfg.engine.type_ = "memory".into();
    cfg.broker.type_ = "postgres".into();
    assert!(validate(&cfg).unwrap_err().to_string().contains("broker.type"));
    // A Redis broker (broker.redis) with memory presence.
    cfg.broker.type_ = "redis".into();
    let engines = cfg.engines().unwrap();
    assert_eq!((engines.broker, engines.redis_presence), (BrokerKind::Redis, false));
    assert_eq!(engines.redis.map(|r| r.0), Some("broker.redis"));
    // Broker and presence in two different Redis objects: one set of connections only.
    cfg.presence_manager.enabled = true;
    cfg.presence_manager.type_ = "redis".into();
    cfg.presence_manager.redis.prefix = "other".into();
    assert!(validate(&cfg).unwrap_err().to_string().contains("presence_manager.redis"));
    cfg.broker.enabled = false;
    assert!(validate(&cfg).unwrap_err().to_string().contains("presence_manager.type"));
}

#[test]
fn redis_engine_settings_load_and_are_checked() {
    let loaded = load_text(
        "yaml",
        "engine:\n  type: redis\n  redis:\n    address: redis://127.0.0.1:6390/3\n    prefix: app\n",
    )
    .unwrap();
    let redis = &loaded.config.engine.redis;
    assert_eq!(redis.address, ["redis://127.0.0.1:6390/3"], "a bare string is a one-item list");
    assert_eq!(redis.prefix, "app");
    validate(&loaded.config).unwrap();

    let mut cfg = Config::default();
    cfg.engine.type_ = "redis".into();
    cfg.engine.redis.address = vec!["rediss://secure:6379".into()];
    validate(&cfg).unwrap();
    cfg.engine.redis.tls.server_ca_pem = "/nonexistent/ca.pem".into();
    let err = validate(&cfg).unwrap_err().to_string();
    assert!(err.contains("engine.redis.tls.server_ca_pem"), "{err}");
    cfg.engine.redis.tls.server_ca_pem = String::new();
    cfg.engine.redis.address = vec!["redis+sentinel://s:26379".into()];
    let err = validate(&cfg).unwrap_err().to_string();
    assert!(err.contains("engine.redis.address[0]") && err.contains("master name"), "{err}");
    cfg.engine.redis.address = vec!["127.0.0.1:6379".into()];
    cfg.engine.redis.history_use_lists = true;
    assert!(validate(&cfg).unwrap_err().to_string().contains("engine.redis.history_use_lists"));
    cfg.engine.type_ = "tarantool".into();
    assert!(validate(&cfg).unwrap_err().to_string().contains("engine.type"));
}

#[test]
fn missing_default_file_is_not_an_error_but_explicit_one_is() {
    // The test's working directory is the crate root, which has no config.json.
    assert!(!std::path::Path::new(DEFAULT_CONFIG_FILE).exists());
    let loaded = load(None, &[]).unwrap();
    assert!(loaded.file.is_none());
    assert_eq!(loaded.config, Config::default());

    let missing = temp_path("json");
    let err = load(Some(&missing), &[]).unwrap_err();
    assert!(err.to_string().contains(&missing.display().to_string()), "{err}");
}

#[test]
fn unsupported_extension_and_bad_syntax_are_errors() {
    assert!(matches!(load_text("ini", "a=1"), Err(ConfigError::UnsupportedFormat { .. })));
    assert!(matches!(load_text("json", "{"), Err(ConfigError::Parse { .. })));
    assert!(matches!(load_text("json", "[1]"), Err(ConfigError::Parse { .. })));
}

#[test]
fn env_overlay_converts_by_default_type() {
    let vars = env(&[
        ("ROTOR_CLIENT_INSECURE", "t"),
        ("CENTRIFUGO_HEALTH_ENABLED", "1"),
        ("ROTOR_HTTP_SERVER_PORT", "9100"),
        ("CENTRIFUGO_CLIENT_PING_INTERVAL", "40s"),
        ("CENTRIFUGO_CLIENT_PONG_TIMEOUT", "-1"),
        ("ROTOR_CLIENT_ALLOWED_ORIGINS", "http://a.example  https://*.b.example"),
        ("CENTRIFUGO_CLIENT_TOKEN_HMAC_SECRET_KEY", "s3"),
        ("CENTRIFUGO_CLIENT_SUBSCRIPTION_TOKEN_ENABLED", "TRUE"),
        ("ROTOR_RUNTIME_SHARDS", "4"),
        ("ROTOR_ADMIN_PASSWORD", ""),
    ]);
    let c = load(None, &vars).unwrap().config;
    assert!(c.client.insecure);
    assert!(c.health.enabled);
    assert_eq!(c.http_server.port, 9100);
    assert_eq!(c.client.ping_interval, Duration::from_secs(40));
    assert_eq!(c.client.pong_timeout, Duration::ZERO);
    assert_eq!(c.client.allowed_origins, ["http://a.example", "https://*.b.example"]);
    assert_eq!(c.client.token.hmac_secret_key, "s3");
    assert!(c.client.subscription_token.enabled);
    assert_eq!(c.runtime.shards, 4);
    assert_eq!(c.admin.password, "", "empty value counts as unset");
}

#[test]
fn env_namespaces_json_and_per_namespace_override() {
    let vars = env(&[
        (
            "CENTRIFUGO_CHANNEL_NAMESPACES",
            r#"[{"name": "chat-room", "presence": true}, {"name": "news"}]"#,
        ),
        ("ROTOR_CHANNEL_NAMESPACES_CHAT_ROOM_HISTORY_SIZE", "20"),
        ("ROTOR_CHANNEL_NAMESPACES_CHAT_ROOM_HISTORY_TTL", "60s"),
        ("CENTRIFUGO_CHANNEL_NAMESPACES_NEWS_ALLOW_SUBSCRIBE_FOR_CLIENT", "true"),
        ("CENTRIFUGO_CHANNEL_NAMESPACES_SPORTS_PRESENCE", "true"),
    ]);
    let loaded = load(None, &vars).unwrap();
    let ns = &loaded.config.channel.namespaces;
    assert_eq!(ns.len(), 2);
    assert!(ns[0].options.presence);
    assert_eq!(ns[0].options.history_size, 20);
    assert_eq!(ns[0].options.history_ttl, Duration::from_secs(60));
    assert!(ns[1].options.allow_subscribe_for_client);
    assert!(loaded
        .warnings
        .iter()
        .any(|w| w.contains("CENTRIFUGO_CHANNEL_NAMESPACES_SPORTS_PRESENCE")));
}

#[test]
fn env_overrides_file_and_rotor_prefix_wins() {
    let path = write_temp("json", r#"{"client": {"channel_limit": 5}, "log": {"level": "debug"}}"#);
    let vars = env(&[
        ("CENTRIFUGO_CLIENT_CHANNEL_LIMIT", "7"),
        ("ROTOR_CLIENT_CHANNEL_LIMIT", "9"),
        ("CENTRIFUGO_LOG_LEVEL", "error"),
    ]);
    let loaded = load(Some(&path), &vars).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(loaded.config.client.channel_limit, 9);
    assert_eq!(loaded.config.log.level, "error");
    assert_eq!(loaded.file.as_deref(), Some(path.as_path()));
}

#[test]
fn env_bad_values_name_the_variable() {
    let err = load(None, &env(&[("ROTOR_CLIENT_INSECURE", "yes")])).unwrap_err();
    assert!(err.to_string().contains("ROTOR_CLIENT_INSECURE"), "{err}");
    let err = load(None, &env(&[("CENTRIFUGO_CLIENT_CHANNEL_LIMIT", "many")])).unwrap_err();
    assert!(err.to_string().contains("CENTRIFUGO_CLIENT_CHANNEL_LIMIT"), "{err}");
    let err = load(None, &env(&[("ROTOR_CLIENT_PING_INTERVAL", "soon")])).unwrap_err();
    assert!(err.to_string().contains("ROTOR_CLIENT_PING_INTERVAL"), "{err}");
    let vars = env(&[("ROTOR_CHANNEL_NAMESPACES", r#"[{"name": "ab", "history_ttl": "x"}]"#)]);
    let err = load(None, &vars).unwrap_err();
    assert!(err.to_string().contains("ROTOR_CHANNEL_NAMESPACES"), "{err}");
    assert!(err.to_string().contains("channel.namespaces[0].history_ttl"), "{err}");
    let err = load(None, &env(&[("ROTOR_CHANNEL_NAMESPACES", "{not json")])).unwrap_err();
    assert!(err.to_string().contains("ROTOR_CHANNEL_NAMESPACES"), "{err}");
}

#[test]
fn env_unknown_and_unsupported_variables_warn() {
    let loaded = load(
        None,
        &env(&[
            ("ROTOR_CLIENT_NOPE", "1"),
            ("CENTRIFUGO_UNI_GRPC_ENABLED", "false"),
            ("CENTRIFUGO_GRAPHITE_ENABLED", "true"),
            ("CENTRIFUGO_SSE_ENABLED", "true"),
            ("PATH", "/bin"),
        ]),
    )
    .unwrap();
    assert!(loaded.config.sse.enabled, "a transport section Rotor implements is read from env");
    assert!(loaded
        .warnings
        .iter()
        .any(|w| w.contains("unknown environment variable ROTOR_CLIENT_NOPE")));
    assert!(loaded
        .warnings
        .iter()
        .any(|w| w.contains("CENTRIFUGO_UNI_GRPC_ENABLED is not supported by rotor yet")));
    assert!(loaded.warnings.iter().any(|w| w.contains("CENTRIFUGO_GRAPHITE_ENABLED")));
    assert!(!loaded.warnings.iter().any(|w| w.contains("PATH")));
    // Switched on from the environment, a relied-on key refuses as it does from the file.
    for (var, value) in [
        ("CENTRIFUGO_UNI_GRPC_ENABLED", "true"),
        ("ROTOR_CLIENT_CHANNEL_POSITION_MAX_TIME_LAG", "2s"),
        ("CENTRIFUGO_CONSUMERS", r#"[{"name": "q", "enabled": true}]"#),
    ] {
        let err = load(None, &env(&[(var, value)])).unwrap_err();
        assert!(matches!(&err, ConfigError::Refused { keys, .. } if keys[0].0 == var), "{err:?}");
    }
    load(None, &env(&[("CENTRIFUGO_CONSUMERS", r#"[{"name": "q", "enabled": false}]"#)])).unwrap();
}

fn invalid_key(config: &Config) -> String {
    match validate(config) {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

fn with_namespace(options: ChannelOptions) -> Config {
    let mut c = Config::default();
    c.channel.namespaces.push(Namespace { name: "chat".into(), options });
    c
}

#[test]
fn validation_errors_name_the_key() {
    let mut c = Config::default();
    c.client.ping_interval = Duration::from_secs(5);
    c.client.pong_timeout = Duration::from_secs(5);
    assert_eq!(invalid_key(&c), "client.ping_interval");
    c.client.pong_timeout = Duration::ZERO; // disabled pong: no constraint
    validate(&c).unwrap();

    let mut c = Config::default();
    c.channel.namespaces.push(Namespace { name: "x".into(), options: ChannelOptions::default() });
    assert_eq!(invalid_key(&c), "channel.namespaces[0].name");

    let mut c = with_namespace(ChannelOptions::default());
    c.channel
        .namespaces
        .push(Namespace { name: "chat".into(), options: ChannelOptions::default() });
    assert_eq!(invalid_key(&c), "channel.namespaces[1].name");

    let c = with_namespace(ChannelOptions { history_size: 10, ..Default::default() });
    assert_eq!(invalid_key(&c), "channel.namespaces[0].history_ttl");

    let mut c = Config::default();
    c.channel.without_namespace.history_ttl = Duration::from_secs(60);
    assert_eq!(invalid_key(&c), "channel.without_namespace.history_size");

    let c = with_namespace(ChannelOptions {
        history_size: 10,
        history_ttl: Duration::from_secs(120),
        history_meta_ttl: Duration::from_secs(60),
        ..Default::default()
    });
    assert_eq!(invalid_key(&c), "channel.namespaces[0].history_ttl");

    let mut c = with_namespace(ChannelOptions {
        history_size: 10,
        history_ttl: Duration::from_secs(7200),
        ..Default::default()
    });
    c.channel.history_meta_ttl = Duration::from_secs(3600);
    assert_eq!(invalid_key(&c), "channel.namespaces[0].history_ttl");

    let c = with_namespace(ChannelOptions { force_recovery: true, ..Default::default() });
    assert_eq!(invalid_key(&c), "channel.namespaces[0].force_recovery");
    let c = with_namespace(ChannelOptions { allow_recovery: true, ..Default::default() });
    assert_eq!(invalid_key(&c), "channel.namespaces[0].allow_recovery");

    let c =
        with_namespace(ChannelOptions { force_recovery_mode: "fast".into(), ..Default::default() });
    assert_eq!(invalid_key(&c), "channel.namespaces[0].force_recovery_mode");
    let c = with_namespace(ChannelOptions {
        allowed_delta_types: vec!["fossil".into(), "xdelta".into()],
        ..Default::default()
    });
    assert_eq!(invalid_key(&c), "channel.namespaces[0].allowed_delta_types");
    let c = with_namespace(ChannelOptions {
        publication_data_format: "xml".into(),
        ..Default::default()
    });
    assert_eq!(invalid_key(&c), "channel.namespaces[0].publication_data_format");

    let mut c = Config::default();
    c.channel.publication_data_format = "json_object".into();
    validate(&c).unwrap();
    c.channel.publication_data_format = "yaml".into();
    assert_eq!(invalid_key(&c), "channel.publication_data_format");

    let mut c = Config::default();
    c.runtime.shards = 257;
    assert_eq!(invalid_key(&c), "runtime.shards");
    let mut c = Config::default();
    c.client.queue_max_size = 0;
    assert_eq!(invalid_key(&c), "client.queue_max_size");
    let mut c = Config::default();
    c.websocket.message_size_limit = 0;
    assert_eq!(invalid_key(&c), "websocket.message_size_limit");
    let mut c = Config::default();
    c.http_api.handler_prefix = "api".into();
    assert_eq!(invalid_key(&c), "http_api.handler_prefix");
}

#[test]
fn valid_history_and_recovery_pass() {
    let c = with_namespace(ChannelOptions {
        history_size: 100,
        history_ttl: Duration::from_secs(600),
        force_recovery: true,
        force_recovery_mode: "cache".into(),
        auto_cache_recover: true,
        allowed_delta_types: vec!["fossil".into()],
        ..Default::default()
    });
    validate(&c).unwrap();
    let err = validate(&with_namespace(ChannelOptions {
        auto_cache_recover: true,
        ..Default::default()
    }))
    .unwrap_err();
    assert!(err.to_string().contains("channel.namespaces[0].auto_cache_recover"), "{err}");
}

#[test]
fn regex_keys_must_compile_and_name_the_key() {
    let c =
        with_namespace(ChannelOptions { channel_regex: "^[a-z+$".into(), ..Default::default() });
    assert_eq!(invalid_key(&c), "channel.namespaces[0].channel_regex");
    let mut c = Config::default();
    c.channel.without_namespace.channel_regex = "(unclosed".into();
    assert_eq!(invalid_key(&c), "channel.without_namespace.channel_regex");
    let c = with_namespace(ChannelOptions {
        channel_regex: r"^(?P<room>[a-z0-9_]+)$".into(),
        ..Default::default()
    });
    validate(&c).unwrap();

    let mut c = Config::default();
    c.client.token.audience_regex = "[".into();
    assert_eq!(invalid_key(&c), "client.token.audience_regex");
    let mut c = Config::default();
    c.client.token.issuer_regex = "a{2,1}".into();
    assert_eq!(invalid_key(&c), "client.token.issuer_regex");

    let mut c = Config::default();
    c.client.subscription_token.token.issuer_regex = "(".into();
    // Ignored while the subscription token section is disabled.
    validate(&c).unwrap();
    c.client.subscription_token.enabled = true;
    assert_eq!(invalid_key(&c), "client.subscription_token.issuer_regex");
}

#[test]
fn exact_and_regex_audience_or_issuer_are_exclusive() {
    let mut c = Config::default();
    c.client.token.audience = "rotor".into();
    c.client.token.audience_regex = "^rotor$".into();
    assert_eq!(invalid_key(&c), "client.token.audience_regex");

    let mut c = Config::default();
    c.client.subscription_token.enabled = true;
    c.client.subscription_token.token.issuer = "https://idp".into();
    c.client.subscription_token.token.issuer_regex = "^https://".into();
    assert_eq!(invalid_key(&c), "client.subscription_token.issuer_regex");

    let mut c = Config::default();
    c.client.token.audience = "rotor".into();
    c.client.token.issuer_regex = "^https://".into();
    validate(&c).unwrap();
}

#[test]
fn jwks_endpoint_must_be_http_or_https() {
    let mut c = Config::default();
    c.client.token.jwks_public_endpoint = "ftp://keys.example/jwks".into();
    assert_eq!(invalid_key(&c), "client.token.jwks_public_endpoint");
    c.client.token.jwks_public_endpoint = "https://keys.example/{{tenant}}/jwks".into();
    // Every placeholder needs a named group to fill it.
    assert_eq!(invalid_key(&c), "client.token.jwks_public_endpoint");
    // Filled from an unverified claim: only an explicit list of values (upstream 6.7).
    c.client.token.issuer_regex = "^https://idp/(?P<tenant>[a-z]+)$".into();
    assert_eq!(invalid_key(&c), "client.token.issuer_regex");
    c.client.token.insecure_skip_jwks_endpoint_safety_check = true;
    validate(&c).unwrap();
    c.client.token.insecure_skip_jwks_endpoint_safety_check = false;
    c.client.token.issuer_regex = "^https://idp/(?P<tenant>acme|globex)$".into();
    validate(&c).unwrap();
    c.client.token.jwks_public_endpoint = "https://keys.example/{{ tenant }}/{{region}}".into();
    assert_eq!(invalid_key(&c), "client.token.jwks_public_endpoint");
    c.client.token.audience_regex = "^(?P<region>eu|us)$".into();
    validate(&c).unwrap();
}

#[test]
fn an_admin_ui_nobody_could_log_in_to_is_refused_at_start() {
    let mut cfg = Config::default();
    cfg.admin.enabled = true;
    assert!(validate(&cfg).unwrap_err().to_string().contains("admin.password"));
    cfg.admin.password = "pw".into();
    assert!(validate(&cfg).unwrap_err().to_string().contains("admin.secret"));
    cfg.admin.secret = "s".into();
    validate(&cfg).unwrap();
    let insecure = Config {
        admin: Admin { enabled: true, insecure: true, ..Admin::default() },
        ..Config::default()
    };
    validate(&insecure).unwrap();
}

#[test]
fn tls_switched_on_refuses_to_start_instead_of_serving_cleartext() {
    let config = r#"{"http_server": {"tls_autocert": {"enabled": true}}}"#;
    let err = load_text("json", config).unwrap_err().to_string();
    assert!(err.contains("http_server.tls_autocert") && err.contains("TLS"), "{err}");
    // The broker TLS objects are implemented: read, not refused, not warned about.
    for config in [
        r#"{"engine": {"redis": {"tls": {"enabled": true}, "sentinel_tls": {"enabled": true}}}}"#,
        r#"{"broker": {"nats": {"tls": {"enabled": true}}}}"#,
    ] {
        let loaded = load_text("json", config).unwrap();
        assert!(loaded.warnings.is_empty(), "{config}: {:?}", loaded.warnings);
        let c = &loaded.config;
        assert!(c.engine.redis.tls.enabled || c.broker.nats.tls.enabled, "{config}");
    }
    // Present but off: harmless, one warning.
    let loaded =
        load_text("json", r#"{"http_server": {"tls_autocert": {"enabled": false}}}"#).unwrap();
    assert!(
        loaded.warnings.iter().any(|w| w.contains("http_server.tls_autocert")),
        "{:?}",
        loaded.warnings
    );
}
