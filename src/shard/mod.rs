//! The shard: one glommio executor on one core and everything it owns.
//!
//! Owns: the connections this shard accepted (`conns`), their subscriber index (`hub`), the state
//! of every channel whose home is this shard (`home`: interest set and stream), parked requests
//! waiting for another shard (`pending`), and the outgoing spill queues towards each peer.
//! Other shards reach this state only through [`ShardMsg`]; nothing here is shared between cores.
//!
//! The whole state is one plain struct behind a single `Rc<RefCell<_>>` per shard ([`ShardRef`])
//! so that the connection tasks and the inbox pump of the same executor can reach it. Borrows are
//! short and never held across `.await` (clippy's `await_holding_refcell_ref` is an error): each
//! handler runs to completion on `&mut Shard` and leaves effects (queued bytes, woken writers,
//! messages in a lane) behind.
//!
//! Must not: block, await while borrowed, or send a request that makes a home shard wait on a
//! third shard (every cross-shard call is one hop: requester → home → reply).

mod engine;
pub mod id;
pub mod msg;
#[cfg(test)]
mod sim_tests;
pub mod survey;

use std::cell::RefCell;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use glommio::channels::channel_mesh::Senders;
use glommio::{GlommioError, ResourceType};
use slab::Slab;

use crate::broker::memory::Stream;
use crate::channel::Namespaces;
use crate::client::event_out;
use crate::client::{Conn, Out, Timer};
use crate::config::Config;
use crate::hub::{ConnKey, Hub};
use crate::protocol::{json, protobuf, ClientInfo};
use crate::shard::id::{home_of, ShardId, ShardSet};
use crate::shard::msg::{
    Answer, Call, Cast, Event, Lane, PublishCall, Published, RequestId, ShardCounts, ShardMsg,
    SubscribeCall,
};
use crate::transport::websocket;
use crate::transport::Encoding;

/// Most messages waiting for one peer lane before deliveries are dropped (and counted).
pub const SPILL_MAX: usize = 65_536;

/// The shard state shared by the tasks of one executor.
pub type ShardRef = Rc<RefCell<Shard>>;

/// How long an API `idempotency_key` result is remembered (spec §6.7).
pub const IDEMPOTENCY_TTL_MS: u64 = 5 * 60 * 1000;

/// Channel state kept by the channel's home shard.
#[derive(Debug, Default)]
pub struct HomeChannel {
    /// Shards with at least one local subscriber.
    pub interest: ShardSet,
    /// Stream position and history (memory engine), created on the first stored publication
    /// or the first positioned subscription.
    pub stream: Option<Stream>,
    /// client id → presence entry.
    pub presence: HashMap<Arc<str>, Arc<ClientInfo>>,
    /// API idempotency keys → (first result, expiry in ms).
    pub idempotency: HashMap<String, (Option<Published>, u64)>,
    /// Last published `version` and its `version_epoch`.
    pub version: Option<(u64, String)>,
}

impl HomeChannel {
    /// Nothing worth keeping: no subscribers anywhere, no stream, no presence, no remembered
    /// publish results.
    fn is_idle(&self) -> bool {
        self.interest.is_empty()
            && self.stream.is_none()
            && self.presence.is_empty()
            && self.idempotency.is_empty()
            && self.version.is_none()
    }
}

/// Messages waiting for a peer lane that was full.
#[derive(Debug, Default)]
pub struct Spill {
    /// FIFO of messages not yet handed to the lane.
    pub queue: VecDeque<ShardMsg>,
    /// The forwarder task waiting for work.
    pub waker: Option<Waker>,
    /// The forwarder holds a popped message it has not yet handed to the lane; direct sends must
    /// wait behind it to keep the lane FIFO.
    pub in_flight: bool,
}

