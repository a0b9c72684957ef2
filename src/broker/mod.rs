//! Brokers: where a channel's publications are ordered and kept, and how nodes reach each other.
//!
//! Every broker implements [`Broker`], the contract the channel's home shard uses
//! (`channel::home`): [`memory`] keeps streams on the home shard itself (one node); [`redis`]
//! keeps history and presence in Redis and carries publications between nodes over Redis
//! PUB/SUB; [`nats`] carries publications between nodes over NATS (no history). [`stream`] is the
//! history vocabulary they share and [`control`] the node-to-node message set.
//!
//! A broker speaks only the types of this module: requests ([`PublishCall`], [`SubscribeCall`]),
//! where an answer goes ([`ReplyTo`]), and what it produces ([`Effect`]s in an [`Outbox`]: answers,
//! channel events to deliver, released interest acknowledgements). It never sends anything to
//! another shard itself and never touches connections: the home shard drains the outbox.
//!
//! Delivery has one path for every broker: a publication becomes an [`Effect::Emit`] when the
//! broker has ordered it (at once for memory; when it comes back through the broker's
//! subscription on every node, this one included, for Redis and NATS).

#![deny(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "bytes from the network are parsed here: a silent truncation is a bug"
)]

pub mod control;
pub mod memory;
pub mod nats;
pub mod redis;
pub mod socket;
pub mod stream;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::broker::stream::{HistoryError, HistoryPolicy, HistoryQuery, Position};
use crate::protocol::{ClientInfo, Publication};
use crate::shard::id::{Lane, RequestId, ShardId};

/// Something that happened in a channel, handed by the home shard to every interested shard.
/// Behind `Arc`: one allocation is read by every shard.
#[derive(Debug, Clone)]
pub enum Event {
    /// A publication (with its offset when the channel keeps history).
    Pub(Arc<Publication>),
    /// A client subscribed (channels with `join_leave`).
    Join(Arc<ClientInfo>),
    /// A client unsubscribed or disconnected.
    Leave(Arc<ClientInfo>),
}

/// A publish handed to the channel's home shard.
#[derive(Debug)]
pub struct PublishCall {
    /// Channel name.
    pub channel: Arc<str>,
    /// The publication without offset.
    pub publication: Publication,
    /// Whether and how to keep it in history.
    pub history: HistoryPolicy,
    /// API `idempotency_key`: a repeat within 5 minutes returns the first result.
    pub idempotency_key: Option<String>,
    /// API `version` and `version_epoch`: skip when not newer than the stored version.
    pub version: Option<(u64, String)>,
}

/// A subscription that needs the home shard: presence, join/leave, or a stream position.
#[derive(Debug)]
pub struct SubscribeCall {
    /// Channel name.
    pub channel: Arc<str>,
    /// The subscriber, as presence and join/leave show it.
    pub info: Arc<ClientInfo>,
    /// Add `info` to the channel's presence.
    pub presence: bool,
    /// Emit a join event to the channel's join/leave receivers.
    pub join: bool,
    /// Report the stream top (and read this history for recovery); the policy creates the
    /// stream meta when the channel was never published to.
    pub position: Option<(HistoryPolicy, Option<HistoryQuery>)>,
}

impl SubscribeCall {
    /// Whether the subscriber tracks a stream position (the broker must deliver the channel
    /// before the position is read, see [`Broker::gate`]).
    pub fn positioned(&self) -> bool {
        self.position.as_ref().is_some_and(|(policy, _)| policy.enabled())
    }
}

/// A broker's answer to a channel request.
#[derive(Debug)]
pub enum Reply {
    /// The publication is ordered and handed to delivery; its position when history is on.
    Published(Option<Position>),
    /// The subscriber is registered; the stream top and the history read, when asked.
    Subscribed {
        /// Stream top (positioned subscriptions).
        top: Option<Position>,
        /// Publications read for recovery.
        read: Result<Vec<Arc<Publication>>, HistoryError>,
    },
    /// A history page and the stream top.
    History(Result<(Vec<Arc<Publication>>, Position), HistoryError>),
    /// Presence entries of a channel.
    Presence(Vec<Arc<ClientInfo>>),
    /// A stream's top offset, `None` when the channel keeps no stream.
    Position(Option<u64>),
    /// Done, nothing to report.
    Done,
    /// The broker could not do it (its server unreachable or erroring): a temporary error for
    /// the caller; nothing was accepted.
    Failed,
}

/// Where an answer goes: the parked request on the asking shard and the lane it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyTo {
    /// The asking shard.
    pub origin: ShardId,
    /// Its parked request.
    pub req: RequestId,
    /// Subscribe and position answers travel on the main lane, behind deliveries.
    pub lane: Lane,
}

/// What a broker leaves for the home shard to do, in the order it happened.
#[derive(Debug)]
pub enum Effect {
    /// Answer a parked request.
    Answer(ReplyTo, Reply),
    /// Deliver an event to every shard with subscribers of the channel.
    Emit(Arc<str>, Event),
    /// The broker now delivers the channel: acknowledge this interest (shard, generation).
    Ack(ShardId, u64, Arc<str>),
    /// A subscribe held at the gate may go on: the channel is delivered now.
    Resume(ReplyTo, SubscribeCall),
    /// A control message from another node.
    Control(Bytes),
}

