//! The mesh part of a shard: how its messages reach other shards, and the requests it waits on.
//!
//! Owns: the senders of the two glommio channel meshes (a *main* lane for requests, interest
//! and deliveries; a *reply* lane, so answers never queue behind fan-out), one spill queue per
//! lane and peer, the queue of messages this shard sent to itself, and the parked requests
//! (`Pendings`) with what each answer resumes.
//!
//! Rules it keeps:
//! - A send never waits. A full lane spills into a FIFO that a forwarder task drains in order.
//!   Past [`SPILL_MAX`] queued frames a delivery is dropped and counted (clients recover by
//!   offset) and a request is refused: its parked request fails at once (error 100), instead of
//!   queueing without bound behind a stuck peer. Answers, interest changes and casts are never
//!   dropped: each is bounded by a request or a subscriber.
//! - A message to this shard is queued locally and handled after the current handler returns
//!   (`Shard::settle`), in send order, like a message to a peer; no handler runs inside another.
//! - Every frame is stamped with its target; the receiver checks the stamp.
//!
//! Must not: handle messages (the shard does), or hold a reference to shard state: the pump and
//! forwarder tasks get closures from the runtime.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use futures_lite::StreamExt;
use glommio::channels::channel_mesh::Senders;
use glommio::channels::shared_channel::ConnectedReceiver;
use glommio::{GlommioError, ResourceType};
use slab::Slab;

use crate::shard::id::{home_of, Lane, RequestId, ShardId};
use crate::shard::msg::{Answer, Call, Frame, ShardMsg};

/// Most frames waiting for one peer lane before deliveries are dropped and requests refused.
pub const SPILL_MAX: usize = 65_536;

/// Most lane messages a pump handles before it yields.
const PUMP_BATCH_MAX: usize = 256;

/// Frames waiting for a peer lane that was full.
#[derive(Debug, Default)]
pub struct Spill {
    queue: VecDeque<Frame>,
    /// The forwarder task waiting for work.
    waker: Option<Waker>,
    /// The forwarder holds a popped frame it has not yet handed to the lane; direct sends must
    /// wait behind it to keep the lane FIFO.
    in_flight: bool,
}

impl Spill {
    /// The oldest frame, for a test that plays the lanes by hand.
    #[cfg(test)]
    pub fn pop(&mut self) -> Option<Frame> {
        self.queue.pop_front()
    }

    /// The oldest frame is a delivery (a test drops it to play a full lane).
    #[cfg(test)]
    pub fn front_is_delivery(&self) -> bool {
        matches!(self.queue.front(), Some(Frame { msg: ShardMsg::Deliver { .. }, .. }))
    }

    /// Nothing waits here.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// A spill queue shared with its forwarder task.
pub type SpillRef = Rc<RefCell<Spill>>;

/// Who waits for a parked request's answer.
#[derive(Debug)]
pub enum Waiter {
    /// An async task (an API request, the control task) polls for it.
    Task {
        /// The answer, once in.
        answer: Option<Answer>,
        /// The task to wake.
        waker: Option<Waker>,
    },
    /// A command in flight on this shard (`client::flight`): the answer resumes it inline.
    Flight {
        /// The flight, as `client::flight` names it.
        token: u64,
        /// Which of the flight's answers this is.
        index: u16,
    },
}

#[derive(Debug)]
struct Pending {
    /// Matches the high half of the request id, so that an answer to a request whose waiter
    /// went away never reaches a newer request in the same slot.
    generation: u32,
    waiter: Waiter,
}

/// Parked requests by id: a slab slot in the low 32 bits, a generation in the high 32.
#[derive(Debug, Default)]
struct Pendings {
    slots: Slab<Pending>,
    next_generation: u32,
}

impl Pendings {
    fn insert(&mut self, waiter: Waiter) -> RequestId {
        self.next_generation = self.next_generation.wrapping_add(1);
        let generation = self.next_generation;
        let slot = self.slots.insert(Pending { generation, waiter }) as u64;
        (u64::from(generation) << 32) | slot
    }

