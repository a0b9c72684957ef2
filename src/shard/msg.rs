//! `ShardMsg`: the only type that crosses cores, and the [`Frame`] that carries it.
//!
//! Every variant says who sends it, who handles it and what a drop means. Requests ([`Call`])
//! are named as imperatives and expect an [`Answer`]; one-way messages ([`Cast`], interest,
//! deliveries) expect none. Payloads that several shards read are behind `Arc` and immutable;
//! nothing here refers to shard-local state. How messages travel (lanes, spill, bounds) is
//! `shard::mesh`'s.

use std::sync::Arc;

use glommio::net::AcceptedTcpStream;

use crate::broker::control::ConnsOp;
use crate::broker::stream::{HistoryPolicy, HistoryQuery};
use crate::broker::{Event, PublishCall, Reply, SubscribeCall};
use crate::protocol::ClientInfo;
use crate::shard::id::{RequestId, ShardId};

/// A request to another shard (or to this one: queued, and handled right after the current
/// handler), answered with [`Answer`].
#[derive(Debug)]
pub enum Call {
    /// To the channel's home: order (and store) a publication, deliver it, answer `Published`.
    Publish(PublishCall),
    /// To the channel's home: register a subscriber, answer `Subscribed`.
    Subscribe(SubscribeCall),
    /// To the channel's home: read history, answer `History`.
    ReadHistory {
        /// Channel name.
        channel: Arc<str>,
        /// The namespace's history settings (a read creates the stream meta).
        policy: HistoryPolicy,
        /// What to read.
        query: HistoryQuery,
    },
    /// To the channel's home: drop stored publications, keep the position; answer `Done`.
    RemoveHistory {
        /// Channel name.
        channel: Arc<str>,
    },
    /// To the channel's home: answer `Presence`.
    ReadPresence {
        /// Channel name.
        channel: Arc<str>,
    },
    /// To every shard: local subscriber counts of the channels matching a glob; answer
    /// `Channels`.
    CountChannels {
        /// gobwas-style glob, `None` = every channel.
        pattern: Option<Arc<globset::GlobMatcher>>,
    },
    /// To every shard: local counts for API `info`; answer `Counts`.
    CountClients,
    /// To every shard: its metrics and gauges for a scrape; answer `Metrics`.
    Metrics,
    /// To shard 0: the node's latest aggregated `info` metrics; answer `InfoMetrics`.
    InfoMetrics,
    /// To every shard: act on the matching local connections (API `subscribe`, `unsubscribe`,
    /// `disconnect`, `refresh`); answer `Done`.
    ApplyToConns(Box<ConnsOp>),
    /// To the channel's home: the stream's top offset (answered on the main lane, behind the
    /// deliveries); answer `Position`.
    ReadPosition {
        /// Channel name.
        channel: Arc<str>,
    },
    /// To shard 0: the other nodes it has heard from; answer `Nodes`.
    ListNodes,
    /// To shard 0: ask every other node (`op` with `data`, see `shard::survey`); answer
    /// `Survey` once all answered or the survey timed out.
    Survey {
        /// What is asked (`channels`, `centrifuge_emulation`).
        op: String,
        /// The question's parameters.
        data: bytes::Bytes,
        /// Ask only this node (an emulation request for a session it owns); `None` = all.
        to_node: Option<String>,
    },
    /// To the user's home shard (`home_of(user)`): count one more connection of `user` unless
    /// it has `limit` already; answer `Admitted`.
    AdmitUser {
        /// User id.
        user: Arc<str>,
        /// `client.user_connection_limit`.
        limit: usize,
    },
}

/// Counts one shard contributes to API `info`.
#[derive(Debug, Default, Clone)]
pub struct ShardCounts {
    /// Connections that completed `connect`.
    pub clients: u64,
    /// Distinct users of those connections on this shard.
    pub users: Vec<Arc<str>>,
    /// Subscriptions of those connections.
    pub subs: u64,
    /// Channels homed here with at least one subscriber anywhere (each channel counted once in
    /// the process).
    pub channels: u64,
}

