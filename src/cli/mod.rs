//! Command line: Centrifugo's verbs and flags (spec §8.5, §8.1, §4.7) for the `rotor` binary.
//!
//! Owns argument parsing, applying flags on top of the loaded config, and the offline tool
//! verbs (genconfig, checkconfig, defaultconfig, gentoken, gensubtoken, version). Must not
//! start the server or verify tokens itself: the root command is run by `main`, and
//! `checktoken`/`checksubtoken` call a verifier supplied by the caller ([`run_tool_with`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use clap::{Args, Parser, Subcommand};
use rand::RngCore;
use serde_json::{json, Map, Value};

use crate::config::{self, Config, ConfigError, Format, Loaded, Token};

/// The Centrifugo release whose behaviour Rotor follows.
pub const CENTRIFUGO_COMPAT_VERSION: &str = "6.9.1";

/// Default TTL of tokens made by `gentoken`/`gensubtoken`: one week, in seconds.
pub const DEFAULT_TOKEN_TTL_SECONDS: i64 = 604_800;

/// Random bytes in generated secrets (HMAC key, API key, admin secret).
const SECRET_BYTES: usize = 64;
/// Random bytes in the generated admin password.
const PASSWORD_BYTES: usize = 16;

/// Parsed command line.
#[derive(Debug, Parser)]
#[command(
    name = "rotor",
    about = "Thread-per-core, Centrifugo-compatible real-time messaging server",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// Options of the root command (run the server).
    #[command(flatten)]
    pub serve: ServeArgs,
    /// A tool verb; `None` = run the server.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Flags of the root command. Every field is `None` unless given, so only given flags
/// override env and file (precedence: flags > env > file > defaults).
#[derive(Clone, Debug, Default, Args)]
pub struct ServeArgs {
    /// Config file (.json, .yaml, .yml, .toml); default config.json, which may be absent.
    #[arg(short = 'c', long = "config")]
    pub config: Option<PathBuf>,
    /// http_server.port
    #[arg(short = 'p', long = "port", visible_alias = "http_server.port")]
    pub port: Option<u16>,
    /// http_server.address
    #[arg(short = 'a', long = "address", visible_alias = "http_server.address")]
    pub address: Option<String>,
    /// http_server.internal_address
    #[arg(long = "http_server.internal_address")]
    pub internal_address: Option<String>,
    /// http_server.internal_port
    #[arg(long = "http_server.internal_port")]
    pub internal_port: Option<u16>,
    /// runtime.shards (0 = one per core)
    #[arg(long = "shards", visible_alias = "runtime.shards")]
    pub shards: Option<usize>,
    /// engine.type
    #[arg(long = "engine.type")]
    pub engine_type: Option<String>,
    /// log.level (none, trace, debug, info, warn, error)
    #[arg(long = "log.level")]
    pub log_level: Option<String>,
    /// log.file
    #[arg(long = "log.file")]
    pub log_file: Option<String>,
    /// client.insecure
    #[arg(long = "client.insecure", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub client_insecure: Option<bool>,
    /// http_api.insecure
    #[arg(long = "http_api.insecure", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub http_api_insecure: Option<bool>,
    /// http_api.external
    #[arg(long = "http_api.external", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub http_api_external: Option<bool>,
    /// health.enabled
    #[arg(long = "health.enabled", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub health_enabled: Option<bool>,
    /// admin.enabled
    #[arg(long = "admin.enabled", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub admin_enabled: Option<bool>,
    /// admin.insecure
    #[arg(long = "admin.insecure", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub admin_insecure: Option<bool>,
    /// admin.external
    #[arg(long = "admin.external", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub admin_external: Option<bool>,
    /// prometheus.enabled
    #[arg(long = "prometheus.enabled", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub prometheus_enabled: Option<bool>,
}

