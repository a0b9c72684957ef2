//! Tests of the command line: flag parsing and precedence over the config file and
//! environment, the offline tool verbs (version, genconfig, defaultconfig, checkconfig,
//! gentoken, gensubtoken) and checktoken's hand-off to a caller-supplied verifier.
//!
//! Must not: start a server or read the real process environment (every test passes its own
//! env pairs).

use super::*;
use crate::config::tests::temp_path;

fn parse_args(args: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("rotor").chain(args.iter().copied())).unwrap()
}

fn run(cmd: &Command, env: &[(String, String)]) -> Result<String, CliError> {
    let mut out = Vec::new();
    let no_verify = |_: &Config, _: TokenKind, _: &str| -> Result<String, String> {
        Err("no verifier in this test".to_owned())
    };
    run_tool_with(cmd, env, &no_verify, &mut out)?;
    Ok(String::from_utf8(out).unwrap())
}

fn secret_env(key: &str, value: &str) -> Vec<(String, String)> {
    vec![(key.to_owned(), value.to_owned())]
}

fn decode(token: &str, secret: &str) -> Value {
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .unwrap()
    .claims
}

#[test]
fn root_flags_override_config() {
    let cli = parse_args(&[
        "-c",
        "x.json",
        "-p",
        "9000",
        "-a",
        "127.0.0.1",
        "--shards",
        "3",
        "--client.insecure",
        "--http_api.insecure=false",
        "--log.level",
        "debug",
        "--health.enabled",
        "--admin.enabled=t",
        "--prometheus.enabled",
    ]);
    assert!(cli.command.is_none());
    assert_eq!(cli.serve.config.as_deref(), Some(Path::new("x.json")));
    let mut c = Config::default();
    c.http_api.insecure = true;
    apply_flags(&cli.serve, &mut c);
    assert_eq!(c.http_server.port, 9000);
    assert_eq!(c.http_server.address, "127.0.0.1");
    assert_eq!(c.runtime.shards, 3);
    assert!(c.client.insecure);
    assert!(!c.http_api.insecure);
    assert_eq!(c.log.level, "debug");
    assert!(c.health.enabled && c.admin.enabled && c.prometheus.enabled);
}

#[test]
fn centrifugo_long_flag_names_are_accepted() {
    let cli = parse_args(&["--http_server.port", "7000", "--http_server.address", "0.0.0.0"]);
    let mut c = Config::default();
    apply_flags(&cli.serve, &mut c);
    assert_eq!(c.http_server.port, 7000);
    assert_eq!(c.http_server.address, "0.0.0.0");
}

#[test]
fn absent_flags_leave_config_alone() {
    let cli = parse_args(&[]);
    let mut c = Config::default();
    c.client.insecure = true;
    c.http_server.port = 1234;
    apply_flags(&cli.serve, &mut c);
    assert!(c.client.insecure);
    assert_eq!(c.http_server.port, 1234);
}

