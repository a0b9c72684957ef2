//! Node-to-node control messages: Centrifugo's `controlpb.Command` (the subset Rotor sends and
//! reads), so Rotor and Centrifugo nodes on one broker see each other in API `info`.
//!
//! Owns: the wire structs, the server-side operations on a user's connections that travel
//! between shards and nodes ([`ConnsOp`]), and the node registry kept by shard 0. Must not:
//! touch connections.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use std::sync::Arc;

use prost::Message;

use crate::auth::SubscribeOverrides;
use crate::broker::stream::Position;
use crate::config::ChannelOptions;
use crate::protocol::protobuf::{bytes_of, raw};
use crate::protocol::RawJson;

/// A node not heard from for this long is dropped from `info` (spec §10.1).
pub const NODE_TIMEOUT: Duration = Duration::from_secs(7);

/// How often a node announces itself.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(3);

/// Which connections a server-side operation targets (spec §3.3).
#[derive(Debug, Clone, Default)]
pub struct ConnFilter {
    /// User id (required by the API).
    pub user: String,
    /// Only this client id, when set.
    pub client: String,
    /// Only this session, when set (WebSocket connections have none).
    pub session: String,
}

/// A server API operation on live connections.
#[derive(Debug, Clone)]
pub enum ConnsOp {
    /// Subscribe server-side; the connection gets a `subscribe` push.
    Subscribe {
        /// Target connections.
        filter: ConnFilter,
        /// Channel.
        channel: Arc<str>,
        /// `chan_info` for presence and join/leave.
        info: Option<RawJson>,
        /// `data` for the subscribe push.
        data: Option<RawJson>,
        /// Unix seconds of expiry (0 = none).
        expire_at: i64,
        /// Recover from this position.
        recover_since: Option<Position>,
        /// Namespace option overrides.
        overrides: SubscribeOverrides,
    },
    /// Unsubscribe (every channel when `channel` is empty); the connection gets an
    /// `unsubscribe` push with 2000.
    Unsubscribe {
        /// Target connections.
        filter: ConnFilter,
        /// Channel, or empty for all.
        channel: String,
    },
    /// Close with a code and reason.
    Disconnect {
        /// Target connections.
        filter: ConnFilter,
        /// Client ids to spare.
        whitelist: Vec<String>,
        /// Close code and reason.
        disconnect: crate::protocol::Disconnect,
    },
    /// Change expiry or info; `expired` closes with 3005 at once.
    Refresh {
        /// Target connections.
        filter: ConnFilter,
        /// Close now as expired.
        expired: bool,
        /// New expiry, Unix seconds (0 = never).
        expire_at: i64,
        /// New connection info.
        info: Option<RawJson>,
    },
}

/// `controlpb.Command`: one control message. Rotor reads and writes node announcements and the
/// four server-side operations on a user's connections.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Command {
    /// Sending node's id.
    #[prost(string, tag = "1")]
    pub uid: String,
    /// A node announcement.
    #[prost(message, optional, tag = "4")]
    pub node: Option<Node>,
    /// API `unsubscribe`.
    #[prost(message, optional, tag = "5")]
    pub unsubscribe: Option<Unsubscribe>,
    /// API `disconnect`.
    #[prost(message, optional, tag = "6")]
    pub disconnect: Option<Disconnect>,
    /// A question to every node (API `channels`).
    #[prost(message, optional, tag = "8")]
    pub survey_request: Option<SurveyRequest>,
    /// One node's answer, sent to the asking node's own channel.
    #[prost(message, optional, tag = "9")]
    pub survey_response: Option<SurveyResponse>,
    /// API `subscribe`.
    #[prost(message, optional, tag = "10")]
    pub subscribe: Option<Subscribe>,
    /// API `refresh`.
    #[prost(message, optional, tag = "12")]
    pub refresh: Option<Refresh>,
}

/// `controlpb.Subscribe`, with the channel options already resolved by the sending node.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Subscribe {
    #[prost(string, tag = "1")]
    user: String,
    #[prost(string, tag = "2")]
    channel: String,
    #[prost(bool, tag = "3")]
    emit_presence: bool,
    #[prost(bool, tag = "4")]
    emit_join_leave: bool,
    #[prost(int64, tag = "5")]
    expire_at: i64,
    #[prost(bool, tag = "6")]
    position: bool,
    #[prost(bool, tag = "7")]
    recover: bool,
    #[prost(bytes = "bytes", tag = "8")]
    channel_info: bytes::Bytes,
    #[prost(string, tag = "9")]
    client: String,
    #[prost(bytes = "bytes", tag = "10")]
    data: bytes::Bytes,
    #[prost(message, optional, tag = "11")]
    recover_since: Option<StreamPosition>,
    #[prost(string, tag = "12")]
    session: String,
    #[prost(bool, tag = "13")]
    push_join_leave: bool,
}