/// A request parked until another shard answers: either a task awaits it (`waker`), or the
/// answer continues a connection's work inline (`then`), for work no task waits on (server-side
/// subscriptions made through the API).
#[derive(Debug, Default)]
pub struct Pending {
    /// Matches the high half of the request id, so that an answer to a request whose
    /// waiter went away never reaches a newer request in the same slot.
    generation: u32,
    answer: Option<Answer>,
    waker: Option<Waker>,
    then: Option<Continue>,
}

/// Work that continues inline when an answer arrives, with no task waiting for it.
#[derive(Debug)]
pub enum Continue {
    /// A connection's command (a server-side subscription made through the API).
    Conn(ConnKey, crate::client::Resume),
    /// The periodic position check of a channel with local subscribers.
    Position(Arc<str>),
}

/// Parked requests by id: a slab slot in the low 32 bits, a generation in the high 32.
#[derive(Debug, Default)]
pub struct Pendings {
    slots: Slab<Pending>,
    next_generation: u32,
}

impl Pendings {
    fn insert(&mut self, mut p: Pending) -> RequestId {
        self.next_generation = self.next_generation.wrapping_add(1);
        p.generation = self.next_generation;
        let slot = self.slots.insert(p) as u64;
        (u64::from(self.next_generation) << 32) | slot
    }

    fn index(&self, id: RequestId) -> Option<usize> {
        let slot = (id & u64::from(u32::MAX)) as usize;
        let generation = (id >> 32) as u32;
        self.slots.get(slot).filter(|p| p.generation == generation).map(|_| slot)
    }

    fn get_mut(&mut self, id: RequestId) -> Option<&mut Pending> {
        let i = self.index(id)?;
        self.slots.get_mut(i)
    }

    fn remove(&mut self, id: RequestId) -> Option<Pending> {
        let i = self.index(id)?;
        Some(self.slots.remove(i))
    }
}

/// Counters the shard keeps for observability (plain fields: one owner).
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Deliveries dropped because a peer lane stayed full.
    pub deliveries_dropped: u64,
    /// Publications handed to local subscribers.
    pub messages_sent: u64,
    /// Clients disconnected for overflowing their queue (3008).
    pub slow_disconnects: u64,
}

