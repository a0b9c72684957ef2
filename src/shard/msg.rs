//! `ShardMsg`: the only type that crosses cores.
//!
//! Every variant says who sends it, who handles it and what a drop means. Payloads that several
//! shards read are behind `Arc` and immutable; nothing here refers to shard-local state.

use std::sync::Arc;

use glommio::net::AcceptedTcpStream;

use crate::broker::memory::HistoryPolicy;
use crate::protocol::Publication;
use crate::shard::id::ShardId;

/// Identifies a parked request on its origin shard (a slot in `Shard::pending`).
pub type RequestId = u64;

/// Which cross-shard lane a message travels on. Replies have their own lane so a response never
/// waits behind a burst of fan-out traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Requests, interest changes, deliveries, accepted sockets.
    Main = 0,
    /// Answers to requests.
    Reply = 1,
}

/// Stream position assigned by the home shard to a stored publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Offset of the publication.
    pub offset: u64,
    /// Epoch of the stream.
    pub epoch: String,
}

/// A message between shards.
#[derive(Debug)]
pub enum ShardMsg {
    /// Origin shard → channel's home: order (and store) this publication, deliver it to every
    /// interested shard, answer with `PublishDone`. A drop (only possible on shutdown) leaves the
    /// origin's request to time out with an internal error.
    Publish {
        /// Shard waiting for the answer.
        origin: ShardId,
        /// Parked request on the origin.
        req: RequestId,
        /// Channel name.
        channel: Arc<str>,
        /// The publication without offset.
        publication: Box<Publication>,
        /// Whether and how to keep it in history.
        history: HistoryPolicy,
    },
    /// Home → origin (reply lane): the publication is ordered and handed to delivery.
    /// `None` when the channel keeps no history.
    PublishDone {
        /// Parked request on the origin.
        req: RequestId,
        /// Stream position, when history is on.
        position: Option<Published>,
    },
    /// Any shard → channel's home: this shard now has (or no longer has) local subscribers.
    /// Sent on the 0→1 and 1→0 transitions only; lanes are FIFO per pair so on/off never reorder.
    Interest {
        /// Channel name.
        channel: Arc<str>,
        /// The shard whose local subscriber count changed.
        shard: ShardId,
        /// true = has subscribers now.
        subscribed: bool,
        /// For `subscribed`: the registration generation to acknowledge with `InterestAcked`.
        ack: Option<u64>,
    },
    /// Home → subscribing shard (reply lane): the interest with this generation is recorded, so
    /// every publication ordered from now on is delivered to that shard; waiting subscribe
    /// replies can go out.
    InterestAcked {
        /// Channel name.
        channel: Arc<str>,
        /// Registration generation from `Interest::ack`.
        generation: u64,
    },
    /// Home → interested shard: deliver to local subscribers. Dropped (and counted) when the
    /// destination lane's spill queue is over its cap; clients recover by offset.
    Deliver {
        /// Channel name.
        channel: Arc<str>,
        /// One shared immutable publication for every shard.
        publication: Arc<Publication>,
    },
    /// Accepting shard → chosen shard (round-robin placement): a connection to serve.
    Accepted(AcceptedTcpStream),
}

// Keep the message small: it is copied through lock-free rings.
const _: () = assert!(std::mem::size_of::<ShardMsg>() <= 64);
