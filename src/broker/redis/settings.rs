//! The Redis engine's settings, read once from `engine.redis` and shared by every shard:
//! addresses (plain, Sentinel or Cluster seeds), credentials, timeouts and the name layout.
//!
//! Owns: parsing and checking what the configuration says (`Address::parse` is also what
//! `config::validate` runs, so a bad address is refused before anything starts).
//!
//! Must not: reach the network. Whatever only a server can tell (a Sentinel's master, a
//! cluster's masters and slots) is found later, on the shards (`io`, `topology`), so these
//! settings stay the same for every shard and every reconnect.

use std::time::Duration;

use super::keys::Keys;

/// One Redis server as configured: `redis://[user:password@]host:port[/db]` or `host:port`.
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
}

impl Address {
    /// Parses an address; user, password and db default to the Redis object's own keys.
    pub fn parse(text: &str, defaults: &crate::config::Redis) -> Result<Address, String> {
        let mut a = Address {
            host: String::new(),
            port: 6379,
            user: defaults.user.clone(),
            password: defaults.password.clone(),
            db: defaults.db,
        };
        let rest = if let Some(rest) = text.strip_prefix("redis://") {
            rest
        } else if text.starts_with("rediss://") {
            return Err("TLS (rediss://) is not supported by rotor yet".to_owned());
        } else if text.contains("://") {
            return Err(format!("{text:?}: only redis:// addresses are supported"));
        } else {
            text
        };
        // The last '@' ends the credentials: a password may itself contain one.
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (Some(auth), rest),
            None => (None, rest),
        };
        if let Some(auth) = auth {
            match auth.split_once(':') {
                Some((user, password)) => {
                    a.user = user.to_owned();
                    a.password = password.to_owned();
                }
                None => a.user = auth.to_owned(),
            }
        }
        let (hostport, db) = match rest.split_once('/') {
            Some((hp, db)) => (hp, Some(db)),
            None => (rest, None),
        };
        if let Some(db) = db.filter(|d| !d.is_empty()) {
            a.db = db.parse().map_err(|_| format!("{text:?}: bad database number {db:?}"))?;
        }
        match hostport.rsplit_once(':') {
            Some((host, port)) => {
                a.host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
                a.port = port.parse().map_err(|_| format!("{text:?}: bad port {port:?}"))?;
            }
            None => a.host = hostport.to_owned(),
        }
        if a.host.is_empty() {
            return Err(format!("{text:?}: no host"));
        }
        Ok(a)
    }
}

/// Redis Sentinel settings: the master is looked up at every (re)connect, so a failover is
/// followed by reconnecting.
#[derive(Debug, Clone)]
pub struct Sentinel {
    /// Sentinel addresses, tried in order.
    pub addresses: Vec<Address>,
    /// The monitored master's name.
    pub master_name: String,
    /// `CLIENT SETNAME` on Sentinel connections.
    pub client_name: String,
}

/// The engine settings every shard shares.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The configured Redis servers; channels are spread over several with Centrifugo's jump
    /// hash, so both servers agree on where a channel lives. Unused with a cluster, whose
    /// masters each shard reads from `cluster` at start.
    pub addresses: Vec<Address>,
    /// Redis Cluster seeds (empty = no cluster), tried in order.
    pub cluster: Vec<Address>,
    /// Key and PUB/SUB channel names (`centrifugo` prefix by default, so both servers can
    /// share data).
    pub keys: Keys,
    /// Time to connect.
    pub connect_timeout: Duration,
    /// Time to wait for an outstanding reply.
    pub io_timeout: Duration,
    /// `CLIENT SETNAME`.
    pub client_name: String,
    /// Presence entry lifetime without refresh.
    pub presence_ttl: Duration,
    /// Where to ask for the master, when Redis runs under Sentinel.
    pub sentinel: Option<Sentinel>,
    /// Redis Cluster with sharded PUB/SUB (`SSUBSCRIBE`/`SPUBLISH`, Redis ≥ 7): a channel's
    /// messages stay on the master of its slot instead of being broadcast to the whole
    /// cluster. Rotor-only (`engine.redis.sharded_pubsub`): Centrifugo nodes subscribe with
    /// plain `SUBSCRIBE` and would not see these messages.
    pub sharded: bool,
}

