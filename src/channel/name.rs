//! Channel name grammar and namespace resolution (spec §5.1/§5.2).
//!
//! Owns: the immutable namespace table built from `config::Channel` (with each
//! namespace's compiled `channel_regex`), name validation (length, ASCII, regex), and
//! splitting a name into private prefix, namespace and user-limited part. Must not
//! decide permissions (see `permission.rs`) or hold any per-channel runtime state.

use std::collections::HashMap;

use regex::Regex;

use crate::config::{self, ChannelOptions};

use super::{ChannelConfigError, ChannelError};

/// Namespace table and name grammar for one server. Built once, shared read-only.
#[derive(Clone, Debug)]
pub struct Namespaces {
    without_namespace: Namespace,
    by_name: HashMap<String, Namespace>,
    max_length: usize,
    private_prefix: String,
    namespace_boundary: String,
    user_boundary: String,
    user_separator: String,
}

/// One namespace's options with its `channel_regex` compiled once at startup.
#[derive(Clone, Debug)]
struct Namespace {
    options: ChannelOptions,
    channel_regex: Option<Regex>,
}

impl Namespace {
    /// `meta_ttl`: `channel.history_meta_ttl`, used where the namespace leaves it at zero.
    fn new(
        options: &ChannelOptions,
        regex_key: &str,
        meta_ttl: std::time::Duration,
    ) -> Result<Self, ChannelConfigError> {
        let channel_regex = if options.channel_regex.is_empty() {
            None
        } else {
            let compiled =
                Regex::new(&options.channel_regex).map_err(|e| ChannelConfigError::Invalid {
                    key: regex_key.to_owned(),
                    reason: format!("not a valid regular expression: {e}"),
                })?;
            Some(compiled)
        };
        let mut options = options.clone();
        if options.history_meta_ttl.is_zero() {
            options.history_meta_ttl = meta_ttl;
        }
        Ok(Namespace { options, channel_regex })
    }
}

/// A channel name resolved against the namespace table.
#[derive(Clone, Debug)]
pub struct Resolved<'a> {
    pub options: &'a ChannelOptions,
    /// `None` for channels using `channel.without_namespace`.
    pub namespace: Option<&'a str>,
    /// Starts with `channel.private_prefix` (`$`): subscribe needs a token.
    pub private: bool,
    /// Users listed after the last `channel.user_boundary` (`#`), split by
    /// `channel.user_separator`, empty ids dropped. `Some` whenever the name contains
    /// the boundary, even with an empty list (then nobody matches).
    pub user_limited: Option<Vec<&'a str>>,
    /// The namespace's compiled `channel_regex`.
    channel_regex: Option<&'a Regex>,
    /// What `channel_regex` is matched against: the name after the private prefix and,
    /// in a namespace, after the first namespace boundary.
    regex_subject: &'a str,
}

impl Resolved<'_> {
    /// `user` appears in the channel's user list.
    pub fn user_listed(&self, user: &str) -> bool {
        self.user_limited.as_ref().is_some_and(|users| users.contains(&user))
    }
}

/// The namespace's `channel_regex` check (spec §5.1/§5.2) for client-side commands:
/// `BadRequest` (107) when the regex is set and does not match. [`Namespaces::resolve`]
/// does not apply it because server API calls and token-granted server-side
/// subscriptions are exempt, as upstream.
pub fn check_name(r: &Resolved<'_>) -> Result<(), ChannelError> {
    match r.channel_regex {
        Some(regex) if !regex.is_match(r.regex_subject) => Err(ChannelError::BadRequest),
        _ => Ok(()),
    }
}

