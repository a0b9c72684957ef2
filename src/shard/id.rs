//! Shard identities, the channel → home shard mapping, and the names a cross-shard request is
//! known by (request id, lane).
//!
//! Owns: the hash that decides which shard owns a channel. It must stay stable across versions and
//! processes (the load tester and tests compute it too), so it is a plain FNV-1a, not `std`'s
//! randomly keyed hasher.

use std::fmt;

/// Most shards one process may run (the interest bitset is sized for this).
pub const SHARDS_MAX: usize = 256;

/// Index of a shard (one executor pinned to one core).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u16);

impl ShardId {
    /// As an index into per-shard arrays.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Identifies a parked request on its origin shard (a slot and a generation).
pub type RequestId = u64;

/// Which cross-shard lane a message travels on. Replies have their own lane so a response never
/// waits behind a burst of fan-out traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Requests, interest changes, deliveries, accepted sockets.
    Main = 0,
    /// Answers to requests.
    Reply = 1,
}

/// FNV-1a, 64 bit.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The shard that owns `channel` (its stream, history and interest set) among `shard_count`.
pub fn home_of(channel: &str, shard_count: usize) -> ShardId {
    let n = shard_count.clamp(1, SHARDS_MAX) as u64;
    // `n` ≤ 256 so the remainder always fits in u16.
    ShardId((fnv1a(channel.as_bytes()) % n) as u16)
}

/// A set of shards, e.g. the shards that have local subscribers of a channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardSet([u64; SHARDS_MAX / 64]);

impl ShardSet {
    /// Adds a shard; returns whether it was absent.
    pub fn insert(&mut self, s: ShardId) -> bool {
        let (w, b) = (s.index() / 64, s.index() % 64);
        let was = self.0[w] & (1 << b) != 0;
        self.0[w] |= 1 << b;
        !was
    }

    /// Removes a shard; returns whether it was present.
    pub fn remove(&mut self, s: ShardId) -> bool {
        let (w, b) = (s.index() / 64, s.index() % 64);
        let was = self.0[w] & (1 << b) != 0;
        self.0[w] &= !(1 << b);
        was
    }

    /// Whether no shard is in the set.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    /// The shards in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = ShardId> + '_ {
        self.0.iter().enumerate().flat_map(|(w, bits)| {
            (0..64)
                .filter(move |b| bits & (1u64 << b) != 0)
                .map(move |b| ShardId((w * 64 + b) as u16))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn home_is_stable_and_in_range() {
        // Pinned values: changing the hash would move channels between shards across versions.
        assert_eq!(home_of("news", 1), ShardId(0));
        assert_eq!(home_of("", 3), ShardId((0xcbf2_9ce4_8422_2325u64 % 3) as u16));
        let counts = (0..3000).fold([0usize; 3], |mut acc, i| {
            acc[home_of(&format!("chat:{i}"), 3).index()] += 1;
            acc
        });
        assert!(counts.iter().all(|&c| c > 800), "spread over shards: {counts:?}");
    }

    proptest! {
        #[test]
        fn shard_set_behaves_like_a_set(ops in proptest::collection::vec((any::<bool>(), 0u16..256), 0..200)) {
            let mut set = ShardSet::default();
            let mut model = std::collections::BTreeSet::new();
            for (add, s) in ops {
                if add {
                    prop_assert_eq!(set.insert(ShardId(s)), model.insert(s));
                } else {
                    prop_assert_eq!(set.remove(ShardId(s)), model.remove(&s));
                }
            }
            prop_assert_eq!(set.iter().map(|s| s.0).collect::<Vec<_>>(), model.iter().copied().collect::<Vec<_>>());
            prop_assert_eq!(set.is_empty(), model.is_empty());
        }
    }
}
