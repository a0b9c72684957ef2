//! The Redis engine's settings, read once from `engine.redis` and shared by every shard:
//! addresses (plain, Sentinel or Cluster seeds), credentials, timeouts and the name layout.
//!
//! Owns: combining what the configuration says (the addresses, each parsed by `address`; the
//! TLS objects, built once here into rustls configs every shard shares). `config::validate`
//! runs `Settings::from_section` too, so a bad address or TLS object is refused, naming its
//! key, before anything starts.
//!
//! Must not: reach the network. Whatever only a server can tell (a Sentinel's master, a
//! cluster's masters and slots, whether a single address is a cluster node) is found later,
//! on the shards (`io`, `topology`), so these settings stay the same for every reconnect; a
//! shard that finds a cluster behind a plain address uses their `as_cluster` copy.

use std::time::Duration;

use super::address::{Address, Form, Timeouts};
use super::keys::Keys;
use crate::broker::socket::ClientTls;

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
    /// TLS to the Sentinels (`sentinel_tls`), for those of `addresses` marked `tls`.
    pub tls: Option<ClientTls>,
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
    /// With one configured server (and no cluster or Sentinel): the seeds to ask whether it
    /// is a Redis Cluster node after all (`CLUSTER SLOTS`), as upstream's client does; a
    /// cluster found so is used like configured seeds.
    pub probe: Vec<Address>,
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
    /// `sharded_pubsub` as configured (it applies once a cluster is found by probing too).
    pub sharded_pubsub: bool,
    /// TLS to the Redis servers (`tls`), for addresses marked `tls`.
    pub tls: Option<ClientTls>,
}

impl Settings {
    /// Settings from `engine.redis`.
    pub fn from_config(cfg: &crate::config::Redis) -> Result<Settings, String> {
        Settings::from_section("engine.redis", cfg)
    }

