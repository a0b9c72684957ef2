//! Encoding half of the JSON codec: replies and pushes written straight into a byte buffer.
//!
//! Owns: string escaping ([`write_json_string`]), the omitempty object writer, every reply
//! body ([`encode_reply`], [`encode_result_object`]) and every push with its framing
//! ([`PushFraming`], [`encode_push`] and the per-kind shortcuts used on the fan-out path).
//!
//! Must not: build an intermediate `serde_json::Value` (this is the fan-out hot path), re-format
//! payloads, do I/O, or import the decoding half or `json/mod.rs`: the halves share nothing,
//! and keeping them apart keeps the module graph acyclic.
//!
//! Output rules mirror the Go encoder: fields in protobuf field order, zero values omitted
//! except the "always" fields of spec §2.2, payloads embedded raw. Strings are escaped minimally
//! (`"`, `\`, control characters); non-ASCII text is written as UTF-8, which every JSON parser
//! accepts.

use crate::protocol::{
    ClientInfo, ConnectResult, Disconnect, ProtocolError, Publication, PushBody, RawJson,
    ReplyBody, SubscribePush, SubscribeResult, Unsubscribe,
};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes `s` as a JSON string literal (quotes included).
pub fn write_json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[run..i]);
        run = i + 1;
        if escape.is_empty() {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        } else {
            out.extend_from_slice(escape);
        }
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        // `n % 10` is < 10, so the narrowing cannot lose information.
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

fn write_i64(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    write_u64(out, n.unsigned_abs());
}

/// Object writer applying Go's omitempty rules field by field. Keys are static ASCII names
/// that need no escaping.
struct Obj<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Obj<'a> {
    fn open(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Obj { out, first: true }
    }

    /// Starts `"key":` and returns the buffer for the value.
    fn key(&mut self, key: &str) -> &mut Vec<u8> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }

    fn str_always(&mut self, key: &str, v: &str) {
        write_json_string(self.key(key), v);
    }

    fn str(&mut self, key: &str, v: &str) {
        if !v.is_empty() {
            self.str_always(key, v);
        }
    }

    fn u64_always(&mut self, key: &str, v: u64) {
        write_u64(self.key(key), v);
    }

    fn u64(&mut self, key: &str, v: u64) {
        if v != 0 {
            self.u64_always(key, v);
        }
    }

    fn i64(&mut self, key: &str, v: i64) {
        if v != 0 {
            write_i64(self.key(key), v);
        }
    }

    fn bool(&mut self, key: &str, v: bool) {
        if v {
            self.key(key).extend_from_slice(b"true");
        }
    }

    fn raw(&mut self, key: &str, v: Option<&RawJson>) {
        if let Some(v) = v {
            if !v.is_empty() {
                self.key(key).extend_from_slice(v.as_bytes());
            }
        }
    }

    fn empty_object(&mut self, key: &str) {
        self.key(key).extend_from_slice(b"{}");
    }

    fn close(self) {
        self.out.push(b'}');
    }
}

fn write_error(out: &mut Vec<u8>, e: &ProtocolError) {
    let mut o = Obj::open(out);
    o.u64("code", u64::from(e.code));
    o.str("message", &e.message);
    o.bool("temporary", e.temporary);
    o.close();
}

fn write_client_info(out: &mut Vec<u8>, info: &ClientInfo) {
    let mut o = Obj::open(out);
    o.str_always("user", &info.user);
    o.str_always("client", &info.client);
    o.raw("conn_info", info.conn_info.as_ref());
    o.raw("chan_info", info.chan_info.as_ref());
    o.close();
}

fn write_publication(out: &mut Vec<u8>, p: &Publication) {
    let mut o = Obj::open(out);
    o.raw("data", Some(&p.data));
    if let Some(info) = &p.info {
        write_client_info(o.key("info"), info);
    }
    o.u64("offset", p.offset);
    if !p.tags.is_empty() {
        let mut t = Obj::open(o.key("tags"));
        for (k, v) in &p.tags {
            t.first_or_comma();
            write_json_string(t.out, k);
            t.out.push(b':');
            write_json_string(t.out, v);
        }
        t.close();
    }
    o.bool("delta", p.delta);
    o.close();
}

impl Obj<'_> {
    /// For maps with dynamic keys: writes the separator, the caller writes key and value.
    fn first_or_comma(&mut self) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
    }
}

fn write_publications(out: &mut Vec<u8>, pubs: &[Publication]) {
    out.push(b'[');
    for (i, p) in pubs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_publication(out, p);
    }
    out.push(b']');
}

