//! What Redis sends back, turned into what the shards understand: command replies into
//! [`Answer`]s for parked requests, and PUB/SUB frames into channel events, subscription
//! confirmations and control messages. Payloads are read in Centrifugo's formats (spec §10.1):
//! `__p1:` positioned and `__d1:` delta publications, `__j__`/`__l__` join and leave, stream
//! entries with one field `d`.
//!
//! Owns: reply shapes and payload decoding, as pure functions of a frame.
//!
//! Must not: hold state or touch a link. A reply that cannot be read becomes
//! [`Reply::Failed`] (a temporary error for the client), never a panic: it comes from the
//! network, possibly from a Centrifugo node of another version.

use std::sync::Arc;

use bytes::Bytes;
use redis_protocol::resp2::types::BytesFrame;

use super::keys::Keys;
use crate::broker::stream::{HistoryError, HistoryQuery, Position};
use crate::broker::{Event, Reply};
use crate::protocol::{protobuf, Publication};

/// How a reply becomes a [`Reply`].
#[derive(Debug)]
pub enum Parse {
    /// A publish (history script, idempotent script or PUBLISH).
    Published,
    /// A positioned subscribe: the history script's top, and the recovery read if asked.
    Subscribed(Option<HistoryQuery>),
    /// A history read.
    History(HistoryQuery),
    /// The stream top for the position check (HGET of the meta's offset).
    Top,
    /// Presence entries (HGETALL).
    Presence,
    /// Any success.
    Done,
}

/// Why a command got no usable reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisError {
    /// The link is down or broke before the reply came.
    #[error("redis unavailable")]
    Unavailable,
    /// Redis answered with an error.
    #[error("redis error: {0}")]
    Server(String),
    /// The reply does not have the expected shape.
    #[error("unexpected redis reply: {0}")]
    Shape(&'static str),
}

/// A message that arrived on the PUB/SUB link.
#[derive(Debug)]
pub enum Incoming {
    /// An event of a channel.
    Event(Arc<str>, Event),
    /// A SUBSCRIBE confirmation.
    Subscribed(Arc<str>),
    /// A control-channel message (node announcements).
    Control(Bytes),
    /// Nothing to act on.
    Other,
}

/// Classifies a frame from the PUB/SUB link; `node_uid` names this node's own channel.
pub fn incoming(keys: &Keys, node_uid: &str, frame: BytesFrame) -> Incoming {
    let BytesFrame::Array(parts) = frame else { return Incoming::Other };
    let mut parts = parts.into_iter();
    let (Some(kind), Some(name)) = (parts.next(), parts.next()) else {
        return Incoming::Other;
    };
    let (Some(kind), Some(name)) = (bytes_of(&kind), bytes_of(&name)) else {
        return Incoming::Other;
    };
    let Ok(name) = std::str::from_utf8(&name) else { return Incoming::Other };
    match &kind[..] {
        b"subscribe" | b"ssubscribe" => match keys.channel_of(name) {
            Some(channel) => Incoming::Subscribed(Arc::from(channel)),
            None => Incoming::Other,
        },
        b"message" | b"smessage" => {
            let Some(payload) = parts.next().as_ref().and_then(bytes_of) else {
                return Incoming::Other;
            };
            if name == keys.control_channel() || name == keys.node_channel(node_uid) {
                return Incoming::Control(payload);
            }
            let Some(channel) = keys.channel_of(name) else {
                return Incoming::Other;
            };
            match parse_message(&payload) {
                Some(event) => Incoming::Event(Arc::from(channel), event),
                None => {
                    tracing::warn!(channel, "undecodable message on a Redis channel");
                    Incoming::Other
                }
            }
        }
        _ => Incoming::Other,
    }
}

/// The bytes of a bulk or simple string.
pub fn bytes_of(f: &BytesFrame) -> Option<Bytes> {
    match f {
        BytesFrame::BulkString(b) | BytesFrame::SimpleString(b) => Some(b.clone()),
        _ => None,
    }
}

/// A number, whether Redis sent it as an integer or (from a script, a hash) as a string; a
/// missing value (nil) reads as 0, as Centrifugo reads it.
pub fn u64_of(f: &BytesFrame) -> Option<u64> {
    match f {
        BytesFrame::Integer(i) => u64::try_from(*i).ok(),
        BytesFrame::BulkString(b) | BytesFrame::SimpleString(b) => {
            std::str::from_utf8(b).ok()?.parse().ok()
        }
        BytesFrame::Null => Some(0),
        _ => None,
    }
}

/// A UTF-8 bulk or simple string.
pub fn string_of(f: &BytesFrame) -> Option<String> {
    bytes_of(f).and_then(|b| String::from_utf8(b.to_vec()).ok())
}

