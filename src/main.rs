//! The `rotor` binary: CLI verbs, configuration loading, and running the server.

use std::io::Write;
use std::process::ExitCode;

use mimalloc::MiMalloc;
use rotor::cli::{self, TokenKind};
use rotor::config::Config;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() -> ExitCode {
    // A panic kills only the executor thread it happens on; a shard that silently vanished would
    // leave its channels and connections dead while the process looks healthy. Abort instead,
    // so the service manager restarts a whole, consistent server.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        std::process::abort();
    }));
    let args = cli::parse();
    match &args.command {
        None => serve(&args.serve),
        Some(cmd) => {
            let env: Vec<(String, String)> = std::env::vars().collect();
            let mut out = std::io::stdout().lock();
            match cli::run_tool_with(cmd, &env, &verify_token, &mut out) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    let _ = out.flush();
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `checktoken` / `checksubtoken`: verify with the configured keys and show the claims.
fn verify_token(cfg: &Config, kind: TokenKind, token: &str) -> Result<String, String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    match kind {
        TokenKind::Connection => {
            let v = rotor::auth::TokenVerifier::for_connections(&cfg.client)
                .map_err(|e| e.to_string())?;
            let c = with_fetched_keys(&v, token, |v| v.verify_connection(token, now))
                .map_err(token_error)?;
            Ok(format!(
                "valid connection token for user {:?}; exp: {}; channels: {:?}",
                c.user,
                c.exp.map_or("none".to_string(), |e| e.to_string()),
                c.channels
            ))
        }
        TokenKind::Subscription => {
            let v = rotor::auth::TokenVerifier::for_subscriptions(&cfg.client)
                .map_err(|e| e.to_string())?;
            let c = with_fetched_keys(&v, token, |v| v.verify_subscription(token, now))
                .map_err(token_error)?;
            Ok(format!(
                "valid subscription token for user {:?} and channel {:?}; exp: {}",
                c.user,
                c.channel,
                c.exp.map_or("none".to_string(), |e| e.to_string())
            ))
        }
    }
}

/// JWKS mode: a one-shot CLI starts with an empty key cache, so wait for the fetch
/// (blocking is fine here, no shard runs) and verify once more.
fn with_fetched_keys<T>(
    v: &rotor::auth::TokenVerifier,
    token: &str,
    verify: impl Fn(&rotor::auth::TokenVerifier) -> Result<T, rotor::auth::TokenError>,
) -> Result<T, rotor::auth::TokenError> {
    match verify(v) {
        Err(rotor::auth::TokenError::KeysPending) => {
            if let Some(fetch) = v.fetch_keys(token) {
                futures_lite::future::block_on(fetch);
            }
            match verify(v) {
                Err(rotor::auth::TokenError::KeysPending) => {
                    Err(rotor::auth::TokenError::Invalid("signing keys unavailable".into()))
                }
                other => other,
            }
        }
        other => other,
    }
}

/// The reason alone: the CLI already says "invalid token".
fn token_error(e: rotor::auth::TokenError) -> String {
    match e {
        rotor::auth::TokenError::Invalid(reason) => reason.into_owned(),
        other => other.to_string(),
    }
}

fn serve(args: &cli::ServeArgs) -> ExitCode {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let loaded = match cli::load_config(args, &env) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut cfg = loaded.config;
    if let Err(e) = init_logging(&cfg) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    if loaded.file.is_none() {
        embedded_defaults(&mut cfg);
    }
    match rotor::runtime::run(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr as text, or as JSON lines with `log.format: json`; with `log.file` they
/// are JSON lines appended to that file (as upstream writes it). `ROTOR_LOG` overrides the
/// level with a filter (e.g. `rotor::proxy=debug`).
fn init_logging(cfg: &Config) -> Result<(), String> {
    let level = match cfg.log.level.as_str() {
        "none" => "off",
        other => other,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("ROTOR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let fmt = tracing_subscriber::fmt().with_env_filter(filter);
    if !cfg.log.file.is_empty() {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&cfg.log.file)
            .map_err(|e| format!("log.file: cannot open {:?}: {e}", cfg.log.file))?;
        // A lock per line written: logging is never on the fan-out path.
        let _ = fmt.json().with_writer(std::sync::Mutex::new(file)).try_init();
    } else if cfg.log.format == "json" {
        let _ = fmt.json().with_writer(std::io::stderr).try_init();
    } else {
        let _ = fmt.with_writer(std::io::stderr).try_init();
    }
    Ok(())
}

/// No config file: make the server usable for this run and say how to use it.
fn embedded_defaults(cfg: &mut Config) {
    use base64::Engine;
    use rand::RngCore;
    let random = |n: usize| {
        let mut bytes = vec![0u8; n];
        rand::rng().fill_bytes(&mut bytes);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    };
    if cfg.client.token.hmac_secret_key.is_empty() {
        cfg.client.token.hmac_secret_key = random(32);
    }
    if cfg.http_api.key.is_empty() && !cfg.http_api.insecure {
        cfg.http_api.key = random(24);
    }
    cfg.channel.without_namespace.allow_subscribe_for_client = true;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let token = rotor::auth::encode_hs256(
        &cfg.client.token.hmac_secret_key,
        &serde_json::json!({"sub": "demo", "iat": now, "exp": now + 86_400}),
    )
    .unwrap_or_default();
    let port = cfg.http_server.port;
    println!("No configuration file found: running with embedded defaults for this run only.");
    println!("  client.token.hmac_secret_key: {}", cfg.client.token.hmac_secret_key);
    println!("  http_api.key:                 {}", cfg.http_api.key);
    println!("  channels without namespace: clients may subscribe");
    println!("A token for user \"demo\" (valid 24h):\n  {token}");
    println!("Connect: ws://localhost:{port}/connection/websocket");
    println!(
        "Publish: curl -s -X POST http://localhost:{port}/api/publish -H 'X-API-Key: {}' -d '{{\"channel\":\"news\",\"data\":{{\"text\":\"hello\"}}}}'",
        cfg.http_api.key
    );
    println!("Write a config with: rotor genconfig");
}