fn write_subscribe_result(out: &mut Vec<u8>, r: &SubscribeResult) {
    let mut o = Obj::open(out);
    o.bool("expires", r.expires);
    o.u64("ttl", u64::from(r.ttl));
    o.bool("recoverable", r.recoverable);
    o.str("epoch", &r.epoch);
    if !r.publications.is_empty() {
        write_publications(o.key("publications"), &r.publications);
    }
    o.bool("recovered", r.recovered);
    o.u64("offset", r.offset);
    o.bool("positioned", r.positioned);
    o.raw("data", r.data.as_ref());
    o.bool("was_recovering", r.was_recovering);
    o.bool("delta", r.delta);
    o.close();
}

fn write_subs(o: &mut Obj<'_>, subs: &[(String, SubscribeResult)]) {
    if subs.is_empty() {
        return;
    }
    let mut m = Obj::open(o.key("subs"));
    for (channel, r) in subs {
        m.first_or_comma();
        write_json_string(m.out, channel);
        m.out.push(b':');
        write_subscribe_result(m.out, r);
    }
    m.close();
}

/// `as_push`: the `Connect` push lists `data`/`subs` before `expires`/`ttl` (its protobuf field
/// order differs from ConnectResult, and Go writes fields in that order).
fn write_connect(out: &mut Vec<u8>, r: &ConnectResult, as_push: bool) {
    let mut o = Obj::open(out);
    o.str("client", &r.client);
    o.str("version", &r.version);
    if as_push {
        o.raw("data", r.data.as_ref());
        write_subs(&mut o, &r.subs);
    }
    o.bool("expires", r.expires);
    o.u64("ttl", u64::from(r.ttl));
    if !as_push {
        o.raw("data", r.data.as_ref());
        write_subs(&mut o, &r.subs);
    }
    o.u64("ping", u64::from(r.ping));
    o.bool("pong", r.pong);
    o.str("session", &r.session);
    o.str("node", &r.node);
    o.i64("time", r.time);
    o.close();
}

/// Appends one Reply: `{"id":N,"<kind>":{...}}` (`id` omitted when 0), empty results as `{}`,
/// errors as `{"id":N,"error":{"code":..,"message":..}}`.
pub fn encode_reply(id: u32, body: &ReplyBody, out: &mut Vec<u8>) {
    let mut o = Obj::open(out);
    o.u64("id", u64::from(id));
    match body {
        ReplyBody::Error(e) => write_error(o.key("error"), e),
        ReplyBody::Connect(r) => write_connect(o.key("connect"), r, false),
        ReplyBody::Subscribe(r) => write_subscribe_result(o.key("subscribe"), r),
        ReplyBody::Unsubscribe => o.empty_object("unsubscribe"),
        ReplyBody::Publish => o.empty_object("publish"),
        ReplyBody::Presence(r) => {
            let mut p = Obj::open(o.key("presence"));
            let mut m = Obj::open(p.key("presence"));
            for (client, info) in &r.presence {
                m.first_or_comma();
                write_json_string(m.out, client);
                m.out.push(b':');
                write_client_info(m.out, info);
            }
            m.close();
            p.close();
        }
        ReplyBody::PresenceStats(r) => {
            let mut p = Obj::open(o.key("presence_stats"));
            p.u64_always("num_clients", u64::from(r.num_clients));
            p.u64_always("num_users", u64::from(r.num_users));
            p.close();
        }
        ReplyBody::History(r) => {
            let mut h = Obj::open(o.key("history"));
            write_publications(h.key("publications"), &r.publications);
            h.str_always("epoch", &r.epoch);
            h.u64_always("offset", r.offset);
            h.close();
        }
        ReplyBody::Ping => o.empty_object("ping"),
        ReplyBody::Rpc(r) => {
            let mut p = Obj::open(o.key("rpc"));
            p.raw("data", r.data.as_ref());
            p.close();
        }
        ReplyBody::Refresh(r) => {
            let mut p = Obj::open(o.key("refresh"));
            p.str("client", &r.client);
            p.str("version", &r.version);
            p.bool("expires", r.expires);
            p.u64("ttl", u64::from(r.ttl));
            p.close();
        }
        ReplyBody::SubRefresh(r) => {
            let mut p = Obj::open(o.key("sub_refresh"));
            p.bool("expires", r.expires);
            p.u64("ttl", u64::from(r.ttl));
            p.close();
        }
    }
    o.close();
}

/// Appends only the result object of a reply body: what the server API sends under `"result"`
/// for the methods whose results have the client protocol's shape (history, presence).
pub fn encode_result_object(body: &ReplyBody, out: &mut Vec<u8>) {
    let start = out.len();
    encode_reply(0, body, out);
    // `{"<kind>":<object>}` with no id: keep `<object>` (kind names contain no ':').
    let skip = out[start..].iter().position(|&b| b == b':').map_or(0, |i| i + 1);
    out.truncate(out.len() - 1);
    out.drain(start..start + skip);
}

