//! Shard-local subscriber index: channel → connections on this shard subscribed to it.
//!
//! Owns: only the index. Every shard has its own hub for its own connections; nothing here is
//! shared. Must not hold connection state (that is `client::Conn`) or channel-global state (that
//! is the home shard's).

use std::collections::HashMap;
use std::sync::Arc;

/// A connection slot on this shard plus a generation, so a stale key never reaches a newer
/// connection that reused the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// Slot in the shard's connection slab.
    pub slot: u32,
    /// Generation of the connection that owned the slot.
    pub generation: u32,
}

/// channel → local subscribers.
#[derive(Debug, Default)]
pub struct Hub {
    channels: HashMap<Arc<str>, Vec<ConnKey>>,
}

impl Hub {
    /// Adds a subscriber; returns true when it is the channel's first local subscriber.
    pub fn add(&mut self, channel: &Arc<str>, key: ConnKey) -> bool {
        let subs = self.channels.entry(Arc::clone(channel)).or_default();
        subs.push(key);
        subs.len() == 1
    }

    /// Removes a subscriber; returns true when the channel has no local subscriber left.
    pub fn remove(&mut self, channel: &str, key: ConnKey) -> bool {
        let Some(subs) = self.channels.get_mut(channel) else { return false };
        let Some(pos) = subs.iter().position(|k| *k == key) else { return false };
        subs.swap_remove(pos);
        if subs.is_empty() {
            self.channels.remove(channel);
            return true;
        }
        false
    }

    /// Local subscribers of a channel.
    pub fn subscribers(&self, channel: &str) -> &[ConnKey] {
        self.channels.get(channel).map_or(&[], Vec::as_slice)
    }

    /// Number of channels with local subscribers.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeSet, HashMap};

    proptest! {
        #[test]
        fn hub_matches_a_plain_model(ops in proptest::collection::vec((any::<bool>(), 0u8..4, 0u32..6), 0..300)) {
            let mut hub = Hub::default();
            let mut model: HashMap<String, BTreeSet<u32>> = HashMap::new();
            for (add, ch, slot) in ops {
                let name: Arc<str> = Arc::from(format!("c{ch}"));
                let key = ConnKey { slot, generation: 0 };
                let set = model.entry(name.to_string()).or_default();
                if add {
                    if set.contains(&slot) { continue; }
                    let first = set.is_empty();
                    set.insert(slot);
                    prop_assert_eq!(hub.add(&name, key), first);
                } else {
                    let present = set.remove(&slot);
                    let last = present && set.is_empty();
                    prop_assert_eq!(hub.remove(&name, key), last);
                }
                let mut got: Vec<u32> = hub.subscribers(&name).iter().map(|k| k.slot).collect();
                got.sort_unstable();
                prop_assert_eq!(got, set.iter().copied().collect::<Vec<_>>());
            }
            prop_assert_eq!(hub.channel_count(), model.values().filter(|s| !s.is_empty()).count());
        }
    }
}
