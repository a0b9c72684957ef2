//! The engine part of a shard: which broker orders its home channels (memory, Redis or NATS),
//! which presence manager keeps their presence (memory or Redis), and what their link tasks
//! report through the shard's inboxes.
//!
//! Owns: the brokers' per-shard state (a link's protocol state is shared with its task, see
//! `broker::redis::io`, `broker::nats::io`). Everything a broker produces (answers, events to
//! deliver, released acknowledgements, control messages) goes into the [`Outbox`] the caller
//! passes; the shard drains it. Must not: send to other shards, touch connections, or read a
//! clock.

use std::cell::{RefCell, RefMut};
use std::ops::{Deref, DerefMut};
use std::rc::Rc;
use std::sync::Arc;

use crate::broker::memory::Memory;
use crate::broker::redis::io::Event as RedisEvent;
use crate::broker::redis::{self, Incoming, Parse, Redis, Then};
use crate::broker::{nats, Broker, Effect, Outbox, Reply, ReplyTo};
use crate::protocol::ClientInfo;
use crate::shard::inbox::Inbox;

/// The brokers of one shard.
#[derive(Debug, Default)]
pub struct Engine {
    memory: Memory,
    redis: Option<Redis>,
    nats: Option<Rc<RefCell<nats::Nats>>>,
    /// Inboxes of the link tasks, closed at shutdown so the tasks stop.
    redis_inbox: Option<Rc<Inbox<RedisEvent>>>,
    nats_inbox: Option<Rc<Inbox<nats::io::Input>>>,
}

/// The broker of the shard, borrowed (the NATS state is shared with its link task).
pub enum BrokerMut<'a> {
    /// Memory or Redis, owned by the engine.
    Owned(&'a mut dyn Broker),
    /// NATS, shared with its link task.
    Shared(RefMut<'a, nats::Nats>),
}

impl<'a> Deref for BrokerMut<'a> {
    type Target = dyn Broker + 'a;

    fn deref(&self) -> &Self::Target {
        match self {
            BrokerMut::Owned(b) => &**b,
            BrokerMut::Shared(n) => &**n,
        }
    }
}

impl DerefMut for BrokerMut<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match self {
            BrokerMut::Owned(b) => &mut **b,
            BrokerMut::Shared(n) => &mut **n,
        }
    }
}

impl Engine {
    /// Adds the Redis engine (broker, presence manager, or both) and the inbox its link tasks
    /// feed; before the links start. Returns what each link task shares with it.
    pub fn set_redis(
        &mut self,
        redis: Redis,
        inbox: Rc<Inbox<RedisEvent>>,
        control: bool,
    ) -> Vec<redis::io::LinkCtx> {
        let links = redis
            .servers
            .iter()
            .enumerate()
            .map(|(index, server)| redis::io::LinkCtx {
                server: Rc::clone(server),
                inbox: Rc::clone(&inbox),
                index,
                control,
            })
            .collect();
        self.redis = Some(redis);
        self.redis_inbox = Some(inbox);
        links
    }

    /// Adds the NATS broker and the inbox its link task feeds; before the link starts. Returns
    /// what the link task shares with it.
    pub fn set_nats(
        &mut self,
        nats: nats::Nats,
        inbox: Rc<Inbox<nats::io::Input>>,
    ) -> nats::io::LinkCtx {
        let nats = Rc::new(RefCell::new(nats));
        self.nats = Some(Rc::clone(&nats));
        self.nats_inbox = Some(Rc::clone(&inbox));
        nats::io::LinkCtx { nats, inbox }
    }

    /// The broker that orders this shard's channels.
    pub fn broker(&mut self) -> BrokerMut<'_> {
        if let Some(n) = &self.nats {
            return BrokerMut::Shared(n.borrow_mut());
        }
        match self.redis.as_mut().filter(|r| r.broker) {
            Some(r) => BrokerMut::Owned(r),
            None => BrokerMut::Owned(&mut self.memory),
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
        self.nats.as_ref().is_some_and(|n| n.borrow().up)
    }

    /// Every broker and presence link this shard has is up (readiness).
    pub fn links_up(&self) -> bool {
        (self.redis.is_none() || self.redis_up()) && (self.nats.is_none() || self.nats_up())
    }

    /// Shutdown: the link tasks stop.
    pub fn close_links(&mut self) {
        if let Some(i) = &self.redis_inbox {
            i.close();
        }
        if let Some(i) = &self.nats_inbox {
            i.close();
        }
    }

    /// What the NATS link task read for channels.
    pub fn nats_input(&mut self, input: nats::io::Input, out: &mut Outbox) {
        match input {
            nats::io::Input::Event(channel, event) => out.emit(channel, event),
            nats::io::Input::Control(data) => out.push(Effect::Control(data)),
            nats::io::Input::Lost => {}
            nats::io::Input::Confirmed(released) => {
                for (shard, generation, channel) in released.acks {
                    out.push(Effect::Ack(shard, generation, channel));
                }
                for (to, sub) in released.calls {
                    out.push(Effect::Resume(to, sub));
                }
            }
        }
    }

    /// What a Redis link task reported: a reply with what it answers, commands that failed,
    /// a PUB/SUB frame, or held subscribes that failed.
    pub fn redis_event(&mut self, event: RedisEvent, out: &mut Outbox) {
        match event {
            RedisEvent::Reply(Then::Answer(to, parse), frame) => {
                out.answer(to, redis::answer(parse, Ok(frame)));
            }
            RedisEvent::Reply(Then::Ignore, _) => {}
            RedisEvent::Failed(thens) => {
                for then in thens {
                    if let Then::Answer(to, _) = then {
                        out.answer(to, Reply::Failed);
                    }
                }
            }
            RedisEvent::Refused(tos) => {
                for to in tos {
                    out.answer(to, Reply::Failed);
                }
            }
            RedisEvent::Message { server, frame } => self.redis_incoming(server, frame, out),
        }
    }

    /// A frame from a Redis PUB/SUB link.
    fn redis_incoming(
        &mut self,
        server: usize,
        frame: redis_protocol::resp2::types::BytesFrame,
        out: &mut Outbox,
    ) {
        let Some(r) = self.redis.as_mut() else { return };
        match r.incoming(frame) {
            Incoming::Event(channel, event) => out.emit(channel, event),
            Incoming::Subscribed(channel) => {
                let Some(held) =
                    r.servers.get(server).and_then(|s| s.borrow_mut().sub.confirmed(&channel))
                else {
                    return;
                };
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