    /// Settings from the Redis object at `path` (`engine.redis`, `broker.redis`, …), which
    /// errors name (`engine.redis.tls.server_ca_pem: …`).
    pub fn from_section(path: &str, cfg: &crate::config::Redis) -> Result<Settings, String> {
        let mut sentinel = if cfg.sentinel_address.is_empty() {
            None
        } else {
            let mut auth = cfg.clone();
            auth.user = cfg.sentinel_user.clone();
            auth.password = cfg.sentinel_password.clone();
            auth.tls = cfg.sentinel_tls.clone();
            let addresses = cfg
                .sentinel_address
                .iter()
                .map(|a| Address::parse(a, &auth))
                .collect::<Result<Vec<_>, _>>()?;
            Some(Sentinel {
                addresses,
                master_name: cfg.sentinel_master_name.clone(),
                client_name: cfg.sentinel_client_name.clone(),
                tls: None,
            })
        };
        // Under Sentinel there is one server, found at connect time; its credentials and
        // database still come from the Redis object.
        let mut master = Address {
            host: String::new(),
            port: 0,
            user: cfg.user.clone(),
            password: cfg.password.clone(),
            db: cfg.db,
            tls: cfg.tls.enabled,
        };
        let forms = cfg
            .address
            .iter()
            .map(|a| Form::parse(a, cfg))
            .collect::<Result<Vec<(Form, Timeouts)>, _>>()?;
        let mut cluster =
            cfg.cluster_address.iter().map(|a| Address::parse(a, cfg)).collect::<Result<_, _>>()?;
        let mut addresses = Vec::new();
        let mut probe = Vec::new();
        let (mut connect_timeout, mut io_timeout) = (cfg.connect_timeout, cfg.io_timeout);
        let several = forms.len() > 1;
        // As upstream: cluster_address, then sentinel_address, win over address, which is
        // then only checked.
        let explicit = !cfg.cluster_address.is_empty() || !cfg.sentinel_address.is_empty();
        for (form, timeouts) in forms.into_iter().filter(|_| !explicit) {
            if several && timeouts != Timeouts::default() {
                return Err(format!(
                    "{path}.address: connect_timeout/io_timeout in an address need a single address"
                ));
            }
            connect_timeout = timeouts.connect.unwrap_or(connect_timeout);
            io_timeout = timeouts.io.unwrap_or(io_timeout);
            let only = |what: &str| {
                format!(
                    "{path}.address: a {what} address must be the only address \
                     (rotor does not shard over several deployments)"
                )
            };
            match form {
                Form::Server(mut seeds) => {
                    if several && seeds.len() > 1 {
                        return Err(format!("{path}.address: addr= needs a single address"));
                    }
                    addresses.push(seeds[0].clone());
                    probe.append(&mut seeds);
                }
                Form::Cluster(seeds) if !several => cluster = seeds,
                Form::Sentinel(s) if !several => {
                    master = s.master;
                    sentinel = Some(Sentinel {
                        addresses: s.sentinels,
                        master_name: s.master_name,
                        client_name: cfg.sentinel_client_name.clone(),
                        tls: None,
                    });
                }
                Form::Cluster(_) => return Err(only("redis+cluster://")),
                Form::Sentinel(_) => return Err(only("Sentinel")),
            }
        }
        if sentinel.is_some() {
            addresses = vec![master];
        }
        if addresses.is_empty() && cluster.is_empty() {
            return Err(format!("{path}.address: no address"));
        }
        if several || sentinel.is_some() || !cluster.is_empty() {
            probe.clear();
        }
        let uses_tls = addresses.iter().chain(&cluster).chain(&probe).any(|a| a.tls);
        let tls =
            if uses_tls { Some(ClientTls::new(&format!("{path}.tls"), &cfg.tls)?) } else { None };
        if let Some(s) = &mut sentinel {
            if s.addresses.iter().any(|a| a.tls) {
                s.tls = Some(ClientTls::new(&format!("{path}.sentinel_tls"), &cfg.sentinel_tls)?);
            }
        }
        let in_cluster = !cluster.is_empty();
        Ok(Settings {
            addresses,
            keys: Keys::new(&cfg.prefix, in_cluster),
            cluster,
            probe,
            connect_timeout,
            io_timeout,
            client_name: cfg.client_name.clone(),
            presence_ttl: cfg.presence_ttl,
            sentinel,
            sharded: cfg.sharded_pubsub && in_cluster,
            sharded_pubsub: cfg.sharded_pubsub,
            tls,
        })
    }

    /// These settings for a deployment found to be a cluster by probing: cluster names
    /// (hash-tagged), and sharded PUB/SUB if configured.
    pub fn as_cluster(&self) -> Settings {
        Settings {
            keys: self.keys.in_cluster(),
            sharded: self.sharded_pubsub,
            probe: Vec::new(),
            ..self.clone()
        }
    }

