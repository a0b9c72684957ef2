//! Reading a config file (JSON/YAML/TOML) into a value tree, applying the env overlay,
//! deserializing into [`Config`] with key paths on every error, and reporting unknown and
//! not-yet-supported keys. Must not validate semantics (that is `validate.rs`) nor read the
//! process environment (the caller passes it).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::unsupported::{is_unsupported, refusal};
use super::{env, Config, ConfigError};

/// File used when no `-c/--config` is given; its absence is not an error.
pub const DEFAULT_CONFIG_FILE: &str = "config.json";

/// Config file format, chosen by extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `.json`
    Json,
    /// `.yaml` / `.yml`
    Yaml,
    /// `.toml`
    Toml,
}

impl Format {
    /// Format by file extension (case-insensitive); `None` for anything else.
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "json" => Some(Format::Json),
            "yaml" | "yml" => Some(Format::Yaml),
            "toml" => Some(Format::Toml),
            _ => None,
        }
    }
}

/// Result of [`load`]: the config plus everything worth telling the operator.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// Defaults ← file ← environment (CLI flags are applied by the caller afterwards).
    pub config: Config,
    /// Human-readable warnings: unknown keys, unsupported Centrifugo keys, unknown
    /// `ROTOR_*`/`CENTRIFUGO_*` variables, missing default file.
    pub warnings: Vec<String>,
    /// Dotted paths of keys Rotor does not know at all (`checkconfig --strict` fails on these;
    /// Centrifugo keys Rotor merely does not implement yet are only in `warnings`).
    pub unknown_keys: Vec<String>,
    /// The file actually read; `None` when the default file was absent.
    pub file: Option<PathBuf>,
}

/// Loads the configuration.
///
/// `path: None` means [`DEFAULT_CONFIG_FILE`], which may be missing (defaults are used).
/// An explicit path that does not exist is an error. `env` is the process environment as
/// `(name, value)` pairs; only `ROTOR_*` and `CENTRIFUGO_*` are looked at.
pub fn load(path: Option<&Path>, env: &[(String, String)]) -> Result<Loaded, ConfigError> {
    let default_path = Path::new(DEFAULT_CONFIG_FILE);
    let file_path = path.unwrap_or(default_path);
    match std::fs::read_to_string(file_path) {
        Ok(text) => load_text(file_path, &text, env),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            if path.is_some() {
                return Err(ConfigError::NotFound { path: file_path.to_path_buf() });
            }
            let warning = format!(
                "config file {DEFAULT_CONFIG_FILE} not found; using defaults, environment and flags"
            );
            from_tree(Value::Object(Map::new()), None, vec![warning], env)
        }
        Err(source) => Err(ConfigError::Read { path: file_path.to_path_buf(), source }),
    }
}

/// [`load`] of a config file's contents already read: `path` names the file (its extension
/// the format) in messages and in [`Loaded::file`]. Nothing is read from the disk.
pub fn load_text(path: &Path, text: &str, env: &[(String, String)]) -> Result<Loaded, ConfigError> {
    let tree = parse_file_text(path, text)?;
    from_tree(tree, Some(path.to_path_buf()), Vec::new(), env)
}

/// The rest of [`load`] once the file is a value tree: the environment overlay, the
/// deserialization and the report of unknown and unsupported keys.
fn from_tree(
    mut tree: Value,
    file: Option<PathBuf>,
    mut warnings: Vec<String>,
    env: &[(String, String)],
) -> Result<Loaded, ConfigError> {
    let overlay = env::apply(&mut tree, env)?;
    warnings.extend(overlay.warnings);

    let input = tree.clone();
    let mut ignored: Vec<Vec<Segment>> = Vec::new();
    let mut on_ignored = |path: serde_ignored::Path<'_>| {
        let mut segments = Vec::new();
        collect_segments(&path, &mut segments);
        ignored.push(segments);
    };
    let result: Result<Config, _> =
        serde_path_to_error::deserialize(serde_ignored::Deserializer::new(tree, &mut on_ignored));
    let config = result.map_err(|err| {
        let key = err.path().to_string();
        let message = err.inner().to_string();
        // A value that came from the environment (or sits inside one, like a namespace from
        // CENTRIFUGO_CHANNEL_NAMESPACES) is reported by its variable.
        let from_env = overlay.sources.iter().find(|(path, _)| {
            key.strip_prefix(path.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
        });
        match from_env {
            Some((_, var)) => {
                ConfigError::Env { var: var.clone(), message: format!("{key}: {message}") }
            }
            None => ConfigError::Value { key, message },
        }
    })?;

    let mut unknown_keys = Vec::new();
    let mut refused = overlay.refused;
    for segments in ignored {
        let pattern = pattern_of(&segments);
        if is_unsupported(&pattern) {
            let shown = display_path(&segments);
            match lookup(&input, &segments).and_then(|v| refusal(&pattern, v)) {
                Some(why) => refused.push((shown, why)),
                None => warnings
                    .push(format!("config key {shown:?} is not supported by rotor yet (ignored)")),
            }
            continue;
        }
        let mut leaves = Vec::new();
        match lookup(&input, &segments) {
            Some(value) => collect_leaves(value, segments, &mut leaves),
            None => leaves.push(segments),
        }
        for leaf in leaves {
            let shown = display_path(&leaf);
            warnings.push(format!("unknown config key {shown:?} (ignored)"));
            unknown_keys.push(shown);
        }
    }

    if !refused.is_empty() {
        return Err(ConfigError::Refused { keys: refused, warnings });
    }
    Ok(Loaded { config, warnings, unknown_keys, file })
}