/// Boolean flag values follow Go's `ParseBool` like Centrifugo's flags.
fn go_bool(text: &str) -> Result<bool, String> {
    config::parse_go_bool(text).ok_or_else(|| format!("invalid boolean {text:?}"))
}

/// Tool verbs.
#[derive(Clone, Debug, Subcommand)]
pub enum Command {
    /// Print the version.
    Version,
    /// Write a minimal config with random secrets (refuses to overwrite).
    Genconfig {
        /// Output file; the extension picks JSON, YAML or TOML.
        #[arg(short = 'c', long = "config", default_value = config::DEFAULT_CONFIG_FILE)]
        config: PathBuf,
        /// Make the file readable by this group (mode 0640 instead of 0600), e.g. the
        /// service's `rotor` group when root writes /etc/rotor/config.json.
        #[arg(long = "group")]
        group: Option<String>,
    },
    /// Load and validate a config file.
    Checkconfig {
        /// Config file (must exist).
        #[arg(short = 'c', long = "config", default_value = config::DEFAULT_CONFIG_FILE)]
        config: PathBuf,
        /// Kept for Centrifugo's command line: unknown keys fail the check either way (a
        /// typo in a security key must not pass CI).
        #[arg(short = 's', long = "strict")]
        strict: bool,
    },
    /// Print or write the full config with defaults.
    Defaultconfig {
        /// Output file; the extension picks JSON, YAML or TOML.
        #[arg(short = 'c', long = "config", default_value = config::DEFAULT_CONFIG_FILE)]
        config: PathBuf,
        /// Print to stdout instead of writing the file.
        #[arg(short = 'd', long = "dry-run")]
        dry_run: bool,
    },
    /// Make an HS256 connection token with client.token.hmac_secret_key.
    Gentoken {
        /// Config file; default config.json, which may be absent (env is used too).
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
        /// User id ("" = anonymous).
        #[arg(short = 'u', long = "user", default_value = "")]
        user: String,
        /// Lifetime in seconds; -1 = no expiration.
        #[arg(short = 't', long = "ttl", default_value_t = DEFAULT_TOKEN_TTL_SECONDS,
              allow_negative_numbers = true)]
        ttl: i64,
        /// Print only the token.
        #[arg(short = 'q', long = "quiet")]
        quiet: bool,
    },
    /// Make an HS256 subscription token.
    Gensubtoken {
        /// Config file; default config.json, which may be absent (env is used too).
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
        /// User id ("" = anonymous).
        #[arg(short = 'u', long = "user", default_value = "")]
        user: String,
        /// Channel.
        #[arg(short = 's', long = "channel")]
        channel: String,
        /// Lifetime in seconds; -1 = no expiration.
        #[arg(short = 't', long = "ttl", default_value_t = DEFAULT_TOKEN_TTL_SECONDS,
              allow_negative_numbers = true)]
        ttl: i64,
        /// Print only the token.
        #[arg(short = 'q', long = "quiet")]
        quiet: bool,
    },
    /// Verify a connection token and print its claims.
    Checktoken {
        /// Config file; default config.json, which may be absent (env is used too).
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
        /// The JWT.
        token: String,
    },
    /// Verify a subscription token and print its claims.
    Checksubtoken {
        /// Config file; default config.json, which may be absent (env is used too).
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
        /// The JWT.
        token: String,
    },
}

/// Which verifier `checktoken`/`checksubtoken` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// Connection token (`client.token`).
    Connection,
    /// Subscription token (`client.subscription_token` when enabled, else `client.token`).
    Subscription,
}

/// Verifies a token against the loaded config; `Ok` holds the text to print (for example
/// the claims), `Err` the reason the token is invalid.
pub type TokenVerifier<'a> = &'a dyn Fn(&Config, TokenKind, &str) -> Result<String, String>;

