//! Which Redis servers a shard talks to: the configured addresses, or, with
//! `engine.redis.cluster_address`, a `redis+cluster://` address or a single address that
//! answers `CLUSTER SLOTS` (cluster auto-detection), a Redis Cluster's masters and which of
//! them keeps each of the 16384 hash slots, read with `CLUSTER SLOTS` from the first seed
//! that answers.
//!
//! Every shard reads the topology itself, on its own executor, when it starts and before its
//! links connect; the result belongs to that shard's engine. A shard that cannot read it fails
//! the server's start: without the slot map it would send each channel's commands to a master
//! that answers `MOVED`.
//!
//! Owns: discovery (over a glommio socket, through the same handshake as every link,
//! `io::open`) and the parsing of the `CLUSTER SLOTS` reply, a pure function.
//!
//! Must not: open a blocking `std::net` socket (the shard's executor would stall on a slow
//! seed; host names are still resolved the way `io::open` resolves them for every link), or
//! follow a topology change after start (`MOVED`/`ASK` are only logged by `io`; a resharded
//! cluster needs a restart).

use std::sync::Arc;

use redis_protocol::resp2::types::BytesFrame;

use super::address::Address;
use super::io;
use super::reply::{string_of, u64_of};
use super::settings::Settings;

/// Hash slots in a Redis Cluster.
const SLOTS: usize = 16384;

/// The servers of one shard's engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// The servers, in the order the engine's links and `Keys::server_of` number them. The
    /// first one also carries the control channel.
    pub addresses: Vec<Address>,
    /// In a cluster, slot → index into `addresses` (the master that keeps it); `None` spreads
    /// channels with the jump hash instead.
    pub slots: Option<Vec<u16>>,
}

impl Topology {
    /// The configured addresses, without a cluster.
    pub fn configured(settings: &Settings) -> Topology {
        Topology { addresses: settings.addresses.clone(), slots: None }
    }

    /// The configured addresses or, with cluster seeds, the cluster's masters and slot map
    /// from the first seed that answers. A single configured server is asked too, and used
    /// as a cluster seed if it is a cluster node (upstream's client detects clusters so); if
    /// it cannot be asked now (down, or a TLS handshake that fails), it is used as one server
    /// and a cluster would answer `MOVED`, which `io` logs. Runs on a shard's executor.
    pub async fn discover(settings: &Settings) -> Result<Topology, String> {
        if settings.cluster.is_empty() {
            if !settings.probe.is_empty() {
                match read_slots(settings, &settings.probe).await {
                    Ok(topology) => {
                        tracing::info!("the redis address is a Redis Cluster node: cluster mode");
                        return Ok(topology);
                    }
                    Err(e) if e.contains("not a cluster") => {}
                    Err(e) => {
                        let why =
                            "cannot ask redis whether it is a cluster; using it as one server";
                        tracing::warn!(error = %e, "{why}");
                    }
                }
            }
            return Ok(Topology::configured(settings));
        }
        read_slots(settings, &settings.cluster).await.map_err(|e| {
            format!("engine.redis.cluster_address: cannot read the cluster's slots ({e})")
        })
    }

    /// The settings the engine of this topology uses: cluster names when a configured
    /// server turned out to be a cluster node, else `settings` itself.
    pub fn settings(&self, settings: Arc<Settings>) -> Arc<Settings> {
        if self.slots.is_some() && settings.cluster.is_empty() {
            Arc::new(settings.as_cluster())
        } else {
            settings
        }
    }
}

/// `CLUSTER SLOTS` from the first seed that answers it.
async fn read_slots(settings: &Settings, seeds: &[Address]) -> Result<Topology, String> {
    let mut last = "no seed".to_owned();
    for seed in seeds {
        let ask: Vec<&[u8]> = vec![b"CLUSTER", b"SLOTS"];
        let tls = settings.tls_of(seed);
        // No CLIENT SETNAME: this connection closes right after the reply.
        let read = match io::open(settings, (&seed.host, seed.port, tls), seed, "", &[ask]).await {
            Ok((_, replies)) => match replies.first() {
                Some(reply) => from_cluster_slots(seed, reply),
                None => Err("no reply to CLUSTER SLOTS".to_owned()),
            },
            Err(e) => Err(e),
        };
        match read {
            Ok(topology) => return Ok(topology),
            Err(e) => last = format!("{}:{}: {e}", seed.host, seed.port),
        }
    }
    Err(last)
}