/// `controlpb.SurveyRequest`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct SurveyRequest {
    /// Survey id, unique on the asking node.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// What is asked (`channels`).
    #[prost(string, tag = "2")]
    pub op: String,
    /// The question's parameters (for `channels`: `apiproto.ChannelsRequest`).
    #[prost(bytes = "bytes", tag = "3")]
    pub data: bytes::Bytes,
}

/// `controlpb.SurveyResponse`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct SurveyResponse {
    /// The survey answered.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// 0 = fine.
    #[prost(uint32, tag = "2")]
    pub code: u32,
    /// The answer (for `channels`: `apiproto.ChannelsResult`).
    #[prost(bytes = "bytes", tag = "3")]
    pub data: bytes::Bytes,
}

/// `apiproto.ChannelsRequest`: the parameters of a `channels` survey.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ChannelsRequest {
    /// Glob pattern, empty = every channel.
    #[prost(string, tag = "1")]
    pub pattern: String,
}

/// `apiproto.ChannelsResult`: one node's channels with subscriber counts.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ChannelsResult {
    /// Channel → counts.
    #[prost(map = "string, message", tag = "1")]
    pub channels: HashMap<String, ChannelInfo>,
}

/// `apiproto.ChannelInfo`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ChannelInfo {
    /// Subscribers on the node.
    #[prost(uint32, tag = "1")]
    pub num_clients: u32,
}

/// The survey op of API `channels`.
pub const SURVEY_CHANNELS: &str = "channels";

/// The survey op that hands an `/emulation` request to the node owning the session (its data
/// is a protobuf `EmulationRequest`; for JSON sessions `data` holds the JSON string).
pub const SURVEY_EMULATION: &str = "centrifuge_emulation";

/// What a control message from another node asks of this one.
#[derive(Debug)]
pub enum Received {
    /// Apply an API operation to local connections.
    Op(ConnsOp),
    /// Answer a survey: send a `SurveyResponse` to `from`'s node channel.
    Survey {
        /// Asking node.
        from: String,
        /// Its survey.
        request: SurveyRequest,
    },
    /// An answer to one of this node's surveys.
    Answer {
        /// Answering node.
        from: String,
        /// The answer.
        response: SurveyResponse,
    },
}

/// A survey question from this node.
pub fn survey_request(uid: &str, request: SurveyRequest) -> Vec<u8> {
    Command { uid: uid.to_owned(), survey_request: Some(request), ..Command::default() }
        .encode_to_vec()
}

/// This node's answer to a survey.
pub fn survey_response(uid: &str, response: SurveyResponse) -> Vec<u8> {
    Command { uid: uid.to_owned(), survey_response: Some(response), ..Command::default() }
        .encode_to_vec()
}

/// `controlpb.StreamPosition`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct StreamPosition {
    #[prost(uint64, tag = "1")]
    offset: u64,
    #[prost(string, tag = "2")]
    epoch: String,
}

/// `controlpb.Unsubscribe`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Unsubscribe {
    #[prost(string, tag = "1")]
    channel: String,
    #[prost(string, tag = "2")]
    user: String,
    #[prost(string, tag = "3")]
    client: String,
    #[prost(string, tag = "4")]
    session: String,
}

/// `controlpb.Disconnect`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Disconnect {
    #[prost(string, tag = "1")]
    user: String,
    #[prost(string, repeated, tag = "2")]
    whitelist: Vec<String>,
    #[prost(uint32, tag = "3")]
    code: u32,
    #[prost(string, tag = "4")]
    reason: String,
    #[prost(string, tag = "6")]
    client: String,
    #[prost(string, tag = "7")]
    session: String,
}

/// `controlpb.Refresh`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Refresh {
    #[prost(string, tag = "1")]
    user: String,
    #[prost(string, tag = "2")]
    client: String,
    #[prost(bool, tag = "3")]
    expired: bool,
    #[prost(int64, tag = "4")]
    expire_at: i64,
    #[prost(bytes = "bytes", tag = "5")]
    info: bytes::Bytes,
    #[prost(string, tag = "6")]
    session: String,
}

