//! The home shard's side of the Redis engine: which calls go to Redis, what happens to the
//! replies, and what PUB/SUB brings in.
//!
//! With Redis, a home shard no longer answers publish, history, presence and positioned
//! subscribe calls itself: it queues the command on its Redis link and answers when the reply
//! comes ([`crate::broker::redis::Then`]). Delivery does not start from the publish at all: the
//! publication comes back on the home shard's PUB/SUB link, like every other node's, and goes
//! through [`Shard::emit`], the path the memory engine uses right after its append. So every
//! node delivers every publication through one code path, whichever node accepted it.
//!
//! Must not: answer a call before Redis did (except when the link is down: then at once, with
//! [`Answer::Failed`]), or read a position before Redis confirmed the channel's subscription.

use std::sync::Arc;

use redis_protocol::resp2::types::BytesFrame;

use crate::broker::memory::HistoryError;
use crate::broker::nats;
use crate::broker::redis::{self, Incoming, Parse, ReplyTo, Then};
use crate::shard::id::ShardId;
use crate::shard::msg::{Answer, Call, Lane, ShardMsg, SubscribeCall};
use crate::shard::Shard;

impl Shard {
    /// Whether publications cross nodes here (a Redis or NATS broker).
    pub(super) fn external_broker(&self) -> bool {
        self.nats.is_some() || self.redis.as_ref().is_some_and(|r| r.broker)
    }

    fn redis_presence(&self) -> bool {
        self.redis.as_ref().is_some_and(|r| r.presence)
    }

    /// Whether `call` is served by the Redis or NATS broker (or the Redis presence manager) on
    /// this shard rather than by the memory engine.
    pub(super) fn engine_serves(&self, call: &Call) -> bool {
        match call {
            Call::Publish(_)
            | Call::Subscribe(_)
            | Call::History { .. }
            | Call::HistoryRemove { .. }
            | Call::Position { .. }
            | Call::Survey { .. } => self.external_broker(),
            Call::Presence { .. } => self.redis_presence(),
            _ => false,
        }
    }

    /// Serves a call through Redis. `Some` is an answer available now (nothing to ask Redis, or
    /// the link is down); `None` means the answer follows the reply.
    pub(super) fn serve_engine(&mut self, call: Call, to: ReplyTo) -> Option<Answer> {
        if let Call::Survey { op, data } = call {
            return self.start_survey(op, data, to);
        }
        if let (Call::Presence { channel }, Some(redis)) = (&call, self.redis.as_mut()) {
            let then = Then::Answer(to, Parse::Presence);
            return redis.presence(channel, then).err().map(|_| Answer::Failed);
        }
        if self.nats.is_some() {
            return Some(self.serve_nats(call));
        }
        let redis = self.redis.as_mut()?;
        let queued = match call {
            Call::Publish(p) => {
                let then = Then::Answer(to, Parse::Published);
                redis.publish(
                    &p.channel,
                    &p.publication,
                    p.history,
                    p.idempotency_key.as_deref(),
                    p.version.as_ref(),
                    then,
                )
            }
            Call::Subscribe(sub) => return self.subscribe_engine(sub, to),
            Call::History { channel, policy, query } => {
                if !policy.enabled() {
                    return Some(Answer::History(Ok((Vec::new(), Default::default()))));
                }
                let then = Then::Answer(to, Parse::History(query.clone()));
                redis.history(&channel, policy, Some(&query), then)
            }
            Call::HistoryRemove { channel } => {
                redis.remove_history(&channel, Then::Answer(to, Parse::Done))
            }
            Call::Presence { channel } => {
                redis.presence(&channel, Then::Answer(to, Parse::Presence))
            }
            Call::Position { channel } => redis.top(&channel, Then::Answer(to, Parse::Top)),
            other => return Some(self.serve_now(other)),
        };
        queued.err().map(|_| Answer::Failed)
    }

