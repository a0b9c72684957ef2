//! Protobuf codec of the client protocol (spec §2.1, §2.8): commands in, replies and pushes out,
//! each message prefixed by its length as a varint.
//!
//! Owns: the mapping between the generated [`pb`] messages and the encoding-independent types
//! of [`super`], and the delimited framing. Decoding yields exactly what the JSON codec yields
//! for the same command, so everything past the codec is shared. Payloads (`data`, `info`) are
//! raw bytes here, carried in [`RawJson`] without a copy.
//!
//! Must not: know about connections or validate semantics (the caller does, as for JSON).

use prost::Message;

use super::pb;
use super::{
    ChannelRequest, ClientInfo, Command, ConnectRequest, ConnectResult, HistoryRequest,
    Publication, PublishRequest, PushBody, RawJson, RefreshRequest, ReplyBody, Request, RpcRequest,
    SendRequest, StreamPosition, SubRefreshRequest, SubscribeRequest, SubscribeResult,
};

/// Largest single command we accept, in bytes (the frame limit bounds it too).
pub const MAX_COMMAND: usize = 64 << 20;

/// Why a Protobuf frame could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum PbDecodeError {
    /// The frame carried no command.
    #[error("empty frame")]
    EmptyFrame,
    /// A length prefix is not a valid varint, or is too large.
    #[error("bad length prefix")]
    Length,
    /// A message is longer than what is left of the frame.
    #[error("message truncated")]
    Truncated,
    /// The bytes are not a `Command`.
    #[error("invalid command: {0}")]
    Invalid(#[from] prost::DecodeError),
    /// A command with `id > 0` and none of the known request fields.
    #[error("command {id} has no known request field")]
    NoRequest {
        /// The command id.
        id: u32,
    },
}

/// Decodes every length-delimited `Command` of a frame.
pub fn decode_frame(frame: &[u8]) -> Result<Vec<Command>, PbDecodeError> {
    if frame.is_empty() {
        return Err(PbDecodeError::EmptyFrame);
    }
    let mut rest = frame;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let len = prost::decode_length_delimiter(&mut rest).map_err(|_| PbDecodeError::Length)?;
        if len > MAX_COMMAND {
            return Err(PbDecodeError::Length);
        }
        if len > rest.len() {
            return Err(PbDecodeError::Truncated);
        }
        let (msg, tail) = rest.split_at(len);
        out.push(command(pb::Command::decode(msg)?)?);
        rest = tail;
    }
    Ok(out)
}

/// Incremental decoder for a byte stream of delimited commands (HTTP-streaming bodies): push
/// chunks split anywhere, get complete commands out.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    buf: Vec<u8>,
}

impl StreamDecoder {
    /// Adds bytes; returns the commands they complete.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Command>, PbDecodeError> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        let mut used = 0;
        loop {
            let mut rest = &self.buf[used..];
            if rest.is_empty() {
                break;
            }
            let before = rest.len();
            let Ok(len) = prost::decode_length_delimiter(&mut rest) else {
                // An incomplete varint waits for more bytes; a 10-byte one that still fails
                // is garbage.
                if before >= 10 {
                    return Err(PbDecodeError::Length);
                }
                break;
            };
            if len > MAX_COMMAND {
                return Err(PbDecodeError::Length);
            }
            if rest.len() < len {
                break;
            }
            let head = before - rest.len();
            out.push(command(pb::Command::decode(&rest[..len])?)?);
            used += head + len;
        }
        self.buf.drain(..used);
        Ok(out)
    }

    /// Whether bytes of an unfinished command are buffered.
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty()
    }
}

/// A payload field: empty bytes mean absent.
pub(crate) fn raw(b: bytes::Bytes) -> Option<RawJson> {
    (!b.is_empty()).then_some(RawJson(b))
}