/// The control message carrying a server-side operation to the other nodes. A subscribe's
/// options travel resolved (`options`: the channel's namespace), as Centrifugo sends them.
pub fn encode_op(uid: &str, op: &ConnsOp, options: Option<&ChannelOptions>) -> Vec<u8> {
    let mut cmd = Command { uid: uid.to_owned(), ..Command::default() };
    match op {
        ConnsOp::Subscribe { filter, channel, info, data, expire_at, recover_since, overrides } => {
            let d = options.cloned().unwrap_or_default();
            cmd.subscribe = Some(Subscribe {
                user: filter.user.clone(),
                channel: channel.to_string(),
                emit_presence: overrides.presence.unwrap_or(d.presence),
                emit_join_leave: overrides.join_leave.unwrap_or(d.join_leave),
                expire_at: *expire_at,
                position: overrides.force_positioning.unwrap_or(d.force_positioning),
                recover: overrides.force_recovery.unwrap_or(d.force_recovery),
                channel_info: bytes_of(info),
                client: filter.client.clone(),
                data: bytes_of(data),
                recover_since: recover_since
                    .as_ref()
                    .map(|p| StreamPosition { offset: p.offset, epoch: p.epoch.clone() }),
                session: filter.session.clone(),
                push_join_leave: overrides.force_push_join_leave.unwrap_or(d.force_push_join_leave),
            });
        }
        ConnsOp::Unsubscribe { filter, channel } => {
            cmd.unsubscribe = Some(Unsubscribe {
                channel: channel.clone(),
                user: filter.user.clone(),
                client: filter.client.clone(),
                session: filter.session.clone(),
            });
        }
        ConnsOp::Disconnect { filter, whitelist, disconnect } => {
            cmd.disconnect = Some(Disconnect {
                user: filter.user.clone(),
                whitelist: whitelist.clone(),
                code: u32::from(disconnect.code),
                reason: disconnect.reason.to_string(),
                client: filter.client.clone(),
                session: filter.session.clone(),
            });
        }
        ConnsOp::Refresh { filter, expired, expire_at, info } => {
            cmd.refresh = Some(Refresh {
                user: filter.user.clone(),
                client: filter.client.clone(),
                expired: *expired,
                expire_at: *expire_at,
                info: bytes_of(info),
                session: filter.session.clone(),
            });
        }
    }
    cmd.encode_to_vec()
}

fn op_of(cmd: Command) -> Option<ConnsOp> {
    let filter =
        |user: String, client: String, session: String| ConnFilter { user, client, session };
    if let Some(s) = cmd.subscribe {
        return Some(ConnsOp::Subscribe {
            filter: filter(s.user, s.client, s.session),
            channel: Arc::from(s.channel.as_str()),
            info: raw(s.channel_info),
            data: raw(s.data),
            expire_at: s.expire_at,
            recover_since: s.recover_since.map(|p| Position { offset: p.offset, epoch: p.epoch }),
            overrides: SubscribeOverrides {
                presence: Some(s.emit_presence),
                join_leave: Some(s.emit_join_leave),
                force_push_join_leave: Some(s.push_join_leave),
                force_positioning: Some(s.position),
                force_recovery: Some(s.recover),
            },
        });
    }
    if let Some(u) = cmd.unsubscribe {
        return Some(ConnsOp::Unsubscribe {
            filter: filter(u.user, u.client, u.session),
            channel: u.channel,
        });
    }
    if let Some(d) = cmd.disconnect {
        let code = u16::try_from(d.code).ok().filter(|c| (3000..=4999).contains(c))?;
        return Some(ConnsOp::Disconnect {
            filter: filter(d.user, d.client, d.session),
            whitelist: d.whitelist,
            disconnect: crate::protocol::Disconnect { code, reason: d.reason.into() },
        });
    }
    if let Some(r) = cmd.refresh {
        return Some(ConnsOp::Refresh {
            filter: filter(r.user, r.client, r.session),
            expired: r.expired,
            expire_at: r.expire_at,
            info: raw(r.info),
        });
    }
    None
}

/// `controlpb.Node`: a node's identity and counts, as API `info` shows them.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Node {
    /// Node id.
    #[prost(string, tag = "1")]
    pub uid: String,
    /// Node name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// Server version.
    #[prost(string, tag = "3")]
    pub version: String,
    /// Connected clients.
    #[prost(uint32, tag = "4")]
    pub num_clients: u32,
    /// Distinct users.
    #[prost(uint32, tag = "5")]
    pub num_users: u32,
    /// Channels with subscribers.
    #[prost(uint32, tag = "6")]
    pub num_channels: u32,
    /// Seconds since start.
    #[prost(uint32, tag = "7")]
    pub uptime: u32,
    /// Aggregated metrics (`node.info_metrics_aggregate_interval`).
    #[prost(message, optional, tag = "8")]
    pub metrics: Option<crate::metrics::info::NodeMetrics>,
    /// CPU and memory (Rotor's; a tag upstream's nodes skip).
    #[prost(message, optional, tag = "100")]
    pub process: Option<crate::metrics::info::NodeProcess>,
    /// Subscriptions.
    #[prost(uint32, tag = "10")]
    pub num_subs: u32,
}

impl Node {
    /// The announcement message for this node.
    pub fn announcement(&self) -> Vec<u8> {
        Command { uid: self.uid.clone(), node: Some(self.clone()), ..Command::default() }
            .encode_to_vec()
    }
}