    /// Home half of a subscription with Redis: presence and join go out at once; a positioned
    /// subscription waits until this node receives the channel, then reads the position (and
    /// the publications to recover).
    fn subscribe_engine(&mut self, sub: SubscribeCall, to: ReplyTo) -> Option<Answer> {
        let redis = self.redis.as_mut()?;
        let positioned = sub.position.as_ref().is_some_and(|(policy, _)| policy.enabled());
        if positioned {
            let pubsub = &mut redis.server(&sub.channel).sub;
            if !pubsub.up {
                return Some(Answer::Failed);
            }
            match pubsub.channels.get_mut(&sub.channel) {
                Some(e) if !e.active() => {
                    e.deferred.push((to, sub));
                    return None;
                }
                Some(_) => {}
                // Interest always precedes the call on the lane; a channel without it lost its
                // last subscriber meanwhile and the answer no longer matters.
                None => return Some(Answer::Failed),
            }
        }
        if sub.presence {
            if redis.presence {
                redis.presence_add(&sub.channel, &sub.info);
            }
            let entry = self.home.entry(Arc::clone(&sub.channel)).or_default();
            entry.presence.insert(Arc::from(sub.info.client.as_str()), Arc::clone(&sub.info));
        }
        let redis = self.redis.as_mut()?;
        if sub.join {
            redis.publish_presence_event(&sub.channel, &sub.info, true);
        }
        match sub.position {
            Some((policy, query)) if policy.enabled() => {
                let then = Then::Answer(to, Parse::Subscribed(query.clone()));
                redis
                    .history(&sub.channel, policy, query.as_ref(), then)
                    .err()
                    .map(|_| Answer::Failed)
            }
            _ => Some(Answer::Subscribed { top: None, read: Ok(Vec::new()) }),
        }
    }

    /// Serves a call with the NATS broker: publications go out at once (NATS confirms nothing
    /// per message, as in Centrifugo); there is no history, and presence stays in memory.
    fn serve_nats(&mut self, call: Call) -> Answer {
        let Some(nats) = self.nats.as_mut() else { return Answer::Failed };
        match call {
            Call::Publish(p) => {
                if nats::supported_channel(&p.channel) && nats.publish(&p.channel, &p.publication) {
                    Answer::Published(None)
                } else {
                    Answer::Failed
                }
            }
            Call::History { policy, .. } if policy.enabled() => {
                Answer::History(Err(HistoryError::NotAvailable))
            }
            Call::History { .. } => Answer::History(Ok((Vec::new(), Default::default()))),
            Call::HistoryRemove { .. } => Answer::Failed,
            Call::Position { .. } => Answer::Position(None),
            Call::Subscribe(sub) => {
                if sub.position.as_ref().is_some_and(|(policy, _)| policy.enabled()) {
                    // Positioning needs a stream the NATS broker does not keep.
                    return Answer::Failed;
                }
                if sub.join {
                    nats.publish_presence_event(&sub.channel, &sub.info, true);
                }
                if sub.presence {
                    if let Some(r) = self.redis.as_mut().filter(|r| r.presence) {
                        r.presence_add(&sub.channel, &sub.info);
                    }
                    let entry = self.home.entry(Arc::clone(&sub.channel)).or_default();
                    entry.presence.insert(Arc::from(sub.info.client.as_str()), sub.info);
                }
                Answer::Subscribed { top: None, read: Ok(Vec::new()) }
            }
            other => self.serve_now(other),
        }
    }

    /// Publishes a control message to every node (Redis or NATS); nothing with one node.
    pub fn publish_control(&mut self, data: &[u8]) {
        if let Some(n) = self.nats.as_mut() {
            n.publish_control(data);
        } else if let Some(r) = self.redis.as_mut().filter(|r| r.broker) {
            r.publish_control(data);
        }
    }

    /// The NATS connection is (again) up.
    pub fn nats_up(&mut self) {
        if let Some(n) = self.nats.as_mut() {
            n.resubscribe();
        }
    }

