//! The hub part of a shard: channel → connections on this shard subscribed to it, plus whether
//! the channel's home shard has acknowledged that this shard is interested; and, in
//! [`fanout`], the one place that encodes a channel event once and queues it to many.
//!
//! Owns: only the index, and the events kept for subscribers whose subscribe reply is still
//! being prepared (so nothing published meanwhile is lost or reordered). Every shard has its own
//! hub for its own connections; nothing here is shared. Must not hold connection state (that is
//! `client::conn`) or channel-global state (that is the home shard's), or send anything.
//!
//! Why acknowledgements: a subscribe reply promises the client every publication made after it.
//! The home shard only delivers to shards in its interest set, so the first local subscriber of a
//! channel waits until the home shard has recorded this shard (an `Interest` request answered on
//! the reply lane) before its reply is queued. Subscribers that are still waiting are counted in
//! `pending`, so the channel is not given up (interest off) while one of them is in flight.
//! Each registration has a generation; an acknowledgement for an older registration of the same
//! channel (subscribe, unsubscribe, subscribe again) is ignored.

pub mod delta;
pub mod encode;
pub mod fanout;
pub mod filter;

use std::collections::HashMap;
use std::sync::Arc;

use crate::broker::Event;
use crate::client::conn::ConnKey;
use crate::protocol::RawJson;
use filter::TagsFilter;

/// A channel's live subscribers with a tags filter: one list in subscription order, each with
/// the slot of its filter, and the distinct filters, each evaluated once per publication for
/// all who share it. One list, not a list per filter: fan-out then walks the connection table
/// in the order subscribers came, as for unfiltered ones (a walk per filter strides through it
/// and misses the cache: 1.15x per delivery with 10 filters in `loadtest/RESULTS.md`).
#[derive(Debug, Default)]
pub struct Filtered {
    /// Subscribers and their filter's slot.
    pub keys: Vec<(ConnKey, u32)>,
    /// Distinct filters and how many subscribers use each; a slot nobody uses is `None` and
    /// taken by the next new filter.
    pub filters: Vec<Option<(Arc<TagsFilter>, u32)>>,
}

/// A subscriber whose subscribe reply waits for the home shard's answer: events of the channel
/// are kept for it and handed over, merged by offset, once the reply is written.
#[derive(Debug)]
struct Buffering {
    key: ConnKey,
    join_leave: bool,
    events: Vec<Event>,
}

#[derive(Debug, Default)]
struct Entry {
    keys: Vec<ConnKey>,
    /// Live subscribers with a tags filter, grouped by filter (publications only; join/leave
    /// go by `join_leave` as for everyone).
    filtered: Filtered,
    /// Live subscribers that receive join/leave pushes (a subset of `keys`).
    join_leave: Vec<ConnKey>,
    buffering: Vec<Buffering>,
    /// Offset of the last publication delivered here, to notice a dropped one; `None` until a
    /// publication or a positioned subscriber gives a starting point.
    last_offset: Option<u64>,
    pending: u32,
    /// Some subscriber negotiated fossil deltas: publications keep `delta_base` up to date.
    delta: bool,
    /// Data of the last publication delivered here (the base of the next delta).
    delta_base: Option<RawJson>,
    requested: bool,
    registered: bool,
    generation: u64,
    /// Flights waiting for the acknowledgement (tokens of `client::flight`).
    waiters: Vec<u64>,
}

/// What a subscriber must do after [`Hub::begin`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begin {
    /// The home shard already knows this shard: complete at once.
    Registered,
    /// First interest in the channel: send an `Interest` request with this generation, then wait.
    Request(u64),
    /// A request is already in flight: wait for its acknowledgement.
    Wait,
}

/// channel → local subscribers and registration state.
#[derive(Debug, Default)]
pub struct Hub {
    channels: HashMap<Arc<str>, Entry>,
    next_generation: u64,
}

impl Hub {
    /// Starts a subscription of one connection; it counts as pending until [`Hub::finish`] or
    /// [`Hub::abandon`].
    pub fn begin(&mut self, channel: &Arc<str>) -> Begin {
        let next = &mut self.next_generation;
        let entry = self.channels.entry(Arc::clone(channel)).or_insert_with(|| {
            *next += 1;
            Entry { generation: *next, ..Entry::default() }
        });
        entry.pending += 1;
        if entry.registered {
            Begin::Registered
        } else if !entry.requested {
            entry.requested = true;
            Begin::Request(entry.generation)
        } else {
            Begin::Wait
        }
    }

