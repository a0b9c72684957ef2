//! The memory broker (`engine.type: memory`, one node): each channel's stream, idempotency
//! results and last version, kept by the channel's home shard.
//!
//! Owns: that state for the channels homed on this shard. Publish order is simply the order in
//! which the home shard calls [`Broker::publish`], so there is no locking. A publication is
//! delivered the moment it is ordered (`Effect::Emit` before the answer), the same path a Redis
//! or NATS publication takes when it comes back through their subscription.
//!
//! Must not: know about connections or other shards, or read a clock (time is passed in).

use std::collections::HashMap;
use std::sync::Arc;

use crate::broker::stream::{HistoryPolicy, HistoryQuery, Position, Stream};
use crate::broker::{Broker, Event, Gate, Outbox, PublishCall, Reply, ReplyTo, SubscribeCall};
use crate::protocol::ClientInfo;
use crate::shard::id::ShardId;

/// How long an API `idempotency_key` result is remembered (spec §6.7).
pub const IDEMPOTENCY_TTL_MS: u64 = 5 * 60 * 1000;

/// One channel's state in the memory broker.
#[derive(Debug, Default)]
struct Channel {
    /// Created on the first stored publication or the first positioned subscription.
    stream: Option<Stream>,
    /// API idempotency keys → (first result, expiry in ms).
    idempotency: HashMap<String, (Option<Position>, u64)>,
    /// Last published `version` and its `version_epoch`.
    version: Option<(u64, String)>,
}

impl Channel {
    fn is_idle(&self) -> bool {
        self.stream.is_none() && self.idempotency.is_empty() && self.version.is_none()
    }

    fn top(&self) -> Option<Position> {
        self.stream.as_ref().map(|s| s.position().clone())
    }

    /// The stream, created (or renewed past its meta TTL) for `policy`.
    fn touched(&mut self, policy: HistoryPolicy, now_ms: u64) -> &mut Stream {
        let stream = self.stream.get_or_insert_with(Stream::default);
        stream.touch(policy, now_ms);
        stream
    }
}

/// The memory broker of one shard.
#[derive(Debug, Default)]
pub struct Memory {
    channels: HashMap<Arc<str>, Channel>,
}

impl Memory {
    fn forget_if_idle(&mut self, channel: &str) {
        if self.channels.get(channel).is_some_and(Channel::is_idle) {
            self.channels.remove(channel);
        }
    }

    /// Periodic upkeep: drops expired history, forgets streams whose `history_meta_ttl` passed
    /// while nobody was subscribed, and idempotency keys older than five minutes, then channels
    /// with nothing left. A stream with subscribers (`subscribed`) keeps its epoch:
    /// publications carry no epoch, so a silent restart at offset 1 could not be told apart by
    /// them.
    pub fn sweep(&mut self, now_ms: u64, subscribed: impl Fn(&str) -> bool) {
        self.channels.retain(|name, c| {
            if let Some(s) = c.stream.as_mut().filter(|_| subscribed(name)) {
                s.keep_alive(now_ms);
            }
            if c.stream.as_ref().is_some_and(|s| s.meta_expired(now_ms)) {
                c.stream = None;
            }
            if let Some(s) = c.stream.as_mut() {
                s.expire(now_ms);
            }
            c.idempotency.retain(|_, (_, expire)| *expire > now_ms);
            !c.is_idle()
        });
    }

    /// The stream top of a channel, if it keeps one (tests and the simulation read it).
    pub fn position(&self, channel: &str) -> Option<Position> {
        self.channels.get(channel).and_then(Channel::top)
    }
}

impl Broker for Memory {
    fn publish(&mut self, call: PublishCall, to: ReplyTo, now_ms: u64, out: &mut Outbox) {
        let PublishCall { channel, publication, history, idempotency_key, version } = call;
        let entry = self.channels.entry(Arc::clone(&channel)).or_default();
        entry.idempotency.retain(|_, (_, expire)| *expire > now_ms);
        if let Some(first) = idempotency_key.as_ref().and_then(|k| entry.idempotency.get(k)) {
            out.answer(to, Reply::Published(first.0.clone()));
            return;
        }
        if let Some((v, epoch)) = &version {
            if let Some((stored, stored_epoch)) = &entry.version {
                if *v <= *stored && (epoch.is_empty() || epoch == stored_epoch) {
                    out.answer(to, Reply::Published(entry.top()));
                    return;
                }
            }
            entry.version = Some((*v, epoch.clone()));
        }
        let (publication, position) = if history.enabled() {
            let stream = entry.stream.get_or_insert_with(Stream::default);
            let stored = stream.append(publication, history, now_ms);
            (stored, entry.top())
        } else {
            (Arc::new(publication), None)
        };
        if let Some(k) = idempotency_key {
            entry.idempotency.insert(k, (position.clone(), now_ms + IDEMPOTENCY_TTL_MS));
        }
        out.emit(Arc::clone(&channel), Event::Pub(publication));
        out.answer(to, Reply::Published(position));
        self.forget_if_idle(&channel);
    }

