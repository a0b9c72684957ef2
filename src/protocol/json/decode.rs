//! Decoding half of the JSON codec: client frames into [`Command`]s.
//!
//! Owns: the `Wire*` serde shapes, decoding one line, whole frames (copying or zero-copy), the
//! bare bodies of the HTTP transports, the streaming [`FrameDecoder`] and [`DecodeError`].
//!
//! Must not: panic on peer input, apply protocol semantics beyond picking the request field
//! (id rules, empty channels etc. are checked by the caller), do I/O, or import the encoding
//! half or `json/mod.rs`: the halves share nothing, and keeping them apart keeps the module
//! graph acyclic.
//!
//! Decoding uses serde_json rather than simd-json because simd-json cannot hand back the raw
//! text of a nested value, and payloads must not be re-formatted (numbers, key order). Measured
//! with `cargo bench --bench json_decode`, our typed serde_json decode versus a bare simd-json
//! parse into a borrowed value, same run: pong 124 vs 148 ns, subscribe 321 vs 309 ns,
//! connect 382 vs 398 ns, publish with 1 KiB payload 818 vs 716 ns. simd-json is never more than
//! 1.14x faster here, and a payload-carrying command would still need a second parse to recover
//! the exact payload bytes, which costs more than that gap.
//! Top-level values must be JSON objects; nested request objects given as arrays are accepted in
//! serde's positional form (harmless: they mean the same as some object).

use std::marker::PhantomData;

use bytes::Bytes;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::protocol::{
    ChannelRequest, Command, ConnectRequest, HistoryRequest, PublishRequest, RawJson,
    RefreshRequest, Request, RpcRequest, SendRequest, StreamPosition, SubRefreshRequest,
    SubscribeRequest,
};

/// Why a client frame could not be decoded. Every variant means "disconnect 3501".
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame (or stream) carried no command at all.
    #[error("empty frame")]
    EmptyFrame,
    /// An empty line between commands (only a single trailing `\n` is allowed).
    #[error("blank line at command {index}")]
    BlankLine {
        /// Zero-based position of the line in the frame/stream.
        index: usize,
    },
    /// A line is not a JSON object of the Command shape.
    #[error("invalid command {index}: {source}")]
    Json {
        /// Zero-based position of the line in the frame/stream.
        index: usize,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// A line is valid JSON-ish text but not an object (serde would accept arrays as
    /// positional structs; Go does not).
    #[error("command {index} is not a JSON object")]
    NotObject {
        /// Zero-based position of the line in the frame/stream.
        index: usize,
    },
    /// A command with `id > 0` and none of the known request fields.
    #[error("command {id} has no known request field")]
    NoRequest {
        /// The command id.
        id: u32,
    },
    /// A [`FrameDecoder`] line grew beyond its limit without a `\n`.
    #[error("command longer than {max_bytes} bytes")]
    LineTooLong {
        /// The configured limit.
        max_bytes: usize,
    },
}

/// Go's decoder leaves a field at its zero value when the JSON has `null`; mirror that for
/// scalar fields so SDKs that serialize absent values as `null` keep working.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A JSON object as `(key, value)` pairs in the order sent; a repeated key keeps its first
/// position and its last value (Go map semantics for the value); `null` is empty.
pub(crate) fn ordered_map<'de, D, V>(d: D) -> Result<Vec<(String, V)>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct MapVisitor<V>(PhantomData<V>);
    impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
        type Value = Vec<(String, V)>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut entries: Vec<(String, V)> = Vec::new();
            let mut index = std::collections::HashMap::new();
            while let Some((key, value)) = map.next_entry::<String, V>()? {
                if let Some(&i) = index.get(&key) {
                    entries[i] = (key, value);
                } else {
                    index.insert(key.clone(), entries.len());
                    entries.push((key, value));
                }
            }
            Ok(entries)
        }
    }
    d.deserialize_any(MapVisitor(PhantomData))
}

#[derive(Deserialize)]
struct WireCommand<'a> {
    #[serde(default, deserialize_with = "nullable")]
    id: u32,
    #[serde(borrow)]
    connect: Option<WireConnect<'a>>,
    #[serde(borrow)]
    subscribe: Option<WireSubscribe<'a>>,
    unsubscribe: Option<WireChannel>,
    #[serde(borrow)]
    publish: Option<WirePublish<'a>>,
    presence: Option<WireChannel>,
    presence_stats: Option<WireChannel>,
    history: Option<WireHistory>,
    ping: Option<IgnoredAny>,
    #[serde(borrow)]
    send: Option<WireData<'a>>,
    #[serde(borrow)]
    rpc: Option<WireRpc<'a>>,
    refresh: Option<WireRefresh>,
    sub_refresh: Option<WireSubRefresh>,
}