    /// The NATS connection broke: waiting subscribers go ahead (they miss what is published
    /// until it is back, at most once as in Centrifugo).
    pub fn nats_down(&mut self) {
        let released = self.nats.as_mut().map(|n| n.down()).unwrap_or_default();
        self.release_acks(released);
    }

    fn release_acks(&mut self, acks: Vec<(ShardId, u64, Arc<str>)>) {
        for (shard, generation, channel) in acks {
            self.send(Lane::Reply, shard, ShardMsg::InterestAcked { channel, generation });
        }
    }

    /// One operation from the NATS server.
    pub fn nats_op(&mut self, op: nats::Op) {
        let Some(n) = self.nats.as_mut() else { return };
        match op {
            nats::Op::Msg { sid, payload } => match n.message(sid, payload) {
                nats::Incoming::Event(channel, event) => self.emit(&channel, event),
                nats::Incoming::Control(data) => self.control_message(&data),
                nats::Incoming::Other => {}
            },
            nats::Op::Ping => n.ping(),
            nats::Op::Pong => {
                let released = n.pong();
                self.release_acks(released);
            }
            nats::Op::Info | nats::Op::Ok | nats::Op::Err(_) => {}
        }
    }

    /// Interest in a channel homed here changed. Returns whether an acknowledgement may go out
    /// now (otherwise it waits for Redis to confirm the subscription).
    pub(super) fn engine_interest(
        &mut self,
        channel: &Arc<str>,
        subscribed: bool,
        ack: Option<(ShardId, u64)>,
    ) -> bool {
        if let Some(n) = self.nats.as_mut() {
            if !subscribed {
                if self.home.get(channel.as_ref()).is_none_or(|e| e.interest.is_empty()) {
                    n.unwant(channel);
                }
                return true;
            }
            // A wildcard subject would bring other channels' messages: never subscribed.
            return !nats::supported_channel(channel) || n.want(channel, ack);
        }
        let Some(redis) = self.redis.as_mut().filter(|r| r.broker) else { return true };
        let settings = Arc::clone(&redis.settings);
        let pubsub = &mut redis.server(channel).sub;
        if !subscribed {
            if self.home.get(channel.as_ref()).is_none_or(|e| e.interest.is_empty()) {
                pubsub.unwant(&settings, channel);
            }
            return true;
        }
        if pubsub.want(&settings, channel) || !pubsub.up {
            return true;
        }
        if let (Some(ack), Some(e)) = (ack, pubsub.channels.get_mut(channel)) {
            e.acks.push(ack);
        }
        false
    }

    /// A subscriber left: its presence entry goes, and a leave event goes to every node.
    pub(super) fn engine_unsubscribed(
        &mut self,
        channel: &str,
        client: &str,
        leave: Option<&Arc<crate::protocol::ClientInfo>>,
    ) -> bool {
        if let Some(n) = self.nats.as_mut() {
            let had = self.home.get_mut(channel).and_then(|e| e.presence.remove(client)).is_some();
            if let Some(r) = self.redis.as_mut().filter(|r| r.presence && had) {
                r.presence_remove(channel, client);
            }
            if let Some(info) = leave {
                n.publish_presence_event(channel, info, false);
            }
            return true;
        }
        let Some(redis) = self.redis.as_mut() else { return false };
        let had = self.home.get_mut(channel).and_then(|e| e.presence.remove(client)).is_some();
        if had && redis.presence {
            redis.presence_remove(channel, client);
        }
        if let Some(info) = leave {
            redis.publish_presence_event(channel, info, false);
        }
        true
    }

    /// The reply to the oldest outstanding command. `false` when no command was waiting (the
    /// connection is out of step and must be dropped).
    pub fn redis_reply(&mut self, server: usize, frame: BytesFrame) -> bool {
        let Some(link) = self.redis.as_mut().and_then(|r| r.servers.get_mut(server)) else {
            return false;
        };
        let Some(then) = link.cmd.pop() else { return false };
        match then {
            Then::Ignore => {
                if let BytesFrame::Error(e) = &frame {
                    tracing::warn!(error = %e, "redis command failed");
                }
            }
            Then::Answer(to, parse) => {
                let answer = redis::answer(parse, Ok(frame));
                self.answer_to(to, answer);
            }
        }
        true
    }