fn valid_namespace_name(name: &str) -> bool {
    name.len() >= 2
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Namespaces {
    pub fn new(cfg: &config::Channel) -> Result<Self, ChannelConfigError> {
        for (key, value) in [
            ("channel.private_prefix", &cfg.private_prefix),
            ("channel.namespace_boundary", &cfg.namespace_boundary),
            ("channel.user_boundary", &cfg.user_boundary),
            ("channel.user_separator", &cfg.user_separator),
        ] {
            if value.is_empty() {
                return Err(ChannelConfigError::Invalid {
                    key: key.into(),
                    reason: "must not be empty".into(),
                });
            }
        }
        let without_namespace = Namespace::new(
            &cfg.without_namespace,
            "channel.without_namespace.channel_regex",
            cfg.history_meta_ttl,
        )?;
        let mut by_name = HashMap::with_capacity(cfg.namespaces.len());
        for (i, ns) in cfg.namespaces.iter().enumerate() {
            let key = |field: &str| format!("channel.namespaces[{i}].{field}");
            if !valid_namespace_name(&ns.name) {
                return Err(ChannelConfigError::Invalid {
                    key: key("name"),
                    reason: format!("{:?} must match ^[-a-zA-Z0-9_.]{{2,}}$", ns.name),
                });
            }
            let namespace =
                Namespace::new(&ns.options, &key("channel_regex"), cfg.history_meta_ttl)?;
            if by_name.insert(ns.name.clone(), namespace).is_some() {
                return Err(ChannelConfigError::Invalid {
                    key: key("name"),
                    reason: format!("namespace {:?} is defined twice", ns.name),
                });
            }
        }
        Ok(Namespaces {
            without_namespace,
            by_name,
            max_length: cfg.max_length,
            private_prefix: cfg.private_prefix.clone(),
            namespace_boundary: cfg.namespace_boundary.clone(),
            user_boundary: cfg.user_boundary.clone(),
            user_separator: cfg.user_separator.clone(),
        })
    }

    /// Resolves `channel` to its options. An empty name is `BadRequest` here; the
    /// client protocol layer treats it as a protocol violation (3501) before calling.
    pub fn resolve<'a>(&'a self, channel: &'a str) -> Result<Resolved<'a>, ChannelError> {
        if channel.is_empty() || (self.max_length > 0 && channel.len() > self.max_length) {
            return Err(ChannelError::BadRequest);
        }
        // Control characters (NUL first of all) are never part of a name anyone can type,
        // and would travel unescaped into logs, Redis keys and NATS subjects.
        if channel.bytes().any(|b| b < 0x20 || b == 0x7f) {
            return Err(ChannelError::BadRequest);
        }
        let (private, rest) = match channel.strip_prefix(self.private_prefix.as_str()) {
            Some(rest) => (true, rest),
            None => (false, channel),
        };
        // An empty namespace part (`:x`) falls back to the default options, as upstream.
        let (namespace, entry, regex_subject) =
            match rest.split_once(self.namespace_boundary.as_str()) {
                Some((name, after)) if !name.is_empty() => match self.by_name.get_key_value(name) {
                    Some((name, entry)) => (Some(name.as_str()), entry, after),
                    None => return Err(ChannelError::UnknownChannel),
                },
                _ => (None, &self.without_namespace, rest),
            };
        // A namespace with `channel_regex` lets its regex decide which characters are
        // fine; everywhere else names are ASCII only (spec §5.1).
        if entry.channel_regex.is_none() && !channel.is_ascii() {
            return Err(ChannelError::BadRequest);
        }
        let user_limited = channel.rfind(self.user_boundary.as_str()).map(|at| {
            channel[at + self.user_boundary.len()..]
                .split(self.user_separator.as_str())
                .filter(|user| !user.is_empty())
                .collect()
        });
        Ok(Resolved {
            options: &entry.options,
            namespace,
            private,
            user_limited,
            channel_regex: entry.channel_regex.as_ref(),
            regex_subject,
        })
    }

    /// Options of a namespace by name (`None` = `without_namespace`).
    pub fn options(&self, namespace: Option<&str>) -> Option<&ChannelOptions> {
        match namespace {
            None => Some(&self.without_namespace.options),
            Some(name) => self.by_name.get(name).map(|ns| &ns.options),
        }
    }
}