#[derive(Deserialize)]
struct WireConnect<'a> {
    #[serde(default, deserialize_with = "nullable")]
    token: String,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "ordered_map")]
    subs: Vec<(String, WireSubscribe<'a>)>,
    #[serde(default, deserialize_with = "nullable")]
    name: String,
    #[serde(default, deserialize_with = "nullable")]
    version: String,
    #[serde(default, deserialize_with = "ordered_map")]
    headers: Vec<(String, String)>,
}

#[derive(Deserialize)]
struct WireSubscribe<'a> {
    #[serde(default, deserialize_with = "nullable")]
    channel: String,
    #[serde(default, deserialize_with = "nullable")]
    token: String,
    #[serde(default, deserialize_with = "nullable")]
    recover: bool,
    #[serde(default, deserialize_with = "nullable")]
    epoch: String,
    #[serde(default, deserialize_with = "nullable")]
    offset: u64,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default, deserialize_with = "nullable")]
    positioned: bool,
    #[serde(default, deserialize_with = "nullable")]
    recoverable: bool,
    #[serde(default, deserialize_with = "nullable")]
    join_leave: bool,
    #[serde(default, deserialize_with = "nullable")]
    delta: String,
    #[serde(default)]
    tf: Option<WireFilter>,
    #[serde(default, deserialize_with = "nullable")]
    flag: i64,
    #[serde(default, rename = "type", deserialize_with = "nullable")]
    type_: i32,
}

/// A tags filter node (`FilterNode`) as JSON carries it.
#[derive(Deserialize)]
struct WireFilter {
    #[serde(default, deserialize_with = "nullable")]
    op: String,
    #[serde(default, deserialize_with = "nullable")]
    key: String,
    #[serde(default, deserialize_with = "nullable")]
    cmp: String,
    #[serde(default, deserialize_with = "nullable")]
    val: String,
    #[serde(default, deserialize_with = "nullable")]
    vals: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    nodes: Vec<WireFilter>,
}

impl WireFilter {
    fn into_node(self) -> crate::protocol::pb::FilterNode {
        crate::protocol::pb::FilterNode {
            op: self.op,
            key: self.key,
            cmp: self.cmp,
            val: self.val,
            vals: self.vals,
            nodes: self.nodes.into_iter().map(WireFilter::into_node).collect(),
        }
    }
}

#[derive(Deserialize)]
struct WireChannel {
    #[serde(default, deserialize_with = "nullable")]
    channel: String,
}

#[derive(Deserialize)]
struct WirePublish<'a> {
    #[serde(default, deserialize_with = "nullable")]
    channel: String,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default, rename = "type", deserialize_with = "nullable")]
    type_: i32,
}

#[derive(Deserialize)]
struct WirePosition {
    #[serde(default, deserialize_with = "nullable")]
    offset: u64,
    #[serde(default, deserialize_with = "nullable")]
    epoch: String,
}

#[derive(Deserialize)]
struct WireHistory {
    #[serde(default, deserialize_with = "nullable")]
    channel: String,
    #[serde(default, deserialize_with = "nullable")]
    limit: i32,
    #[serde(default)]
    since: Option<WirePosition>,
    #[serde(default, deserialize_with = "nullable")]
    reverse: bool,
}

#[derive(Deserialize)]
struct WireData<'a> {
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct WireRpc<'a> {
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default, deserialize_with = "nullable")]
    method: String,
}

#[derive(Deserialize)]
struct WireRefresh {
    #[serde(default, deserialize_with = "nullable")]
    token: String,
}

#[derive(Deserialize)]
struct WireSubRefresh {
    #[serde(default, deserialize_with = "nullable")]
    channel: String,
    #[serde(default, deserialize_with = "nullable")]
    token: String,
}

fn payload(raw: Option<&RawValue>, backing: Option<&Bytes>) -> Option<RawJson> {
    raw.map(|r| RawJson::from_raw_in(r.get(), backing))
}

