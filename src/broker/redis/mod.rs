//! Redis engine: the broker and presence manager of `engine.type: redis`, compatible with
//! Centrifugo's Redis layout (spec §10.1, §10.2) so Rotor and Centrifugo nodes can share one
//! Redis.
//!
//! Per shard, the engine ([`Redis`]) holds one [`Server`] per Redis server of its
//! [`Topology`]: a command link ([`Link`]), a PUB/SUB link ([`PubSub`]) and the loaded script
//! SHAs, all protocol state without the sockets. This file builds the commands (publish, history,
//! presence, control messages) and serves the [`Broker`](crate::broker::Broker) calls of the
//! home shard with them; its children own the rest:
//!
//! - `address`: one `address` entry and its URL forms ([`Address`], [`Form`]);
//! - `settings`: what `engine.redis` says ([`Settings`], [`Sentinel`]);
//! - `keys`: the key and PUB/SUB channel names shared with Centrifugo, and which server keeps
//!   a channel ([`Keys`], [`server_index`]);
//! - `topology`: the servers, and in a Redis Cluster its slot map, read by each shard at start;
//! - `link`: RESP encoding and the command pipeline; `pubsub`: the PUB/SUB subscriptions;
//! - `reply`: replies and PUB/SUB payloads turned into answers and events;
//! - `scripts`: the Lua scripts; `io`: the sockets.
//!
//! Children depend on each other, never on this file (except `io`, which reaches the engine
//! through the shard), so the files form no cycle.
//!
//! Must not: touch connections or deliver anything (the home shard emits what PUB/SUB brings,
//! exactly as it does for the memory engine), or wait: a command on a link that is down fails at
//! once, so a publish is never accepted and then lost.

mod address;
pub mod io;
mod keys;
mod link;
mod pubsub;
mod reply;
mod scripts;
mod settings;
mod topology;

use std::cell::{RefCell, RefMut};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use redis_protocol::resp2::types::BytesFrame;

use crate::broker::stream::{new_epoch, HistoryPolicy, HistoryQuery};
use crate::broker::{Gate, Outbox, PublishCall, Reply, ReplyTo, SubscribeCall};
use crate::protocol::{protobuf, ClientInfo, Publication};
use crate::shard::id::ShardId;

pub use address::{Address, Form};
pub use keys::{server_index, Keys};
pub use link::{encode_command, encode_setup, Link, Then};
pub use pubsub::{PubSub, SubEntry};
pub use reply::{answer, incoming, parse_message, Incoming, Parse, RedisError};
pub use scripts::Script;
pub use settings::{Sentinel, Settings};
pub use topology::{from_cluster_slots, Topology};

/// How long an idempotency key's result is kept (spec §6.7).
const IDEMPOTENCY_TTL_SECS: u64 = 300;

/// One Redis server as a shard sees it: both links and the loaded script SHAs.
#[derive(Debug, Default)]
pub struct Server {
    /// Commands.
    pub cmd: Link,
    /// PUB/SUB.
    pub sub: PubSub,
    /// SHA1 of each script, in [`Script`] order, loaded at connect.
    pub shas: Vec<String>,
}

impl Server {
    /// Runs a script by its SHA. Fails like a link that is down until the scripts are loaded,
    /// which the command link does before it is marked up.
    fn eval(
        &mut self,
        script: Script,
        keys: &[&str],
        args: &[&[u8]],
        then: Then,
    ) -> Result<(), Then> {
        let Some(sha) = self.shas.get(script as usize) else { return Err(then) };
        let n = keys.len().to_string();
        let mut all: Vec<&[u8]> = vec![b"EVALSHA", sha.as_bytes(), n.as_bytes()];
        all.extend(keys.iter().map(|k| k.as_bytes()));
        all.extend_from_slice(args);
        self.cmd.push(&all, then)
    }
}

/// The per-shard engine: the shared settings, this shard's topology, and one [`Server`] per
/// server of the topology.
#[derive(Debug)]
pub struct Redis {
    /// Shared settings.
    pub settings: Arc<Settings>,
    /// The servers as this shard found them at start.
    pub topology: Topology,
    /// Redis is the broker (publications, history, PUB/SUB, control channel).
    pub broker: bool,
    /// Redis keeps presence.
    pub presence: bool,
    /// In `topology.addresses` order; the first also carries the control channel. Each is
    /// shared with the tasks of its two links (see `io`).
    pub servers: Vec<Rc<RefCell<Server>>>,
}