fn subscribe_request(r: pb::SubscribeRequest) -> SubscribeRequest {
    SubscribeRequest {
        channel: r.channel,
        token: r.token,
        recover: r.recover,
        epoch: r.epoch,
        offset: r.offset,
        data: raw(r.data),
        positioned: r.positioned,
        recoverable: r.recoverable,
        join_leave: r.join_leave,
        delta: r.delta,
        flag: r.flag,
        type_: 0,
        tf: r.tf,
    }
}

/// Maps a decoded `Command` the way the JSON codec does: id 0 without `send` is a pong, then
/// the first request field in spec §2.3's order.
fn command(c: pb::Command) -> Result<Command, PbDecodeError> {
    let id = c.id;
    if id == 0 && c.send.is_none() {
        return Ok(Command { id, request: Request::Pong });
    }
    let request = if let Some(r) = c.connect {
        let mut subs: Vec<(String, SubscribeRequest)> =
            r.subs.into_iter().map(|(ch, s)| (ch, subscribe_request(s))).collect();
        subs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut headers: Vec<(String, String)> = r.headers.into_iter().collect();
        headers.sort();
        Request::Connect(ConnectRequest {
            token: r.token,
            data: raw(r.data),
            subs,
            name: r.name,
            version: r.version,
            headers,
        })
    } else if let Some(r) = c.subscribe {
        Request::Subscribe(subscribe_request(r))
    } else if let Some(r) = c.unsubscribe {
        Request::Unsubscribe(ChannelRequest { channel: r.channel })
    } else if let Some(r) = c.publish {
        Request::Publish(PublishRequest { channel: r.channel, data: RawJson(r.data), type_: 0 })
    } else if let Some(r) = c.presence {
        Request::Presence(ChannelRequest { channel: r.channel })
    } else if let Some(r) = c.presence_stats {
        Request::PresenceStats(ChannelRequest { channel: r.channel })
    } else if let Some(r) = c.history {
        Request::History(HistoryRequest {
            channel: r.channel,
            limit: r.limit,
            since: r.since.map(|s| StreamPosition { offset: s.offset, epoch: s.epoch }),
            reverse: r.reverse,
        })
    } else if let Some(r) = c.rpc {
        Request::Rpc(RpcRequest { data: raw(r.data), method: r.method })
    } else if let Some(r) = c.send {
        Request::Send(SendRequest { data: raw(r.data) })
    } else if let Some(r) = c.refresh {
        Request::Refresh(RefreshRequest { token: r.token })
    } else if let Some(r) = c.sub_refresh {
        Request::SubRefresh(SubRefreshRequest { channel: r.channel, token: r.token })
    } else if c.ping.is_some() {
        Request::Ping
    } else {
        return Err(PbDecodeError::NoRequest { id });
    };
    Ok(Command { id, request })
}

/// The bytes of an optional payload (empty when absent).
pub(crate) fn bytes_of(r: &Option<RawJson>) -> bytes::Bytes {
    r.as_ref().map(|r| r.0.clone()).unwrap_or_default()
}

fn client_info(i: &ClientInfo) -> pb::ClientInfo {
    pb::ClientInfo {
        user: i.user.clone(),
        client: i.client.clone(),
        conn_info: bytes_of(&i.conn_info),
        chan_info: bytes_of(&i.chan_info),
    }
}

fn publication(p: &Publication) -> pb::Publication {
    pb::Publication {
        data: p.data.0.clone(),
        info: p.info.as_ref().map(client_info),
        offset: p.offset,
        tags: p.tags.iter().cloned().collect(),
        delta: p.delta,
        time: 0,
        channel: String::new(),
    }
}

fn subscribe_result(r: &SubscribeResult) -> pb::SubscribeResult {
    pb::SubscribeResult {
        expires: r.expires,
        ttl: r.ttl,
        recoverable: r.recoverable,
        epoch: r.epoch.clone(),
        publications: r.publications.iter().map(publication).collect(),
        recovered: r.recovered,
        offset: r.offset,
        positioned: r.positioned,
        data: bytes_of(&r.data),
        was_recovering: r.was_recovering,
        delta: r.delta,
    }
}