impl WireSubscribe<'_> {
    fn into_request(self, backing: Option<&Bytes>) -> SubscribeRequest {
        SubscribeRequest {
            channel: self.channel,
            token: self.token,
            recover: self.recover,
            epoch: self.epoch,
            offset: self.offset,
            data: payload(self.data, backing),
            positioned: self.positioned,
            recoverable: self.recoverable,
            join_leave: self.join_leave,
            delta: self.delta,
            flag: self.flag,
            type_: self.type_,
            tf: self.tf.map(WireFilter::into_node),
        }
    }
}

/// True when the first non-whitespace byte opens an object.
pub(crate) fn starts_object(text: &[u8]) -> bool {
    text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

fn decode_line(line: &[u8], index: usize, backing: Option<&Bytes>) -> Result<Command, DecodeError> {
    if !starts_object(line) {
        return Err(DecodeError::NotObject { index });
    }
    let wire: WireCommand<'_> =
        serde_json::from_slice(line).map_err(|source| DecodeError::Json { index, source })?;
    let id = wire.id;
    // Spec §2.3: id 0 without `send` is a pong, whatever else the object carries.
    if id == 0 && wire.send.is_none() {
        return Ok(Command { id, request: Request::Pong });
    }
    let request = if let Some(c) = wire.connect {
        Request::Connect(connect_request(c, backing))
    } else if let Some(s) = wire.subscribe {
        Request::Subscribe(s.into_request(backing))
    } else if let Some(u) = wire.unsubscribe {
        Request::Unsubscribe(ChannelRequest { channel: u.channel })
    } else if let Some(p) = wire.publish {
        Request::Publish(PublishRequest {
            channel: p.channel,
            data: payload(p.data, backing).unwrap_or_default(),
            type_: p.type_,
        })
    } else if let Some(p) = wire.presence {
        Request::Presence(ChannelRequest { channel: p.channel })
    } else if let Some(p) = wire.presence_stats {
        Request::PresenceStats(ChannelRequest { channel: p.channel })
    } else if let Some(h) = wire.history {
        Request::History(HistoryRequest {
            channel: h.channel,
            limit: h.limit,
            since: h.since.map(|p| StreamPosition { offset: p.offset, epoch: p.epoch }),
            reverse: h.reverse,
        })
    } else if let Some(r) = wire.rpc {
        Request::Rpc(RpcRequest { data: payload(r.data, backing), method: r.method })
    } else if let Some(s) = wire.send {
        Request::Send(SendRequest { data: payload(s.data, backing) })
    } else if let Some(r) = wire.refresh {
        Request::Refresh(RefreshRequest { token: r.token })
    } else if let Some(r) = wire.sub_refresh {
        Request::SubRefresh(SubRefreshRequest { channel: r.channel, token: r.token })
    } else if wire.ping.is_some() {
        Request::Ping
    } else {
        return Err(DecodeError::NoRequest { id });
    };
    Ok(Command { id, request })
}

fn connect_request(c: WireConnect<'_>, backing: Option<&Bytes>) -> ConnectRequest {
    ConnectRequest {
        token: c.token,
        data: payload(c.data, backing),
        subs: c.subs.into_iter().map(|(k, s)| (k, s.into_request(backing))).collect(),
        name: c.name,
        version: c.version,
        headers: c.headers,
    }
}

/// Decodes a bare `ConnectRequest` as sent by unidirectional transports (spec §1.6: the
/// `cf_connect` value, the first uni WebSocket message, or a POST body). An empty (or
/// all-whitespace) input is `{}`; anything that is not a JSON object fails (→ 3501).
pub fn decode_connect_request(body: &[u8]) -> Result<ConnectRequest, DecodeError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ConnectRequest::default());
    }
    if !starts_object(body) {
        return Err(DecodeError::NotObject { index: 0 });
    }
    let wire: WireConnect<'_> =
        serde_json::from_slice(body).map_err(|source| DecodeError::Json { index: 0, source })?;
    Ok(connect_request(wire, None))
}

/// JSON body of `POST /emulation` (spec §1.4). `data` is a JSON *string* whose content is the
/// newline-joined command frame; feed it to [`decode_frame`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct EmulationRequest {
    /// Node id from the connect result.
    #[serde(default, deserialize_with = "nullable")]
    pub node: String,
    /// Session id from the connect result.
    #[serde(default, deserialize_with = "nullable")]
    pub session: String,
    /// The encoded command frame.
    #[serde(default, deserialize_with = "nullable")]
    pub data: String,
}