/// Errors of the tool verbs; `main` prints them and exits non-zero.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// Loading or validating the config failed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `genconfig --group` names a group this system does not have.
    #[error("group {0:?} does not exist")]
    UnknownGroup(String),
    /// `genconfig`/`defaultconfig` would overwrite a file.
    #[error("{path}: file already exists, refusing to overwrite")]
    Exists {
        /// The target.
        path: PathBuf,
    },
    /// Writing the target file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The target.
        path: PathBuf,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// Writing to the output stream failed.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
    /// The output extension is not json, yaml, yml or toml.
    #[error("{path}: unsupported format (use .json, .yaml, .yml or .toml)")]
    Format {
        /// The target.
        path: PathBuf,
    },
    /// Serializing a config failed.
    #[error("cannot serialize config: {0}")]
    Serialize(String),
    /// `gentoken`/`gensubtoken` has no HMAC secret to sign with.
    #[error("{key} is not set: HMAC secret required to generate tokens")]
    MissingSecret {
        /// The config key that must be set.
        key: &'static str,
    },
    /// Signing failed.
    #[error("cannot sign token: {0}")]
    Sign(String),
    /// `checkconfig` found unknown keys.
    #[error("unknown config keys: {}", .0.join(", "))]
    UnknownKeys(Vec<String>),
    /// `checktoken`/`checksubtoken` rejected the token.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// `checktoken`/`checksubtoken` was run through [`run_tool`], which has no verifier.
    #[error("{0} needs a token verifier (use run_tool_with)")]
    VerifierRequired(&'static str),
}

/// Parses `std::env::args()`; exits with usage on error (clap's behaviour).
pub fn parse() -> Cli {
    Cli::parse()
}

/// `Rotor v<crate version> (Centrifugo-compatible 6.9.1)`.
pub fn version_line() -> String {
    format!(
        "Rotor v{} (Centrifugo-compatible {CENTRIFUGO_COMPAT_VERSION})",
        env!("CARGO_PKG_VERSION")
    )
}

/// Applies the given root-command flags on top of `config`.
pub fn apply_flags(args: &ServeArgs, config: &mut Config) {
    fn set<T: Clone>(flag: &Option<T>, target: &mut T) {
        if let Some(value) = flag {
            *target = value.clone();
        }
    }
    set(&args.port, &mut config.http_server.port);
    set(&args.address, &mut config.http_server.address);
    set(&args.internal_address, &mut config.http_server.internal_address);
    set(&args.internal_port, &mut config.http_server.internal_port);
    set(&args.shards, &mut config.runtime.shards);
    set(&args.engine_type, &mut config.engine.type_);
    set(&args.log_level, &mut config.log.level);
    set(&args.log_file, &mut config.log.file);
    set(&args.client_insecure, &mut config.client.insecure);
    set(&args.http_api_insecure, &mut config.http_api.insecure);
    set(&args.http_api_external, &mut config.http_api.external);
    set(&args.health_enabled, &mut config.health.enabled);
    set(&args.admin_enabled, &mut config.admin.enabled);
    set(&args.admin_insecure, &mut config.admin.insecure);
    set(&args.admin_external, &mut config.admin.external);
    set(&args.prometheus_enabled, &mut config.prometheus.enabled);
}

/// The root command's config: file (`-c`, default config.json which may be absent) ←
/// env ← flags, then validated. `env` is normally `std::env::vars().collect()`.
pub fn load_config(args: &ServeArgs, env: &[(String, String)]) -> Result<Loaded, ConfigError> {
    let mut loaded = config::load(args.config.as_deref(), env)?;
    apply_flags(args, &mut loaded.config);
    config::validate(&loaded.config)?;
    Ok(loaded)
}