/// Parses file contents into a value tree by the path's extension; the top level must be an
/// object (an empty file counts as `{}`).
pub fn parse_file_text(path: &Path, text: &str) -> Result<Value, ConfigError> {
    let format = Format::from_path(path)
        .ok_or_else(|| ConfigError::UnsupportedFormat { path: path.to_path_buf() })?;
    let parse_error = |message: String| ConfigError::Parse { path: path.to_path_buf(), message };
    let value = if text.trim().is_empty() {
        Value::Object(Map::new())
    } else {
        match format {
            Format::Json => serde_json::from_str(text).map_err(|e| parse_error(e.to_string()))?,
            Format::Yaml => serde_yaml::from_str(text).map_err(|e| parse_error(e.to_string()))?,
            Format::Toml => toml::from_str(text).map_err(|e| parse_error(e.to_string()))?,
        }
    };
    match value {
        Value::Object(_) => Ok(value),
        Value::Null => Ok(Value::Object(Map::new())),
        _ => Err(parse_error("top level must be an object".to_owned())),
    }
}

/// One step of a key path.
#[derive(Clone, Debug, PartialEq)]
enum Segment {
    Key(String),
    Index(usize),
}

fn collect_segments(path: &serde_ignored::Path<'_>, out: &mut Vec<Segment>) {
    match path {
        serde_ignored::Path::Root => {}
        serde_ignored::Path::Seq { parent, index } => {
            collect_segments(parent, out);
            out.push(Segment::Index(*index));
        }
        serde_ignored::Path::Map { parent, key } => {
            collect_segments(parent, out);
            out.push(Segment::Key(key.clone()));
        }
        serde_ignored::Path::Some { parent }
        | serde_ignored::Path::NewtypeStruct { parent }
        | serde_ignored::Path::NewtypeVariant { parent } => collect_segments(parent, out),
    }
}

/// `channel.namespaces[0].foo`, the same notation serde_path_to_error uses for errors.
fn display_path(segments: &[Segment]) -> String {
    let mut out = String::new();
    for segment in segments {
        match segment {
            Segment::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Index(index) => out.push_str(&format!("[{index}]")),
        }
    }
    out
}

/// Dotted path with array indexes replaced by `*`, for matching against known patterns.
fn pattern_of(segments: &[Segment]) -> String {
    segments
        .iter()
        .map(|segment| match segment {
            Segment::Key(key) => key.as_str(),
            Segment::Index(_) => "*",
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn lookup<'a>(value: &'a Value, segments: &[Segment]) -> Option<&'a Value> {
    segments.iter().try_fold(value, |current, segment| match segment {
        Segment::Key(key) => current.get(key.as_str()),
        Segment::Index(index) => current.get(*index),
    })
}

/// Expands an unknown object into the paths of its leaves so the report shows the full
/// key that was probably mistyped (`client.tokn.hmac_secret_key`).
fn collect_leaves(value: &Value, prefix: Vec<Segment>, out: &mut Vec<Vec<Segment>>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                let mut path = prefix.clone();
                path.push(Segment::Key(key.clone()));
                collect_leaves(child, path, out);
            }
        }
        _ => out.push(prefix),
    }
}