fn connect_result(r: &ConnectResult) -> pb::ConnectResult {
    pb::ConnectResult {
        client: r.client.clone(),
        version: r.version.clone(),
        expires: r.expires,
        ttl: r.ttl,
        data: bytes_of(&r.data),
        subs: r.subs.iter().map(|(c, s)| (c.clone(), subscribe_result(s))).collect(),
        ping: r.ping,
        pong: r.pong,
        session: r.session.clone(),
        node: r.node.clone(),
        time: r.time,
    }
}

fn error(e: &super::ProtocolError) -> pb::Error {
    pb::Error { code: e.code, message: e.message.to_string(), temporary: e.temporary }
}

/// The `Reply` message for a reply body.
pub fn reply(id: u32, body: &ReplyBody) -> pb::Reply {
    let mut r = pb::Reply { id, ..pb::Reply::default() };
    match body {
        ReplyBody::Error(e) => r.error = Some(error(e)),
        ReplyBody::Connect(c) => r.connect = Some(connect_result(c)),
        ReplyBody::Subscribe(s) => r.subscribe = Some(subscribe_result(s)),
        ReplyBody::Unsubscribe => r.unsubscribe = Some(pb::UnsubscribeResult {}),
        ReplyBody::Publish => r.publish = Some(pb::PublishResult {}),
        ReplyBody::Presence(p) => {
            r.presence = Some(pb::PresenceResult {
                presence: p.presence.iter().map(|(c, i)| (c.clone(), client_info(i))).collect(),
            });
        }
        ReplyBody::PresenceStats(s) => {
            r.presence_stats = Some(pb::PresenceStatsResult {
                num_clients: s.num_clients,
                num_users: s.num_users,
            });
        }
        ReplyBody::History(h) => {
            r.history = Some(pb::HistoryResult {
                publications: h.publications.iter().map(publication).collect(),
                epoch: h.epoch.clone(),
                offset: h.offset,
            });
        }
        ReplyBody::Ping => r.ping = Some(pb::PingResult {}),
        ReplyBody::Rpc(x) => r.rpc = Some(pb::RpcResult { data: bytes_of(&x.data) }),
        ReplyBody::Refresh(x) => {
            r.refresh = Some(pb::RefreshResult {
                client: x.client.clone(),
                version: x.version.clone(),
                expires: x.expires,
                ttl: x.ttl,
            });
        }
        ReplyBody::SubRefresh(x) => {
            r.sub_refresh = Some(pb::SubRefreshResult { expires: x.expires, ttl: x.ttl });
        }
    }
    r
}

/// The `Push` message for a push body on `channel`.
pub fn push(channel: &str, body: &PushBody) -> pb::Push {
    let mut p = pb::Push { channel: channel.to_owned(), ..pb::Push::default() };
    match body {
        PushBody::Publication(x) => p.r#pub = Some(publication(x)),
        PushBody::Join(i) => p.join = Some(pb::Join { info: Some(client_info(i)) }),
        PushBody::Leave(i) => p.leave = Some(pb::Leave { info: Some(client_info(i)) }),
        PushBody::Unsubscribe(u) => {
            p.unsubscribe = Some(pb::Unsubscribe { code: u.code, reason: u.reason.to_string() });
        }
        PushBody::Message(d) => p.message = Some(pb::Message { data: d.0.clone() }),
        PushBody::Subscribe(s) => {
            p.subscribe = Some(pb::Subscribe {
                recoverable: s.recoverable,
                epoch: s.epoch.clone(),
                offset: s.offset,
                positioned: s.positioned,
                data: bytes_of(&s.data),
            });
        }
        PushBody::Connect(c) => {
            let r = connect_result(c);
            p.connect = Some(pb::Connect {
                client: r.client,
                version: r.version,
                data: r.data,
                subs: r.subs,
                expires: r.expires,
                ttl: r.ttl,
                ping: r.ping,
                pong: r.pong,
                session: r.session,
                node: r.node,
                time: r.time,
            });
        }
        PushBody::Disconnect(d) => {
            p.disconnect = Some(pb::Disconnect {
                code: u32::from(d.code),
                reason: d.reason.to_string(),
                reconnect: false,
            });
        }
        PushBody::Refresh { expires, ttl } => {
            p.refresh = Some(pb::Refresh { expires: *expires, ttl: *ttl });
        }
    }
    p
}