    /// The TLS of a connection to `a` (a Redis server, not a Sentinel), if it uses TLS.
    pub fn tls_of(&self, a: &Address) -> Option<&ClientTls> {
        self.tls.as_ref().filter(|_| a.tls)
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
    fn cluster_seeds_turn_on_hash_tags_and_may_turn_on_sharded_pubsub() {
        let mut cfg = crate::config::Redis::default();
        let plain = Settings::from_config(&cfg).unwrap();
        assert!(plain.cluster.is_empty() && !plain.sharded && plain.tls.is_none());
        assert_eq!(plain.probe.len(), 1, "a single server is probed for a cluster");
        assert_eq!(plain.keys.client_channel("a"), "centrifugo.client.a");
        let found = plain.as_cluster();
        assert_eq!(found.keys.client_channel("a"), "centrifugo.client.{a}");
        assert!(!found.sharded && found.probe.is_empty());
        cfg.cluster_address = vec!["127.0.0.1:7000".to_owned(), "redis://:pw@h2:7001".to_owned()];
        cfg.sharded_pubsub = true;
        let cluster = Settings::from_config(&cfg).unwrap();
        assert_eq!(cluster.cluster.len(), 2);
        assert_eq!(cluster.cluster[1].password, "pw");
        assert!(cluster.sharded && cluster.probe.is_empty());
        assert_eq!(cluster.keys.client_channel("a"), "centrifugo.client.{a}");
        cfg.cluster_address = vec!["rediss://h:1".to_owned()];
        let tls = Settings::from_config(&cfg).unwrap();
        assert!(tls.cluster[0].tls && tls.tls.is_some());
    }

    #[test]
    fn address_forms_become_a_cluster_a_sentinel_or_servers() {
        let mut cfg = crate::config::Redis {
            address: vec!["rediss+cluster://h1:7000?addr=h2:7001".to_owned()],
            ..crate::config::Redis::default()
        };
        let s = Settings::from_config(&cfg).unwrap();
        assert_eq!(s.cluster.len(), 2);
        assert!(s.keys.client_channel("a").ends_with("{a}") && s.tls.is_some());
        cfg.address =
            vec!["redis+sentinel://s1:26379?sentinel_master_name=m&addr=s2:26379&io_timeout=2s"
                .to_owned()];
        let s = Settings::from_config(&cfg).unwrap();
        let sentinel = s.sentinel.as_ref().unwrap();
        assert_eq!((sentinel.master_name.as_str(), sentinel.addresses.len()), ("m", 2));
        assert_eq!((s.addresses.len(), s.io_timeout), (1, Duration::from_secs(2)));
        assert!(s.probe.is_empty() && s.cluster.is_empty());
        cfg.address = vec!["h1:6379".to_owned(), "redis+cluster://h2:7000".to_owned()];
        assert!(Settings::from_config(&cfg).unwrap_err().contains("only address"));
        cfg.address = vec!["h1:6379".to_owned(), "h2:6379?io_timeout=1s".to_owned()];
        assert!(Settings::from_config(&cfg).is_err());
        cfg.address = vec!["h1:6379".to_owned(), "h2:6379".to_owned()];
        let s = Settings::from_config(&cfg).unwrap();
        assert!(s.addresses.len() == 2 && s.probe.is_empty(), "shards are not probed");
        // cluster_address wins over address, as upstream.
        cfg.address = vec!["redis+sentinel://s:1?sentinel_master_name=m".to_owned()];
        cfg.cluster_address = vec!["c:7000".to_owned()];
        let s = Settings::from_config(&cfg).unwrap();
        assert!(s.sentinel.is_none() && s.cluster.len() == 1 && s.probe.is_empty());
    }

    #[test]
    fn tls_is_built_once_and_its_errors_name_the_full_key() {
        let mut cfg = crate::config::Redis::default();
        cfg.tls.enabled = true;
        cfg.tls.server_ca_pem = "/nonexistent/ca.pem".to_owned();
        let e = Settings::from_section("broker.redis", &cfg).unwrap_err();
        assert!(e.starts_with("broker.redis.tls.server_ca_pem: "), "{e}");
        cfg.tls = crate::config::Tls::default();
        cfg.sentinel_address = vec!["s1:26379".to_owned()];
        cfg.sentinel_master_name = "m".to_owned();
        cfg.sentinel_tls.enabled = true;
        cfg.sentinel_tls.server_ca_pem = "not pem".to_owned();
        let e = Settings::from_config(&cfg).unwrap_err();
        assert!(e.starts_with("engine.redis.sentinel_tls.server_ca_pem: "), "{e}");
        cfg.sentinel_tls.server_ca_pem = String::new();
        let s = Settings::from_config(&cfg).unwrap();
        let sentinel = s.sentinel.as_ref().unwrap();
        assert!(sentinel.tls.is_some() && sentinel.addresses[0].tls);
        assert!(s.tls.is_none() && !s.addresses[0].tls, "the master is not TLS unless asked");
    }
}