/// Other nodes heard on the control channel (kept by shard 0).
#[derive(Debug, Default)]
pub struct Registry {
    nodes: HashMap<String, (Node, Instant)>,
}

impl Registry {
    /// Reads a control message from another node: announcements are remembered, operations on
    /// connections are returned for this node to apply. Own messages (PUB/SUB echoes them back)
    /// and undecodable ones are ignored.
    pub fn receive(&mut self, data: &[u8], own_uid: &str, now: Instant) -> Option<Received> {
        let Ok(mut cmd) = Command::decode(data) else {
            tracing::debug!("undecodable control message");
            return None;
        };
        if cmd.uid == own_uid {
            return None;
        }
        if let Some(node) = cmd.node.take().filter(|n| !n.uid.is_empty() && n.uid != own_uid) {
            self.nodes.insert(node.uid.clone(), (node, now));
        }
        if let Some(request) = cmd.survey_request.take() {
            return Some(Received::Survey { from: cmd.uid, request });
        }
        if let Some(response) = cmd.survey_response.take() {
            return Some(Received::Answer { from: cmd.uid, response });
        }
        op_of(cmd).map(Received::Op)
    }

    /// Nodes heard within [`NODE_TIMEOUT`], by name; older ones are forgotten.
    pub fn alive(&mut self, now: Instant) -> Vec<Node> {
        self.nodes.retain(|_, (_, seen)| now.duration_since(*seen) < NODE_TIMEOUT);
        let mut out: Vec<Node> = self.nodes.values().map(|(n, _)| n.clone()).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.uid.cmp(&b.uid)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::RawJson;

    fn node(uid: &str, name: &str) -> Node {
        Node { uid: uid.into(), name: name.into(), num_clients: 3, ..Node::default() }
    }

    #[test]
    fn registry_keeps_other_nodes_until_they_go_quiet() {
        let mut r = Registry::default();
        let t0 = Instant::now();
        assert!(r.receive(&node("b", "beta").announcement(), "a", t0).is_none());
        assert!(r.receive(&node("a", "self").announcement(), "a", t0).is_none());
        assert!(r.receive(b"\xff\xff not protobuf", "a", t0).is_none());
        let alive = r.alive(t0 + Duration::from_secs(1));
        assert_eq!(alive.len(), 1, "own announcements and garbage are ignored");
        assert_eq!((alive[0].name.as_str(), alive[0].num_clients), ("beta", 3));
        assert!(r.alive(t0 + NODE_TIMEOUT).is_empty(), "a silent node is dropped after 7s");
    }

    #[test]
    fn operations_cross_nodes_with_resolved_options() {
        let op = ConnsOp::Subscribe {
            filter: ConnFilter { user: "u".into(), client: String::new(), session: String::new() },
            channel: Arc::from("news"),
            info: Some(RawJson(bytes::Bytes::from_static(b"{\"a\":1}"))),
            data: None,
            expire_at: 0,
            recover_since: None,
            overrides: SubscribeOverrides { presence: Some(false), ..Default::default() },
        };
        let options = ChannelOptions { presence: true, join_leave: true, ..Default::default() };
        let mut r = Registry::default();
        let got = r.receive(&encode_op("b", &op, Some(&options)), "a", Instant::now());
        let Some(Received::Op(ConnsOp::Subscribe { overrides, info, channel, .. })) = got else {
            panic!()
        };
        assert_eq!(&*channel, "news");
        assert_eq!(info.unwrap().as_bytes(), b"{\"a\":1}");
        assert_eq!((overrides.presence, overrides.join_leave), (Some(false), Some(true)));
        assert!(r.receive(&encode_op("a", &op, None), "a", Instant::now()).is_none(), "own echo");

        let op = ConnsOp::Disconnect {
            filter: ConnFilter { user: "u".into(), ..Default::default() },
            whitelist: vec!["c1".into()],
            disconnect: crate::protocol::Disconnect { code: 4000, reason: "bye".into() },
        };
        let got = r.receive(&encode_op("b", &op, None), "a", Instant::now());
        assert!(
            matches!(got, Some(Received::Op(ConnsOp::Disconnect { disconnect, whitelist, .. }))
            if disconnect.code == 4000 && whitelist == ["c1"])
        );
        let ask = SurveyRequest { id: 7, op: SURVEY_CHANNELS.into(), data: bytes::Bytes::new() };
        let got = r.receive(&survey_request("b", ask), "a", Instant::now());
        assert!(
            matches!(got, Some(Received::Survey { from, request }) if from == "b" && request.id == 7)
        );
        let answer = SurveyResponse { id: 7, code: 0, data: bytes::Bytes::from_static(b"x") };
        let got = r.receive(&survey_response("c", answer), "a", Instant::now());
        assert!(
            matches!(got, Some(Received::Answer { from, response }) if from == "c" && response.id == 7)
        );
    }
}