/// Appends one length-delimited message.
pub fn write_delimited(msg: &impl Message, out: &mut Vec<u8>) {
    // Encoding into a Vec cannot run out of space.
    let _ = msg.encode_length_delimited(out);
}

/// Appends a delimited `Reply` for `body`.
pub fn encode_reply(id: u32, body: &ReplyBody, out: &mut Vec<u8>) {
    write_delimited(&reply(id, body), out);
}

/// Appends a delimited `Reply` carrying a push (bidirectional framing).
pub fn encode_push(channel: &str, body: &PushBody, out: &mut Vec<u8>) {
    let r = pb::Reply { push: Some(push(channel, body)), ..pb::Reply::default() };
    write_delimited(&r, out);
}

/// Appends a delimited bare `Push` (unidirectional framing).
pub fn encode_bare_push(channel: &str, body: &PushBody, out: &mut Vec<u8>) {
    write_delimited(&push(channel, body), out);
}

/// Appends a delimited publication push (the fan-out path: once per shard per publication).
pub fn encode_publication_push(channel: &str, p: &Publication, out: &mut Vec<u8>) {
    let r = pb::Reply {
        push: Some(pb::Push {
            channel: channel.to_owned(),
            r#pub: Some(publication(p)),
            ..pb::Push::default()
        }),
        ..pb::Reply::default()
    };
    write_delimited(&r, out);
}

/// A publication as brokers store and pass it between nodes: a plain (not delimited) protobuf
/// `Publication` with the publish time in ms; the offset travels outside it (Centrifugo's Redis
/// layout, spec §10.1). `delta` carries the delta flag between nodes when nothing else can
/// (publications without history); stored publications never have it.
pub fn broker_publication(p: &Publication, time_ms: i64, delta: bool) -> Vec<u8> {
    let mut m = publication(p);
    m.offset = 0;
    m.time = time_ms;
    m.delta = delta;
    m.encode_to_vec()
}

/// Reads a broker publication (see [`broker_publication`]). The delta flag comes back as
/// `delta_eligible`; data that is not JSON is marked binary, so JSON clients never receive it.
pub fn decode_broker_publication(bytes: &[u8]) -> Result<Publication, prost::DecodeError> {
    pb::Publication::decode(bytes).map(broker_publication_from)
}

fn broker_publication_from(m: pb::Publication) -> Publication {
    let binary =
        !m.data.is_empty() && serde_json::from_slice::<serde::de::IgnoredAny>(&m.data).is_err();
    let mut tags: Vec<(String, String)> = m.tags.into_iter().collect();
    tags.sort_unstable();
    Publication {
        data: RawJson(m.data),
        info: m.info.map(client_info_from),
        offset: m.offset,
        tags,
        delta: false,
        binary,
        delta_eligible: m.delta,
        time: m.time,
    }
}

/// An event carried between nodes as a protobuf `Push` (the NATS broker's message, spec §10.3).
#[derive(Debug)]
pub enum BrokerPush {
    /// A publication (its delta flag in `delta_eligible`).
    Pub(Publication),
    /// A join.
    Join(ClientInfo),
    /// A leave.
    Leave(ClientInfo),
}

