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

pub mod id;
pub mod msg;

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

use crate::broker::memory::{HistoryPolicy, Stream};
use crate::channel::Namespaces;
use crate::client::{Conn, Timer};
use crate::config::Config;
use crate::hub::{ConnKey, Hub};
use crate::protocol::{json, Publication};
use crate::shard::id::{home_of, ShardId, ShardSet};
use crate::shard::msg::{Lane, Published, RequestId, ShardMsg};
use crate::transport::websocket;

/// Most messages waiting for one peer lane before deliveries are dropped (and counted).
pub const SPILL_MAX: usize = 65_536;

/// The shard state shared by the tasks of one executor.
pub type ShardRef = Rc<RefCell<Shard>>;

/// Channel state kept by the channel's home shard.
#[derive(Debug, Default)]
pub struct HomeChannel {
    /// Shards with at least one local subscriber.
    pub interest: ShardSet,
    /// Stream position and history (memory engine), created on the first stored publication.
    pub stream: Option<Stream>,
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

/// A request parked until another shard answers.
#[derive(Debug, Default)]
pub struct Pending {
    answer: Option<Option<Published>>,
    waker: Option<Waker>,
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
    pending: Slab<Pending>,
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
    /// The JSON ping `{}` as a shared frame.
    pub ping_frame: Bytes,
    /// Bumped by the timer task on every tick; the supervisor's systemd watchdog only pings
    /// while every shard's counter moves (a stuck shard stops the pings).
    pub heartbeat: Arc<std::sync::atomic::AtomicU64>,
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
            pending: Slab::new(),
            senders: [None, None],
            spill: [spill(), spill()],
            timers: BinaryHeap::new(),
            shutting_down: false,
            shutdown_wakers: Vec::new(),
            stats: Stats::default(),
            ping_frame: websocket::frame(websocket::OpCode::Text, json::PING),
            heartbeat: Arc::default(),
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
            ShardMsg::Publish { origin, req, channel, publication, history } => {
                let position = self.publish_home(&channel, *publication, history);
                self.send(Lane::Reply, origin, ShardMsg::PublishDone { req, position });
            }
            ShardMsg::PublishDone { req, position } => self.answer(req, position),
            ShardMsg::Interest { channel, shard, subscribed, ack } => {
                let entry = self.home.entry(Arc::clone(&channel)).or_default();
                if subscribed {
                    entry.interest.insert(shard);
                    if let Some(generation) = ack {
                        self.send(
                            Lane::Reply,
                            shard,
                            ShardMsg::InterestAcked { channel, generation },
                        );
                    }
                } else {
                    entry.interest.remove(shard);
                    if entry.interest.is_empty() && entry.stream.is_none() {
                        self.home.remove(&channel);
                    }
                }
            }
            ShardMsg::InterestAcked { channel, generation } => {
                self.hub.acknowledged(&channel, generation);
            }
            ShardMsg::Deliver { channel, publication } => {
                self.deliver_local(&channel, &publication);
            }
            ShardMsg::Accepted(stream) => return Some(stream),
        }
        None
    }

    /// Home-shard half of a publish: assign a position (when history is on) and hand one shared
    /// publication to every interested shard, this one included.
    fn publish_home(
        &mut self,
        channel: &Arc<str>,
        publication: Publication,
        history: HistoryPolicy,
    ) -> Option<Published> {
        let entry = self.home.entry(Arc::clone(channel)).or_default();
        let (publication, position) = if history.enabled() {
            let stream = entry.stream.get_or_insert_with(Stream::default);
            let stored = stream.append(publication, history, now_ms());
            let pos = stream.position();
            (stored, Some(Published { offset: pos.offset, epoch: pos.epoch.clone() }))
        } else {
            (Arc::new(publication), None)
        };
        let targets = entry.interest;
        if targets.is_empty() && entry.stream.is_none() {
            self.home.remove(channel);
        }
        for shard in targets.iter() {
            let msg = ShardMsg::Deliver {
                channel: Arc::clone(channel),
                publication: Arc::clone(&publication),
            };
            self.send(Lane::Main, shard, msg);
        }
        position
    }

    /// Starts a publish from this shard: returns the parked request to await.
    pub fn start_publish(
        &mut self,
        channel: Arc<str>,
        publication: Publication,
        history: HistoryPolicy,
    ) -> RequestId {
        let req = self.pending.insert(Pending::default()) as RequestId;
        let home = home_of(&channel, self.count);
        let msg = ShardMsg::Publish {
            origin: self.id,
            req,
            channel,
            publication: Box::new(publication),
            history,
        };
        self.send(Lane::Main, home, msg);
        req
    }

    /// A message whose destination shard has stopped reading (only during shutdown): fail what
    /// this shard waits for instead of waiting forever.
    pub fn undeliverable(&mut self, msg: ShardMsg) {
        match msg {
            ShardMsg::Publish { origin, req, .. } if origin == self.id => {
                // Removing the slot makes the parked request resolve as lost (error 100).
                if let Some(p) = self.pending.try_remove(req as usize) {
                    if let Some(w) = p.waker {
                        w.wake();
                    }
                }
            }
            ShardMsg::Interest { channel, ack: Some(generation), .. } => {
                self.hub.acknowledged(&channel, generation);
            }
            _ => {}
        }
    }

    fn answer(&mut self, req: RequestId, position: Option<Published>) {
        // A missing slot means the requester went away (connection closed); nothing to do.
        if let Some(p) = self.pending.get_mut(req as usize) {
            p.answer = Some(position);
            if let Some(w) = p.waker.take() {
                w.wake();
            }
        }
    }

    /// Delivers a publication to this shard's subscribers of `channel`: encoded once, the same
    /// frame queued to each, each writer woken (it flushes everything queued in one write).
    pub fn deliver_local(&mut self, channel: &str, publication: &Publication) {
        let subscribers = self.hub.subscribers(channel);
        if subscribers.is_empty() {
            return;
        }
        let out = crate::client::Out::json(|buf| {
            json::encode_publication_push(channel, publication, buf)
        });
        // Cloning the key list keeps the hub borrow apart from the connection mutations below
        // (a slow client is unsubscribed from the hub while we iterate).
        let keys: Vec<ConnKey> = subscribers.to_vec();
        for key in keys {
            self.enqueue(key, out.clone());
        }
        self.stats.messages_sent += 1;
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
    /// `None` when the request was lost (only on shutdown); `Some(None)` for a publish without
    /// history.
    type Output = Option<Option<Published>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let req = self.req as usize;
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
                if shard.pending.contains(self.req as usize) {
                    shard.pending.remove(self.req as usize);
                }
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