    /// The home shard acknowledged registration `generation` of `channel`: returns the flights
    /// that waited for it.
    pub fn acknowledged(&mut self, channel: &str, generation: u64) -> Vec<u64> {
        match self.channels.get_mut(channel).filter(|e| e.generation == generation) {
            Some(e) => {
                e.registered = true;
                std::mem::take(&mut e.waiters)
            }
            None => Vec::new(),
        }
    }

    /// Whether `channel` is registered; otherwise the flight `token` waits for the
    /// acknowledgement ([`Hub::acknowledged`] returns it).
    pub fn registered_or_wait(&mut self, channel: &str, token: u64) -> bool {
        match self.channels.get_mut(channel) {
            Some(e) if e.registered => true,
            Some(e) => {
                e.waiters.push(token);
                false
            }
            // Cannot happen while a subscriber is pending; treat as done so nobody hangs.
            None => true,
        }
    }

    /// A pending subscriber becomes a live one: deliveries reach it from now on (publications
    /// only those its tags `filter` passes).
    pub fn finish(&mut self, channel: &str, key: ConnKey, filter: Option<&Arc<TagsFilter>>) {
        if let Some(e) = self.channels.get_mut(channel) {
            e.pending = e.pending.saturating_sub(1);
            e.add(key, filter);
        }
    }

    /// A pending subscriber starts keeping the channel's events while its reply is prepared.
    pub fn start_buffering(&mut self, channel: &str, key: ConnKey, join_leave: bool) {
        if let Some(e) = self.channels.get_mut(channel) {
            e.pending = e.pending.saturating_sub(1);
            e.buffering.push(Buffering { key, join_leave, events: Vec::new() });
        }
    }

    /// Ends buffering for `key`: returns the kept events, or `None` when it was not buffering
    /// (it unsubscribed meanwhile). The subscriber counts as pending again, so the channel
    /// stays, until the caller makes it live ([`Hub::go_live`]) or gives up ([`Hub::abandon`]).
    pub fn take_buffered(&mut self, channel: &str, key: ConnKey) -> Option<Vec<Event>> {
        let e = self.channels.get_mut(channel)?;
        let pos = e.buffering.iter().position(|b| b.key == key)?;
        e.pending += 1;
        Some(e.buffering.swap_remove(pos).events)
    }

    /// A subscriber taken out of buffering becomes live.
    pub fn go_live(
        &mut self,
        channel: &str,
        key: ConnKey,
        join_leave: bool,
        filter: Option<&Arc<TagsFilter>>,
    ) {
        if let Some(e) = self.channels.get_mut(channel) {
            e.pending = e.pending.saturating_sub(1);
            e.add(key, filter);
            if join_leave {
                e.join_leave.push(key);
            }
        }
    }

    /// Records an event for the buffering subscribers of `channel` and, for a publication with
    /// an offset, returns true when an earlier one never arrived here (a dropped delivery).
    pub fn observe(&mut self, channel: &str, event: &Event) -> bool {
        let Some(e) = self.channels.get_mut(channel) else { return false };
        for b in &mut e.buffering {
            if b.join_leave || matches!(event, Event::Pub(_)) {
                b.events.push(event.clone());
            }
        }
        match event {
            Event::Pub(p) if p.offset > 0 => {
                let gap = e.last_offset.is_some_and(|last| p.offset > last + 1);
                e.last_offset = Some(e.last_offset.map_or(p.offset, |last| last.max(p.offset)));
                gap
            }
            _ => false,
        }
    }

    /// A subscriber of `channel` negotiated deltas (kept while the channel has subscribers).
    pub fn mark_delta(&mut self, channel: &str) {
        if let Some(e) = self.channels.get_mut(channel) {
            e.delta = true;
        }
    }

    /// For a channel with delta subscribers: the previous publication's data (the delta base),
    /// replaced by `data`. `None` inside when there was none; `None` for other channels.
    pub fn next_delta_base(&mut self, channel: &str, data: &RawJson) -> Option<Option<RawJson>> {
        let e = self.channels.get_mut(channel).filter(|e| e.delta)?;
        Some(e.delta_base.replace(data.clone()))
    }

    /// A positioned subscriber is about to go live at stream offset `top` (every publication up
    /// to it has been sent to this shard before the answer that reported it). Returns true when
    /// this shard had seen less than that: a delivery was dropped, and the live positioned
    /// subscribers already here missed it.
    pub fn sync_position(&mut self, channel: &str, top: u64) -> bool {
        let Some(e) = self.channels.get_mut(channel) else { return false };
        match e.last_offset {
            Some(last) if last < top => {
                e.last_offset = Some(top);
                true
            }
            Some(_) => false,
            None => {
                e.last_offset = Some(top);
                false
            }
        }
    }

    /// Channels whose publications carry offsets here (a position to check).
    pub fn positioned_channels(&self) -> impl Iterator<Item = &Arc<str>> {
        self.channels.iter().filter(|(_, e)| e.last_offset.is_some()).map(|(c, _)| c)
    }

