//! The home shard's side of the brokers that connect nodes (Redis, NATS, through
//! [`crate::broker::Broker`]) and of the Redis presence manager: which calls they serve, what
//! happens to Redis replies, and what their subscriptions bring in.
//!
//! With such a broker, a home shard no longer answers publish, history and positioned subscribe
//! calls itself: it hands them to the broker and answers when the broker's server replied
//! ([`crate::broker::redis::Then`]). Delivery does not start from the publish at all: the
//! publication comes back through the broker's subscription, like every other node's, and goes
//! through [`Shard::emit`], the path the memory engine uses right after its append. So every
//! node delivers every publication through one code path, whichever node accepted it.
//!
//! Must not: answer a call before the broker did (except when it is down: then at once, with
//! [`Answer::Failed`]), or read a position before the broker delivers the channel.

use std::sync::Arc;

use redis_protocol::resp2::types::BytesFrame;

use crate::broker::redis::{self, Incoming, Parse, Then};
use crate::broker::{nats, Broker, Gate, ReplyTo};
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

    /// The broker that carries publications between nodes, if any.
    pub(super) fn broker(&mut self) -> Option<&mut dyn Broker> {
        if let Some(n) = self.nats.as_mut() {
            return Some(n);
        }
        self.redis.as_mut().filter(|r| r.broker).map(|r| r as &mut dyn Broker)
    }

    /// Serves a call through the broker (or the Redis presence manager). `Some` is an answer
    /// available now; `None` means the answer follows the broker's reply.
    pub(super) fn serve_engine(&mut self, call: Call, to: ReplyTo) -> Option<Answer> {
        if let Call::Survey { op, data, to_node } = call {
            return self.start_survey(op, data, to_node, to);
        }
        if let (Call::Presence { channel }, Some(redis)) = (&call, self.redis.as_mut()) {
            let then = Then::Answer(to, Parse::Presence);
            return redis.presence(channel, then).err().map(|_| Answer::Failed);
        }
        if let Call::Subscribe(sub) = call {
            return self.subscribe_engine(sub, to);
        }
        let Some(broker) = self.broker() else { return Some(self.serve_now(call)) };
        match call {
            Call::Publish(p) => broker.publish(&p, to),
            Call::History { policy, .. } if !policy.enabled() => {
                Some(Answer::History(Ok((Vec::new(), Default::default()))))
            }
            Call::History { channel, policy, query } => broker.history(&channel, policy, query, to),
            Call::HistoryRemove { channel } => broker.remove_history(&channel, to),
            Call::Position { channel } => broker.top(&channel, to),
            other => Some(self.serve_now(other)),
        }
    }

    /// Home half of a subscription with a broker: a positioned one waits at the broker's gate
    /// until this node receives the channel; then presence and join go out, and the position
    /// (with the publications to recover) is read.
    fn subscribe_engine(&mut self, sub: SubscribeCall, to: ReplyTo) -> Option<Answer> {
        let positioned = sub.position.as_ref().is_some_and(|(policy, _)| policy.enabled());
        let sub = if positioned {
            match self.broker()?.gate(sub, to) {
                Gate::Open(sub) => sub,
                Gate::Held => return None,
                Gate::Refused => return Some(Answer::Failed),
            }
        } else {
            sub
        };
        if sub.presence {
            if let Some(r) = self.redis.as_mut().filter(|r| r.presence) {
                r.presence_add(&sub.channel, &sub.info);
            }
            let entry = self.home.entry(Arc::clone(&sub.channel)).or_default();
            entry.presence.insert(Arc::from(sub.info.client.as_str()), Arc::clone(&sub.info));
        }
        let broker = self.broker()?;
        if sub.join {
            broker.publish_presence_event(&sub.channel, &sub.info, true);
        }
        match sub.position {
            Some((policy, query)) if policy.enabled() => {
                broker.read_position(&sub.channel, policy, query, to)
            }
            _ => Some(Answer::Subscribed { top: None, read: Ok(Vec::new()) }),
        }
    }

    /// Publishes a control message to every node (Redis or NATS); nothing with one node.
    pub fn publish_control(&mut self, data: &[u8]) {
        if let Some(b) = self.broker() {
            b.publish_control(data);
        }
    }

    /// The NATS connection is (again) up.
    pub fn nats_up(&mut self) {
        if let Some(n) = self.nats.as_mut() {
            n.resubscribe();
        }
    }

    /// The NATS connection broke: waiting subscribers keep waiting for the subscription to be
    /// confirmed after the reconnect.
    pub fn nats_down(&mut self) {
        if let Some(n) = self.nats.as_mut() {
            n.down();
        }
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
    /// now (otherwise it waits for the broker to deliver the channel).
    pub(super) fn engine_interest(
        &mut self,
        channel: &Arc<str>,
        subscribed: bool,
        ack: Option<(ShardId, u64)>,
    ) -> bool {
        let gone = self.home.get(channel.as_ref()).is_none_or(|e| e.interest.is_empty());
        let Some(broker) = self.broker() else { return true };
        if subscribed {
            broker.want(channel, ack)
        } else {
            if gone {
                broker.unwant(channel);
            }
            true
        }
    }

    /// A subscriber left: its presence entry goes, and a leave event goes to every node.
    pub(super) fn engine_unsubscribed(
        &mut self,
        channel: &str,
        client: &str,
        leave: Option<&Arc<crate::protocol::ClientInfo>>,
    ) -> bool {
        if !self.external_broker() {
            return false;
        }
        let had = self.home.get_mut(channel).and_then(|e| e.presence.remove(client)).is_some();
        if let Some(r) = self.redis.as_mut().filter(|r| r.presence && had) {
            r.presence_remove(channel, client);
        }
        if let (Some(info), Some(broker)) = (leave, self.broker()) {
            broker.publish_presence_event(channel, info, false);
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
            vec![
                settings.keys.control_channel(),
                settings.keys.node_channel(&crate::node::get().uid),
            ]
        } else {
            Vec::new()
        };
        if let Some(s) = r.servers.get_mut(server) {
            s.sub.resubscribe(&settings, &extra);
        }
    }

    /// The PUB/SUB link broke: publications may be missed until it is back. Positioned
    /// subscribe calls waiting at the gate fail (their clients retry); plain subscribers keep
    /// waiting for the subscription to be confirmed after the reconnect. Positioned subscribers
    /// already in place notice the gap on the next publication or position check and recover.
    pub fn redis_pubsub_down(&mut self, server: usize) {
        let Some(r) = self.redis.as_mut().and_then(|r| r.servers.get_mut(server)) else { return };
        let calls = r.sub.down();
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
                let acks = held.acks.into_iter().map(|(s, g)| (s, g, Arc::clone(&channel)));
                self.release_acks(acks.collect());
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