/// Effects in the order brokers produced them; the home shard drains it after every call into
/// a broker, so it stays short.
#[derive(Debug, Default)]
pub struct Outbox(VecDeque<Effect>);

impl Outbox {
    /// Queues an effect.
    pub fn push(&mut self, effect: Effect) {
        self.0.push_back(effect);
    }

    /// Queues an answer.
    pub fn answer(&mut self, to: ReplyTo, reply: Reply) {
        self.push(Effect::Answer(to, reply));
    }

    /// Queues an event for delivery.
    pub fn emit(&mut self, channel: Arc<str>, event: Event) {
        self.push(Effect::Emit(channel, event));
    }

    /// The oldest effect.
    pub fn pop(&mut self) -> Option<Effect> {
        self.0.pop_front()
    }
}

/// What a subscription may do next.
#[derive(Debug)]
pub enum Gate {
    /// Go ahead: the broker delivers the channel, nothing published from now on can be missed.
    Open(SubscribeCall),
    /// The broker keeps the call until it delivers the channel, then hands it back
    /// ([`Effect::Resume`]).
    Held,
    /// Fail the subscription now (broker down, or a position asked of a broker without
    /// streams).
    Refused,
}

/// A broker as the channel's home shard uses it (style.md §3.4). One instance per shard,
/// called only for channels homed there; `now_ms` is the shard's clock.
///
/// Every answer goes into `out`, now or once the broker's server replied. Delivery never starts
/// from a request: what a broker orders comes back as [`Effect::Emit`].
pub trait Broker {
    /// Orders (and, with history, stores) a publication; answers `Published`.
    fn publish(&mut self, call: PublishCall, to: ReplyTo, now_ms: u64, out: &mut Outbox);
    /// Sends a join or leave to every node (memory: to this node's subscribers).
    fn publish_presence_event(
        &mut self,
        channel: &Arc<str>,
        info: Arc<ClientInfo>,
        join: bool,
        out: &mut Outbox,
    );
    /// A page of history and the stream top (the policy is enabled); answers `History`.
    fn history(
        &mut self,
        channel: &Arc<str>,
        policy: HistoryPolicy,
        query: HistoryQuery,
        to: ReplyTo,
        now_ms: u64,
        out: &mut Outbox,
    );
    /// Drops a channel's stored publications, keeping the position; answers `Done`.
    fn remove_history(&mut self, channel: &str, to: ReplyTo, out: &mut Outbox);
    /// The stream's top offset (the periodic position check); answers `Position`.
    fn top(&mut self, channel: &str, to: ReplyTo, out: &mut Outbox);
    /// Whether a subscription may be answered now: only once this node receives the channel,
    /// or a publication made between the answer and the broker's subscription would be lost
    /// (and a positioned one's position read could miss it).
    fn gate(&mut self, sub: SubscribeCall, to: ReplyTo) -> Gate;
    /// The position (and the publications to recover) of a positioned subscription that passed
    /// the gate; answers `Subscribed`.
    fn read_position(
        &mut self,
        channel: &Arc<str>,
        policy: HistoryPolicy,
        query: Option<HistoryQuery>,
        to: ReplyTo,
        now_ms: u64,
        out: &mut Outbox,
    );
    /// The channel gained interest on this node: receive it. `true` when the acknowledgement
    /// may go out now; otherwise the broker keeps `ack` and releases it ([`Effect::Ack`]) once it
    /// receives the channel.
    fn want(&mut self, channel: &Arc<str>, ack: Option<(ShardId, u64)>) -> bool;
    /// The channel lost its last interest on this node. Subscribes still held at the gate
    /// are answered `Failed` (their connections are gone).
    fn unwant(&mut self, channel: &str, out: &mut Outbox);
    /// Sends a control message to every other node (nothing with one node).
    fn publish_control(&mut self, data: &[u8]);
    /// Sends a control message to one node.
    fn publish_to_node(&mut self, uid: &str, data: &[u8]);
    /// Whether publications cross nodes through this broker (Redis, NATS).
    fn connects_nodes(&self) -> bool;
}

/// Reconnect delays of a broker link: 50 ms after the first failure, doubled per failed
/// attempt, at most 2 s; back to 50 ms once a connection is made.
#[derive(Debug)]
pub struct Backoff(Duration);

impl Backoff {
    const MIN: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_secs(2);

    /// The first delay.
    pub fn new() -> Backoff {
        Backoff(Self::MIN)
    }

    /// A connection was made: the next failure waits the shortest delay again.
    pub fn reset(&mut self) {
        self.0 = Self::MIN;
    }

    /// How long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.0;
        self.0 = (d * 2).min(Self::MAX);
        d
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delays_double_up_to_two_seconds_and_reset() {
        let mut b = Backoff::new();
        let first: Vec<u128> = (0..7).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(first, [50, 100, 200, 400, 800, 1600, 2000]);
        assert_eq!(b.next_delay(), Duration::from_secs(2));
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(50));
    }
}
