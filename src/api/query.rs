//! Server API methods other than publishing (spec §3.3): the ones that read or clear channel
//! state (`presence`, `presence_stats`, `history`, `history_remove`, `channels`, `info`,
//! `rpc`) and the ones that act on live connections (`subscribe`, `unsubscribe`, `disconnect`,
//! `refresh`).
//!
//! Owns: request decoding for these methods and the shape of their results. The state itself
//! is asked of the owning shards (a channel's home, or every shard for node-wide counts); this
//! module must not reach into any shard other than the one serving the request.

use std::sync::Arc;

use serde::Deserialize;

use super::response::Failure;
use super::types::{self, ApiError, ApiMethod};
use crate::auth::SubscribeOverrides;
use crate::broker::control::{self, Node};
use crate::broker::control::{ConnFilter, ConnsOp};
use crate::broker::stream::{HistoryError, HistoryPolicy, HistoryQuery, Position};
use crate::broker::Reply;
use crate::channel::ChannelError;
use crate::client::query::{presence_map, presence_stats};
use crate::client::recovery::owned;
use crate::client::rules::history_policy;
use crate::protocol::json::{self, write_json_string};
use crate::protocol::{codes, Disconnect, HistoryResult, PresenceResult, RawJson, ReplyBody};
use crate::shard::msg::{Answer, Call, ShardCounts};
use crate::shard::{PendingAnswer, ShardRef};
use prost::Message as _;