/// Decodes a PUB/SUB payload on `P.client.<channel>` (spec §10.1).
pub fn parse_message(payload: &[u8]) -> Option<Event> {
    if let Some(rest) = payload.strip_prefix(b"__j__") {
        return protobuf::decode_client_info(rest).ok().map(|i| Event::Join(Arc::new(i)));
    }
    if let Some(rest) = payload.strip_prefix(b"__l__") {
        return protobuf::decode_client_info(rest).ok().map(|i| Event::Leave(Arc::new(i)));
    }
    if let Some(rest) = payload.strip_prefix(b"__p1:") {
        // offset:epoch__<publication>
        let colon = rest.iter().position(|&b| b == b':')?;
        let offset: u64 = std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()?;
        let after = &rest[colon + 1..];
        let end = after.windows(2).position(|w| w == b"__")?;
        let mut p = protobuf::decode_broker_publication(&after[end + 2..]).ok()?;
        p.offset = offset;
        return Some(Event::Pub(Arc::new(p)));
    }
    if let Some(rest) = payload.strip_prefix(b"__d1:") {
        // offset:epoch:len(prev):prev:len(cur):cur
        let (offset, rest) = split_field(rest)?;
        let offset: u64 = std::str::from_utf8(offset).ok()?.parse().ok()?;
        let (_epoch, rest) = split_field(rest)?;
        let (prev_len, rest) = split_field(rest)?;
        let prev_len: usize = std::str::from_utf8(prev_len).ok()?.parse().ok()?;
        let rest = rest.get(prev_len + 1..)?;
        let (cur_len, rest) = split_field(rest)?;
        let cur_len: usize = std::str::from_utf8(cur_len).ok()?.parse().ok()?;
        let mut p = protobuf::decode_broker_publication(rest.get(..cur_len)?).ok()?;
        p.offset = offset;
        p.delta_eligible = true;
        return Some(Event::Pub(Arc::new(p)));
    }
    protobuf::decode_broker_publication(payload).ok().map(|p| Event::Pub(Arc::new(p)))
}

fn split_field(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = b.iter().position(|&c| c == b':')?;
    Some((&b[..i], &b[i + 1..]))
}

/// Turns a command reply into the answer its caller waits for.
pub fn answer(parse: Parse, reply: Result<BytesFrame, RedisError>) -> Reply {
    match parse_answer(parse, reply) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "redis command failed");
            Reply::Failed
        }
    }
}

fn parse_answer(parse: Parse, reply: Result<BytesFrame, RedisError>) -> Result<Reply, RedisError> {
    let reply = reply?;
    if let BytesFrame::Error(e) = &reply {
        return Err(RedisError::Server(e.to_string()));
    }
    Ok(match parse {
        Parse::Done => Reply::Done,
        Parse::Published => match &reply {
            // PUBLISH, or the idempotency script's first publish: no position.
            BytesFrame::Integer(_) => Reply::Published(None),
            BytesFrame::Array(a) if a.len() >= 2 => {
                let offset = u64_of(&a[0]).ok_or(RedisError::Shape("offset"))?;
                let epoch = string_of(&a[1]).ok_or(RedisError::Shape("epoch"))?;
                // A repeated idempotency key of a publish without history has no position.
                if epoch.is_empty() {
                    Reply::Published(None)
                } else {
                    Reply::Published(Some(Position { offset, epoch }))
                }
            }
            _ => return Err(RedisError::Shape("publish reply")),
        },
        Parse::Top => match &reply {
            BytesFrame::Null => Reply::Position(None),
            other => Reply::Position(Some(u64_of(other).ok_or(RedisError::Shape("offset"))?)),
        },
        Parse::Subscribed(query) => {
            let (read, top) = stream_reply(&reply, query.as_ref())?;
            Reply::Subscribed { top: Some(top), read }
        }
        Parse::History(query) => {
            let (read, top) = stream_reply(&reply, Some(&query))?;
            Reply::History(read.map(|pubs| (pubs, top)))
        }
        Parse::Presence => {
            let BytesFrame::Array(items) = reply else {
                return Err(RedisError::Shape("presence reply"));
            };
            let mut out = Vec::with_capacity(items.len() / 2);
            for pair in items.chunks(2) {
                let Some(value) = pair.get(1).and_then(bytes_of) else { continue };
                if let Ok(info) = protobuf::decode_client_info(&value) {
                    out.push(Arc::new(info));
                }
            }
            Reply::Presence(out)
        }
    })
}

type Read = Result<Vec<Arc<Publication>>, HistoryError>;

/// Reads the history script's `{top, epoch, entries?}`.
fn stream_reply(
    reply: &BytesFrame,
    query: Option<&HistoryQuery>,
) -> Result<(Read, Position), RedisError> {
    let BytesFrame::Array(a) = reply else { return Err(RedisError::Shape("history reply")) };
    let offset = a.first().and_then(u64_of).ok_or(RedisError::Shape("top offset"))?;
    let epoch = a.get(1).and_then(string_of).ok_or(RedisError::Shape("epoch"))?;
    let top = Position { offset, epoch };
    if let Some(since) = query.and_then(|q| q.since.as_ref()) {
        if !since.epoch.is_empty() && since.epoch != top.epoch {
            return Ok((Err(HistoryError::UnrecoverablePosition), top));
        }
    }
    let mut pubs = Vec::new();
    if let Some(BytesFrame::Array(entries)) = a.get(2) {
        pubs.reserve(entries.len());
        for entry in entries {
            pubs.push(Arc::new(stream_entry(entry)?));
        }
    }
    Ok((Ok(pubs), top))
}

/// One stream entry `[id, [field, value, …]]` → publication with the offset from the id.
fn stream_entry(entry: &BytesFrame) -> Result<Publication, RedisError> {
    let BytesFrame::Array(parts) = entry else { return Err(RedisError::Shape("stream entry")) };
    let id = parts.first().and_then(string_of).ok_or(RedisError::Shape("entry id"))?;
    let offset: u64 =
        id.split('-').next().and_then(|o| o.parse().ok()).ok_or(RedisError::Shape("entry id"))?;
    let Some(BytesFrame::Array(fields)) = parts.get(1) else {
        return Err(RedisError::Shape("entry fields"));
    };
    let data = fields
        .chunks(2)
        .find(|kv| bytes_of(&kv[0]).is_some_and(|k| &k[..] == b"d"))
        .and_then(|kv| kv.get(1).and_then(bytes_of))
        .ok_or(RedisError::Shape("entry without d"))?;
    let mut p =
        protobuf::decode_broker_publication(&data).map_err(|_| RedisError::Shape("publication"))?;
    p.offset = offset;
    Ok(p)
}