impl Redis {
    /// A shard's engine before its links connect.
    pub fn new(settings: Arc<Settings>, topology: Topology, broker: bool, presence: bool) -> Redis {
        let servers = topology.addresses.iter().map(|_| Rc::default()).collect();
        Redis { settings, topology, broker, presence, servers }
    }

    /// The server that keeps `channel`.
    pub fn server(&self, channel: &str) -> RefMut<'_, Server> {
        let slots = self.topology.slots.as_deref();
        let i = self.settings.keys.server_of(channel, slots, self.servers.len());
        let i = i.min(self.servers.len() - 1);
        self.servers[i].borrow_mut()
    }

    /// Every link of every server is up (PUB/SUB only when Redis is the broker).
    pub fn up(&self) -> bool {
        self.servers.iter().all(|s| {
            let s = s.borrow();
            s.cmd.up && (s.sub.up || !self.broker)
        })
    }

    /// Publishes: with history through the history script (which also publishes), otherwise a
    /// plain PUBLISH, or the idempotency script when a key is given.
    #[allow(
        clippy::too_many_arguments,
        reason = "a publish request's parts, as the script takes them"
    )]
    pub fn publish(
        &mut self,
        channel: &str,
        publication: &Publication,
        history: HistoryPolicy,
        idempotency_key: Option<&str>,
        version: Option<&(u64, String)>,
        now_ms: u64,
        then: Then,
    ) -> Result<(), Then> {
        let s = Arc::clone(&self.settings);
        let delta_flag = !history.enabled() && publication.delta_eligible;
        let time = i64::try_from(now_ms).unwrap_or(i64::MAX);
        let payload = protobuf::broker_publication(publication, time, delta_flag);
        let pubsub = s.keys.client_channel(channel);
        let result_key = s.keys.result_key(channel, idempotency_key.unwrap_or(""));
        let result_ttl = if idempotency_key.is_some() {
            IDEMPOTENCY_TTL_SECS.to_string()
        } else {
            String::new()
        };
        if history.enabled() {
            let stream = s.keys.key("stream", channel);
            let meta = s.keys.key("stream.meta", channel);
            let size = history.size.to_string();
            let ttl = secs(history.ttl).max(1).to_string();
            let meta_ttl = secs(history.meta_ttl).to_string();
            let epoch = new_epoch();
            let (v, ve) =
                version.map_or(("0".to_owned(), ""), |(v, e)| (v.to_string(), e.as_str()));
            let delta = if publication.delta_eligible { "1" } else { "0" };
            return self.server(channel).eval(
                Script::PublishHistory,
                &[&stream, &meta, &result_key],
                &[
                    &payload,
                    size.as_bytes(),
                    ttl.as_bytes(),
                    pubsub.as_bytes(),
                    meta_ttl.as_bytes(),
                    epoch.as_bytes(),
                    s.verb(b"publish", b"spublish"),
                    result_ttl.as_bytes(),
                    delta.as_bytes(),
                    v.as_bytes(),
                    ve.as_bytes(),
                ],
                then,
            );
        }
        match idempotency_key {
            Some(_) => self.server(channel).eval(
                Script::PublishIdempotent,
                &[&result_key],
                &[
                    &payload,
                    pubsub.as_bytes(),
                    s.verb(b"publish", b"spublish"),
                    result_ttl.as_bytes(),
                ],
                then,
            ),
            None => {
                let verb = s.verb(b"PUBLISH", b"SPUBLISH");
                self.server(channel).cmd.push(&[verb, pubsub.as_bytes(), &payload], then)
            }
        }
    }

    /// Publishes a join or leave event to every node.
    pub fn publish_presence_event(&mut self, channel: &str, info: &ClientInfo, join: bool) {
        let mut payload = if join { b"__j__".to_vec() } else { b"__l__".to_vec() };
        payload.extend_from_slice(&protobuf::encode_client_info(info));
        let pubsub = self.settings.keys.client_channel(channel);
        let verb = self.settings.verb(b"PUBLISH", b"SPUBLISH");
        let _ = self.server(channel).cmd.push(&[verb, pubsub.as_bytes(), &payload], Then::Ignore);
    }

    /// Reads the stream position and, when `query` asks for publications, a page of history.
    pub fn history(
        &mut self,
        channel: &str,
        policy: HistoryPolicy,
        query: Option<&HistoryQuery>,
        then: Then,
    ) -> Result<(), Then> {
        let s = Arc::clone(&self.settings);
        let stream = s.keys.key("stream", channel);
        let meta = s.keys.key("stream.meta", channel);
        let (mut include, mut from, mut limit, mut reverse) = ("0", 0u64, 0usize, false);
        if let Some(q) = query {
            include = if q.limit == Some(0) { "0" } else { "1" };
            limit = q.limit.unwrap_or(0);
            reverse = q.reverse;
            if let Some(since) = &q.since {
                if q.reverse {
                    from = since.offset.saturating_sub(1);
                    if from == 0 {
                        include = "0";
                    }
                } else {
                    from = since.offset + 1;
                }
            }
        }
        let from = from.to_string();
        let limit = limit.to_string();
        let meta_ttl = secs(policy.meta_ttl).to_string();
        let epoch = new_epoch();
        self.server(channel).eval(
            Script::History,
            &[&stream, &meta],
            &[
                include.as_bytes(),
                from.as_bytes(),
                limit.as_bytes(),
                if reverse { b"1" } else { b"0" },
                meta_ttl.as_bytes(),
                epoch.as_bytes(),
            ],
            then,
        )
    }

    /// The stream's top offset, without creating the meta when it is gone.
    pub fn top(&mut self, channel: &str, then: Then) -> Result<(), Then> {
        let meta = self.settings.keys.key("stream.meta", channel);
        self.server(channel).cmd.push(&[b"HGET", meta.as_bytes(), b"s"], then)
    }

    /// Drops a channel's stored publications (the meta, and so the position, stays).
    pub fn remove_history(&mut self, channel: &str, then: Then) -> Result<(), Then> {
        let stream = self.settings.keys.key("stream", channel);
        self.server(channel).cmd.push(&[b"DEL", stream.as_bytes()], then)
    }

    /// Adds or refreshes a presence entry.
    pub fn presence_add(&mut self, channel: &str, info: &ClientInfo, now_ms: u64) {
        let s = Arc::clone(&self.settings);
        let ttl = secs(s.presence_ttl).max(1);
        let expire_at = (now_ms / 1000 + ttl).to_string();
        let ttl = ttl.to_string();
        let value = protobuf::encode_client_info(info);
        let _ = self.server(channel).eval(
            Script::PresenceAdd,
            &[&s.keys.key("presence.expire", channel), &s.keys.key("presence.data", channel)],
            &[ttl.as_bytes(), expire_at.as_bytes(), info.client.as_bytes(), &value],
            Then::Ignore,
        );
    }

    /// Removes a presence entry.
    pub fn presence_remove(&mut self, channel: &str, client: &str) {
        let s = Arc::clone(&self.settings);
        let _ = self.server(channel).eval(
            Script::PresenceRemove,
            &[&s.keys.key("presence.expire", channel), &s.keys.key("presence.data", channel)],
            &[client.as_bytes()],
            Then::Ignore,
        );
    }

    /// Reads a channel's live presence entries.
    pub fn presence(&mut self, channel: &str, now_ms: u64, then: Then) -> Result<(), Then> {
        let s = Arc::clone(&self.settings);
        let now = (now_ms / 1000).to_string();
        self.server(channel).eval(
            Script::PresenceGet,
            &[&s.keys.key("presence.expire", channel), &s.keys.key("presence.data", channel)],
            &[now.as_bytes()],
            then,
        )
    }

    /// Publishes a control message to every node.
    pub fn publish_control(&mut self, data: &[u8]) {
        let name = self.settings.keys.control_channel();
        let _ = self.servers[0]
            .borrow_mut()
            .cmd
            .push(&[b"PUBLISH", name.as_bytes(), data], Then::Ignore);
    }

    /// Publishes a control message to one node.
    pub fn publish_to_node(&mut self, uid: &str, data: &[u8]) {
        let name = self.settings.keys.node_channel(uid);
        let _ = self.servers[0]
            .borrow_mut()
            .cmd
            .push(&[b"PUBLISH", name.as_bytes(), data], Then::Ignore);
    }

    /// Classifies a frame from the PUB/SUB link.
    pub fn incoming(&self, frame: BytesFrame) -> Incoming {
        reply::incoming(&self.settings.keys, &crate::node::get().uid, frame)
    }
}