/// Runs a tool verb with the process environment. `checktoken`/`checksubtoken` return
/// [`CliError::VerifierRequired`] here; use [`run_tool_with`] to supply a verifier.
pub fn run_tool(cmd: &Command, out: &mut dyn Write) -> Result<(), CliError> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let no_verifier = |_: &Config, kind: TokenKind, _: &str| -> Result<String, String> {
        Err(match kind {
            TokenKind::Connection => "checktoken",
            TokenKind::Subscription => "checksubtoken",
        }
        .to_owned())
    };
    match cmd {
        Command::Checktoken { .. } => Err(CliError::VerifierRequired("checktoken")),
        Command::Checksubtoken { .. } => Err(CliError::VerifierRequired("checksubtoken")),
        _ => run_tool_with(cmd, &env, &no_verifier, out),
    }
}

/// Runs a tool verb with an explicit environment and token verifier (testable; `main`
/// passes `std::env::vars()` and the auth module's verifier).
pub fn run_tool_with(
    cmd: &Command,
    env: &[(String, String)],
    verify: TokenVerifier<'_>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match cmd {
        Command::Version => writeln!(out, "{}", version_line())?,
        Command::Genconfig { config, group } => genconfig(config, group.as_deref())?,
        Command::Checkconfig { config, .. } => {
            let loaded = match config::load(Some(config), env) {
                Err(ConfigError::Refused { keys, warnings }) => {
                    // Both lists: what is skipped, then (as the error) what is refused.
                    for warning in &warnings {
                        writeln!(out, "warning: {warning}")?;
                    }
                    return Err(ConfigError::Refused { keys, warnings }.into());
                }
                loaded => loaded?,
            };
            for warning in &loaded.warnings {
                writeln!(out, "warning: {warning}")?;
            }
            config::validate(&loaded.config)?;
            if !loaded.unknown_keys.is_empty() {
                return Err(CliError::UnknownKeys(loaded.unknown_keys));
            }
        }
        Command::Defaultconfig { config, dry_run } => {
            let text = render(config, &Config::default().to_value())?;
            if *dry_run {
                out.write_all(text.as_bytes())?;
            } else {
                write_new_file(config, &text, 0o644)?;
            }
        }
        Command::Gentoken { config, user, ttl, quiet } => {
            let loaded = config::load(config.as_deref(), env)?;
            let token = &loaded.config.client.token;
            let jwt = sign(token, "client.token.hmac_secret_key", user, None, *ttl)?;
            print_token(out, &jwt, &describe(user, None, *ttl), *quiet)?;
        }
        Command::Gensubtoken { config, user, channel, ttl, quiet } => {
            let loaded = config::load(config.as_deref(), env)?;
            let sub = &loaded.config.client.subscription_token;
            let (token, key) = if sub.enabled {
                (&sub.token, "client.subscription_token.hmac_secret_key")
            } else {
                (&loaded.config.client.token, "client.token.hmac_secret_key")
            };
            let jwt = sign(token, key, user, Some(channel), *ttl)?;
            print_token(out, &jwt, &describe(user, Some(channel), *ttl), *quiet)?;
        }
        Command::Checktoken { config, token } | Command::Checksubtoken { config, token } => {
            let kind = if matches!(cmd, Command::Checktoken { .. }) {
                TokenKind::Connection
            } else {
                TokenKind::Subscription
            };
            let loaded = config::load(config.as_deref(), env)?;
            let text = verify(&loaded.config, kind, token).map_err(CliError::InvalidToken)?;
            writeln!(out, "{text}")?;
        }
    }
    Ok(())
}

/// `genconfig`: the §8.4 minimal config with fresh random secrets, mode 0600.
fn genconfig(path: &Path, group: Option<&str>) -> Result<(), CliError> {
    // Resolved first: a group that does not exist leaves no file behind.
    let gid = group.map(group_id).transpose()?;
    let minimal = json!({
        "client": {
            "token": {"hmac_secret_key": random_secret(SECRET_BYTES)},
            "allowed_origins": [],
        },
        "admin": {
            "enabled": false,
            "password": random_secret(PASSWORD_BYTES),
            "secret": random_secret(SECRET_BYTES),
        },
        "http_api": {"key": random_secret(SECRET_BYTES)},
    });
    let text = render(path, &minimal)?;
    write_new_file(path, &text, if gid.is_some() { 0o640 } else { 0o600 })?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, None, Some(gid))
            .map_err(|source| CliError::Write { path: path.to_path_buf(), source })?;
    }
    Ok(())
}