    /// Live subscribers that receive join/leave pushes.
    pub fn join_leave_subscribers(&self, channel: &str) -> &[ConnKey] {
        self.channels.get(channel).map_or(&[], |e| e.join_leave.as_slice())
    }

    /// A pending subscriber gave up. Returns true when the channel has nobody left on this shard
    /// (the caller sends interest off).
    pub fn abandon(&mut self, channel: &str) -> bool {
        let Some(e) = self.channels.get_mut(channel) else { return false };
        e.pending = e.pending.saturating_sub(1);
        self.release_if_empty(channel)
    }

    /// Removes a live or buffering subscriber. Returns true when the channel has nobody left on
    /// this shard.
    pub fn remove(&mut self, channel: &str, key: ConnKey) -> bool {
        let Some(e) = self.channels.get_mut(channel) else { return false };
        if let Some(pos) = e.join_leave.iter().position(|k| *k == key) {
            e.join_leave.swap_remove(pos);
        }
        if let Some(pos) = e.keys.iter().position(|k| *k == key) {
            e.keys.swap_remove(pos);
        } else if let Some(pos) = e.buffering.iter().position(|b| b.key == key) {
            e.buffering.swap_remove(pos);
        } else if let Some(pos) = e.filtered.keys.iter().position(|(k, _)| *k == key) {
            let (_, slot) = e.filtered.keys.swap_remove(pos);
            if let Some(Some((_, users))) = e.filtered.filters.get_mut(slot as usize) {
                *users -= 1;
                if *users == 0 {
                    e.filtered.filters[slot as usize] = None;
                }
            }
        } else {
            return false;
        }
        self.release_if_empty(channel)
    }

    fn release_if_empty(&mut self, channel: &str) -> bool {
        let empty = self.channels.get(channel).is_some_and(|e| {
            e.keys.is_empty()
                && e.filtered.keys.is_empty()
                && e.buffering.is_empty()
                && e.pending == 0
        });
        if empty {
            self.channels.remove(channel);
        }
        empty
    }

    /// Live local subscribers of a channel without a tags filter.
    pub fn subscribers(&self, channel: &str) -> &[ConnKey] {
        self.channels.get(channel).map_or(&[], |e| e.keys.as_slice())
    }

    /// Live local subscribers of a channel with a tags filter, if any.
    pub fn filtered_subscribers(&self, channel: &str) -> Option<&Filtered> {
        self.channels.get(channel).map(|e| &e.filtered).filter(|f| !f.keys.is_empty())
    }

    /// Every live local subscriber of a channel, filtered or not.
    pub fn all_subscribers(&self, channel: &str) -> Vec<ConnKey> {
        let mut all = self.subscribers(channel).to_vec();
        if let Some(f) = self.filtered_subscribers(channel) {
            all.extend(f.keys.iter().map(|(k, _)| *k));
        }
        all
    }

    /// Number of channels with local subscribers (live or pending).
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Channels with live local subscribers and their counts.
    pub fn counts(&self) -> impl Iterator<Item = (&Arc<str>, usize)> {
        self.channels
            .iter()
            .map(|(c, e)| (c, e.keys.len() + e.filtered.keys.len()))
            .filter(|(_, n)| *n > 0)
    }
}