/// Whole seconds, rounded up: Redis TTLs are in seconds and must never be shorter than asked.
fn secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl crate::broker::Broker for Redis {
    fn publish(&mut self, p: PublishCall, to: ReplyTo, now_ms: u64, out: &mut Outbox) {
        let then = Then::Answer(to, Parse::Published);
        let key = p.idempotency_key.as_deref();
        let version = p.version.as_ref();
        let sent =
            Redis::publish(self, &p.channel, &p.publication, p.history, key, version, now_ms, then);
        if sent.is_err() {
            out.answer(to, Reply::Failed);
        }
    }

    fn publish_presence_event(
        &mut self,
        channel: &Arc<str>,
        info: Arc<ClientInfo>,
        join: bool,
        _: &mut Outbox,
    ) {
        Redis::publish_presence_event(self, channel, &info, join);
    }

    fn history(
        &mut self,
        channel: &Arc<str>,
        policy: HistoryPolicy,
        query: HistoryQuery,
        to: ReplyTo,
        _: u64,
        out: &mut Outbox,
    ) {
        let then = Then::Answer(to, Parse::History(query.clone()));
        if Redis::history(self, channel, policy, Some(&query), then).is_err() {
            out.answer(to, Reply::Failed);
        }
    }

    fn remove_history(&mut self, channel: &str, to: ReplyTo, out: &mut Outbox) {
        if Redis::remove_history(self, channel, Then::Answer(to, Parse::Done)).is_err() {
            out.answer(to, Reply::Failed);
        }
    }

    fn top(&mut self, channel: &str, to: ReplyTo, out: &mut Outbox) {
        if Redis::top(self, channel, Then::Answer(to, Parse::Top)).is_err() {
            out.answer(to, Reply::Failed);
        }
    }

    fn gate(&mut self, sub: SubscribeCall, to: ReplyTo) -> Gate {
        let mut server = self.server(&sub.channel);
        let pubsub = &mut server.sub;
        if !pubsub.up {
            return Gate::Refused;
        }
        match pubsub.channels.get_mut(&sub.channel) {
            Some(e) if !e.active() => {
                e.deferred.push((to, sub));
                Gate::Held
            }
            Some(_) => Gate::Open(sub),
            // Interest always precedes the call on the lane; a channel without it lost its
            // last subscriber meanwhile and the answer no longer matters.
            None => Gate::Refused,
        }
    }

    fn read_position(
        &mut self,
        channel: &Arc<str>,
        policy: HistoryPolicy,
        query: Option<HistoryQuery>,
        to: ReplyTo,
        _: u64,
        out: &mut Outbox,
    ) {
        let then = Then::Answer(to, Parse::Subscribed(query.clone()));
        if Redis::history(self, channel, policy, query.as_ref(), then).is_err() {
            out.answer(to, Reply::Failed);
        }
    }

    fn want(&mut self, channel: &Arc<str>, ack: Option<(ShardId, u64)>) -> bool {
        let settings = Arc::clone(&self.settings);
        let mut server = self.server(channel);
        let pubsub = &mut server.sub;
        if pubsub.want(&settings, channel) {
            return true;
        }
        if let (Some(ack), Some(e)) = (ack, pubsub.channels.get_mut(channel)) {
            e.acks.push(ack);
        }
        false
    }

    fn unwant(&mut self, channel: &str, out: &mut Outbox) {
        let settings = Arc::clone(&self.settings);
        for (to, _) in self.server(channel).sub.unwant(&settings, channel) {
            out.answer(to, Reply::Failed);
        }
    }

    fn publish_control(&mut self, data: &[u8]) {
        Redis::publish_control(self, data);
    }

    fn publish_to_node(&mut self, uid: &str, data: &[u8]) {
        Redis::publish_to_node(self, uid, data);
    }

    fn connects_nodes(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests;