/// Everything one shard owns.
pub struct Shard {
    /// This shard.
    pub id: ShardId,
    /// Shards in the process.
    pub count: usize,
    /// Immutable configuration shared by all shards.
    pub cfg: Arc<Config>,
    /// Resolved namespaces.
    pub namespaces: Arc<Namespaces>,
    /// Connection token verification (`client.token`).
    pub verifier: Arc<crate::auth::TokenVerifier>,
    /// Subscription token verification (`client.subscription_token` when enabled).
    pub sub_verifier: Arc<crate::auth::TokenVerifier>,
    /// Connections accepted by this shard.
    pub conns: Slab<Conn>,
    next_generation: u32,
    /// channel → local subscribers.
    pub hub: Hub,
    /// Channels whose home is this shard.
    pub home: HashMap<Arc<str>, HomeChannel>,
    pending: Pendings,
    /// Cross-shard senders per lane (None until the meshes are joined; absent with one shard).
    pub senders: [Option<Rc<Senders<ShardMsg>>>; 2],
    /// Spill queues per lane per peer.
    pub spill: [Vec<Spill>; 2],
    /// Connection timers (stale, ping, pong, expiry), earliest first.
    pub timers: BinaryHeap<Timer>,
    /// Set once shutdown starts.
    pub shutting_down: bool,
    /// Tasks to wake when shutdown starts (accept loops, idle HTTP connections).
    pub shutdown_wakers: Vec<Waker>,
    /// Counters.
    pub stats: Stats,
    /// Connected clients in the whole process (`client.connection_limit`), shared by all shards.
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    /// Counted connections of the users whose home is this shard
    /// (`client.user_connection_limit`).
    pub user_conns: HashMap<Arc<str>, usize>,
    /// When `sweep` runs next.
    pub next_sweep: Instant,
    /// Set while a command runs again after a JWKS key fetch: a key still missing is then an
    /// invalid token instead of another fetch.
    pub keys_retry: bool,
    /// The JSON ping `{}` as a shared frame.
    pub ping_frame: Bytes,
    /// The Protobuf ping (an empty delimited `Reply`, one zero byte) as a shared frame.
    pub pb_ping_frame: Bytes,
    /// Bumped by the timer task on every tick; the supervisor's systemd watchdog only pings
    /// while every shard's counter moves (a stuck shard stops the pings).
    pub heartbeat: Arc<std::sync::atomic::AtomicU64>,
    /// Emulation session → connection (see `client::emulation`).
    pub sessions: HashMap<uuid::Uuid, ConnKey>,
    /// Emulated connections' sessions and inboxes.
    pub emulated: HashMap<ConnKey, crate::client::emulation::Emulated>,
    /// The Redis engine's links (`engine.type: redis`); `None` with the memory engine.
    pub redis: Option<crate::broker::redis::Redis>,
    /// The NATS broker's connection (`broker.type: nats`).
    pub nats: Option<crate::broker::nats::Nats>,
    /// Other nodes heard on the control channel (shard 0 only).
    pub nodes: crate::broker::control::Registry,
    /// Surveys of other nodes (shard 0).
    pub surveys: survey::Surveys,
    /// When this shard's presence entries in Redis are refreshed next.
    next_presence_refresh: Instant,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Shard {
    /// A shard with no connections.
    pub fn new(
        id: ShardId,
        count: usize,
        cfg: Arc<Config>,
        namespaces: Arc<Namespaces>,
        verifiers: (Arc<crate::auth::TokenVerifier>, Arc<crate::auth::TokenVerifier>),
    ) -> Self {
        let (verifier, sub_verifier) = verifiers;
        let first_sweep = Instant::now() + cfg.client.channel_position_check_delay;
        let spill = || (0..count).map(|_| Spill::default()).collect::<Vec<_>>();
        Shard {
            id,
            count,
            cfg,
            namespaces,
            verifier,
            sub_verifier,
            conns: Slab::new(),
            next_generation: 0,
            hub: Hub::default(),
            home: HashMap::new(),
            pending: Pendings::default(),
            senders: [None, None],
            spill: [spill(), spill()],
            timers: BinaryHeap::new(),
            shutting_down: false,
            shutdown_wakers: Vec::new(),
            stats: Stats::default(),
            keys_retry: false,
            next_sweep: first_sweep,
            connections: Arc::default(),
            user_conns: HashMap::new(),
            ping_frame: websocket::frame(websocket::OpCode::Text, json::PING),
            pb_ping_frame: websocket::frame(websocket::OpCode::Binary, protobuf::PING),
            heartbeat: Arc::default(),
            sessions: HashMap::new(),
            emulated: HashMap::new(),
            redis: None,
            nats: None,
            nodes: Default::default(),
            surveys: Default::default(),
            next_presence_refresh: Instant::now(),
        }
    }

    /// Stores a new connection and returns its key.
    pub fn insert_conn(&mut self, make: impl FnOnce(u32) -> Conn) -> ConnKey {
        self.next_generation = self.next_generation.wrapping_add(1);
        let generation = self.next_generation;
        let slot = self.conns.insert(make(generation));
        ConnKey { slot: slot as u32, generation }
    }

    /// The live connection behind a key, if it still exists.
    pub fn conn_mut(&mut self, key: ConnKey) -> Option<&mut Conn> {
        self.conns.get_mut(key.slot as usize).filter(|c| c.generation == key.generation)
    }

    /// Sends a message to a shard: inline when it is this shard, else through the lane, spilling
    /// to a FIFO when the lane is full so that the caller never waits.
    pub fn send(&mut self, lane: Lane, to: ShardId, msg: ShardMsg) {
        if to == self.id {
            self.handle(msg);
            return;
        }
        let mut msg = msg;
        let spill = &mut self.spill[lane as usize][to.index()];
        if spill.queue.is_empty() && !spill.in_flight {
            if let Some(senders) = &self.senders[lane as usize] {
                match senders.try_send_to(to.index(), msg) {
                    Ok(()) => return,
                    Err(GlommioError::WouldBlock(ResourceType::Channel(back))) => msg = back,
                    Err(GlommioError::Closed(ResourceType::Channel(back))) => {
                        self.undeliverable(back);
                        return;
                    }
                    Err(_) => return,
                }
            }
        }
        if spill.queue.len() >= SPILL_MAX && matches!(msg, ShardMsg::Deliver { .. }) {
            self.stats.deliveries_dropped += 1;
            return;
        }
        spill.queue.push_back(msg);
        if let Some(w) = spill.waker.take() {
            w.wake();
        }
    }

    /// Handles a message addressed to this shard. Accepted sockets are returned to the caller,
    /// which owns spawning connection tasks.
    pub fn handle(&mut self, msg: ShardMsg) -> Option<glommio::net::AcceptedTcpStream> {
        match msg {
            ShardMsg::Call { origin, req, call } => {
                // A position travels behind the deliveries already sent to the asking shard
                // (same lane, FIFO): every publication up to the offset it reports has arrived
                // first, so a subscriber's merge drops them instead of doubling them, and a
                // position check that finds the shard behind has found a lost delivery.
                let lane = if matches!(*call, Call::Subscribe(_) | Call::Position { .. }) {
                    Lane::Main
                } else {
                    Lane::Reply
                };
                let answer = if self.engine_serves(&call) {
                    let to = crate::broker::ReplyTo { origin, req, lane };
                    self.serve_engine(*call, to)
                } else {
                    Some(self.serve_now(*call))
                };
                if let Some(answer) = answer {
                    self.send(lane, origin, ShardMsg::Answer { req, answer: Box::new(answer) });
                }
            }
            ShardMsg::Answer { req, answer } => self.answer(req, *answer),
            ShardMsg::Cast(cast) => self.cast(*cast),
            ShardMsg::Interest { channel, shard, subscribed, ack } => {
                let entry = self.home.entry(Arc::clone(&channel)).or_default();
                if subscribed {
                    entry.interest.insert(shard);
                    let ack_now = self.engine_interest(&channel, true, ack.map(|g| (shard, g)));
                    if let Some(generation) = ack.filter(|_| ack_now) {
                        self.send(
                            Lane::Reply,
                            shard,
                            ShardMsg::InterestAcked { channel, generation },
                        );
                    }
                } else {
                    entry.interest.remove(shard);
                    self.engine_interest(&channel, false, None);
                    self.forget_if_idle(&channel);
                }
            }
            ShardMsg::InterestAcked { channel, generation } => {
                self.hub.acknowledged(&channel, generation);
            }
            ShardMsg::Deliver { channel, event } => self.deliver_local(&channel, &event),
            ShardMsg::Accepted(stream) => return Some(stream),
        }
        None
    }

    fn forget_if_idle(&mut self, channel: &str) {
        if self.home.get(channel).is_some_and(HomeChannel::is_idle) {
            self.home.remove(channel);
        }
    }

    /// Runs a request addressed to this shard and returns its answer.
    fn serve_now(&mut self, call: Call) -> Answer {
        let now = now_ms();
        match call {
            Call::Publish(p) => Answer::Published(self.publish_home(p)),
            Call::Subscribe(sub) => self.subscribe_home(sub),
            Call::History { channel, policy, query } => {
                if !policy.enabled() {
                    return Answer::History(Ok((Vec::new(), Default::default())));
                }
                let entry = self.home.entry(channel).or_default();
                let stream = entry.stream.get_or_insert_with(Stream::default);
                stream.touch(policy, now);
                let read = stream.read(&query, now).map(|p| (p, stream.position().clone()));
                Answer::History(read)
            }
            Call::HistoryRemove { channel } => {
                if let Some(stream) = self.home.get_mut(&channel).and_then(|e| e.stream.as_mut()) {
                    stream.clear();
                }
                Answer::Done
            }
            Call::Presence { channel } => Answer::Presence(
                self.home
                    .get(&channel)
                    .map(|e| e.presence.values().cloned().collect())
                    .unwrap_or_default(),
            ),
            Call::Channels { pattern } => Answer::Channels(
                self.hub
                    .counts()
                    .filter(|(c, _)| pattern.as_ref().is_none_or(|p| p.is_match(c.as_ref())))
                    .map(|(c, n)| (Arc::clone(c), u32::try_from(n).unwrap_or(u32::MAX)))
                    .collect(),
            ),
            Call::Info => Answer::Info(Box::new(self.counts())),
            Call::Nodes => Answer::Nodes(self.nodes.alive(Instant::now())),
            // One node: nobody else to ask, and no other node to forward to.
            Call::Survey { to_node: Some(_), .. } => Answer::Failed,
            Call::Survey { .. } => Answer::Survey(Vec::new()),
            Call::Conns(op) => {
                self.conns_op(*op);
                Answer::Done
            }
            Call::Position { channel } => Answer::Position(
                self.home
                    .get(&channel)
                    .and_then(|e| e.stream.as_ref())
                    .map(|s| s.position().offset),
            ),
            Call::UserConnect { user, limit } => {
                let n = self.user_conns.entry(user).or_default();
                let admitted = *n < limit;
                if admitted {
                    *n += 1;
                }
                Answer::Admitted(admitted)
            }
        }
    }

    /// This shard's share of API `info`.
    fn counts(&self) -> ShardCounts {
        let mut users: Vec<Arc<str>> = Vec::new();
        let mut counts = ShardCounts::default();
        for (_, c) in &self.conns {
            if let crate::client::State::Connected(s) = &c.state {
                counts.clients += 1;
                counts.subs += s.subs.len() as u64;
                users.push(Arc::clone(&s.user));
            }
        }
        users.sort_unstable();
        users.dedup();
        counts.users = users;
        counts.channels = self.home.values().filter(|e| !e.interest.is_empty()).count() as u64;
        counts
    }

    /// Home-shard half of a subscription: presence, join, and the stream position.
    fn subscribe_home(&mut self, sub: SubscribeCall) -> Answer {
        let now = now_ms();
        let entry = self.home.entry(Arc::clone(&sub.channel)).or_default();
        if sub.presence {
            entry.presence.insert(Arc::from(sub.info.client.as_str()), Arc::clone(&sub.info));
        }
        let mut top = None;
        let mut read = Ok(Vec::new());
        if let Some((policy, query)) = &sub.position {
            if policy.enabled() {
                let stream = entry.stream.get_or_insert_with(Stream::default);
                stream.touch(*policy, now);
                if let Some(q) = query {
                    read = stream.read(q, now);
                }
                top = Some(stream.position().clone());
            }
        }
        if sub.join {
            self.emit(&sub.channel, Event::Join(sub.info));
        }
        Answer::Subscribed { top, read }
    }

    fn cast(&mut self, cast: Cast) {
        match cast {
            Cast::Unsubscribed { channel, client, leave } => {
                if !self.engine_unsubscribed(&channel, &client, leave.as_ref()) {
                    if let Some(e) = self.home.get_mut(&channel) {
                        e.presence.remove(&client);
                    }
                    if let Some(info) = leave {
                        self.emit(&channel, Event::Leave(info));
                    }
                }
                self.forget_if_idle(&channel);
            }
            Cast::UserGone { user } => {
                if let Some(n) = self.user_conns.get_mut(&user) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.user_conns.remove(&user);
                    }
                }
            }
            Cast::Conns(op) => self.conns_op(*op),
            Cast::Emulation { session, data, quoted } => self.emulate(session, &data, quoted),
        }
    }

    /// Hands an event to every shard with subscribers of a channel homed here.
    fn emit(&mut self, channel: &Arc<str>, event: Event) {
        let Some(targets) = self.home.get(channel).map(|e| e.interest) else { return };
        for shard in targets.iter() {
            let msg = ShardMsg::Deliver { channel: Arc::clone(channel), event: event.clone() };
            self.send(Lane::Main, shard, msg);
        }
    }

    /// Home-shard half of a publish: apply idempotency and version rules, assign a position
    /// (when history is on) and hand one shared publication to every interested shard.
    fn publish_home(&mut self, call: PublishCall) -> Option<Published> {
        let PublishCall { channel, publication, history, idempotency_key, version } = call;
        let now = now_ms();
        let entry = self.home.entry(Arc::clone(&channel)).or_default();
        entry.idempotency.retain(|_, (_, expire)| *expire > now);
        if let Some(first) = idempotency_key.as_ref().and_then(|k| entry.idempotency.get(k)) {
            return first.0.clone();
        }
        let top = |e: &HomeChannel| {
            e.stream.as_ref().map(|s| Published {
                offset: s.position().offset,
                epoch: s.position().epoch.clone(),
            })
        };
        if let Some((v, epoch)) = &version {
            if let Some((stored, stored_epoch)) = &entry.version {
                if *v <= *stored && (epoch.is_empty() || epoch == stored_epoch) {
                    return top(entry);
                }
            }
            entry.version = Some((*v, epoch.clone()));
        }
        let (publication, position) = if history.enabled() {
            let stream = entry.stream.get_or_insert_with(Stream::default);
            let stored = stream.append(publication, history, now);
            (stored, top(entry))
        } else {
            (Arc::new(publication), None)
        };
        if let Some(k) = idempotency_key {
            entry.idempotency.insert(k, (position.clone(), now + IDEMPOTENCY_TTL_MS));
        }
        self.emit(&channel, Event::Pub(publication));
        self.forget_if_idle(&channel);
        position
    }

    /// Sends a request to shard `to` (inline when it is this shard) and parks it; await the
    /// answer with [`PendingAnswer`].
    pub fn call(&mut self, to: ShardId, call: Call) -> RequestId {
        let req = self.pending.insert(Pending::default());
        let msg = ShardMsg::Call { origin: self.id, req, call: Box::new(call) };
        self.send(Lane::Main, to, msg);
        req
    }

    /// Sends a request to the home shard of `channel` whose answer runs `then` inline, with no
    /// task waiting.
    pub fn call_home_then(&mut self, channel: &str, call: Call, then: Continue) {
        let req = self.pending.insert(Pending { then: Some(then), ..Pending::default() });
        let msg = ShardMsg::Call { origin: self.id, req, call: Box::new(call) };
        self.send(Lane::Main, home_of(channel, self.count), msg);
    }

    /// Sends a request to the home shard of `channel`.
    pub fn call_home(&mut self, channel: &str, call: Call) -> RequestId {
        self.call(home_of(channel, self.count), call)
    }

    /// Has every shard (this one included) act on its matching connections, with no answer.
    pub fn conns_everywhere(&mut self, op: &msg::ConnsOp) {
        for i in 0..self.count {
            let cast = Cast::Conns(Box::new(op.clone()));
            self.send(Lane::Main, ShardId(i as u16), ShardMsg::Cast(Box::new(cast)));
        }
    }

    /// Sends the same request to every shard; the answers come back in shard order.
    pub fn call_all(&mut self, make: impl Fn() -> Call) -> Vec<RequestId> {
        (0..self.count).map(|i| self.call(ShardId(i as u16), make())).collect()
    }

    /// A message whose destination shard has stopped reading (only during shutdown): fail what
    /// this shard waits for instead of waiting forever.
    pub fn undeliverable(&mut self, msg: ShardMsg) {
        match msg {
            ShardMsg::Call { origin, req, .. } if origin == self.id => {
                // Removing the slot makes the parked request resolve as lost (error 100).
                if let Some(p) = self.pending.remove(req) {
                    if let Some(w) = p.waker {
                        w.wake();
                    }
                    if let Some(Continue::Conn(key, then)) = p.then {
                        self.resume(key, then, None);
                    }
                }
            }
            ShardMsg::Interest { channel, ack: Some(generation), .. } => {
                self.hub.acknowledged(&channel, generation);
            }
            _ => {}
        }
    }

    fn answer(&mut self, req: RequestId, answer: Answer) {
        if self.pending.get_mut(req).is_some_and(|p| p.then.is_some()) {
            match self.pending.remove(req).and_then(|p| p.then) {
                Some(Continue::Conn(key, then)) => {
                    self.resume(key, then, Some(answer));
                }
                Some(Continue::Position(channel)) => {
                    if let Answer::Position(Some(top)) = answer {
                        if self.hub.sync_position(&channel, top) {
                            self.insufficient_state(&channel);
                        }
                    }
                }
                None => {}
            }
            return;
        }
        // A missing slot means the requester went away (connection closed); nothing to do.
        if let Some(p) = self.pending.get_mut(req) {
            p.answer = Some(answer);
            if let Some(w) = p.waker.take() {
                w.wake();
            }
        }
    }

    /// Delivers an event to this shard's subscribers of `channel`: encoded once, the same
    /// frame queued to each, each writer woken (it flushes everything queued in one write).
    /// Subscribers still waiting for their subscribe reply keep the event instead.
    pub fn deliver_local(&mut self, channel: &str, event: &Event) {
        if self.hub.observe(channel, event) {
            // A delivery to this shard was dropped: positioned subscribers cannot trust their
            // stream anymore and must recover.
            self.insufficient_state(channel);
        }
        let subscribers = match event {
            Event::Pub(_) => self.hub.subscribers(channel),
            Event::Join(_) | Event::Leave(_) => self.hub.join_leave_subscribers(channel),
        };
        if subscribers.is_empty() {
            return;
        }
        // Cloning the key list keeps the hub borrow apart from the connection mutations below
        // (a slow client is unsubscribed from the hub while we iterate).
        let keys: Vec<ConnKey> = subscribers.to_vec();
        if let Event::Pub(p) = event {
            if let Some(base) = self.hub.next_delta_base(channel, &p.data) {
                let mut frames = crate::client::delta::Fanout::new(channel, p, base);
                for key in keys {
                    let delta = self.delta_state(key, channel, true);
                    self.enqueue_as(key, |encoding| frames.frame(encoding, delta));
                }
                self.stats.messages_sent += 1;
                return;
            }
        }
        // Encoded at most once per encoding, on first need (`None` inside: JSON cannot carry
        // binary data, those subscribers get 3506).
        let mut cache: [Option<Option<Out>>; Encoding::COUNT] = Default::default();
        for key in keys {
            self.enqueue_as(key, |encoding| {
                cache[encoding as usize]
                    .get_or_insert_with(|| event_out(channel, event, encoding))
                    .clone()
            });
        }
        self.stats.messages_sent += 1;
    }

    /// Periodic upkeep of the channels homed here (called by the timer task): drops expired
    /// history, forgets streams without subscribers whose `history_meta_ttl` passed, and
    /// idempotency keys older than five minutes, then channels with nothing left. At most once
    /// per `client.channel_position_check_delay` (at least a second).
    pub fn sweep(&mut self, now: Instant) {
        if self.redis.is_some() && now >= self.next_presence_refresh {
            self.next_presence_refresh = now + self.cfg.client.presence_update_interval;
            self.refresh_presence();
        }
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + self.sweep_every();
        let now_ms = now_ms();
        self.check_positions();
        self.home.retain(|_, e| {
            // A stream with subscribers keeps its epoch: publications carry no epoch, so a
            // silent restart at offset 1 could not be told apart by them. Centrifugo would
            // send them to recovery, which then fails anyway.
            if let Some(s) = e.stream.as_mut().filter(|_| !e.interest.is_empty()) {
                s.keep_alive(now_ms);
            }
            if e.stream.as_ref().is_some_and(|s| s.meta_expired(now_ms)) {
                e.stream = None;
            }
            if let Some(s) = e.stream.as_mut() {
                s.expire(now_ms);
            }
            e.idempotency.retain(|_, (_, expire)| *expire > now_ms);
            !e.is_idle()
        });
    }

    fn sweep_every(&self) -> Duration {
        self.cfg.client.channel_position_check_delay.max(Duration::from_secs(1))
    }

    /// Asks the home shard of every channel with local subscribers for its stream top; a shard
    /// found behind lost a delivery and sends its positioned subscribers to recovery. This
    /// catches a lost *last* publication, which no later publication would reveal (spec §6.3's
    /// periodic position check, once per sweep).
    pub fn check_positions(&mut self) {
        let channels: Vec<Arc<str>> = self.hub.positioned_channels().cloned().collect();
        for channel in channels {
            let call = Call::Position { channel: Arc::clone(&channel) };
            self.call_home_then(&channel, call, Continue::Position(Arc::clone(&channel)));
        }
    }

    /// Wakes tasks waiting for shutdown.
    pub fn begin_shutdown(&mut self) {
        self.shutting_down = true;
        for w in self.shutdown_wakers.drain(..) {
            w.wake();
        }
    }
}