/// Reads a `CLUSTER SLOTS` reply (`[[start, end, [host, port, …], replicas…], …]`) asked of
/// `seed`: the masters in order of first appearance, and every slot's master. Masters are
/// reached with the seed's credentials and database; one that reports no host (a node that
/// does not know its own address) is on the seed's host.
pub fn from_cluster_slots(seed: &Address, reply: &BytesFrame) -> Result<Topology, String> {
    let BytesFrame::Array(ranges) = reply else {
        return Err("unexpected CLUSTER SLOTS reply (not a cluster?)".into());
    };
    let mut masters: Vec<(String, u16)> = Vec::new();
    let mut slots = vec![u16::MAX; SLOTS];
    for range in ranges {
        let BytesFrame::Array(parts) = range else { continue };
        let (Some(start), Some(end), Some(BytesFrame::Array(node))) =
            (parts.first().and_then(u64_of), parts.get(1).and_then(u64_of), parts.get(2))
        else {
            continue;
        };
        let host = node.first().and_then(string_of).unwrap_or_default();
        let Some(port) = node.get(1).and_then(u64_of).and_then(|p| u16::try_from(p).ok()) else {
            continue;
        };
        let index = match masters.iter().position(|m| m.0 == host && m.1 == port) {
            Some(i) => i,
            None => {
                masters.push((host, port));
                masters.len() - 1
            }
        };
        let index = u16::try_from(index).map_err(|_| "too many masters".to_owned())?;
        let (start, end) =
            (usize::try_from(start).unwrap_or(SLOTS), usize::try_from(end).unwrap_or(0));
        for slot in slots.iter_mut().take(end.saturating_add(1)).skip(start) {
            *slot = index;
        }
    }
    if masters.is_empty() || slots.contains(&u16::MAX) {
        return Err("the cluster does not cover every slot".into());
    }
    let addresses = masters
        .into_iter()
        .map(|(host, port)| Address {
            host: if host.is_empty() { seed.host.clone() } else { host },
            port,
            ..seed.clone()
        })
        .collect();
    Ok(Topology { addresses, slots: Some(slots) })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn bulk(s: &str) -> BytesFrame {
        BytesFrame::BulkString(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn range(start: i64, end: i64, host: &str, port: i64) -> BytesFrame {
        let node = BytesFrame::Array(vec![bulk(host), BytesFrame::Integer(port), bulk("node-id")]);
        let replica =
            BytesFrame::Array(vec![bulk("10.0.0.9"), BytesFrame::Integer(7100), bulk("r")]);
        BytesFrame::Array(vec![BytesFrame::Integer(start), BytesFrame::Integer(end), node, replica])
    }

    fn seed() -> Address {
        let d = crate::config::Redis::default();
        Address::parse("redis://bob:pw@seed.example:7000/0", &d).unwrap()
    }

    #[test]
    fn cluster_slots_give_each_master_once_and_every_slot_its_master() {
        let reply = BytesFrame::Array(vec![
            range(0, 5460, "10.0.0.1", 7000),
            range(5461, 10922, "", 7001),
            // A master with two ranges is still one server.
            range(10923, 12000, "10.0.0.1", 7000),
            range(12001, 16383, "10.0.0.3", 7002),
        ]);
        let t = from_cluster_slots(&seed(), &reply).unwrap();
        let servers: Vec<(&str, u16)> =
            t.addresses.iter().map(|a| (a.host.as_str(), a.port)).collect();
        assert_eq!(servers, [("10.0.0.1", 7000), ("seed.example", 7001), ("10.0.0.3", 7002)]);
        assert!(t.addresses.iter().all(|a| a.user == "bob" && a.password == "pw"));
        let slots = t.slots.unwrap();
        assert_eq!(slots.len(), SLOTS);
        assert_eq!((slots[0], slots[5460], slots[5461], slots[10922]), (0, 0, 1, 1));
        assert_eq!((slots[10923], slots[12000], slots[12001], slots[16383]), (0, 0, 2, 2));
    }

    #[test]
    fn a_reply_that_is_not_a_whole_cluster_is_refused() {
        let not_cluster =
            BytesFrame::Error("ERR This instance has cluster support disabled".into());
        assert!(from_cluster_slots(&seed(), &not_cluster).unwrap_err().contains("not a cluster"));
        let partial = BytesFrame::Array(vec![range(0, 16000, "h", 1)]);
        assert!(from_cluster_slots(&seed(), &partial).unwrap_err().contains("every slot"));
        let empty = BytesFrame::Array(Vec::new());
        assert!(from_cluster_slots(&seed(), &empty).is_err());
        let bad_port = BytesFrame::Array(vec![range(0, 16383, "h", 70_000)]);
        assert!(from_cluster_slots(&seed(), &bad_port).is_err(), "a port out of range is no node");
    }
}