impl Settings {
    /// Settings from `engine.redis` (validated at start).
    pub fn from_config(cfg: &crate::config::Redis) -> Result<Settings, String> {
        let sentinel = if cfg.sentinel_address.is_empty() {
            None
        } else {
            let mut auth = cfg.clone();
            auth.user = cfg.sentinel_user.clone();
            auth.password = cfg.sentinel_password.clone();
            let addresses = cfg
                .sentinel_address
                .iter()
                .map(|a| Address::parse(a, &auth))
                .collect::<Result<Vec<_>, _>>()?;
            Some(Sentinel {
                addresses,
                master_name: cfg.sentinel_master_name.clone(),
                client_name: cfg.sentinel_client_name.clone(),
            })
        };
        // Under Sentinel there is one server, found at connect time; its credentials and
        // database still come from the Redis object.
        let addresses = if sentinel.is_some() {
            vec![Address {
                host: String::new(),
                port: 0,
                user: cfg.user.clone(),
                password: cfg.password.clone(),
                db: cfg.db,
            }]
        } else {
            cfg.address.iter().map(|a| Address::parse(a, cfg)).collect::<Result<Vec<_>, _>>()?
        };
        if addresses.is_empty() {
            return Err("engine.redis.address: no address".to_owned());
        }
        let cluster =
            cfg.cluster_address.iter().map(|a| Address::parse(a, cfg)).collect::<Result<_, _>>()?;
        Ok(Settings {
            addresses,
            cluster,
            keys: Keys::new(&cfg.prefix, !cfg.cluster_address.is_empty()),
            connect_timeout: cfg.connect_timeout,
            io_timeout: cfg.io_timeout,
            client_name: cfg.client_name.clone(),
            presence_ttl: cfg.presence_ttl,
            sentinel,
            sharded: cfg.sharded_pubsub && !cfg.cluster_address.is_empty(),
        })
    }

    /// `plain`, or `sharded` in sharded PUB/SUB mode.
    pub fn verb(&self, plain: &'static [u8], sharded: &'static [u8]) -> &'static [u8] {
        if self.sharded {
            sharded
        } else {
            plain
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_with_defaults_and_reject_what_is_unsupported() {
        let d = crate::config::Redis::default();
        let a = Address::parse("redis://bob:s3cret@10.0.0.1:6380/2", &d).unwrap();
        assert_eq!(
            (a.host.as_str(), a.port, a.user.as_str(), a.password.as_str(), a.db),
            ("10.0.0.1", 6380, "bob", "s3cret", 2)
        );
        let a = Address::parse("localhost", &d).unwrap();
        assert_eq!((a.host.as_str(), a.port, a.db), ("localhost", 6379, 0));
        assert!(Address::parse("rediss://h:1", &d).unwrap_err().contains("TLS"));
        assert!(Address::parse("redis://h:port", &d).is_err());
        assert!(Address::parse("redis://:1", &d).is_err());
    }

    #[test]
    fn cluster_seeds_turn_on_hash_tags_and_may_turn_on_sharded_pubsub() {
        let mut cfg = crate::config::Redis::default();
        let plain = Settings::from_config(&cfg).unwrap();
        assert!(plain.cluster.is_empty() && !plain.sharded);
        assert_eq!(plain.keys.client_channel("a"), "centrifugo.client.a");
        cfg.cluster_address = vec!["127.0.0.1:7000".to_owned(), "redis://:pw@h2:7001".to_owned()];
        cfg.sharded_pubsub = true;
        let cluster = Settings::from_config(&cfg).unwrap();
        assert_eq!(cluster.cluster.len(), 2);
        assert_eq!(cluster.cluster[1].password, "pw");
        assert!(cluster.sharded);
        assert_eq!(cluster.keys.client_channel("a"), "centrifugo.client.{a}");
        cfg.cluster_address = vec!["rediss://h:1".to_owned()];
        assert!(Settings::from_config(&cfg).is_err());
    }
}