/// Future of a parked request's answer. Dropping it frees the slot.
pub struct PendingAnswer {
    shard: ShardRef,
    req: RequestId,
    done: bool,
}

impl PendingAnswer {
    /// Waits for the answer to `req`.
    pub fn new(shard: ShardRef, req: RequestId) -> Self {
        PendingAnswer { shard, req, done: false }
    }
}

impl Future for PendingAnswer {
    /// `None` when the request was lost (only on shutdown).
    type Output = Option<Answer>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let req = self.req;
        let answer = {
            let mut shard = self.shard.borrow_mut();
            let Some(slot) = shard.pending.get_mut(req) else { return Poll::Ready(None) };
            match slot.answer.take() {
                Some(answer) => {
                    shard.pending.remove(req);
                    Some(answer)
                }
                None => {
                    slot.waker = Some(cx.waker().clone());
                    None
                }
            }
        };
        match answer {
            Some(a) => {
                self.done = true;
                Poll::Ready(Some(a))
            }
            None => Poll::Pending,
        }
    }
}

impl Drop for PendingAnswer {
    fn drop(&mut self) {
        if !self.done {
            if let Ok(mut shard) = self.shard.try_borrow_mut() {
                shard.pending.remove(self.req);
            }
        }
    }
}

/// Resolves once the home shards of all `channels` have acknowledged this shard's interest.
pub async fn interest_registered(shard: &ShardRef, channels: &[Arc<str>]) {
    std::future::poll_fn(|cx| {
        let mut s = shard.borrow_mut();
        let mut ready = true;
        for ch in channels {
            ready &= s.hub.poll_registered(ch, cx.waker());
        }
        if ready {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
}

/// Resolves when shutdown has begun on this shard.
pub fn shutdown_signal(shard: &ShardRef) -> impl Future<Output = ()> + '_ {
    std::future::poll_fn(move |cx| {
        let mut s = shard.borrow_mut();
        if s.shutting_down {
            Poll::Ready(())
        } else {
            // The accept loops poll this on every accept; keep one waker per task.
            if !s.shutdown_wakers.iter().any(|w| w.will_wake(cx.waker())) {
                s.shutdown_wakers.push(cx.waker().clone());
            }
            Poll::Pending
        }
    })
}

/// A deadline helper for timers.
pub fn after(d: Duration) -> Instant {
    Instant::now() + d
}