#[derive(Deserialize, Default)]
#[serde(default)]
struct ChannelBody {
    channel: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SinceBody {
    offset: Option<u64>,
    epoch: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct HistoryBody {
    channel: Option<String>,
    limit: Option<i64>,
    since: Option<SinceBody>,
    reverse: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ChannelsBody {
    pattern: Option<String>,
}

fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Failure> {
    if !json::starts_object(body) {
        return Err(Failure::Undecodable);
    }
    serde_json::from_slice(body).map_err(|_| Failure::Undecodable)
}

fn api(e: ApiError) -> Failure {
    Failure::Api(e)
}

/// Resolves a channel for an API call: empty → 107, unknown namespace → 102. Returns the
/// channel's history policy and whether it keeps presence.
fn resolve(shard: &ShardRef, channel: &str) -> Result<(HistoryPolicy, bool), Failure> {
    if channel.is_empty() {
        return Err(api(types::API_ERROR_BAD_REQUEST));
    }
    let namespaces = Arc::clone(&shard.borrow().env().namespaces);
    let resolved = namespaces.resolve(channel).map_err(|e| match e {
        ChannelError::UnknownChannel => api(types::API_ERROR_UNKNOWN_CHANNEL),
        _ => api(types::API_ERROR_BAD_REQUEST),
    })?;
    Ok((history_policy(resolved.options, false), resolved.options.presence))
}

/// The history settings of a channel whose namespace keeps history (else 108).
fn history_policy_of(shard: &ShardRef, channel: &str) -> Result<HistoryPolicy, Failure> {
    let (policy, _) = resolve(shard, channel)?;
    if !policy.enabled() {
        return Err(api(types::API_ERROR_NOT_AVAILABLE));
    }
    Ok(policy)
}

async fn ask_home(shard: &ShardRef, channel: &str, call: Call) -> Result<Answer, Failure> {
    let req = shard.borrow_mut().call_home(channel, call);
    PendingAnswer::new(shard.clone(), req).await.ok_or(api(types::API_ERROR_INTERNAL))
}

/// `presence` and `presence_stats` (108 when the namespace keeps no presence).
pub async fn presence(shard: &ShardRef, body: &[u8], stats: bool) -> Result<Vec<u8>, Failure> {
    let req: ChannelBody = decode(body)?;
    let channel = req.channel.unwrap_or_default();
    let (_, has_presence) = resolve(shard, &channel)?;
    if !has_presence {
        return Err(api(types::API_ERROR_NOT_AVAILABLE));
    }
    let ch: Arc<str> = Arc::from(channel.as_str());
    let Answer::Channel(Reply::Presence(entries)) =
        ask_home(shard, &channel, Call::ReadPresence { channel: ch }).await?
    else {
        return Err(api(types::API_ERROR_INTERNAL));
    };
    let body = if stats {
        ReplyBody::PresenceStats(presence_stats(&entries))
    } else {
        ReplyBody::Presence(PresenceResult { presence: presence_map(&entries) })
    };
    let mut out = Vec::new();
    json::encode_result_object(&body, &mut out);
    Ok(out)
}

/// `history`: no cap on `limit` (0 or absent → position only, negative → everything).
pub async fn history(shard: &ShardRef, body: &[u8]) -> Result<Vec<u8>, Failure> {
    let req: HistoryBody = decode(body)?;
    let channel = req.channel.unwrap_or_default();
    let policy = history_policy_of(shard, &channel)?;
    let limit = match req.limit.unwrap_or(0) {
        n if n < 0 => None,
        n => Some(usize::try_from(n).unwrap_or(usize::MAX)),
    };
    let query = HistoryQuery {
        limit,
        since: req.since.map(|s| Position {
            offset: s.offset.unwrap_or(0),
            epoch: s.epoch.unwrap_or_default(),
        }),
        reverse: req.reverse.unwrap_or(false),
    };
    let ch: Arc<str> = Arc::from(channel.as_str());
    let answer =
        ask_home(shard, &channel, Call::ReadHistory { channel: ch, policy, query }).await?;
    match answer {
        Answer::Channel(Reply::History(Ok((pubs, top)))) => {
            let body = ReplyBody::History(HistoryResult {
                publications: owned(&pubs),
                epoch: top.epoch,
                offset: top.offset,
            });
            let mut out = Vec::new();
            json::encode_result_object(&body, &mut out);
            Ok(out)
        }
        Answer::Channel(Reply::History(Err(HistoryError::NotAvailable))) => {
            Err(api(types::API_ERROR_NOT_AVAILABLE))
        }
        Answer::Channel(Reply::History(Err(_))) => {
            Err(api(types::API_ERROR_UNRECOVERABLE_POSITION))
        }
        _ => Err(api(types::API_ERROR_INTERNAL)),
    }
}

/// `history_remove`: stored publications go, the position stays.
pub async fn history_remove(shard: &ShardRef, body: &[u8]) -> Result<Vec<u8>, Failure> {
    let req: ChannelBody = decode(body)?;
    let channel = req.channel.unwrap_or_default();
    history_policy_of(shard, &channel)?;
    let ch: Arc<str> = Arc::from(channel.as_str());
    ask_home(shard, &channel, Call::RemoveHistory { channel: ch }).await?;
    Ok(b"{}".to_vec())
}

/// Sends `call` to every shard and collects the answers in shard order.
pub(crate) async fn ask_all(
    shard: &ShardRef,
    call: impl Fn() -> Call,
) -> Result<Vec<Answer>, Failure> {
    let reqs = shard.borrow_mut().call_all(call);
    let mut answers = Vec::with_capacity(reqs.len());
    for req in reqs {
        let a = PendingAnswer::new(shard.clone(), req).await;
        answers.push(a.ok_or(api(types::API_ERROR_INTERNAL))?);
    }
    Ok(answers)
}

fn glob_of(pattern: &str) -> Option<Result<Arc<globset::GlobMatcher>, globset::Error>> {
    (!pattern.is_empty()).then(|| {
        globset::GlobBuilder::new(pattern)
            .literal_separator(false)
            .backslash_escape(true)
            .build()
            .map(|g| Arc::new(g.compile_matcher()))
    })
}

/// This node's channels matching `pattern`, with subscriber counts summed over its shards.
async fn local_channels(
    shard: &ShardRef,
    pattern: Option<Arc<globset::GlobMatcher>>,
) -> Result<std::collections::BTreeMap<Arc<str>, u64>, Failure> {
    let answers = ask_all(shard, || Call::CountChannels { pattern: pattern.clone() }).await?;
    let mut merged: std::collections::BTreeMap<Arc<str>, u64> = Default::default();
    for a in answers {
        if let Answer::Channels(list) = a {
            for (ch, n) in list {
                *merged.entry(ch).or_default() += u64::from(n);
            }
        }
    }
    Ok(merged)
}

/// `channels`: channels with subscribers on every node, with counts, optionally filtered by a
/// gobwas-style glob (`*` matches any run of characters, including `:`). Other nodes answer a
/// `channels` survey over the control channel, as Centrifugo's do.
pub async fn channels(shard: &ShardRef, body: &[u8]) -> Result<Vec<u8>, Failure> {
    let req: ChannelsBody = decode(body)?;
    let pattern_text = req.pattern.unwrap_or_default();
    let pattern = glob_of(&pattern_text).transpose().map_err(|_| api(types::API_ERROR_INTERNAL))?;
    let mut merged = local_channels(shard, pattern).await?;
    let question = control::ChannelsRequest { pattern: pattern_text };
    let call = Call::Survey {
        op: control::SURVEY_CHANNELS.to_owned(),
        data: question.encode_to_vec().into(),
        to_node: None,
    };
    let req = shard.borrow_mut().call(crate::shard::id::ShardId(0), call);
    match PendingAnswer::new(shard.clone(), req).await {
        Some(Answer::Survey(answers)) => {
            for (node, answer) in answers {
                let result = (answer.code == 0)
                    .then(|| control::ChannelsResult::decode(answer.data.as_ref()).ok())
                    .flatten();
                let Some(result) = result else {
                    tracing::warn!(%node, code = answer.code, "a node failed the channels survey");
                    return Err(api(types::API_ERROR_INTERNAL));
                };
                for (ch, info) in result.channels {
                    *merged.entry(Arc::from(ch.as_str())).or_default() +=
                        u64::from(info.num_clients);
                }
            }
        }
        _ => return Err(api(types::API_ERROR_INTERNAL)),
    }
    let mut out = b"{\"channels\":{".to_vec();
    for (i, (ch, n)) in merged.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_string(&mut out, ch);
        out.extend_from_slice(format!(":{{\"num_clients\":{n}}}").as_bytes());
    }
    out.extend_from_slice(b"}}");
    Ok(out)
}

/// This node's answer to another node's survey.
async fn answer_survey(
    shard: &ShardRef,
    request: control::SurveyRequest,
) -> control::SurveyResponse {
    let mut response = control::SurveyResponse { id: request.id, ..Default::default() };
    if request.op == control::SURVEY_EMULATION {
        response.code = forwarded_emulation(shard, &request.data);
        return response;
    }
    if request.op != control::SURVEY_CHANNELS {
        response.code = SURVEY_UNKNOWN_OP;
        return response;
    }
    let Ok(question) = control::ChannelsRequest::decode(request.data.as_ref()) else {
        response.code = SURVEY_INVALID_REQUEST;
        return response;
    };
    let Ok(pattern) = glob_of(&question.pattern).transpose() else {
        response.code = SURVEY_INVALID_REQUEST;
        return response;
    };
    let Ok(local) = local_channels(shard, pattern).await else {
        response.code = SURVEY_INTERNAL;
        return response;
    };
    let n = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    let result = control::ChannelsResult {
        channels: local
            .into_iter()
            .map(|(ch, count)| (ch.to_string(), control::ChannelInfo { num_clients: n(count) }))
            .collect(),
    };
    response.data = result.encode_to_vec().into();
    response
}

/// Another node forwarded an `/emulation` request for a session of this one; returns the
/// survey answer code (0 = handed over, 1 = malformed, 2 = not a session of this node).
fn forwarded_emulation(shard: &ShardRef, data: &[u8]) -> u32 {
    let Ok(req) = crate::protocol::pb::EmulationRequest::decode(data) else { return 1 };
    // The owner decides how to read `data`: a JSON session gets it JSON-decoded first.
    match shard.borrow_mut().with_clients(|c| c.emulate_session(&req.session, req.data, true)) {
        Ok(()) => 0,
        Err(_) => 2,
    }
}

/// Survey answer codes (0 = fine).
const SURVEY_INVALID_REQUEST: u32 = 1;
const SURVEY_UNKNOWN_OP: u32 = 2;
const SURVEY_INTERNAL: u32 = 3;

/// This node with counts summed over its shards (users counted once across shards), as
/// `info` lists it and the control channel announces it.
pub async fn local_node(shard: &ShardRef) -> Result<Node, Failure> {
    let answers = ask_all(shard, || Call::CountClients).await?;
    let mut total = ShardCounts::default();
    let mut users: Vec<Arc<str>> = Vec::new();
    for a in answers {
        if let Answer::Counts(c) = a {
            total.clients += c.clients;
            total.subs += c.subs;
            total.channels += c.channels;
            users.extend(c.users);
        }
    }
    users.sort_unstable();
    users.dedup();
    let req = shard.borrow_mut().call(crate::shard::id::ShardId(0), Call::InfoMetrics);
    let info = match PendingAnswer::new(shard.clone(), req).await {
        Some(Answer::InfoMetrics(Some(info))) => Some(*info),
        _ => None,
    };
    let (metrics, process) = info.map_or((None, None), |i| (Some(i.metrics), i.process));
    let node = crate::node::get();
    let n = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    Ok(Node {
        uid: node.uid.clone(),
        name: node.name.clone(),
        version: crate::client::SERVER_VERSION.to_owned(),
        num_clients: n(total.clients),
        num_users: n(users.len() as u64),
        num_channels: n(total.channels),
        uptime: n(node.started.elapsed().as_secs()),
        metrics,
        process,
        num_subs: n(total.subs),
    })
}

/// `info`: this node, then every other node heard on the control channel within 7 s.
pub async fn info(shard: &ShardRef, body: &[u8]) -> Result<Vec<u8>, Failure> {
    let _: serde::de::IgnoredAny = decode(body)?;
    let mut nodes = vec![local_node(shard).await?];
    let req = shard.borrow_mut().call(crate::shard::id::ShardId(0), Call::ListNodes);
    if let Some(Answer::Nodes(others)) = PendingAnswer::new(shard.clone(), req).await {
        nodes.extend(others);
    }
    let mut out = b"{\"nodes\":[".to_vec();
    for (i, node) in nodes.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"uid\":");
        write_json_string(&mut out, &node.uid);
        out.extend_from_slice(b",\"name\":");
        write_json_string(&mut out, &node.name);
        out.extend_from_slice(b",\"version\":");
        write_json_string(&mut out, &node.version);
        let counts = format!(
            ",\"num_clients\":{},\"num_users\":{},\"num_channels\":{},\"uptime\":{}",
            node.num_clients, node.num_users, node.num_channels, node.uptime
        );
        out.extend_from_slice(counts.as_bytes());
        // Plain numbers and strings: serializing them cannot fail.
        if let Some(m) = &node.metrics {
            out.extend_from_slice(b",\"metrics\":");
            out.extend_from_slice(&serde_json::to_vec(m).unwrap_or_default());
        }
        if let Some(p) = &node.process {
            out.extend_from_slice(b",\"process\":");
            out.extend_from_slice(&serde_json::to_vec(p).unwrap_or_default());
        }
        out.extend_from_slice(format!(",\"num_subs\":{}}}", node.num_subs).as_bytes());
    }
    out.extend_from_slice(b"]}");
    Ok(out)
}