    fn publish_presence_event(
        &mut self,
        channel: &Arc<str>,
        info: Arc<ClientInfo>,
        join: bool,
        out: &mut Outbox,
    ) {
        let event = if join { Event::Join(info) } else { Event::Leave(info) };
        out.emit(Arc::clone(channel), event);
    }

    fn history(
        &mut self,
        channel: &Arc<str>,
        policy: HistoryPolicy,
        query: HistoryQuery,
        to: ReplyTo,
        now_ms: u64,
        out: &mut Outbox,
    ) {
        let stream = self.channels.entry(Arc::clone(channel)).or_default().touched(policy, now_ms);
        let read = stream.read(&query, now_ms).map(|p| (p, stream.position().clone()));
        out.answer(to, Reply::History(read));
    }

    fn remove_history(&mut self, channel: &str, to: ReplyTo, out: &mut Outbox) {
        if let Some(stream) = self.channels.get_mut(channel).and_then(|c| c.stream.as_mut()) {
            stream.clear();
        }
        out.answer(to, Reply::Done);
    }

    fn top(&mut self, channel: &str, to: ReplyTo, out: &mut Outbox) {
        out.answer(to, Reply::Position(self.position(channel).map(|p| p.offset)));
    }

    fn gate(&mut self, sub: SubscribeCall, _: ReplyTo) -> Gate {
        // Delivery is immediate here: a position read can never miss a publication.
        Gate::Open(sub)
    }

    fn read_position(
        &mut self,
        channel: &Arc<str>,
        policy: HistoryPolicy,
        query: Option<HistoryQuery>,
        to: ReplyTo,
        now_ms: u64,
        out: &mut Outbox,
    ) {
        let stream = self.channels.entry(Arc::clone(channel)).or_default().touched(policy, now_ms);
        let read = match &query {
            Some(q) => stream.read(q, now_ms),
            None => Ok(Vec::new()),
        };
        out.answer(to, Reply::Subscribed { top: Some(stream.position().clone()), read });
    }

    fn want(&mut self, _: &Arc<str>, _: Option<(ShardId, u64)>) -> bool {
        true
    }

    fn unwant(&mut self, _: &str, _: &mut Outbox) {}

    fn publish_control(&mut self, _: &[u8]) {}

    fn publish_to_node(&mut self, _: &str, _: &[u8]) {}

    fn connects_nodes(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::Effect;
    use crate::protocol::{Publication, RawJson};
    use crate::shard::id::Lane;
    use std::time::Duration;

    const TO: ReplyTo = ReplyTo { origin: ShardId(0), req: 1, lane: Lane::Reply };

    fn call(channel: &str, history: HistoryPolicy, key: Option<&str>) -> PublishCall {
        PublishCall {
            channel: Arc::from(channel),
            publication: Publication {
                data: RawJson::from_value_str("{}").unwrap(),
                ..Publication::default()
            },
            history,
            idempotency_key: key.map(str::to_owned),
            version: None,
        }
    }

    fn drain(out: &mut Outbox) -> Vec<Effect> {
        std::iter::from_fn(|| out.pop()).collect()
    }

    #[test]
    fn a_publication_is_delivered_before_it_is_answered_and_a_repeated_key_is_not() {
        let policy = HistoryPolicy { size: 10, ttl: Duration::from_secs(60), ..Default::default() };
        let (mut m, mut out) = (Memory::default(), Outbox::default());
        m.publish(call("c", policy, Some("k")), TO, 0, &mut out);
        let effects = drain(&mut out);
        assert!(
            matches!(&effects[0], Effect::Emit(ch, Event::Pub(p)) if &**ch == "c" && p.offset == 1)
        );
        assert!(
            matches!(&effects[1], Effect::Answer(to, Reply::Published(Some(p))) if *to == TO && p.offset == 1)
        );
        m.publish(call("c", policy, Some("k")), TO, 1, &mut out);
        let effects = drain(&mut out);
        assert_eq!(effects.len(), 1, "a repeat is answered with the first result, not delivered");
        assert!(
            matches!(&effects[0], Effect::Answer(_, Reply::Published(Some(p))) if p.offset == 1)
        );
    }

    #[test]
    fn sweep_forgets_streams_past_their_meta_ttl_unless_someone_subscribes() {
        let policy = HistoryPolicy {
            size: 10,
            ttl: Duration::from_millis(1),
            meta_ttl: Duration::from_millis(1),
        };
        let (mut m, mut out) = (Memory::default(), Outbox::default());
        for ch in ["quiet", "watched"] {
            m.publish(call(ch, policy, None), TO, 0, &mut out);
        }
        m.sweep(5, |ch| ch == "watched");
        assert_eq!(m.position("quiet"), None, "an idle expired stream is forgotten");
        assert_eq!(
            m.position("watched").map(|p| p.offset),
            Some(1),
            "a subscribed stream keeps its epoch"
        );
    }
}