    fn index(&self, id: RequestId) -> Option<usize> {
        let slot = usize::try_from(id & u64::from(u32::MAX)).ok()?;
        let generation = u32::try_from(id >> 32).ok()?;
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

/// Counters of the mesh (plain fields: one owner).
#[derive(Debug, Default, Clone, Copy)]
pub struct MeshStats {
    /// Messages sent to peers, by lane (main, reply).
    pub sent: [u64; 2],
    /// Frames that went to a spill queue because their lane was full (or had spilled frames).
    pub spilled: u64,
    /// Deliveries dropped because a peer lane stayed full.
    pub deliveries_dropped: u64,
    /// Requests refused because a peer lane stayed full.
    pub calls_refused: u64,
}

/// The mesh part of one shard.
#[derive(Debug)]
pub struct Mesh {
    id: ShardId,
    count: usize,
    senders: [Option<Rc<Senders<Frame>>>; 2],
    spill: [Vec<SpillRef>; 2],
    local: VecDeque<ShardMsg>,
    /// Requests of this shard that failed before reaching their target.
    lost: VecDeque<RequestId>,
    pending: Pendings,
    stats: MeshStats,
}

impl Mesh {
    /// Shard `id` of `count`, before the lanes are joined (every send to a peer spills).
    pub fn new(id: ShardId, count: usize) -> Mesh {
        let spill = || (0..count).map(|_| SpillRef::default()).collect::<Vec<_>>();
        Mesh {
            id,
            count,
            senders: [None, None],
            spill: [spill(), spill()],
            local: VecDeque::new(),
            lost: VecDeque::new(),
            pending: Pendings::default(),
            stats: MeshStats::default(),
        }
    }

    /// This shard.
    pub fn id(&self) -> ShardId {
        self.id
    }

    /// Shards in the process.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Every shard of the process, this one included.
    pub fn all(&self) -> impl Iterator<Item = ShardId> {
        (0..self.count).filter_map(|i| u16::try_from(i).ok()).map(ShardId)
    }

    /// The home shard of a channel (or user).
    pub fn home_of(&self, name: &str) -> ShardId {
        home_of(name, self.count)
    }

    /// Counters.
    pub fn stats(&self) -> MeshStats {
        self.stats
    }

    /// Connects a lane (boot).
    pub fn join(&mut self, lane: Lane, senders: Rc<Senders<Frame>>) {
        self.senders[lane as usize] = Some(senders);
    }

    /// The spill queue towards `peer` on `lane`, for its forwarder task.
    pub fn spill_of(&self, lane: Lane, peer: usize) -> SpillRef {
        Rc::clone(&self.spill[lane as usize][peer])
    }

    /// Sends a message: to the local queue when it is for this shard, else through the lane,
    /// spilling (bounded) when the lane is full, so the caller never waits.
    pub fn send(&mut self, lane: Lane, to: ShardId, msg: ShardMsg) {
        if to == self.id {
            self.local.push_back(msg);
            return;
        }
        let Some(spill) = self.spill[lane as usize].get(to.index()) else {
            return self.undeliverable(msg);
        };
        self.stats.sent[lane as usize] += 1;
        let mut frame = Frame { to, msg };
        {
            let spill = spill.borrow();
            if spill.queue.is_empty() && !spill.in_flight {
                if let Some(senders) = &self.senders[lane as usize] {
                    match senders.try_send_to(to.index(), frame) {
                        Err(GlommioError::WouldBlock(ResourceType::Channel(back))) => frame = back,
                        Err(GlommioError::Closed(ResourceType::Channel(back))) => {
                            drop(spill);
                            return self.undeliverable(back.msg);
                        }
                        // Sent (or an error no channel reports).
                        _ => return,
                    }
                }
            }
        }
        let mut spill = spill.borrow_mut();
        if spill.queue.len() >= SPILL_MAX {
            match frame.msg {
                ShardMsg::Deliver { .. } => {
                    self.stats.deliveries_dropped += 1;
                    return;
                }
                ShardMsg::Call { req, .. } => {
                    self.stats.calls_refused += 1;
                    self.lost.push_back(req);
                    return;
                }
                _ => {}
            }
        }
        self.stats.spilled += 1;
        spill.queue.push_back(frame);
        if let Some(w) = spill.waker.take() {
            w.wake();
        }
    }

    /// A message this shard sent to itself, in send order; then the requests that failed
    /// before reaching their target, as lost answers.
    pub fn take_local(&mut self) -> Option<ShardMsg> {
        if let Some(msg) = self.local.pop_front() {
            return Some(msg);
        }
        self.lost.pop_front().map(|req| ShardMsg::Answer { req, answer: Box::new(Answer::Failed) })
    }

    /// A message that cannot reach its shard (that shard stopped reading, at shutdown). A
    /// request of ours resumes its waiter as lost; an interest registration counts as
    /// acknowledged, so no subscribe reply waits forever.
    pub fn undeliverable(&mut self, msg: ShardMsg) {
        match msg {
            ShardMsg::Call { origin, req, .. } if origin == self.id => self.lost.push_back(req),
            ShardMsg::Interest { channel, ack: Some(generation), .. } => {
                self.local.push_back(ShardMsg::InterestAcked { channel, generation });
            }
            _ => {}
        }
    }

    /// Sends a request to shard `to` and parks it until its answer comes.
    pub fn call(&mut self, to: ShardId, call: Call, waiter: Waiter) -> RequestId {
        let req = self.pending.insert(waiter);
        let msg = ShardMsg::Call { origin: self.id, req, call: Box::new(call) };
        self.send(Lane::Main, to, msg);
        req
    }

    /// Sends a request whose answer an async task polls ([`Mesh::poll_answer`]).
    pub fn call_for_task(&mut self, to: ShardId, call: Call) -> RequestId {
        self.call(to, call, Waiter::Task { answer: None, waker: None })
    }

    /// The answer to a parked request arrived. For a flight it is returned with its
    /// `(token, index)`; a task's answer is kept for it and the task woken. An answer whose
    /// request is gone (its task went away) is dropped. [`Answer::Failed`] stands for a request
    /// that was lost.
    pub fn answered(&mut self, req: RequestId, answer: Answer) -> Option<(u64, u16, Answer)> {
        match &mut self.pending.get_mut(req)?.waiter {
            Waiter::Flight { token, index } => {
                let flight = (*token, *index, answer);
                self.pending.remove(req);
                Some(flight)
            }
            Waiter::Task { answer: slot, waker } => {
                *slot = Some(answer);
                if let Some(w) = waker.take() {
                    w.wake();
                }
                None
            }
        }
    }

    /// A task polls for its answer; `Ready(None)` when the request was lost.
    pub fn poll_answer(&mut self, req: RequestId, cx: &mut Context<'_>) -> Poll<Option<Answer>> {
        let Some(Pending { waiter: Waiter::Task { answer, waker }, .. }) =
            self.pending.get_mut(req)
        else {
            return Poll::Ready(None);
        };
        if let Some(a) = answer.take() {
            self.pending.remove(req);
            return Poll::Ready(match a {
                Answer::Failed => None,
                a => Some(a),
            });
        }
        *waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// A task stopped waiting for `req`.
    pub fn forget(&mut self, req: RequestId) {
        self.pending.remove(req);
    }
}

/// Drains one peer's lane into its shard: hands `handle` every frame already queued before
/// yielding, so the writers woken by a burst of deliveries flush once for the whole burst.
pub async fn pump(mut rx: ConnectedReceiver<Frame>, mut handle: impl FnMut(Vec<Frame>)) {
    while let Some(frame) = rx.next().await {
        let mut batch = vec![frame];
        while batch.len() < PUMP_BATCH_MAX {
            match futures_lite::future::poll_once(rx.next()).await {
                Some(Some(more)) => batch.push(more),
                _ => break,
            }
        }
        handle(batch);
        // A peer that keeps its ring full must not starve this shard's writers and timers.
        glommio::yield_if_needed().await;
    }
}

/// Moves spilled frames into a full lane in FIFO order, waiting for room. When the peer stops
/// reading (shutdown), this frame and every one behind it go to `undeliverable`.
pub async fn forward(
    spill: SpillRef,
    senders: Rc<Senders<Frame>>,
    peer: usize,
    mut undeliverable: impl FnMut(ShardMsg),
) {
    loop {
        let frame = poll_fn(|cx| {
            let mut s = spill.borrow_mut();
            match s.queue.pop_front() {
                Some(f) => {
                    s.in_flight = true;
                    Poll::Ready(f)
                }
                None => {
                    s.in_flight = false;
                    s.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await;
        if let Err(e) = senders.send_to(peer, frame).await {
            if let GlommioError::Closed(ResourceType::Channel(back)) = e {
                undeliverable(back.msg);
            }
            let rest: Vec<Frame> = {
                let mut s = spill.borrow_mut();
                s.in_flight = false;
                s.queue.drain(..).collect()
            };
            for f in rest {
                undeliverable(f.msg);
            }
            return;
        }
    }
}