/// The id of group `name`, from /etc/group.
fn group_id(name: &str) -> Result<u32, CliError> {
    let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
    groups
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let (group, _, gid) = (fields.next()?, fields.next()?, fields.next()?);
            (group == name).then(|| gid.parse().ok()).flatten()
        })
        .next()
        .ok_or_else(|| CliError::UnknownGroup(name.to_owned()))
}

/// `n` random bytes, base64url without padding.
fn random_secret(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Serializes `value` in the format picked by `path`'s extension.
fn render(path: &Path, value: &Value) -> Result<String, CliError> {
    let format =
        Format::from_path(path).ok_or_else(|| CliError::Format { path: path.to_path_buf() })?;
    let text = match format {
        Format::Json => {
            serde_json::to_string_pretty(value).map(|s| s + "\n").map_err(|e| e.to_string())
        }
        Format::Yaml => serde_yaml::to_string(value).map_err(|e| e.to_string()),
        Format::Toml => toml::to_string(value).map_err(|e| e.to_string()),
    };
    text.map_err(CliError::Serialize)
}

/// Creates `path` (never overwriting) with the given Unix mode and writes `text`.
fn write_new_file(path: &Path, text: &str, mode: u32) -> Result<(), CliError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path);
    let mut file = match file {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(CliError::Exists { path: path.to_path_buf() })
        }
        Err(source) => return Err(CliError::Write { path: path.to_path_buf(), source }),
    };
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| CliError::Write { path: path.to_path_buf(), source })
}

/// Signs an HS256 token: user claim (`sub` or `user_id_claim`), `iat`, `exp` when
/// `ttl > 0`, and `channel` for subscription tokens.
fn sign(
    token: &Token,
    key: &'static str,
    user: &str,
    channel: Option<&str>,
    ttl: i64,
) -> Result<String, CliError> {
    if token.hmac_secret_key.is_empty() {
        return Err(CliError::MissingSecret { key });
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    let mut claims = Map::new();
    let user_claim =
        if token.user_id_claim.is_empty() { "sub" } else { token.user_id_claim.as_str() };
    claims.insert(user_claim.to_owned(), Value::from(user));
    if let Some(channel) = channel {
        claims.insert("channel".to_owned(), Value::from(channel));
    }
    claims.insert("iat".to_owned(), Value::from(now));
    if ttl > 0 {
        claims.insert("exp".to_owned(), Value::from(now.saturating_add(ttl)));
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(token.hmac_secret_key.as_bytes()),
    )
    .map_err(|e| CliError::Sign(e.to_string()))
}

/// `user "u" and channel "c" with expiration TTL 168h0m0s` (Centrifugo's wording).
fn describe(user: &str, channel: Option<&str>, ttl: i64) -> String {
    let mut text =
        if user.is_empty() { "anonymous user".to_owned() } else { format!("user {user:?}") };
    if let Some(channel) = channel {
        text.push_str(&format!(" and channel {channel:?}"));
    }
    match u64::try_from(ttl) {
        Ok(secs) if secs > 0 => text.push_str(&format!(
            " with expiration TTL {}",
            config::duration::format(Duration::from_secs(secs))
        )),
        _ => text.push_str(" without expiration"),
    }
    text
}

fn print_token(out: &mut dyn Write, jwt: &str, what: &str, quiet: bool) -> std::io::Result<()> {
    if quiet {
        writeln!(out, "{jwt}")
    } else {
        writeln!(out, "HMAC SHA-256 JWT for {what}:\n{jwt}")
    }
}

#[cfg(test)]
mod tests;
