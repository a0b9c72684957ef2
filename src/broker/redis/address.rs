//! Redis addresses as upstream (centrifuge's `redis_shard.go`) writes them: `host:port`,
//! `redis://` (or `tcp://`), `rediss://` (TLS), `redis+cluster://` (cluster seeds),
//! `redis+sentinel://` and `rediss+sentinel://` (Sentinels), each
//! `[user[:password]@]host:port[/db][?option=value&…]`. Rotor also reads `rediss+cluster://`,
//! the TLS variant of the cluster form.
//!
//! The options read are upstream's: `addr` (more hosts: cluster seeds or Sentinels, repeated),
//! `sentinel_master_name` (also makes the address a Sentinel one), `sentinel_user`,
//! `sentinel_password`, `tls_enabled`, `sentinel_tls_enabled`, `connect_timeout`,
//! `io_timeout`, `force_resp2` (Rotor always speaks RESP2) and `replica_client_enabled` (only
//! `false`: Rotor reads from masters). Options upstream does not know are ignored, as upstream
//! does.
//!
//! Owns: parsing one address into a [`Form`]. Must not: reach the network or combine several
//! addresses (that is `settings`).

use std::time::Duration;

/// One Redis server as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// Host name or IP.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// ACL user (empty = default user).
    pub user: String,
    /// Password (empty = no AUTH).
    pub password: String,
    /// Database number.
    pub db: u32,
    /// Connect over TLS (`rediss://`, `tls_enabled=true` or the Redis object's `tls.enabled`).
    pub tls: bool,
}

/// What one entry of `address` describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Form {
    /// A server; further `addr` hosts are more seeds of the same deployment (used when it
    /// turns out to be a cluster).
    Server(Vec<Address>),
    /// Redis Cluster seeds (`redis+cluster://`).
    Cluster(Vec<Address>),
    /// Sentinels (`redis+sentinel://`, or any form with `sentinel_master_name`).
    Sentinel(SentinelForm),
}

/// A Sentinel address: where the Sentinels are and what the master connection uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelForm {
    /// The Sentinels, with the Sentinel credentials and TLS.
    pub sentinels: Vec<Address>,
    /// The monitored master's name.
    pub master_name: String,
    /// Credentials, database and TLS of the master connection (no host: the Sentinels tell).
    pub master: Address,
}

/// Per-address timeouts (`connect_timeout`, `io_timeout`), `None` when not given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// `connect_timeout`.
    pub connect: Option<Duration>,
    /// `io_timeout`.
    pub io: Option<Duration>,
}

const SCHEMES: &[&str] = &[
    "redis",
    "tcp",
    "rediss",
    "redis+cluster",
    "rediss+cluster",
    "redis+sentinel",
    "rediss+sentinel",
];

fn bool_option(name: &str, value: &str) -> Result<bool, String> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("invalid {name} value: {value:?}")),
    }
}

/// `host:port` (or `[v6]:port`, or `host` alone for the default port) into an address that
/// takes everything else from `base`.
fn host_port(text: &str, hostport: &str, base: &Address) -> Result<Address, String> {
    let mut a = base.clone();
    match hostport.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') => {
            a.host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
            a.port = port.parse().map_err(|_| format!("{text:?}: bad port {port:?}"))?;
        }
        _ => a.host = hostport.trim_start_matches('[').trim_end_matches(']').to_owned(),
    }
    if a.host.is_empty() {
        return Err(format!("{text:?}: no host"));
    }
    Ok(a)
}

impl Address {
    /// Parses an address that names one server (`host:port`, `redis://`, `rediss://`); user,
    /// password and db default to the Redis object's own keys, TLS to its `tls.enabled`.
    pub fn parse(text: &str, defaults: &crate::config::Redis) -> Result<Address, String> {
        match Form::parse(text, defaults)?.0 {
            Form::Server(mut seeds) if seeds.len() == 1 => Ok(seeds.remove(0)),
            _ => Err(format!("{text:?}: only one host:port may be given here")),
        }
    }
}

