//! Environment overlay (spec §8.1): `ROTOR_<PATH>` and `CENTRIFUGO_<PATH>` variables
//! written into the value tree before it is deserialized, so env beats the file and both
//! go through the same type checks. Known paths come from the serialized default config,
//! never from a second hand-written list. Must not read `std::env` itself.

use std::collections::BTreeMap;

use serde_json::{Map, Number, Value};

use super::channel::ChannelOptions;
use super::unsupported::{refusal, unsupported_patterns};
use super::{Config, ConfigError};

/// Prefixes in increasing priority: a `ROTOR_` variable wins over the `CENTRIFUGO_` one.
const PREFIXES: [&str; 2] = ["CENTRIFUGO_", "ROTOR_"];

/// Key paths holding arrays of objects, which take a JSON string instead of words.
const JSON_ARRAY_PATHS: &[&str] = &["channel.namespaces", "proxies", "rpc.namespaces"];

const NAMESPACES_SUFFIX: &str = "CHANNEL_NAMESPACES";

/// What the overlay did.
#[derive(Debug, Default)]
pub(crate) struct Overlay {
    /// Unknown or unsupported variables.
    pub warnings: Vec<String>,
    /// `(key path as serde_path_to_error prints it, variable)` for every value set, so a
    /// later type error can name the variable instead of the key.
    pub sources: Vec<(String, String)>,
    /// Variables that switch on a key Rotor relies on but does not implement yet: the
    /// variable and what Rotor would fail to do.
    pub refused: Vec<(String, &'static str)>,
}

/// Applies matching variables from `env` onto `tree` (a JSON object).
pub(crate) fn apply(tree: &mut Value, env: &[(String, String)]) -> Result<Overlay, ConfigError> {
    let mut overlay = Overlay::default();

    // suffix -> (variable, value); iterating prefixes by priority lets ROTOR_ overwrite.
    let mut vars: BTreeMap<String, (String, String)> = BTreeMap::new();
    for prefix in PREFIXES {
        for (name, value) in env {
            if value.is_empty() {
                continue; // empty counts as unset
            }
            if let Some(suffix) = name.strip_prefix(prefix) {
                vars.insert(suffix.to_owned(), (name.clone(), value.clone()));
            }
        }
    }

    let known = known_leaves(&Config::default().to_value());
    let option_leaves = known_leaves(&serialize_options());
    let unsupported: Vec<(String, String)> = unsupported_patterns()
        .into_iter()
        .filter(|p| !p.contains('*'))
        .map(|p| (env_name(&p), p))
        .collect();

    // The namespaces array must be in place before per-namespace overrides.
    if let Some((var, value)) = vars.get(NAMESPACES_SUFFIX) {
        let parsed = convert(var, value, &Value::Array(Vec::new()), true)?;
        set_path(tree, &["channel", "namespaces"], parsed);
        overlay.sources.push(("channel.namespaces".to_owned(), var.clone()));
    }

    let mut per_namespace = Vec::new();
    for (suffix, (var, value)) in &vars {
        if suffix == NAMESPACES_SUFFIX {
            continue;
        }
        if suffix.starts_with("VAR_") {
            continue; // CENTRIFUGO_VAR_* are values referenced from other settings
        }
        if let Some((path, default)) = known.get(suffix) {
            let dotted = path.join(".");
            let parsed = convert(var, value, default, JSON_ARRAY_PATHS.contains(&dotted.as_str()))?;
            let keys: Vec<&str> = path.iter().map(String::as_str).collect();
            set_path(tree, &keys, parsed);
            overlay.sources.push((dotted, var.clone()));
        } else if suffix.starts_with(&format!("{NAMESPACES_SUFFIX}_")) {
            per_namespace.push((suffix, var, value));
        } else if let Some((name, dotted)) =
            unsupported.iter().find(|(u, _)| suffix == u || suffix.starts_with(&format!("{u}_")))
        {
            // `UNI_GRPC_ENABLED` is judged as `uni_grpc.enabled`.
            let below = suffix[name.len()..].to_ascii_lowercase().replace('_', ".");
            let value = Value::String(value.clone());
            match refusal(&format!("{dotted}{below}"), &value) {
                Some(why) => overlay.refused.push((var.clone(), why)),
                None => overlay.warnings.push(format!(
                    "environment variable {var} is not supported by rotor yet (ignored)"
                )),
            }
        } else {
            overlay.warnings.push(format!("unknown environment variable {var} (ignored)"));
        }
    }

    for (suffix, var, value) in per_namespace {
        match find_namespace_option(tree, suffix, &option_leaves) {
            Some((index, option, default)) => {
                let parsed = convert(var, value, &default, false)?;
                if let Some(item) = tree
                    .get_mut("channel")
                    .and_then(|c| c.get_mut("namespaces"))
                    .and_then(|n| n.get_mut(index))
                    .and_then(Value::as_object_mut)
                {
                    item.insert(option.clone(), parsed);
                }
                overlay.sources.push((format!("channel.namespaces[{index}].{option}"), var.clone()));
            }
            None => overlay.warnings.push(format!(
                "unknown environment variable {var} (no such namespace defined, or unknown option; ignored)"
            )),
        }
    }

    Ok(overlay)
}

/// Env name (without prefix) of a dotted key path.
fn env_name(dotted: &str) -> String {
    dotted.replace(['.', '-'], "_").to_ascii_uppercase()
}

fn serialize_options() -> Value {
    serde_json::to_value(ChannelOptions::default()).unwrap_or(Value::Null)
}

/// Env name → (key path, default value) for every non-object leaf of `defaults`.
fn known_leaves(defaults: &Value) -> BTreeMap<String, (Vec<String>, Value)> {
    fn walk(
        value: &Value,
        path: &mut Vec<String>,
        out: &mut BTreeMap<String, (Vec<String>, Value)>,
    ) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    path.push(key.clone());
                    walk(child, path, out);
                    path.pop();
                }
            }
            leaf => {
                out.insert(env_name(&path.join(".")), (path.clone(), leaf.clone()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(defaults, &mut Vec::new(), &mut out);
    out
}

/// Matches `CHANNEL_NAMESPACES_<NAME>_<OPTION>` against the namespaces present in `tree`.
fn find_namespace_option(
    tree: &Value,
    suffix: &str,
    options: &BTreeMap<String, (Vec<String>, Value)>,
) -> Option<(usize, String, Value)> {
    let rest = suffix.strip_prefix(NAMESPACES_SUFFIX)?.strip_prefix('_')?;
    let namespaces = tree.get("channel")?.get("namespaces")?.as_array()?;
    for (index, namespace) in namespaces.iter().enumerate() {
        let Some(name) = namespace.get("name").and_then(Value::as_str) else { continue };
        let Some(option_env) = rest.strip_prefix(&env_name(name)).and_then(|r| r.strip_prefix('_'))
        else {
            continue;
        };
        if let Some((path, default)) = options.get(option_env) {
            if path.len() == 1 && namespace.is_object() {
                return Some((index, path[0].clone(), default.clone()));
            }
        }
    }
    None
}

/// Converts a variable's text by the JSON type of the key's default.
fn convert(var: &str, text: &str, default: &Value, json_array: bool) -> Result<Value, ConfigError> {
    let error = |message: String| ConfigError::Env { var: var.to_owned(), message };
    match default {
        Value::Bool(_) => parse_go_bool(text)
            .map(Value::Bool)
            .ok_or_else(|| error(format!("invalid boolean {text:?} (use true/false/1/0/t/f)"))),
        Value::Number(_) => parse_number(text.trim())
            .map(Value::Number)
            .ok_or_else(|| error(format!("invalid number {text:?}"))),
        Value::Array(_) if json_array => match serde_json::from_str::<Value>(text) {
            Ok(value @ Value::Array(_)) => Ok(value),
            Ok(_) => Err(error("expected a JSON array".to_owned())),
            Err(err) => Err(error(format!("invalid JSON: {err}"))),
        },
        Value::Array(_) => {
            Ok(Value::Array(text.split_whitespace().map(|w| Value::String(w.to_owned())).collect()))
        }
        Value::String(_) | Value::Null | Value::Object(_) => Ok(Value::String(text.to_owned())),
    }
}

/// Go's `strconv.ParseBool`: 1,t,T,TRUE,true,True and 0,f,F,FALSE,false,False.
pub fn parse_go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn parse_number(text: &str) -> Option<Number> {
    if let Ok(n) = text.parse::<u64>() {
        return Some(Number::from(n));
    }
    if let Ok(n) = text.parse::<i64>() {
        return Some(Number::from(n));
    }
    text.parse::<f64>().ok().and_then(Number::from_f64)
}

/// Sets `value` at `keys`, creating (or replacing non-object) intermediate objects.
fn set_path(tree: &mut Value, keys: &[&str], value: Value) {
    let Some((last, parents)) = keys.split_last() else { return };
    let mut current = tree;
    for key in parents {
        if !current.is_object() {
            *current = Value::Object(Map::new());
        }
        let Value::Object(map) = current else { return };
        current = map.entry((*key).to_owned()).or_insert_with(|| Value::Object(Map::new()));
    }
    if !current.is_object() {
        *current = Value::Object(Map::new());
    }
    if let Value::Object(map) = current {
        map.insert((*last).to_owned(), value);
    }
}
