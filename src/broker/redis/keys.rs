//! The names Rotor uses in Redis, exactly as Centrifugo spells them (spec §10.1, §10.2), so a
//! Rotor node and a Centrifugo node on one Redis read and write the same keys and hear the same
//! PUB/SUB channels: `<prefix>.stream.<channel>`, `<prefix>.client.<channel>`,
//! `<prefix>.control`, and so on. In a Redis Cluster the channel part is wrapped in a hash tag,
//! `{channel}`, so that every key of a channel hashes to one slot and a script may touch them
//! all. Also which server keeps a channel: its slot's master in a cluster, otherwise
//! Centrifugo's jump hash over the configured addresses.
//!
//! Owns: the name layout and the channel → server choice, as pure functions of their inputs.
//!
//! Must not: depend on the rest of the engine (settings, links, sockets), or change a single
//! byte of a name: another server on the same Redis relies on every one of them.

use std::borrow::Cow;

/// The key and PUB/SUB channel names of one Redis deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
    cluster: bool,
}

impl Keys {
    /// Names under `prefix`; `cluster` adds the `{channel}` hash tag.
    pub fn new(prefix: &str, cluster: bool) -> Keys {
        Keys { prefix: prefix.to_owned(), cluster }
    }

    /// The same names in a Redis Cluster (hash-tagged).
    pub fn in_cluster(&self) -> Keys {
        Keys { prefix: self.prefix.clone(), cluster: true }
    }

    /// The PUB/SUB channel that carries a channel's publications and join/leave events.
    pub fn client_channel(&self, channel: &str) -> String {
        format!("{}.client.{}", self.prefix, self.tagged(channel))
    }

    /// The channel named by a PUB/SUB channel name, if it is one of ours.
    pub fn channel_of<'a>(&self, name: &'a str) -> Option<&'a str> {
        let rest = name.strip_prefix(&self.prefix)?.strip_prefix(".client.")?;
        if self.cluster {
            rest.strip_prefix('{')?.strip_suffix('}')
        } else {
            Some(rest)
        }
    }

    /// A key of a channel: `kind` is `stream`, `stream.meta`, `presence.data`, …
    pub fn key(&self, kind: &str, channel: &str) -> String {
        format!("{}.{kind}.{}", self.prefix, self.tagged(channel))
    }

    /// The idempotency result key. Scripts get it even when the publish has no idempotency key,
    /// because a cluster refuses a script whose keys are not all in the channel's slot.
    pub fn result_key(&self, channel: &str, key: &str) -> String {
        format!("{}.result.{}.{key}", self.prefix, self.tagged(channel))
    }

    /// The node-to-node broadcast channel.
    pub fn control_channel(&self) -> String {
        format!("{}.control", self.prefix)
    }

    /// The channel of one node (survey answers).
    pub fn node_channel(&self, uid: &str) -> String {
        format!("{}.node.{uid}", self.prefix)
    }

    /// Index of the server that keeps `channel`: with a cluster's slot map (slot → server), the
    /// master of the slot of the channel's keys; otherwise the jump hash over `servers`.
    pub fn server_of(&self, channel: &str, slots: Option<&[u16]>, servers: usize) -> usize {
        match slots {
            Some(slots) => {
                let key = self.key("stream", channel);
                let slot = redis_protocol::redis_keyslot(key.as_bytes());
                usize::from(slots.get(usize::from(slot)).copied().unwrap_or(0))
            }
            None => server_index(channel, servers),
        }
    }

    fn tagged<'a>(&self, channel: &'a str) -> Cow<'a, str> {
        if self.cluster {
            format!("{{{channel}}}").into()
        } else {
            channel.into()
        }
    }
}

/// Jump consistent hash (Lamping & Veach) of the channel's 64-bit FNV-1a: the index of the
/// Redis server that keeps a channel, the same one Centrifugo picks.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss,
    reason = "the jump hash is defined in float arithmetic; its result is below `servers`"
)]
pub fn server_index(channel: &str, servers: usize) -> usize {
    let mut key = channel.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let (mut b, mut j) = (-1_i64, 0_i64);
    while j < servers as i64 {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1_i64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    usize::try_from(b).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_centrifugo_with_and_without_a_cluster() {
        let plain = Keys::new("centrifugo", false);
        assert_eq!(plain.client_channel("ns:a"), "centrifugo.client.ns:a");
        assert_eq!(plain.key("stream.meta", "ns:a"), "centrifugo.stream.meta.ns:a");
        assert_eq!(plain.result_key("ns:a", "k1"), "centrifugo.result.ns:a.k1");
        assert_eq!(plain.control_channel(), "centrifugo.control");
        assert_eq!(plain.node_channel("uid"), "centrifugo.node.uid");
        assert_eq!(plain.channel_of("centrifugo.client.ns:a"), Some("ns:a"));
        assert_eq!(plain.channel_of("other.client.ns:a"), None);

        let cluster = Keys::new("centrifugo", true);
        assert_eq!(cluster.client_channel("ns:a"), "centrifugo.client.{ns:a}");
        assert_eq!(cluster.key("stream", "ns:a"), "centrifugo.stream.{ns:a}");
        assert_eq!(cluster.result_key("ns:a", ""), "centrifugo.result.{ns:a}.");
        assert_eq!(cluster.channel_of("centrifugo.client.{ns:a}"), Some("ns:a"));
        assert_eq!(cluster.channel_of("centrifugo.client.ns:a"), None, "untagged in a cluster");
    }

    #[test]
    fn in_a_cluster_a_channel_lives_on_the_master_of_its_hash_tags_slot() {
        let keys = Keys::new("centrifugo", true);
        // Slot 0..=8191 on server 0, the rest on server 1.
        let slots: Vec<u16> = (0..16384).map(|s| u16::from(s >= 8192)).collect();
        for channel in ["a", "b", "ns:room-1", "ns:room-2"] {
            let slot = redis_protocol::redis_keyslot(channel.as_bytes());
            let want = usize::from(slot >= 8192);
            assert_eq!(keys.server_of(channel, Some(&slots), 2), want, "{channel}");
        }
        assert_eq!(keys.server_of("a", None, 1), 0, "no slot map: the jump hash");
    }

    #[test]
    fn channels_spread_over_servers_and_mostly_stay_when_one_is_added() {
        let names: Vec<String> = (0..2000).map(|i| format!("ns:channel-{i}")).collect();
        assert!(names.iter().all(|c| server_index(c, 1) == 0));
        for n in 1..6 {
            let mut per = vec![0usize; n + 1];
            for c in &names {
                let before = server_index(c, n);
                let after = server_index(c, n + 1);
                assert!(before < n && after <= n);
                // Jump hash: growing the set only moves channels to the new server.
                assert!(after == before || after == n, "{c}: {before} -> {after}");
                per[after] += 1;
            }
            let even = names.len() / (n + 1);
            assert!(per.iter().all(|&k| k > even / 2 && k < even * 2), "{per:?}");
        }
    }
}
