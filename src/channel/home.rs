//! The home half of every channel: what a channel's home shard keeps and does for it.
//!
//! Owns, for the channels (and users) homed on this shard: the interest set (which shards have
//! subscribers), this node's presence entries, and the per-user connection counts of
//! `client.user_connection_limit`. Serves the channel requests other shards send home
//! (`Call::Publish`, `Call::Subscribe`, history, presence, position) through the shard's
//! [`Engine`]: the broker orders and stores, this module decides the steps around it (the gate a
//! positioned subscribe waits at, presence, join and leave). Streams and idempotency results are
//! the broker's.
//!
//! Must not: touch connections, send to other shards (answers and events go into the
//! [`Outbox`]), or read a clock.

use std::collections::HashMap;
use std::sync::Arc;

use crate::broker::stream::{HistoryPolicy, HistoryQuery, Position};
use crate::broker::{Gate, Outbox, PublishCall, Reply, ReplyTo, SubscribeCall};
use crate::protocol::ClientInfo;
use crate::shard::engine::Engine;
use crate::shard::id::{ShardId, ShardSet};

/// What the home shard keeps for one channel.
#[derive(Debug, Default)]
struct HomeChannel {
    /// Shards with at least one local subscriber.
    interest: ShardSet,
    /// This node's subscribers in the channel's presence: client id → entry. With the memory
    /// presence manager this is the presence; with Redis, what this node refreshes there.
    presence: HashMap<Arc<str>, Arc<ClientInfo>>,
}

/// The home state of this shard's channels and users.
#[derive(Debug, Default)]
pub struct Home {
    channels: HashMap<Arc<str>, HomeChannel>,
    /// Counted connections of the users homed here (`client.user_connection_limit`).
    users: HashMap<Arc<str>, usize>,
}

impl Home {
    fn forget_if_idle(&mut self, channel: &str) {
        let idle = self
            .channels
            .get(channel)
            .is_some_and(|c| c.interest.is_empty() && c.presence.is_empty());
        if idle {
            self.channels.remove(channel);
        }
    }

    /// The shards with subscribers of `channel`, if any.
    pub fn interested(&self, channel: &str) -> Option<ShardSet> {
        self.channels.get(channel).map(|c| c.interest).filter(|s| !s.is_empty())
    }

    /// Whether `client` is in this node's presence of `channel`.
    pub fn in_presence(&self, channel: &str, client: &str) -> bool {
        self.channels.get(channel).is_some_and(|c| c.presence.contains_key(client))
    }

    /// Whether any shard has subscribers of `channel`.
    pub fn has_interest(&self, channel: &str) -> bool {
        self.interested(channel).is_some()
    }

    /// Channels with at least one subscriber anywhere (API `info`).
    pub fn channels_with_interest(&self) -> u64 {
        self.channels.values().filter(|c| !c.interest.is_empty()).count() as u64
    }

    /// This node's presence entries, by channel (the Redis presence refresh).
    pub fn presence_entries(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<ClientInfo>)> {
        self.channels.iter().flat_map(|(ch, c)| c.presence.values().map(move |i| (ch, i)))
    }

    /// `shard` now has (`on`) or no longer has local subscribers of `channel`: the broker
    /// receives the channel from the first interest on and drops it after the last. Returns
    /// whether `ack` may be acknowledged now (otherwise the broker releases it later).
    pub fn interest(
        &mut self,
        engine: &mut Engine,
        channel: &Arc<str>,
        shard: ShardId,
        on: bool,
        ack: Option<u64>,
        out: &mut Outbox,
    ) -> bool {
        let entry = self.channels.entry(Arc::clone(channel)).or_default();
        if on {
            entry.interest.insert(shard);
            return engine.broker().want(channel, ack.map(|g| (shard, g)));
        }
        entry.interest.remove(shard);
        if entry.interest.is_empty() {
            engine.broker().unwant(channel, out);
        }
        self.forget_if_idle(channel);
        true
    }

    /// Orders a publication (`Call::Publish`).
    pub fn publish(
        &mut self,
        engine: &mut Engine,
        call: PublishCall,
        to: ReplyTo,
        now_ms: u64,
        out: &mut Outbox,
    ) {
        engine.broker().publish(call, to, now_ms, out);
    }