/// The answer to a [`Call`].
#[derive(Debug)]
pub enum Answer {
    /// The home shard's broker answered a channel request.
    Channel(Reply),
    /// Local channel → subscriber counts.
    Channels(Vec<(Arc<str>, u32)>),
    /// Local counts for `info`.
    Counts(Box<ShardCounts>),
    /// A shard's metrics snapshot.
    Metrics(Box<crate::metrics::ShardSnapshot>),
    /// The node's aggregated metrics and process use, once aggregated.
    InfoMetrics(Option<Box<crate::metrics::info::NodeInfo>>),
    /// Whether a connection of the user may be added (`AdmitUser`).
    Admitted(bool),
    /// The other nodes' answers to a survey: (node id, answer).
    Survey(Vec<(String, crate::broker::control::SurveyResponse)>),
    /// Other nodes heard on the control channel (`ListNodes`).
    Nodes(Vec<crate::broker::control::Node>),
    /// Done, nothing to report.
    Done,
    /// Nobody could answer (a survey naming a node nobody heard of).
    Failed,
    /// A backend proxy call ended (never crosses shards: the connection's shard makes it).
    Proxy(crate::proxy::Outcome),
}

/// A one-way message to another shard.
#[derive(Debug)]
pub enum Cast {
    /// A subscriber left: drop its presence entry and emit `leave` when asked.
    Unsubscribed {
        /// Channel name.
        channel: Arc<str>,
        /// Client id (the presence key).
        client: Arc<str>,
        /// Emit a leave event with this info.
        leave: Option<Arc<ClientInfo>>,
    },
    /// To the user's home shard: a counted connection of `user` is gone.
    UserGone {
        /// User id.
        user: Arc<str>,
    },
    /// To every shard: act on matching local connections, no answer (a connect with
    /// `single_connection` closing the user's older connections).
    ApplyToConns(Box<ConnsOp>),
    /// To the shard named by an emulation session id: commands from `/emulation`.
    Emulate {
        /// Random part of the session id.
        session: uuid::Uuid,
        /// The command frame as the connection's protocol encodes it; for a JSON connection
        /// forwarded by another node, a JSON string holding it (`quoted`).
        data: bytes::Bytes,
        /// `data` is a JSON string to decode first (Centrifugo's forwarding format).
        quoted: bool,
    },
}

/// A message between shards.
#[derive(Debug)]
pub enum ShardMsg {
    /// Origin → target: a request. It is never dropped once queued; one that cannot be queued
    /// (the lane's spill over its cap, or the target stopped reading at shutdown) fails the
    /// origin's parked request at once with a temporary error.
    Call {
        /// Shard waiting for the answer.
        origin: ShardId,
        /// Parked request on the origin.
        req: RequestId,
        /// What to do.
        call: Box<Call>,
    },
    /// Target → origin (reply lane): the answer to a `Call`.
    Answer {
        /// Parked request on the origin.
        req: RequestId,
        /// The answer.
        answer: Box<Answer>,
    },
    /// Any shard → channel's home, no answer.
    Cast(Box<Cast>),
    /// Any shard → channel's home: this shard now has (or no longer has) local subscribers.
    /// Sent on the 0→1 and 1→0 transitions only; lanes are FIFO per pair so on/off never reorder,
    /// and a `Call` sent after it on the same lane is handled after it.
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
    /// Home → interested shard: hand an event to local subscribers. Dropped (and counted) when
    /// the destination lane's spill queue is over its cap; positioned subscribers notice the gap
    /// and recover by offset.
    Deliver {
        /// Channel name.
        channel: Arc<str>,
        /// One shared immutable event for every shard.
        event: Event,
    },
    /// Accepting shard → chosen shard (round-robin placement): a connection to serve.
    Accepted(AcceptedTcpStream),
}

/// A message stamped with the shard it is for; the receiver checks the stamp (a frame on the
/// wrong ring would act on another shard's channels).
#[derive(Debug)]
pub struct Frame {
    /// The shard that must handle `msg`.
    pub to: ShardId,
    /// The message.
    pub msg: ShardMsg,
}

// Keep frames small: they are copied through lock-free rings and sit in spill queues.
const _: () = assert!(std::mem::size_of::<Frame>() <= 64);