/// Decodes an emulation request body (malformed → HTTP 400).
pub fn decode_emulation_request(body: &[u8]) -> Result<EmulationRequest, DecodeError> {
    if !starts_object(body) {
        return Err(DecodeError::NotObject { index: 0 });
    }
    serde_json::from_slice(body).map_err(|source| DecodeError::Json { index: 0, source })
}

/// Iterator over the commands of one frame, in order; stops after the first error.
///
/// Upstream processes the commands of a frame one by one and disconnects at the first bad one,
/// so commands before it still take effect; callers that want that exact behaviour iterate
/// this instead of using [`decode_frame`].
pub struct Commands<'a> {
    rest: Option<&'a [u8]>,
    backing: Option<&'a Bytes>,
    index: usize,
    failed: bool,
}

impl Iterator for Commands<'_> {
    type Item = Result<Command, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let rest = self.rest?;
        if self.index == 0 && rest.is_empty() {
            self.failed = true;
            return Some(Err(DecodeError::EmptyFrame));
        }
        let (line, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(pos) => {
                let tail = &rest[pos + 1..];
                // A single trailing newline ends the frame.
                (&rest[..pos], if tail.is_empty() { None } else { Some(tail) })
            }
            None => (rest, None),
        };
        self.rest = next;
        let index = self.index;
        self.index += 1;
        let result = if line.is_empty() {
            Err(DecodeError::BlankLine { index })
        } else {
            decode_line(line, index, self.backing)
        };
        self.failed = result.is_err();
        Some(result)
    }
}

/// Iterates the commands of a newline-delimited frame (see [`Commands`]).
pub fn commands(frame: &[u8]) -> Commands<'_> {
    Commands { rest: Some(frame), backing: None, index: 0, failed: false }
}

/// Like [`commands`], but payloads without `\n` become zero-copy slices of `frame`.
pub fn commands_bytes(frame: &Bytes) -> Commands<'_> {
    Commands { rest: Some(frame), backing: Some(frame), index: 0, failed: false }
}

/// Decodes a whole frame: one command per line, a trailing `\n` tolerated; an empty frame, a
/// blank line, invalid JSON or a command without a known request field fails the frame.
pub fn decode_frame(frame: &[u8]) -> Result<Vec<Command>, DecodeError> {
    commands(frame).collect()
}

/// [`decode_frame`] with zero-copy payloads (slices of `frame`).
pub fn decode_frame_bytes(frame: &Bytes) -> Result<Vec<Command>, DecodeError> {
    commands_bytes(frame).collect()
}

/// Incremental decoder for byte streams where a command may be split across reads (HTTP
/// request bodies). Complete lines are decoded as soon as their `\n` arrives; the line in
/// progress is buffered up to `max_line_bytes` (overflow → [`DecodeError::LineTooLong`]).
/// After any error the stream is unusable: drop the decoder and disconnect.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    scanned: usize,
    max_line_bytes: usize,
    lines: usize,
}

impl FrameDecoder {
    /// A decoder that buffers at most `max_line_bytes` of an incomplete command.
    pub fn new(max_line_bytes: usize) -> Self {
        FrameDecoder { buf: Vec::new(), scanned: 0, max_line_bytes, lines: 0 }
    }

    /// Feeds bytes; returns the commands completed by them.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Command>, DecodeError> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(pos) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
            let end = self.scanned + pos;
            let index = self.lines;
            self.lines += 1;
            let line = &self.buf[start..end];
            if line.is_empty() {
                return Err(DecodeError::BlankLine { index });
            }
            if line.len() > self.max_line_bytes {
                return Err(DecodeError::LineTooLong { max_bytes: self.max_line_bytes });
            }
            out.push(decode_line(line, index, None)?);
            start = end + 1;
            self.scanned = start;
        }
        self.buf.drain(..start);
        self.scanned = self.buf.len();
        if self.buf.len() > self.max_line_bytes {
            return Err(DecodeError::LineTooLong { max_bytes: self.max_line_bytes });
        }
        Ok(out)
    }

    /// Ends the stream: decodes a final command that had no trailing `\n`. A stream that
    /// carried no command at all is [`DecodeError::EmptyFrame`].
    pub fn finish(&mut self) -> Result<Vec<Command>, DecodeError> {
        if self.buf.is_empty() {
            return if self.lines == 0 { Err(DecodeError::EmptyFrame) } else { Ok(Vec::new()) };
        }
        let index = self.lines;
        self.lines += 1;
        let line = std::mem::take(&mut self.buf);
        self.scanned = 0;
        Ok(vec![decode_line(&line, index, None)?])
    }
}