    /// Registers a subscriber (`Call::Subscribe`). It first waits at the broker's gate until
    /// this node receives the channel: its answer promises every later publication, and a
    /// positioned one's read must not miss one made before the broker subscribed. The broker
    /// hands a held call back through [`Home::subscribe_open`].
    pub fn subscribe(
        &mut self,
        engine: &mut Engine,
        sub: SubscribeCall,
        to: ReplyTo,
        now_ms: u64,
        out: &mut Outbox,
    ) {
        let sub = match engine.broker().gate(sub, to) {
            Gate::Open(sub) => sub,
            Gate::Held => return,
            Gate::Refused => return out.answer(to, Reply::Failed),
        };
        self.subscribe_open(engine, sub, to, now_ms, out);
    }

    /// A subscriber past the gate: presence, join, then the position (with the publications
    /// to recover).
    pub fn subscribe_open(
        &mut self,
        engine: &mut Engine,
        sub: SubscribeCall,
        to: ReplyTo,
        now_ms: u64,
        out: &mut Outbox,
    ) {
        let positioned = sub.positioned();
        let SubscribeCall { channel, info, presence, join, position } = sub;
        if presence {
            engine.presence_add(&channel, &info, now_ms);
            let entry = self.channels.entry(Arc::clone(&channel)).or_default();
            entry.presence.insert(Arc::from(info.client.as_str()), Arc::clone(&info));
        }
        if join {
            engine.broker().publish_presence_event(&channel, info, true, out);
        }
        match position {
            Some((policy, query)) if positioned => {
                engine.broker().read_position(&channel, policy, query, to, now_ms, out);
            }
            _ => out.answer(to, Reply::Subscribed { top: None, read: Ok(Vec::new()) }),
        }
    }

    /// A subscriber left (`Cast::Unsubscribed`): its presence entry goes, and a leave event
    /// goes to every node when asked.
    pub fn unsubscribed(
        &mut self,
        engine: &mut Engine,
        channel: &Arc<str>,
        client: &str,
        leave: Option<Arc<ClientInfo>>,
        out: &mut Outbox,
    ) {
        let had = self.channels.get_mut(channel).and_then(|c| c.presence.remove(client)).is_some();
        if had {
            engine.presence_remove(channel, client);
        }
        if let Some(info) = leave {
            engine.broker().publish_presence_event(channel, info, false, out);
        }
        self.forget_if_idle(channel);
    }

    /// A page of history (`Call::History`); a namespace without history reads nothing.
    #[allow(clippy::too_many_arguments, reason = "the request's parts, as the broker takes them")]
    pub fn history(
        &mut self,
        engine: &mut Engine,
        channel: &Arc<str>,
        policy: HistoryPolicy,
        query: HistoryQuery,
        to: ReplyTo,
        now_ms: u64,
        out: &mut Outbox,
    ) {
        if !policy.enabled() {
            return out.answer(to, Reply::History(Ok((Vec::new(), Position::default()))));
        }
        engine.broker().history(channel, policy, query, to, now_ms, out);
    }

    /// The channel's presence (`Call::Presence`): from Redis, or this shard's entries.
    pub fn presence(
        &mut self,
        engine: &mut Engine,
        channel: &str,
        to: ReplyTo,
        now_ms: u64,
        out: &mut Outbox,
    ) {
        if engine.read_presence(channel, to, now_ms, out) {
            return;
        }
        let entries = self
            .channels
            .get(channel)
            .map(|c| c.presence.values().cloned().collect())
            .unwrap_or_default();
        out.answer(to, Reply::Presence(entries));
    }

    /// Counts one more connection of `user` unless it has `limit` already
    /// (`Call::UserConnect`).
    pub fn admit_user(&mut self, user: Arc<str>, limit: usize) -> bool {
        let n = self.users.entry(user).or_default();
        let admitted = *n < limit;
        if admitted {
            *n += 1;
        }
        admitted
    }

    /// A counted connection of `user` is gone (`Cast::UserGone`).
    pub fn user_gone(&mut self, user: &str) {
        if let Some(n) = self.users.get_mut(user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.users.remove(user);
            }
        }
    }
}