impl Form {
    /// Parses one `address` entry; what the URL leaves out comes from the Redis object.
    pub fn parse(text: &str, defaults: &crate::config::Redis) -> Result<(Form, Timeouts), String> {
        let mut a = Address {
            host: String::new(),
            port: 6379,
            user: defaults.user.clone(),
            password: defaults.password.clone(),
            db: defaults.db,
            tls: defaults.tls.enabled,
        };
        let (scheme, rest) = match text.split_once("://") {
            Some((scheme, rest)) if SCHEMES.contains(&scheme) => (scheme, rest),
            Some((scheme, _)) => {
                return Err(format!(
                    "{text:?}: unsupported scheme {scheme:?} (redis, rediss, redis+cluster, \
                     redis+sentinel, rediss+sentinel, tcp, or host:port)"
                ))
            }
            None => ("", text),
        };
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, query),
            None => (rest, ""),
        };
        // The last '@' ends the credentials: a password may itself contain one.
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (Some(auth), rest),
            None => (None, rest),
        };
        if let Some(auth) = auth {
            match auth.split_once(':') {
                Some((user, password)) => {
                    if !user.is_empty() {
                        a.user = user.to_owned();
                    }
                    a.password = password.to_owned();
                }
                None if !auth.is_empty() => a.user = auth.to_owned(),
                None => {}
            }
        }
        let (hostport, db) = match rest.split_once('/') {
            Some((hp, db)) => (hp, Some(db)),
            None => (rest, None),
        };
        if let Some(db) = db.filter(|d| !d.is_empty()) {
            a.db = db.parse().map_err(|_| format!("{text:?}: bad database number {db:?}"))?;
        }
        if scheme.starts_with("rediss") {
            a.tls = true;
        }
        let mut hosts = vec![hostport.to_owned()];
        let mut master_name = String::new();
        let (mut sentinel_user, mut sentinel_password) =
            (defaults.sentinel_user.clone(), defaults.sentinel_password.clone());
        let mut sentinel_tls = defaults.sentinel_tls.enabled || scheme == "rediss+sentinel";
        let mut timeouts = Timeouts::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = crate::http::percent_decode(value);
            let duration = |v: &str| {
                crate::config::duration::parse_nanos(v)
                    .ok()
                    .and_then(|n| u64::try_from(n).ok())
                    .map(Duration::from_nanos)
                    .ok_or_else(|| format!("{text:?}: invalid {name}: {v:?}"))
            };
            match name {
                "addr" => hosts.push(value),
                "sentinel_master_name" => master_name = value,
                "sentinel_user" => sentinel_user = value,
                "sentinel_password" => sentinel_password = value,
                "tls_enabled" => a.tls |= bool_option(name, &value)?,
                "sentinel_tls_enabled" => sentinel_tls |= bool_option(name, &value)?,
                "connect_timeout" => timeouts.connect = Some(duration(&value)?),
                "io_timeout" => timeouts.io = Some(duration(&value)?),
                "force_resp2" => {
                    bool_option(name, &value)?;
                }
                "replica_client_enabled" if bool_option(name, &value)? => {
                    return Err(format!(
                        "{text:?}: replica_client_enabled is not supported by rotor"
                    ));
                }
                _ => {}
            }
        }
        let sentinel = scheme.ends_with("+sentinel") || !master_name.is_empty();
        if sentinel && master_name.is_empty() {
            return Err(format!(
                "{text:?}: sentinel master name must be configured (sentinel_master_name=…)"
            ));
        }
        if sentinel {
            let base = Address {
                user: sentinel_user,
                password: sentinel_password,
                db: 0,
                tls: sentinel_tls,
                ..a.clone()
            };
            let sentinels =
                hosts.iter().map(|h| host_port(text, h, &base)).collect::<Result<_, _>>()?;
            let master = Address { host: String::new(), port: 0, ..a };
            return Ok((Form::Sentinel(SentinelForm { sentinels, master_name, master }), timeouts));
        }
        let seeds = hosts.iter().map(|h| host_port(text, h, &a)).collect::<Result<_, _>>()?;
        if scheme.ends_with("+cluster") {
            Ok((Form::Cluster(seeds), timeouts))
        } else {
            Ok((Form::Server(seeds), timeouts))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Form, String> {
        Form::parse(text, &crate::config::Redis::default()).map(|(f, _)| f)
    }

    fn hosts(seeds: &[Address]) -> Vec<(&str, u16)> {
        seeds.iter().map(|a| (a.host.as_str(), a.port)).collect()
    }

    #[test]
    fn plain_addresses_name_one_server_with_defaults_from_the_redis_object() {
        let d = crate::config::Redis::default();
        let a = Address::parse("redis://bob:s3cret@10.0.0.1:6380/2", &d).unwrap();
        assert_eq!(
            (a.host.as_str(), a.port, a.user.as_str(), a.password.as_str(), a.db, a.tls),
            ("10.0.0.1", 6380, "bob", "s3cret", 2, false)
        );
        let a = Address::parse("localhost", &d).unwrap();
        assert_eq!((a.host.as_str(), a.port, a.db), ("localhost", 6379, 0));
        assert_eq!(Address::parse("tcp://h:7", &d).unwrap().port, 7);
        assert!(Address::parse("rediss://h:1", &d).unwrap().tls);
        assert!(Address::parse("redis://h:1?tls_enabled=true", &d).unwrap().tls);
        let mut tls_on = d.clone();
        tls_on.tls.enabled = true;
        assert!(Address::parse("h:1", &tls_on).unwrap().tls, "tls.enabled covers every address");
        assert!(Address::parse("redis://h:port", &d).is_err());
        assert!(Address::parse("redis://:1", &d).is_err());
        assert!(Address::parse("http://h:1", &d).unwrap_err().contains("scheme"));
        assert!(Address::parse("redis://h:1/x", &d).unwrap_err().contains("database"));
        assert!(Address::parse("redis+cluster://h:1", &d).is_err(), "a cluster is no server");
    }

    #[test]
    fn cluster_urls_give_every_seed_with_the_url_credentials() {
        let Form::Cluster(seeds) =
            parse("redis+cluster://u:p@h1:7000?addr=h2:7001&addr=h3:7002").unwrap()
        else {
            panic!("not a cluster")
        };
        assert_eq!(hosts(&seeds), [("h1", 7000), ("h2", 7001), ("h3", 7002)]);
        assert!(seeds.iter().all(|s| s.user == "u" && s.password == "p" && !s.tls));
        let Form::Cluster(seeds) = parse("rediss+cluster://h1:7000").unwrap() else {
            panic!("not a cluster")
        };
        assert!(seeds[0].tls);
        // A plain URL with more hosts: seeds of one deployment, a cluster if it is one.
        let Form::Server(seeds) = parse("redis://@127.0.0.1:7000?addr=127.0.0.1:7001").unwrap()
        else {
            panic!("not a server")
        };
        assert_eq!(hosts(&seeds), [("127.0.0.1", 7000), ("127.0.0.1", 7001)]);
    }

    #[test]
    fn sentinel_urls_split_sentinel_and_master_credentials() {
        let text = "rediss+sentinel://mu:mp@s1:26379/3?sentinel_master_name=mymaster\
                    &addr=s2:26380&sentinel_user=su&sentinel_password=sp";
        let Form::Sentinel(s) = parse(text).unwrap() else { panic!("not sentinel") };
        assert_eq!(s.master_name, "mymaster");
        assert_eq!(hosts(&s.sentinels), [("s1", 26379), ("s2", 26380)]);
        assert!(s.sentinels.iter().all(|a| a.user == "su" && a.password == "sp" && a.tls));
        assert_eq!(
            (s.master.user.as_str(), s.master.password.as_str(), s.master.db, s.master.tls),
            ("mu", "mp", 3, true)
        );
        // sentinel_master_name alone makes any URL a Sentinel one; TLS only where asked.
        let Form::Sentinel(s) =
            parse("redis://s1:26379?sentinel_master_name=m&sentinel_tls_enabled=true").unwrap()
        else {
            panic!("not sentinel")
        };
        assert!(s.sentinels[0].tls && !s.master.tls);
        assert!(parse("redis+sentinel://s1:26379").unwrap_err().contains("master name"));
    }

    #[test]
    fn options_are_checked_like_upstream() {
        let d = crate::config::Redis::default();
        let (_, t) = Form::parse("redis://h:1?connect_timeout=250ms&io_timeout=2s", &d).unwrap();
        assert_eq!(t.connect, Some(Duration::from_millis(250)));
        assert_eq!(t.io, Some(Duration::from_secs(2)));
        assert!(parse("redis://h:1?io_timeout=xs").unwrap_err().contains("io_timeout"));
        assert!(parse("redis://h:1?tls_enabled=maybe").unwrap_err().contains("tls_enabled"));
        assert!(parse("redis://h:1?force_resp2=true&unknown=1").is_ok());
        assert!(parse("redis://h:1?replica_client_enabled=false").is_ok());
        assert!(parse("redis://h:1?replica_client_enabled=true").is_err());
    }
}
