//! The engine part of a shard: which broker orders its home channels (memory, Redis or NATS),
//! which presence manager keeps their presence (memory or Redis), and the protocol state of the
//! broker links, fed by the link events their I/O tasks report.
//!
//! Owns: the brokers' per-shard state. Everything a broker produces (answers, events to deliver,
//! released acknowledgements, control messages) goes into the [`Outbox`] the caller passes; the
//! shard drains it. Must not: send to other shards, touch connections, or read a clock.

use std::sync::Arc;

use redis_protocol::resp2::types::BytesFrame;

use crate::broker::memory::Memory;
use crate::broker::redis::{self, Incoming, Parse, Redis, Then};
use crate::broker::{nats, Broker, Effect, Outbox, Reply, ReplyTo};
use crate::protocol::ClientInfo;

/// The brokers of one shard.
#[derive(Debug, Default)]
pub struct Engine {
    memory: Memory,
    redis: Option<Redis>,
    nats: Option<nats::Nats>,
}

impl Engine {
    /// Adds the Redis engine (broker, presence manager, or both); before its links start.
    pub fn set_redis(&mut self, redis: Redis) {
        self.redis = Some(redis);
    }

    /// Adds the NATS broker; before its link starts.
    pub fn set_nats(&mut self, nats: nats::Nats) {
        self.nats = Some(nats);
    }

    /// The Redis engine, for its link tasks.
    pub fn redis_mut(&mut self) -> Option<&mut Redis> {
        self.redis.as_mut()
    }

    /// The NATS broker, for its link task.
    pub fn nats_mut(&mut self) -> Option<&mut nats::Nats> {
        self.nats.as_mut()
    }

    /// The broker that orders this shard's channels.
    pub fn broker(&mut self) -> &mut dyn Broker {
        if let Some(n) = self.nats.as_mut() {
            return n;
        }
        match self.redis.as_mut().filter(|r| r.broker) {
            Some(r) => r,
            None => &mut self.memory,
        }
    }

    /// Whether publications cross nodes (a Redis or NATS broker).
    pub fn connects_nodes(&mut self) -> bool {
        self.broker().connects_nodes()
    }

    /// The memory broker (its streams are swept by the shard's timer).
    pub fn memory(&mut self) -> &mut Memory {
        &mut self.memory
    }

    fn redis_presence(&mut self) -> Option<&mut Redis> {
        self.redis.as_mut().filter(|r| r.presence)
    }

    /// Whether a Redis presence manager keeps presence (else the home shard's own map does).
    pub fn presence_in_redis(&self) -> bool {
        self.redis.as_ref().is_some_and(|r| r.presence)
    }

    /// Adds or refreshes a presence entry in the presence manager (nothing for memory).
    pub fn presence_add(&mut self, channel: &str, info: &ClientInfo, now_ms: u64) {
        if let Some(r) = self.redis_presence() {
            r.presence_add(channel, info, now_ms);
        }
    }

    /// Removes a presence entry from the presence manager (nothing for memory).
    pub fn presence_remove(&mut self, channel: &str, client: &str) {
        if let Some(r) = self.redis_presence() {
            r.presence_remove(channel, client);
        }
    }

    /// Reads a channel's presence from Redis; `false` when presence is kept in memory.
    pub fn read_presence(
        &mut self,
        channel: &str,
        to: ReplyTo,
        now_ms: u64,
        out: &mut Outbox,
    ) -> bool {
        let Some(r) = self.redis_presence() else { return false };
        if r.presence(channel, now_ms, Then::Answer(to, Parse::Presence)).is_err() {
            out.answer(to, Reply::Failed);
        }
        true
    }

    /// The Redis engine's links are all up (boot waits for it).
    pub fn redis_up(&self) -> bool {
        self.redis.as_ref().is_some_and(Redis::up)
    }

    /// The NATS link is up (boot waits for it).
    pub fn nats_up(&self) -> bool {
        self.nats.as_ref().is_some_and(|n| n.up)
    }

    /// The NATS connection is (again) up: subscribe everything again.
    pub fn nats_connected(&mut self) {
        if let Some(n) = self.nats.as_mut() {
            n.resubscribe();
        }
    }

    /// The NATS connection broke: waiting subscribers keep waiting for the subscription to be
    /// confirmed after the reconnect.
    pub fn nats_disconnected(&mut self) {
        if let Some(n) = self.nats.as_mut() {
            n.down();
        }
    }

