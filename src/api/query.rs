//! Server API methods that read or clear channel state: `presence`, `presence_stats`,
//! `history`, `history_remove`, `channels`, `info`, `rpc` (spec §3.3).
//!
//! Owns: request decoding for these methods and the shape of their results. The state itself
//! is asked of the owning shards (a channel's home, or every shard for node-wide counts); this
//! module must not reach into any shard other than the one serving the request.

use std::sync::Arc;

use serde::Deserialize;

use super::exec::Failure;
use super::types::{self, ApiError};
use crate::broker::memory::{HistoryPolicy, HistoryQuery, Position};
use crate::channel::ChannelError;
use crate::client::history_policy;
use crate::client::query::{presence_map, presence_stats};
use crate::client::subscribe::owned;
use crate::protocol::json::{self, write_json_string};
use crate::protocol::{HistoryResult, PresenceResult, ReplyBody};
use crate::shard::msg::{Answer, Call, ShardCounts};
use crate::shard::{PendingAnswer, ShardRef};

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
    let namespaces = Arc::clone(&shard.borrow().namespaces);
    let resolved = namespaces.resolve(channel).map_err(|e| match e {
        ChannelError::UnknownChannel => api(types::API_ERROR_UNKNOWN_CHANNEL),
        _ => api(types::API_ERROR_BAD_REQUEST),
    })?;
    Ok((history_policy(resolved.options, false), resolved.options.presence))
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
    let Answer::Presence(entries) =
        ask_home(shard, &channel, Call::Presence { channel: ch }).await?
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
    let (policy, _) = resolve(shard, &channel)?;
    if !policy.enabled() {
        return Err(api(types::API_ERROR_NOT_AVAILABLE));
    }
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
    let answer = ask_home(shard, &channel, Call::History { channel: ch, policy, query }).await?;
    match answer {
        Answer::History(Ok((pubs, top))) => {
            let body = ReplyBody::History(HistoryResult {
                publications: owned(&pubs),
                epoch: top.epoch,
                offset: top.offset,
            });
            let mut out = Vec::new();
            json::encode_result_object(&body, &mut out);
            Ok(out)
        }
        Answer::History(Err(_)) => Err(api(types::API_ERROR_UNRECOVERABLE_POSITION)),
        _ => Err(api(types::API_ERROR_INTERNAL)),
    }
}

/// `history_remove`: stored publications go, the position stays.
pub async fn history_remove(shard: &ShardRef, body: &[u8]) -> Result<Vec<u8>, Failure> {
    let req: ChannelBody = decode(body)?;
    let channel = req.channel.unwrap_or_default();
    let (policy, _) = resolve(shard, &channel)?;
    if !policy.enabled() {
        return Err(api(types::API_ERROR_NOT_AVAILABLE));
    }
    let ch: Arc<str> = Arc::from(channel.as_str());
    ask_home(shard, &channel, Call::HistoryRemove { channel: ch }).await?;
    Ok(b"{}".to_vec())
}

/// Sends `call` to every shard and collects the answers in shard order.
async fn ask_all(shard: &ShardRef, call: impl Fn() -> Call) -> Result<Vec<Answer>, Failure> {
    let reqs = shard.borrow_mut().call_all(call);
    let mut answers = Vec::with_capacity(reqs.len());
    for req in reqs {
        let a = PendingAnswer::new(shard.clone(), req).await;
        answers.push(a.ok_or(api(types::API_ERROR_INTERNAL))?);
    }
    Ok(answers)
}

/// `channels`: channels with subscribers on this node, with counts, optionally filtered by a
/// gobwas-style glob (`*` matches any run of characters, including `:`).
pub async fn channels(shard: &ShardRef, body: &[u8]) -> Result<Vec<u8>, Failure> {
    let req: ChannelsBody = decode(body)?;
    let pattern = match req.pattern.filter(|p| !p.is_empty()) {
        None => None,
        Some(p) => Some(Arc::new(
            globset::GlobBuilder::new(&p)
                .literal_separator(false)
                .backslash_escape(true)
                .build()
                .map_err(|_| api(types::API_ERROR_INTERNAL))?
                .compile_matcher(),
        )),
    };
    let answers = ask_all(shard, || Call::Channels { pattern: pattern.clone() }).await?;
    let mut merged: std::collections::BTreeMap<Arc<str>, u64> = Default::default();
    for a in answers {
        if let Answer::Channels(list) = a {
            for (ch, n) in list {
                *merged.entry(ch).or_default() += u64::from(n);
            }
        }
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

/// `info`: this node with counts summed over its shards (users counted once across shards).
pub async fn info(shard: &ShardRef, body: &[u8]) -> Result<Vec<u8>, Failure> {
    let _: serde::de::IgnoredAny = decode(body)?;
    let answers = ask_all(shard, || Call::Info).await?;
    let mut total = ShardCounts::default();
    let mut users: Vec<Arc<str>> = Vec::new();
    for a in answers {
        if let Answer::Info(c) = a {
            total.clients += c.clients;
            total.subs += c.subs;
            total.channels += c.channels;
            users.extend(c.users);
        }
    }
    users.sort_unstable();
    users.dedup();
    let node = crate::node::get();
    let mut out = b"{\"nodes\":[{\"uid\":".to_vec();
    write_json_string(&mut out, &node.uid);
    out.extend_from_slice(b",\"name\":");
    write_json_string(&mut out, &node.name);
    out.extend_from_slice(b",\"version\":");
    write_json_string(&mut out, crate::client::SERVER_VERSION);
    let uptime = node.started.elapsed().as_secs();
    let rest = format!(
        ",\"num_clients\":{},\"num_users\":{},\"num_channels\":{},\"uptime\":{},\"num_subs\":{}}}]}}",
        total.clients,
        users.len(),
        total.channels,
        uptime,
        total.subs
    );
    out.extend_from_slice(rest.as_bytes());
    Ok(out)
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
