//! Brokers: where a channel's publications are ordered and kept, and how nodes reach each other.
//! `memory` keeps everything on each channel's home shard (one node); `redis` keeps history and
//! presence in Redis and carries publications between nodes over Redis PUB/SUB; `nats` carries
//! publications between nodes over NATS (no history); `control` is the node-to-node message set. Brokers never touch connections.

pub mod control;
pub mod memory;
pub mod nats;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use crate::protocol::ClientInfo;
use crate::shard::id::ShardId;
use crate::shard::msg::{Answer, Lane, PublishCall, RequestId, SubscribeCall};

pub use memory::{HistoryPolicy, HistoryQuery};

/// Where a broker's answer goes once its server replied: the parked request on the asking shard
/// and the lane it takes.
#[derive(Debug, Clone, Copy)]
pub struct ReplyTo {
    /// The asking shard.
    pub origin: ShardId,
    /// Its parked request.
    pub req: RequestId,
    /// Subscribe and position answers travel on the main lane, behind deliveries.
    pub lane: Lane,
}

/// What a positioned subscription may do next.
#[derive(Debug)]
pub enum Gate {
    /// Go ahead: the broker delivers the channel, a position read cannot miss anything.
    Open(SubscribeCall),
    /// The broker keeps the call until it delivers the channel, then hands it back.
    Held,
    /// Fail the subscription now (broker down, or no streams at all).
    Refused,
}

/// A broker that carries publications between nodes, as the home shard uses it (style.md
/// §3.4): Redis and NATS. The memory engine needs none of it, since the home shard is the
/// whole broker there (`broker::memory`).
///
/// Delivery never starts here. Whatever a broker publishes comes back through its
/// subscription on every node, this one included, and goes through `Shard::emit`, the same
/// path as the memory engine's append. Every answer either comes now (`Some`), or is sent to
/// `to` once the broker's server has replied (`None`).
pub trait Broker {
    /// Orders (and, with history, stores) a publication.
    fn publish(&mut self, call: &PublishCall, to: ReplyTo) -> Option<Answer>;
    /// Sends a join or leave to every node.
    fn publish_presence_event(&mut self, channel: &str, info: &ClientInfo, join: bool);
    /// A page of history and the stream top.
    fn history(
        &mut self,
        channel: &str,
        policy: HistoryPolicy,
        query: HistoryQuery,
        to: ReplyTo,
    ) -> Option<Answer>;
    /// Drops a channel's stored publications.
    fn remove_history(&mut self, channel: &str, to: ReplyTo) -> Option<Answer>;
    /// The stream's top offset (the periodic position check).
    fn top(&mut self, channel: &str, to: ReplyTo) -> Option<Answer>;
    /// Whether a positioned subscription may read its position now.
    fn gate(&mut self, sub: SubscribeCall, to: ReplyTo) -> Gate;
    /// The position (and the publications to recover) of a positioned subscription that passed
    /// the gate; answers `Subscribed`.
    fn read_position(
        &mut self,
        channel: &str,
        policy: HistoryPolicy,
        query: Option<HistoryQuery>,
        to: ReplyTo,
    ) -> Option<Answer>;
    /// The channel gained interest on this node: receive it. `true` when the acknowledgement
    /// may go out now; otherwise the broker keeps `ack` until it receives the channel.
    fn want(&mut self, channel: &Arc<str>, ack: Option<(ShardId, u64)>) -> bool;
    /// The channel lost its last interest on this node.
    fn unwant(&mut self, channel: &str);
    /// Sends a control message to every node.
    fn publish_control(&mut self, data: &[u8]);
    /// Sends a control message to one node.
    fn publish_to_node(&mut self, uid: &str, data: &[u8]);
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