    /// One operation from the NATS server.
    pub fn nats_op(&mut self, op: nats::Op, out: &mut Outbox) {
        let Some(n) = self.nats.as_mut() else { return };
        match op {
            nats::Op::Msg { sid, payload } => match n.message(sid, payload) {
                nats::Incoming::Event(channel, event) => out.emit(channel, event),
                nats::Incoming::Control(data) => out.push(Effect::Control(data)),
                nats::Incoming::Other => {}
            },
            nats::Op::Ping => n.ping(),
            nats::Op::Pong => {
                for (shard, generation, channel) in n.pong() {
                    out.push(Effect::Ack(shard, generation, channel));
                }
            }
            nats::Op::Info | nats::Op::Ok | nats::Op::Err(_) => {}
        }
    }

    /// The reply to the oldest outstanding command of a Redis command link. `false` when no
    /// command was waiting (the connection is out of step and must be dropped).
    pub fn redis_reply(&mut self, server: usize, frame: BytesFrame, out: &mut Outbox) -> bool {
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
            Then::Answer(to, parse) => out.answer(to, redis::answer(parse, Ok(frame))),
        }
        true
    }

    /// A Redis command link is connected and its scripts are loaded.
    pub fn redis_commands_up(&mut self, server: usize, shas: Vec<String>) {
        if let Some(r) = self.redis.as_mut().and_then(|r| r.servers.get_mut(server)) {
            r.shas = shas;
            r.cmd.up = true;
        }
    }

    /// A Redis command link broke: every outstanding call fails (the caller sees a temporary
    /// error; a publish whose reply was lost may have been applied, exactly as with
    /// Centrifugo).
    pub fn redis_commands_down(&mut self, server: usize, out: &mut Outbox) {
        let Some(r) = self.redis.as_mut().and_then(|r| r.servers.get_mut(server)) else { return };
        for then in r.cmd.down() {
            if let Then::Answer(to, _) = then {
                out.answer(to, Reply::Failed);
            }
        }
    }

    /// A Redis PUB/SUB link is connected: subscribe every channel with interest again (and, on
    /// shard 0's first server, the control channels, as Centrifugo does).
    pub fn redis_pubsub_up(&mut self, server: usize, control: bool) {
        let Some(r) = self.redis.as_mut() else { return };
        let settings = Arc::clone(&r.settings);
        let extra = if control && server == 0 {
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

    /// A Redis PUB/SUB link broke: publications may be missed until it is back. Positioned
    /// subscribe calls waiting at the gate fail (their clients retry); plain subscribers keep
    /// waiting for the subscription to be confirmed after the reconnect. Positioned subscribers
    /// already in place notice the gap on the next publication or position check and recover.
    pub fn redis_pubsub_down(&mut self, server: usize, out: &mut Outbox) {
        let Some(r) = self.redis.as_mut().and_then(|r| r.servers.get_mut(server)) else { return };
        for (to, _) in r.sub.down() {
            out.answer(to, Reply::Failed);
        }
    }

    /// A frame from a Redis PUB/SUB link.
    pub fn redis_incoming(&mut self, server: usize, frame: BytesFrame, out: &mut Outbox) {
        let Some(r) = self.redis.as_mut() else { return };
        match r.incoming(frame) {
            Incoming::Event(channel, event) => out.emit(channel, event),
            Incoming::Subscribed(channel) => {
                let Some(s) = r.servers.get_mut(server) else { return };
                let Some(held) = s.sub.confirmed(&channel) else { return };
                for (shard, generation) in held.acks {
                    out.push(Effect::Ack(shard, generation, Arc::clone(&channel)));
                }
                for (to, sub) in held.deferred {
                    out.push(Effect::Resume(to, sub));
                }
            }
            Incoming::Control(data) => out.push(Effect::Control(data)),
            Incoming::Other => {}
        }
    }

    /// Presence entries live `presence_ttl` in Redis: re-adds the entries of this node's
    /// subscribers (every `client.presence_update_interval`).
    pub fn refresh_presence<'a>(
        &mut self,
        entries: impl Iterator<Item = (&'a Arc<str>, &'a Arc<ClientInfo>)>,
        now_ms: u64,
    ) {
        let Some(r) = self.redis_presence() else { return };
        for (channel, info) in entries {
            r.presence_add(channel, info, now_ms);
        }
    }

    /// Publishes a control message to every node (Redis or NATS); nothing with one node.
    pub fn publish_control(&mut self, data: &[u8]) {
        self.broker().publish_control(data);
    }
}