/// Shard 0's control task (Redis or NATS): announces this node every 3 s so the others list it
/// in `info`, answers other nodes' surveys, and ends this node's surveys at their deadline.
pub async fn control_loop(shard: ShardRef) {
    let mut next_announce = std::time::Instant::now();
    loop {
        if shard.borrow().shutting_down() {
            return;
        }
        let now = std::time::Instant::now();
        if now >= next_announce {
            next_announce = now + crate::broker::control::ANNOUNCE_EVERY;
            if let Ok(node) = local_node(&shard).await {
                shard.borrow_mut().publish_control(&node.announcement());
            }
        }
        let question = shard.borrow_mut().take_question();
        if let Some((from, request)) = question {
            let response = answer_survey(&shard, request).await;
            shard.borrow_mut().answer_survey(&from, response);
            continue;
        }
        let wake_at = {
            let mut s = shard.borrow_mut();
            s.expire_surveys();
            s.next_survey_deadline().map_or(next_announce, |d| d.min(next_announce))
        };
        let wait = wake_at.saturating_duration_since(std::time::Instant::now());
        let woken = std::future::poll_fn(|cx| shard.borrow_mut().poll_question(cx));
        futures_lite::future::or(woken, glommio::timer::sleep(wait)).await;
    }
}

/// `rpc`: no server-side RPC extensions exist, so every method is 104 `not found`.
pub fn rpc(body: &[u8]) -> Result<Vec<u8>, Failure> {
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct RpcBody {
        method: Option<String>,
    }
    let req: RpcBody = decode(body)?;
    if req.method.unwrap_or_default().is_empty() {
        return Err(api(types::API_ERROR_BAD_REQUEST));
    }
    Err(api(types::API_ERROR_NOT_FOUND))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct BoolValue {
    value: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct OverrideBody {
    presence: Option<BoolValue>,
    join_leave: Option<BoolValue>,
    force_recovery: Option<BoolValue>,
    force_positioning: Option<BoolValue>,
    force_push_join_leave: Option<BoolValue>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ConnsBody<'a> {
    user: Option<String>,
    client: Option<String>,
    session: Option<String>,
    channel: Option<String>,
    // subscribe
    expire_at: Option<i64>,
    #[serde(borrow)]
    info: Option<&'a serde_json::value::RawValue>,
    b64info: Option<String>,
    #[serde(borrow)]
    data: Option<&'a serde_json::value::RawValue>,
    b64data: Option<String>,
    recover_since: Option<SinceBody>,
    #[serde(rename = "override")]
    overrides: Option<OverrideBody>,
    // disconnect
    whitelist: Option<Vec<String>>,
    disconnect: Option<DisconnectBody>,
    // refresh
    expired: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DisconnectBody {
    code: Option<u32>,
    reason: Option<String>,
}

/// A raw JSON field or its base64 twin (which wins when non-empty); `null` is absent.
fn raw_or_b64(
    raw: Option<&serde_json::value::RawValue>,
    b64: Option<String>,
) -> Result<Option<RawJson>, Failure> {
    use base64::Engine as _;
    if let Some(b) = b64.filter(|b| !b.is_empty()) {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b.as_bytes())
            .map_err(|_| api(types::API_ERROR_BAD_REQUEST))?;
        return Ok(Some(RawJson(bytes::Bytes::from(bytes))));
    }
    Ok(raw.filter(|r| r.get() != "null").map(RawJson::from_raw_value))
}

/// `subscribe`, `unsubscribe`, `disconnect`, `refresh`: applied by every shard to its matching
/// connections of `user` (required: 107 when empty).
pub async fn conns(shard: &ShardRef, method: ApiMethod, body: &[u8]) -> Result<Vec<u8>, Failure> {
    let req: ConnsBody<'_> = decode(body)?;
    let filter = ConnFilter {
        user: req.user.unwrap_or_default(),
        client: req.client.unwrap_or_default(),
        session: req.session.unwrap_or_default(),
    };
    if filter.user.is_empty() {
        return Err(api(types::API_ERROR_BAD_REQUEST));
    }
    let channel = req.channel.unwrap_or_default();
    let op = match method {
        ApiMethod::Subscribe => {
            resolve(shard, &channel)?;
            let o = req.overrides.unwrap_or_default();
            ConnsOp::Subscribe {
                filter,
                channel: Arc::from(channel.as_str()),
                info: raw_or_b64(req.info, req.b64info)?,
                data: raw_or_b64(req.data, req.b64data)?,
                expire_at: req.expire_at.unwrap_or(0),
                recover_since: req.recover_since.map(|s| Position {
                    offset: s.offset.unwrap_or(0),
                    epoch: s.epoch.unwrap_or_default(),
                }),
                overrides: SubscribeOverrides {
                    presence: o.presence.map(|v| v.value),
                    join_leave: o.join_leave.map(|v| v.value),
                    force_push_join_leave: o.force_push_join_leave.map(|v| v.value),
                    force_positioning: o.force_positioning.map(|v| v.value),
                    force_recovery: o.force_recovery.map(|v| v.value),
                },
            }
        }
        ApiMethod::Unsubscribe => {
            if !channel.is_empty() {
                resolve(shard, &channel)?;
            }
            ConnsOp::Unsubscribe { filter, channel }
        }
        ApiMethod::Disconnect => {
            let d = req.disconnect.unwrap_or_default();
            let disconnect = match (d.code, d.reason) {
                (None | Some(0), _) => codes::DISCONNECT_FORCE_NO_RECONNECT,
                (Some(code), reason) => {
                    let reason = reason.unwrap_or_default();
                    // A WebSocket close carries codes 3000–4999 and at most 123 bytes of reason.
                    let code = u16::try_from(code)
                        .ok()
                        .filter(|c| (3000..=4999).contains(c) && reason.len() <= 123)
                        .ok_or(api(types::API_ERROR_BAD_REQUEST))?;
                    Disconnect { code, reason: reason.into() }
                }
            };
            ConnsOp::Disconnect { filter, whitelist: req.whitelist.unwrap_or_default(), disconnect }
        }
        ApiMethod::Refresh => ConnsOp::Refresh {
            filter,
            expired: req.expired.unwrap_or(false),
            expire_at: req.expire_at.unwrap_or(0),
            info: raw_or_b64(req.info, None)?,
        },
        _ => return Err(Failure::Unsupported),
    };
    ask_all(shard, || Call::ApplyToConns(Box::new(op.clone()))).await?;
    // With Redis or NATS the user may be connected to other nodes too: they get it over
    // the control channel (at most once, as in Centrifugo).
    let mut s = shard.borrow_mut();
    let options = match &op {
        ConnsOp::Subscribe { channel, .. } => {
            s.env().namespaces.resolve(channel).ok().map(|r| r.options.clone())
        }
        _ => None,
    };
    let uid = &crate::node::get().uid;
    s.publish_control(&crate::broker::control::encode_op(uid, &op, options.as_ref()));
    Ok(b"{}".to_vec())
}