#[test]
fn flags_beat_env_and_file() {
    let path = temp_path("json");
    std::fs::write(&path, r#"{"http_server": {"port": 1111}, "log": {"level": "warn"}}"#).unwrap();
    let p = path.to_str().unwrap();
    let cli = parse_args(&["-c", p, "-p", "3333"]);
    let env = secret_env("ROTOR_HTTP_SERVER_PORT", "2222");
    let loaded = load_config(&cli.serve, &env).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(loaded.config.http_server.port, 3333);
    assert_eq!(loaded.config.log.level, "warn");
}

#[test]
fn subcommands_parse() {
    let cli = parse_args(&["gentoken", "-u", "42", "-t", "-1", "-q"]);
    assert!(matches!(
        cli.command,
        Some(Command::Gentoken { ref user, ttl: -1, quiet: true, config: None }) if user == "42"
    ));
    let cli = parse_args(&["gensubtoken", "-u", "1", "-s", "news"]);
    assert!(matches!(
        cli.command,
        Some(Command::Gensubtoken { ttl: DEFAULT_TOKEN_TTL_SECONDS, ref channel, .. }) if channel == "news"
    ));
    let cli = parse_args(&["checkconfig", "-c", "a.yaml", "-s"]);
    assert!(matches!(cli.command, Some(Command::Checkconfig { strict: true, .. })));
    let cli = parse_args(&["defaultconfig", "-d"]);
    assert!(matches!(cli.command, Some(Command::Defaultconfig { dry_run: true, .. })));
    let cli = parse_args(&["checktoken", "abc.def.ghi"]);
    assert!(
        matches!(cli.command, Some(Command::Checktoken { ref token, .. }) if token == "abc.def.ghi")
    );
    assert!(Cli::try_parse_from(["rotor", "--bogus"]).is_err());
}

#[test]
fn version_prints_rotor_and_centrifugo_versions() {
    let text = run(&Command::Version, &[]).unwrap();
    assert_eq!(
        text,
        format!("Rotor v{} (Centrifugo-compatible 6.9.1)\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn genconfig_writes_loadable_config_with_random_secrets_and_refuses_overwrite() {
    use std::os::unix::fs::PermissionsExt;
    for ext in ["json", "yaml", "toml"] {
        let path = temp_path(ext);
        let cmd = Command::Genconfig { config: path.clone(), group: None };
        run(&cmd, &[]).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let loaded = config::load(Some(&path), &[]).unwrap();
        assert!(loaded.unknown_keys.is_empty(), "{:?}", loaded.unknown_keys);
        let c = &loaded.config;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        assert_eq!(engine.decode(&c.client.token.hmac_secret_key).unwrap().len(), 64);
        assert_eq!(engine.decode(&c.http_api.key).unwrap().len(), 64);
        assert_eq!(engine.decode(&c.admin.secret).unwrap().len(), 64);
        assert_eq!(engine.decode(&c.admin.password).unwrap().len(), 16);
        assert_ne!(c.http_api.key, c.client.token.hmac_secret_key);
        assert!(!c.admin.enabled);
        config::validate(c).unwrap();

        let before = std::fs::read_to_string(&path).unwrap();
        let err = run(&cmd, &[]).unwrap_err();
        assert!(matches!(err, CliError::Exists { .. }), "{err}");
        assert!(err.to_string().contains(&path.display().to_string()));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn genconfig_group_makes_the_file_readable_by_that_group() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // The test's own group (any user may give a file it owns to its own group).
    let probe = temp_path("probe");
    std::fs::write(&probe, "").unwrap();
    let gid = std::fs::metadata(&probe).unwrap().gid();
    std::fs::remove_file(&probe).unwrap();
    let groups = std::fs::read_to_string("/etc/group").unwrap();
    let name = groups
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.get(2) == Some(&gid.to_string().as_str())).then(|| f[0].to_owned())
        })
        .expect("the test's group is in /etc/group");
    let path = temp_path("json");
    run(&Command::Genconfig { config: path.clone(), group: Some(name) }, &[]).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!((meta.permissions().mode() & 0o777, meta.gid()), (0o640, gid));
    std::fs::remove_file(&path).unwrap();
    let err = run(
        &Command::Genconfig { config: path.clone(), group: Some("no-such-group-x".into()) },
        &[],
    )
    .unwrap_err();
    assert!(matches!(err, CliError::UnknownGroup(_)), "{err}");
    assert!(!path.exists(), "nothing written for an unknown group");
}

#[test]
fn defaultconfig_dry_run_prints_the_defaults() {
    for ext in ["json", "yaml", "toml"] {
        let path = temp_path(ext);
        let text =
            run(&Command::Defaultconfig { config: path.clone(), dry_run: true }, &[]).unwrap();
        assert!(!path.exists(), "dry run must not write");
        let value = config::parse_file_text(&path, &text).unwrap();
        let c: Config = serde_json::from_value(value).unwrap();
        assert_eq!(c, Config::default());
    }
    let path = temp_path("json");
    run(&Command::Defaultconfig { config: path.clone(), dry_run: false }, &[]).unwrap();
    assert_eq!(config::load(Some(&path), &[]).unwrap().config, Config::default());
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn checkconfig_reports_errors_and_fails_on_unknown_keys() {
    let path = temp_path("json");
    std::fs::write(&path, r#"{"client": {"tokn": {}, "channel_limit": 5}}"#).unwrap();
    // A typo fails the check with or without --strict (kept for Centrifugo's command line).
    let lenient = Command::Checkconfig { config: path.clone(), strict: false };
    for cmd in [&lenient, &Command::Checkconfig { config: path.clone(), strict: true }] {
        let err = run(cmd, &[]).unwrap_err();
        assert!(
            matches!(err, CliError::UnknownKeys(ref keys) if keys == &["client.tokn"]),
            "{err}"
        );
    }
    std::fs::write(&path, r#"{"client": {"channel_limit": 5}}"#).unwrap();
    assert!(run(&lenient, &[]).is_ok());

    std::fs::write(&path, r#"{"client": {"ping_interval": "1s", "pong_timeout": "2s"}}"#).unwrap();
    let err = run(&lenient, &[]).unwrap_err();
    assert!(err.to_string().contains("client.ping_interval"), "{err}");
    std::fs::remove_file(&path).unwrap();

    let err = run(&lenient, &[]).unwrap_err();
    assert!(matches!(err, CliError::Config(ConfigError::NotFound { .. })), "{err}");
}

#[test]
fn gentoken_signs_with_the_hmac_secret() {
    let env = secret_env("ROTOR_CLIENT_TOKEN_HMAC_SECRET_KEY", "test-secret");
    let cmd = Command::Gentoken { config: None, user: "alice".into(), ttl: 3600, quiet: false };
    let text = run(&cmd, &env).unwrap();
    let (head, token) = text.trim_end().split_once('\n').unwrap();
    assert_eq!(head, "HMAC SHA-256 JWT for user \"alice\" with expiration TTL 1h0m0s:");
    let claims = decode(token, "test-secret");
    assert_eq!(claims["sub"], "alice");
    let (iat, exp) = (claims["iat"].as_i64().unwrap(), claims["exp"].as_i64().unwrap());
    assert_eq!(exp - iat, 3600);

    let quiet = Command::Gentoken { config: None, user: "bob".into(), ttl: -1, quiet: true };
    let token = run(&quiet, &env).unwrap();
    let claims = decode(token.trim_end(), "test-secret");
    assert_eq!(claims["sub"], "bob");
    assert!(claims.get("exp").is_none());
    assert!(!token.contains("HMAC"));
}

#[test]
fn gentoken_default_ttl_is_one_week_and_honours_user_id_claim() {
    let env = vec![
        ("ROTOR_CLIENT_TOKEN_HMAC_SECRET_KEY".to_owned(), "k".to_owned()),
        ("ROTOR_CLIENT_TOKEN_USER_ID_CLAIM".to_owned(), "user_id".to_owned()),
    ];
    let cli = parse_args(&["gentoken", "-u", "7"]);
    let text = run(&cli.command.unwrap(), &env).unwrap();
    assert!(text.contains("with expiration TTL 168h0m0s:"), "{text}");
    let claims = decode(text.trim_end().rsplit('\n').next().unwrap(), "k");
    assert_eq!(claims["user_id"], "7");
    assert!(claims.get("sub").is_none());
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 604_800);
}

#[test]
fn gentoken_without_secret_names_the_key() {
    let cmd = Command::Gentoken { config: None, user: "u".into(), ttl: 60, quiet: true };
    let err = run(&cmd, &[]).unwrap_err();
    assert!(err.to_string().contains("client.token.hmac_secret_key"), "{err}");
}

#[test]
fn gensubtoken_uses_subscription_keys_when_enabled() {
    let cmd = Command::Gensubtoken {
        config: None,
        user: "u1".into(),
        channel: "news".into(),
        ttl: 60,
        quiet: true,
    };
    let plain = secret_env("ROTOR_CLIENT_TOKEN_HMAC_SECRET_KEY", "main");
    let claims = decode(run(&cmd, &plain).unwrap().trim_end(), "main");
    assert_eq!((claims["sub"].as_str(), claims["channel"].as_str()), (Some("u1"), Some("news")));

    let separate = vec![
        ("ROTOR_CLIENT_TOKEN_HMAC_SECRET_KEY".to_owned(), "main".to_owned()),
        ("ROTOR_CLIENT_SUBSCRIPTION_TOKEN_ENABLED".to_owned(), "true".to_owned()),
        ("ROTOR_CLIENT_SUBSCRIPTION_TOKEN_HMAC_SECRET_KEY".to_owned(), "subs".to_owned()),
    ];
    let claims = decode(run(&cmd, &separate).unwrap().trim_end(), "subs");
    assert_eq!(claims["channel"], "news");

    let missing = secret_env("ROTOR_CLIENT_SUBSCRIPTION_TOKEN_ENABLED", "1");
    let err = run(&cmd, &missing).unwrap_err();
    assert!(err.to_string().contains("client.subscription_token.hmac_secret_key"), "{err}");
}

#[test]
fn checktoken_delegates_to_the_verifier() {
    let cmd = Command::Checksubtoken { config: None, token: "t0k".into() };
    let verify = |c: &Config, kind: TokenKind, token: &str| -> Result<String, String> {
        assert_eq!(c.client.token.hmac_secret_key, "s");
        if token == "t0k" {
            Ok(format!("valid {kind:?} token"))
        } else {
            Err("bad signature".to_owned())
        }
    };
    let env = secret_env("ROTOR_CLIENT_TOKEN_HMAC_SECRET_KEY", "s");
    let mut out = Vec::new();
    run_tool_with(&cmd, &env, &verify, &mut out).unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), "valid Subscription token\n");
    let bad = Command::Checktoken { config: None, token: "x".into() };
    let err = run_tool_with(&bad, &env, &verify, &mut Vec::new()).unwrap_err();
    assert_eq!(err.to_string(), "invalid token: bad signature");
    let err = run_tool(&bad, &mut Vec::new()).unwrap_err();
    assert!(matches!(err, CliError::VerifierRequired("checktoken")));
}