/// A `Push` with a publication for other nodes: publish time in `pub.time`, the delta flag in
/// `pub.delta`.
pub fn encode_broker_push_pub(channel: &str, p: &Publication, time_ms: i64) -> Vec<u8> {
    let mut m = publication(p);
    m.time = time_ms;
    m.delta = p.delta_eligible;
    pb::Push { channel: channel.to_owned(), r#pub: Some(m), ..pb::Push::default() }.encode_to_vec()
}

/// A `Push` with a join (`join`) or leave for other nodes.
pub fn encode_broker_push_presence(channel: &str, info: &ClientInfo, join: bool) -> Vec<u8> {
    let info = Some(client_info(info));
    let mut push = pb::Push { channel: channel.to_owned(), ..pb::Push::default() };
    if join {
        push.join = Some(pb::Join { info });
    } else {
        push.leave = Some(pb::Leave { info });
    }
    push.encode_to_vec()
}

/// Reads a `Push` from another node: its channel and event (`None` for other push kinds).
pub fn decode_broker_push(
    bytes: &[u8],
) -> Result<Option<(String, BrokerPush)>, prost::DecodeError> {
    let push = pb::Push::decode(bytes)?;
    let event = if let Some(p) = push.r#pub {
        Some(BrokerPush::Pub(broker_publication_from(p)))
    } else if let Some(info) = push.join.and_then(|j| j.info) {
        Some(BrokerPush::Join(client_info_from(info)))
    } else {
        push.leave.and_then(|l| l.info).map(|info| BrokerPush::Leave(client_info_from(info)))
    };
    Ok(event.map(|e| (push.channel, e)))
}

/// A plain protobuf `ClientInfo` (presence values, join/leave messages between nodes).
pub fn encode_client_info(i: &ClientInfo) -> Vec<u8> {
    client_info(i).encode_to_vec()
}

/// Reads a plain protobuf `ClientInfo`.
pub fn decode_client_info(bytes: &[u8]) -> Result<ClientInfo, prost::DecodeError> {
    pb::ClientInfo::decode(bytes).map(client_info_from)
}

fn client_info_from(i: pb::ClientInfo) -> ClientInfo {
    ClientInfo {
        user: i.user,
        client: i.client,
        conn_info: raw(i.conn_info),
        chan_info: raw(i.chan_info),
    }
}