    fn answer_to(&mut self, to: ReplyTo, answer: Answer) {
        self.send(to.lane, to.origin, ShardMsg::Answer { req: to.req, answer: Box::new(answer) });
    }

    /// The command link is connected and the scripts are loaded.
    pub fn redis_commands_up(&mut self, server: usize, shas: Vec<String>) {
        if let Some(r) = self.redis.as_mut().and_then(|r| r.servers.get_mut(server)) {
            r.shas = shas;
            r.cmd.up = true;
        }
    }

    /// The command link broke: every outstanding call fails (the caller sees a temporary error;
    /// a publish whose reply was lost may have been applied, exactly as with Centrifugo).
    pub fn redis_commands_down(&mut self, server: usize) {
        let Some(r) = self.redis.as_mut().and_then(|r| r.servers.get_mut(server)) else { return };
        for then in r.cmd.down() {
            if let Then::Answer(to, _) = then {
                self.answer_to(to, Answer::Failed);
            }
        }
    }

    /// The PUB/SUB link is connected: subscribe every channel with interest again.
    pub fn redis_pubsub_up(&mut self, server: usize) {
        let Some(r) = self.redis.as_mut() else { return };
        let settings = Arc::clone(&r.settings);
        // The control channel lives on the first server, as with Centrifugo.
        let control = self.id.0 == 0 && server == 0;
        let extra = if control {
            vec![settings.control_channel(), settings.node_channel(&crate::node::get().uid)]
        } else {
            Vec::new()
        };
        if let Some(s) = r.servers.get_mut(server) {
            s.sub.resubscribe(&settings, &extra);
        }
    }

    /// The PUB/SUB link broke: publications may be missed until it is back. Waiting
    /// subscribers are released (plain ones) or failed (positioned ones, which retry); the
    /// positioned subscribers already in place notice the gap on the next publication or
    /// position check and recover.
    pub fn redis_pubsub_down(&mut self, server: usize) {
        let Some(r) = self.redis.as_mut().and_then(|r| r.servers.get_mut(server)) else { return };
        let (acks, calls) = r.sub.down();
        self.release_acks(acks);
        for (to, _) in calls {
            self.answer_to(to, Answer::Failed);
        }
    }

    /// A frame from the PUB/SUB link.
    pub fn redis_incoming(&mut self, server: usize, frame: BytesFrame) {
        let Some(r) = self.redis.as_mut() else { return };
        match r.incoming(frame) {
            Incoming::Event(channel, event) => self.emit(&channel, event),
            Incoming::Subscribed(channel) => {
                let Some(s) = r.servers.get_mut(server) else { return };
                let Some(held) = s.sub.confirmed(&channel) else { return };
                for (shard, generation) in held.acks {
                    let msg = ShardMsg::InterestAcked { channel: Arc::clone(&channel), generation };
                    self.send(Lane::Reply, shard, msg);
                }
                for (to, sub) in held.deferred {
                    if let Some(answer) = self.subscribe_engine(sub, to) {
                        self.answer_to(to, answer);
                    }
                }
            }
            Incoming::Control(data) => self.control_message(&data),
            Incoming::Other => {}
        }
    }

    /// Presence entries live `presence_ttl` in Redis: the home shard re-adds the entries of
    /// this node's subscribers (called every `client.presence_update_interval`).
    pub(super) fn refresh_presence(&mut self) {
        let Some(r) = self.redis.as_mut().filter(|r| r.presence) else { return };
        for (channel, e) in &self.home {
            for info in e.presence.values() {
                r.presence_add(channel, info);
            }
        }
    }
}