impl Entry {
    fn add(&mut self, key: ConnKey, filter: Option<&Arc<TagsFilter>>) {
        let Some(filter) = filter else { return self.keys.push(key) };
        let filters = &mut self.filtered.filters;
        let same = filters.iter().position(|s| s.as_ref().is_some_and(|(f, _)| **f == **filter));
        let slot = match same {
            Some(slot) => slot,
            None => {
                let slot = filters.iter().position(Option::is_none).unwrap_or(filters.len());
                if slot == filters.len() {
                    filters.push(None);
                }
                filters[slot] = Some((Arc::clone(filter), 0));
                slot
            }
        };
        if let Some(Some((_, users))) = filters.get_mut(slot) {
            *users += 1;
        }
        self.filtered.keys.push((key, u32::try_from(slot).unwrap_or(u32::MAX)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeSet, HashMap};

    fn key(slot: u32) -> ConnKey {
        ConnKey { slot, generation: 0 }
    }

    #[test]
    fn first_subscriber_requests_others_wait_until_acknowledged() {
        let mut hub = Hub::default();
        let ch: Arc<str> = Arc::from("c");
        let Begin::Request(generation) = hub.begin(&ch) else { panic!() };
        assert_eq!(hub.begin(&ch), Begin::Wait);
        assert!(hub.subscribers("c").is_empty(), "pending subscribers get no deliveries");
        assert!(!hub.registered_or_wait("c", 7));
        assert_eq!(hub.acknowledged("c", generation), vec![7], "the waiting flight resumes");
        assert!(hub.registered_or_wait("c", 8));
        hub.finish("c", key(1), None);
        hub.finish("c", key(2), None);
        assert_eq!(hub.begin(&ch), Begin::Registered);
        hub.finish("c", key(3), None);
        assert_eq!(hub.subscribers("c").len(), 3);
    }

    #[test]
    fn stale_acknowledgement_is_ignored_after_resubscribe() {
        let mut hub = Hub::default();
        let ch: Arc<str> = Arc::from("c");
        let Begin::Request(old) = hub.begin(&ch) else { panic!() };
        assert!(hub.abandon("c"), "last pending subscriber left: interest off");
        let Begin::Request(new) = hub.begin(&ch) else { panic!() };
        assert_ne!(old, new);
        assert!(!hub.registered_or_wait("c", 1));
        assert!(hub.acknowledged("c", old).is_empty());
        assert!(!hub.registered_or_wait("c", 2), "old ack must not register the new generation");
        assert_eq!(hub.acknowledged("c", new), vec![1, 2]);
        assert!(hub.registered_or_wait("c", 3));
    }

    #[test]
    fn channel_is_kept_while_a_subscriber_is_pending() {
        let mut hub = Hub::default();
        let ch: Arc<str> = Arc::from("c");
        let Begin::Request(g) = hub.begin(&ch) else { panic!() };
        hub.acknowledged("c", g);
        hub.finish("c", key(1), None);
        assert_eq!(hub.begin(&ch), Begin::Registered);
        assert!(!hub.remove("c", key(1)), "a pending subscriber still needs the channel");
        hub.finish("c", key(2), None);
        assert!(hub.remove("c", key(2)));
        assert_eq!(hub.channel_count(), 0);
    }

    proptest! {
        #[test]
        fn live_subscribers_match_a_plain_model(ops in proptest::collection::vec((any::<bool>(), 0u8..4, 0u32..6), 0..300)) {
            let mut hub = Hub::default();
            let mut model: HashMap<String, BTreeSet<u32>> = HashMap::new();
            for (add, ch, slot) in ops {
                let name: Arc<str> = Arc::from(format!("c{ch}"));
                let set = model.entry(name.to_string()).or_default();
                if add {
                    if set.contains(&slot) { continue; }
                    let first = set.is_empty();
                    set.insert(slot);
                    match hub.begin(&name) {
                        Begin::Request(g) => { prop_assert!(first); hub.acknowledged(&name, g); }
                        Begin::Registered => prop_assert!(!first),
                        Begin::Wait => prop_assert!(false, "no request is left in flight in this model"),
                    }
                    hub.finish(&name, key(slot), None);
                } else {
                    let present = set.remove(&slot);
                    let last = present && set.is_empty();
                    prop_assert_eq!(hub.remove(&name, key(slot)), last);
                }
                let mut got: Vec<u32> = hub.subscribers(&name).iter().map(|k| k.slot).collect();
                got.sort_unstable();
                prop_assert_eq!(got, set.iter().copied().collect::<Vec<_>>());
            }
            prop_assert_eq!(hub.channel_count(), model.values().filter(|s| !s.is_empty()).count());
        }
    }

    #[test]
    fn filtered_subscribers_share_a_slot_per_filter_and_free_it_when_the_last_leaves() {
        use crate::protocol::pb::FilterNode;
        let f = |val: &str| {
            let node = FilterNode {
                key: "k".into(),
                cmp: "eq".into(),
                val: val.into(),
                ..FilterNode::default()
            };
            Arc::new(TagsFilter::new(node).unwrap())
        };
        let mut hub = Hub::default();
        let ch: Arc<str> = Arc::from("c");
        for i in 0..3 {
            hub.begin(&ch);
            let filter = if i == 1 { f("b") } else { f("a") };
            hub.finish("c", key(i), Some(&filter));
        }
        let slots = |hub: &Hub| {
            hub.filtered_subscribers("c").unwrap().keys.iter().map(|(_, s)| *s).collect::<Vec<_>>()
        };
        assert_eq!(slots(&hub), [0, 1, 0], "equal filters share a slot");
        hub.remove("c", key(1));
        assert!(
            hub.filtered_subscribers("c").unwrap().filters[1].is_none(),
            "freed with its last user"
        );
        hub.begin(&ch);
        hub.finish("c", key(3), Some(&f("z")));
        assert_eq!(slots(&hub), [0, 0, 1], "a new filter takes the free slot");
        assert_eq!(hub.all_subscribers("c").len(), 3);
    }
}