/// How a push is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushFraming {
    /// Bidirectional transports: wrapped in a Reply, `{"push":{...}}`.
    Reply,
    /// Unidirectional transports: the bare Push object `{...}`.
    Bare,
}

fn write_push_inner(out: &mut Vec<u8>, channel: &str, body: &PushBody) {
    let mut o = Obj::open(out);
    o.str("channel", channel);
    match body {
        PushBody::Publication(p) => write_publication(o.key("pub"), p),
        PushBody::Join(info) => write_info_wrapper(o.key("join"), info),
        PushBody::Leave(info) => write_info_wrapper(o.key("leave"), info),
        PushBody::Unsubscribe(Unsubscribe { code, reason }) => {
            write_code_reason(o.key("unsubscribe"), u64::from(*code), reason);
        }
        PushBody::Message(data) => {
            let mut m = Obj::open(o.key("message"));
            m.raw("data", Some(data));
            m.close();
        }
        PushBody::Subscribe(s) => write_subscribe_push(o.key("subscribe"), s),
        PushBody::Connect(r) => write_connect(o.key("connect"), r, true),
        PushBody::Disconnect(Disconnect { code, reason }) => {
            write_code_reason(o.key("disconnect"), u64::from(*code), reason);
        }
        PushBody::Refresh { expires, ttl } => {
            let mut r = Obj::open(o.key("refresh"));
            r.bool("expires", *expires);
            r.u64("ttl", u64::from(*ttl));
            r.close();
        }
    }
    o.close();
}

fn write_info_wrapper(out: &mut Vec<u8>, info: &ClientInfo) {
    let mut o = Obj::open(out);
    write_client_info(o.key("info"), info);
    o.close();
}

fn write_code_reason(out: &mut Vec<u8>, code: u64, reason: &str) {
    let mut o = Obj::open(out);
    o.u64("code", code);
    o.str("reason", reason);
    o.close();
}

fn write_subscribe_push(out: &mut Vec<u8>, s: &SubscribePush) {
    let mut o = Obj::open(out);
    o.bool("recoverable", s.recoverable);
    o.str("epoch", &s.epoch);
    o.u64("offset", s.offset);
    o.bool("positioned", s.positioned);
    o.raw("data", s.data.as_ref());
    o.close();
}

/// Appends one push for `channel` (`""` = no channel, e.g. connect/disconnect pushes).
pub fn encode_push(channel: &str, body: &PushBody, framing: PushFraming, out: &mut Vec<u8>) {
    match framing {
        PushFraming::Reply => {
            out.extend_from_slice(b"{\"push\":");
            write_push_inner(out, channel, body);
            out.push(b'}');
        }
        PushFraming::Bare => write_push_inner(out, channel, body),
    }
}

/// Appends `{"push":{"channel":..,"pub":{..}}}` (hot path: one call per fan-out key).
pub fn encode_publication_push(channel: &str, p: &Publication, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"push\":{");
    if !channel.is_empty() {
        out.extend_from_slice(b"\"channel\":");
        write_json_string(out, channel);
        out.push(b',');
    }
    out.extend_from_slice(b"\"pub\":");
    write_publication(out, p);
    out.extend_from_slice(b"}}");
}

/// Appends `{"push":{"channel":..,"unsubscribe":{"code":..,"reason":..}}}`.
pub fn encode_unsubscribe_push(channel: &str, code: u32, reason: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"push\":");
    let mut o = Obj::open(out);
    o.str("channel", channel);
    write_code_reason(o.key("unsubscribe"), u64::from(code), reason);
    o.close();
    out.push(b'}');
}

/// Appends `{"push":{"channel":..,"join":{"info":{..}}}}`.
pub fn encode_join_push(channel: &str, info: &ClientInfo, out: &mut Vec<u8>) {
    encode_info_push(channel, "join", info, out);
}

/// Appends `{"push":{"channel":..,"leave":{"info":{..}}}}`.
pub fn encode_leave_push(channel: &str, info: &ClientInfo, out: &mut Vec<u8>) {
    encode_info_push(channel, "leave", info, out);
}

fn encode_info_push(channel: &str, kind: &str, info: &ClientInfo, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"push\":");
    let mut o = Obj::open(out);
    o.str("channel", channel);
    write_info_wrapper(o.key(kind), info);
    o.close();
    out.push(b'}');
}

/// Appends `{"push":{"disconnect":{"code":..,"reason":..}}}` (non-WebSocket transports).
pub fn encode_disconnect_push(d: &Disconnect, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"push\":{\"disconnect\":");
    write_code_reason(out, u64::from(d.code), &d.reason);
    out.extend_from_slice(b"}}");
}