/// A server ping: an empty `Reply`, delimited (the single byte 0).
pub const PING: &[u8] = &[0];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn delimited(cmds: &[pb::Command]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in cmds {
            write_delimited(c, &mut out);
        }
        out
    }

    fn subscribe_cmd(id: u32, channel: &str) -> pb::Command {
        pb::Command {
            id,
            subscribe: Some(pb::SubscribeRequest {
                channel: channel.into(),
                recover: true,
                offset: 7,
                epoch: "ep".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn commands_map_like_the_json_codec() {
        let frame = delimited(&[
            subscribe_cmd(2, "chat:a"),
            pb::Command::default(),
            pb::Command { id: 3, ping: Some(pb::PingRequest {}), ..Default::default() },
            pb::Command {
                id: 4,
                publish: Some(pb::PublishRequest {
                    channel: "c".into(),
                    data: bytes::Bytes::from_static(b"\x00\xffbinary"),
                }),
                ..Default::default()
            },
        ]);
        let cmds = decode_frame(&frame).unwrap();
        let Request::Subscribe(s) = &cmds[0].request else { panic!("{cmds:?}") };
        assert_eq!(
            (s.channel.as_str(), s.recover, s.offset, s.epoch.as_str()),
            ("chat:a", true, 7, "ep")
        );
        assert_eq!(
            cmds[1],
            Command { id: 0, request: Request::Pong },
            "an empty command is a pong"
        );
        assert_eq!(cmds[2].request, Request::Ping);
        let Request::Publish(p) = &cmds[3].request else { panic!() };
        assert_eq!(p.data.as_bytes(), b"\x00\xffbinary", "binary payloads pass untouched");
        let no_request = delimited(&[pb::Command { id: 9, ..Default::default() }]);
        assert!(matches!(decode_frame(&no_request), Err(PbDecodeError::NoRequest { id: 9 })));
        assert!(matches!(decode_frame(&[]), Err(PbDecodeError::EmptyFrame)));
        assert!(matches!(decode_frame(&[5, 1]), Err(PbDecodeError::Truncated)));
        assert!(matches!(decode_frame(&[0xff; 11]), Err(PbDecodeError::Length)));
    }

    #[test]
    fn ping_is_one_zero_byte() {
        let mut out = Vec::new();
        write_delimited(&pb::Reply::default(), &mut out);
        assert_eq!(out, PING);
    }

    #[test]
    fn replies_and_pushes_decode_with_the_generated_types() {
        let mut out = Vec::new();
        let body = ReplyBody::Error(super::super::codes::ERROR_PERMISSION_DENIED);
        encode_reply(5, &body, &mut out);
        let p = Publication {
            data: RawJson(bytes::Bytes::from_static(b"{\"x\":1}")),
            offset: 3,
            tags: vec![("k".into(), "v".into())],
            ..Publication::default()
        };
        encode_publication_push("news", &p, &mut out);
        let mut rest = out.as_slice();
        let r1 = pb::Reply::decode_length_delimited(&mut rest).unwrap();
        assert_eq!((r1.id, r1.error.unwrap().code), (5, 103));
        let r2 = pb::Reply::decode_length_delimited(&mut rest).unwrap();
        let push = r2.push.unwrap();
        let publ = push.r#pub.unwrap();
        assert_eq!((push.channel.as_str(), publ.offset), ("news", 3));
        assert_eq!(&publ.data[..], b"{\"x\":1}");
        assert_eq!(publ.tags.get("k").map(String::as_str), Some("v"));
        assert!(rest.is_empty());
    }

    fn arb_command() -> impl Strategy<Value = pb::Command> {
        (1u32..1000, "[a-z:]{1,12}", proptest::collection::vec(any::<u8>(), 0..40), any::<bool>())
            .prop_map(|(id, channel, data, publish)| {
                if publish {
                    pb::Command {
                        id,
                        publish: Some(pb::PublishRequest { channel, data: data.into() }),
                        ..Default::default()
                    }
                } else {
                    subscribe_cmd(id, &channel)
                }
            })
    }

    proptest! {
        #[test]
        fn stream_decoding_splits_anywhere(
            cmds in proptest::collection::vec(arb_command(), 1..8),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let frame = delimited(&cmds);
            let whole = decode_frame(&frame).unwrap();
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(frame.len() + 1)).collect();
            points.sort_unstable();
            let mut dec = StreamDecoder::default();
            let mut got = Vec::new();
            let mut last = 0;
            for p in points.into_iter().chain([frame.len()]) {
                got.extend(dec.push(&frame[last..p]).unwrap());
                last = p;
            }
            prop_assert!(!dec.has_partial());
            prop_assert_eq!(got, whole);
        }

        #[test]
        fn command_round_trips(cmd in arb_command()) {
            let frame = delimited(std::slice::from_ref(&cmd));
            let decoded = decode_frame(&frame).unwrap();
            prop_assert_eq!(decoded.len(), 1);
            match (&decoded[0].request, &cmd.publish, &cmd.subscribe) {
                (Request::Publish(p), Some(want), _) => {
                    prop_assert_eq!(&p.channel, &want.channel);
                    prop_assert_eq!(p.data.as_bytes(), &want.data[..]);
                }
                (Request::Subscribe(s), _, Some(want)) => prop_assert_eq!(&s.channel, &want.channel),
                other => prop_assert!(false, "{:?}", other),
            }
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_frame(&bytes);
            let _ = StreamDecoder::default().push(&bytes);
        }
    }
}
