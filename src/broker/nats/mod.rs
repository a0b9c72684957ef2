//! NATS broker (`broker.enabled: true`, `broker.type: nats`): publications, joins and leaves
//! travel between nodes as protobuf `Push` messages on `<prefix>.client.<channel>` (spec §10.3);
//! node announcements and operations on `<prefix>.control`. NATS keeps no history, so channels
//! with history get "not available" (108), as in Centrifugo; presence stays in memory on each
//! node.
//!
//! Owns, per shard: the protocol state of one NATS connection, without the socket: encoded
//! operations not yet written, the subscriptions (subject id per channel), and which channels
//! wait for the server to confirm their `SUB`. NATS does not acknowledge a `SUB`; a `PING`
//! written after it is answered with a `PONG` only once the server has processed everything
//! before, so each `PONG` confirms the subscriptions sent ahead of its `PING`.
//!
//! Must not: touch connections or deliver anything (the home shard emits what arrives), or
//! wait: a publish on a connection that is down fails at once.

pub mod io;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};

use crate::broker::stream::{HistoryError, HistoryPolicy, HistoryQuery};
use crate::broker::{Event, Gate, Outbox, PublishCall, Reply, ReplyTo, SubscribeCall};
use crate::protocol::protobuf::{self, BrokerPush};
use crate::protocol::{ClientInfo, Publication};
use crate::shard::id::ShardId;

/// The broker settings every shard shares.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Server host.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// `user:password@` from the URL, if any.
    pub user: String,
    /// Password from the URL.
    pub password: String,
    /// Subject prefix.
    pub prefix: String,
    /// Time to connect.
    pub dial_timeout: Duration,
    /// Time a write may take.
    pub write_timeout: Duration,
    /// TLS (`tls://` URL or `broker.nats.tls.enabled`): the connection is upgraded after the
    /// server's `INFO`, as NATS clients do.
    pub tls: Option<crate::broker::socket::ClientTls>,
}

impl Settings {
    /// Parses `broker.nats` (`url`: `nats://[user:password@]host[:port]` or `tls://…`, and the
    /// TLS object, whose errors name their key: `broker.nats.tls.server_ca_pem: …`).
    pub fn from_config(cfg: &crate::config::Nats) -> Result<Settings, String> {
        let (rest, tls_url) = match cfg.url.split_once("://") {
            Some(("nats", rest)) => (rest, false),
            Some(("tls", rest)) => (rest, true),
            _ => return Err(format!("{:?}: only nats:// and tls:// URLs are supported", cfg.url)),
        };
        let (auth, hostport) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        let (user, password) = match auth.map(|a| a.split_once(':').unwrap_or((a, ""))) {
            Some((u, p)) => (u.to_owned(), p.to_owned()),
            None => (String::new(), String::new()),
        };
        let hostport = hostport.trim_end_matches('/');
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| format!("{:?}: bad port", cfg.url))?),
            None => (hostport, 4222),
        };
        if host.is_empty() {
            return Err(format!("{:?}: no host", cfg.url));
        }
        let tls = if tls_url || cfg.tls.enabled {
            Some(crate::broker::socket::ClientTls::new("broker.nats.tls", &cfg.tls)?)
        } else {
            None
        };
        Ok(Settings {
            tls,
            host: host.to_owned(),
            port,
            user,
            password,
            prefix: cfg.prefix.clone(),
            dial_timeout: cfg.dial_timeout,
            write_timeout: cfg.write_timeout,
        })
    }

    /// The subject of a channel.
    pub fn client_subject(&self, channel: &str) -> String {
        format!("{}.client.{channel}", self.prefix)
    }

    /// The node-to-node subject.
    pub fn control_subject(&self) -> String {
        format!("{}.control", self.prefix)
    }

    /// The subject of one node (survey answers).
    pub fn node_subject(&self, uid: &str) -> String {
        format!("{}.node.{uid}", self.prefix)
    }
}

/// NATS subjects cannot hold these; such channels are refused (no `allow_wildcards`).
pub fn supported_channel(channel: &str) -> bool {
    !channel.is_empty() && !channel.contains(['*', '>', ' ', '\t', '\r', '\n'])
}

/// One subscription.
#[derive(Debug, Default)]
pub struct SubEntry {
    /// Subject id of the live `SUB` (0 = none sent on this connection).
    pub sid: u64,
    /// The server confirmed it (a `PONG` after it came back).
    pub active: bool,
    /// Interest acknowledgements waiting for the confirmation: (shard, generation).
    pub acks: Vec<(ShardId, u64)>,
    /// Subscribe calls held at the gate until the confirmation.
    pub held: Vec<(ReplyTo, SubscribeCall)>,
}

/// What a `PONG` releases: interest acknowledgements (shard, generation, channel) and the
/// subscribe calls held at the gate.
#[derive(Debug, Default)]
pub struct Released {
    /// Interest acknowledgements to send.
    pub acks: Vec<(ShardId, u64, Arc<str>)>,
    /// Subscribe calls to go on.
    pub calls: Vec<(ReplyTo, SubscribeCall)>,
}

/// A shard's NATS connection state.
#[derive(Debug)]
pub struct Nats {
    /// Shared settings.
    pub settings: Arc<Settings>,
    /// Encoded operations not yet written.
    pub out: BytesMut,
    /// Connected and handshaken.
    pub up: bool,
    /// The writer task waiting for work.
    pub waker: Option<Waker>,
    /// Channels with interest.
    pub subs: HashMap<Arc<str>, SubEntry>,
    /// Subject id → channel (`None` = the control subject).
    by_sid: HashMap<u64, Option<Arc<str>>>,
    /// For each `PING` sent, the channels its `PONG` confirms.
    pings: VecDeque<Vec<Arc<str>>>,
    next_sid: u64,
    /// Whether this shard listens on the control subject (shard 0).
    pub control: bool,
}

/// What a `MSG` carried.
#[derive(Debug)]
pub enum Incoming {
    /// An event of a channel.
    Event(Arc<str>, Event),
    /// A control message.
    Control(Bytes),
    /// Nothing to act on.
    Other,
}

impl Nats {
    /// A shard's broker before it connects.
    pub fn new(settings: Arc<Settings>, control: bool) -> Nats {
        Nats {
            settings,
            out: BytesMut::new(),
            up: false,
            waker: None,
            subs: HashMap::new(),
            by_sid: HashMap::new(),
            pings: VecDeque::new(),
            next_sid: 0,
            control,
        }
    }

    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    fn publish_raw(&mut self, subject: &str, payload: &[u8]) -> bool {
        if !self.up {
            return false;
        }
        self.out.extend_from_slice(format!("PUB {subject} {}\r\n", payload.len()).as_bytes());
        self.out.extend_from_slice(payload);
        self.out.extend_from_slice(b"\r\n");
        self.wake();
        true
    }

    /// Publishes a publication; `false` when the connection is down.
    pub fn publish(&mut self, channel: &str, p: &Publication, now_ms: u64) -> bool {
        let time = i64::try_from(now_ms).unwrap_or(i64::MAX);
        let payload = protobuf::encode_broker_push_pub(channel, p, time);
        let subject = self.settings.client_subject(channel);
        self.publish_raw(&subject, &payload)
    }

    /// Publishes a join or leave.
    pub fn publish_presence_event(&mut self, channel: &str, info: &ClientInfo, join: bool) {
        let payload = protobuf::encode_broker_push_presence(channel, info, join);
        let subject = self.settings.client_subject(channel);
        self.publish_raw(&subject, &payload);
    }

    /// Publishes a control message.
    pub fn publish_control(&mut self, data: &[u8]) {
        let subject = self.settings.control_subject();
        self.publish_raw(&subject, data);
    }

    /// Publishes a control message to one node.
    pub fn publish_to_node(&mut self, uid: &str, data: &[u8]) {
        let subject = self.settings.node_subject(uid);
        self.publish_raw(&subject, data);
    }

    fn sub(&mut self, subject: &str, channel: Option<Arc<str>>) -> u64 {
        self.next_sid += 1;
        let sid = self.next_sid;
        self.out.extend_from_slice(format!("SUB {subject} {sid}\r\n").as_bytes());
        self.by_sid.insert(sid, channel);
        sid
    }

    /// The channel gained interest. Returns whether its messages already flow (acks can go
    /// out now); otherwise `ack` waits for the confirmation.
    pub fn want(&mut self, channel: &Arc<str>, ack: Option<(ShardId, u64)>) -> bool {
        if let Some(e) = self.subs.get_mut(channel) {
            if e.active && self.up {
                return true;
            }
            e.acks.extend(ack);
            return false;
        }
        let mut e = SubEntry::default();
        e.acks.extend(ack);
        if !self.up {
            // Subscribed (and acknowledged) once the connection is back.
            self.subs.insert(Arc::clone(channel), e);
            return false;
        }
        let subject = self.settings.client_subject(channel);
        e.sid = self.sub(&subject, Some(Arc::clone(channel)));
        self.subs.insert(Arc::clone(channel), e);
        self.out.extend_from_slice(b"PING\r\n");
        self.pings.push_back(vec![Arc::clone(channel)]);
        self.wake();
        false
    }

    /// The channel lost its last interest: returns the subscribe calls it still held (their
    /// connections are gone).
    pub fn unwant(&mut self, channel: &str) -> Vec<(ReplyTo, SubscribeCall)> {
        let Some(e) = self.subs.remove(channel) else { return Vec::new() };
        if e.sid != 0 {
            self.by_sid.remove(&e.sid);
            if self.up {
                self.out.extend_from_slice(format!("UNSUB {}\r\n", e.sid).as_bytes());
                self.wake();
            }
        }
        e.held
    }

    /// The connection is (again) up: subscribe control (shard 0) and every wanted channel,
    /// then one `PING` to confirm them all.
    pub fn resubscribe(&mut self) {
        self.up = true;
        self.by_sid.clear();
        self.pings.clear();
        if self.control {
            let subject = self.settings.control_subject();
            self.sub(&subject, None);
            let own = self.settings.node_subject(&crate::node::get().uid);
            self.sub(&own, None);
        }
        let channels: Vec<Arc<str>> = self.subs.keys().cloned().collect();
        for channel in &channels {
            let subject = self.settings.client_subject(channel);
            let sid = self.sub(&subject, Some(Arc::clone(channel)));
            if let Some(e) = self.subs.get_mut(channel) {
                e.sid = sid;
                e.active = false;
            }
        }
        self.out.extend_from_slice(b"PING\r\n");
        self.pings.push_back(channels);
        self.wake();
    }

    /// A `PONG`: the subscriptions sent before its `PING` are in place.
    pub fn pong(&mut self) -> Released {
        let mut released = Released::default();
        for channel in self.pings.pop_front().unwrap_or_default() {
            if let Some(e) = self.subs.get_mut(&channel) {
                e.active = true;
                let acks = e.acks.drain(..).map(|(s, g)| (s, g, Arc::clone(&channel)));
                released.acks.extend(acks);
                released.calls.append(&mut e.held);
            }
        }
        released
    }

    /// The server's `PING`: answer it.
    pub fn ping(&mut self) {
        self.out.extend_from_slice(b"PONG\r\n");
        self.wake();
    }

    /// The connection broke: every subscription is redone on reconnect, and waiting
    /// acknowledgements go out once the server confirms it.
    pub fn down(&mut self) {
        self.up = false;
        self.out.clear();
        self.pings.clear();
        for e in self.subs.values_mut() {
            e.sid = 0;
            e.active = false;
        }
    }

    /// A `MSG` on subject id `sid`.
    pub fn message(&self, sid: u64, payload: Bytes) -> Incoming {
        match self.by_sid.get(&sid) {
            Some(None) => Incoming::Control(payload),
            Some(Some(channel)) => match protobuf::decode_broker_push(&payload) {
                Ok(Some((_, BrokerPush::Pub(p)))) => {
                    Incoming::Event(Arc::clone(channel), Event::Pub(Arc::new(p)))
                }
                Ok(Some((_, BrokerPush::Join(i)))) => {
                    Incoming::Event(Arc::clone(channel), Event::Join(Arc::new(i)))
                }
                Ok(Some((_, BrokerPush::Leave(i)))) => {
                    Incoming::Event(Arc::clone(channel), Event::Leave(Arc::new(i)))
                }
                Ok(None) => Incoming::Other,
                Err(_) => {
                    tracing::warn!(channel = %channel, "undecodable message on a NATS subject");
                    Incoming::Other
                }
            },
            None => Incoming::Other,
        }
    }
}

/// A protocol operation from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Op {
    /// `INFO {...}`, with what it says about TLS.
    Info {
        /// The server accepts only TLS connections.
        tls_required: bool,
        /// The server accepts TLS connections.
        tls_available: bool,
    },
    /// `MSG <subject> <sid> [reply] <n>` and its payload.
    Msg {
        /// Subject id.
        sid: u64,
        /// Payload.
        payload: Bytes,
    },
    /// `PING`.
    Ping,
    /// `PONG`.
    Pong,
    /// `+OK`.
    Ok,
    /// `-ERR '...'`.
    Err(String),
}

/// Why the server's bytes could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("bad NATS protocol line: {0}")]
pub struct ParseError(String);

/// Longest control line accepted (INFO lines carry a JSON object).
const MAX_LINE: usize = 64 << 10;

/// Takes one operation off the front of `buf`, `None` when more bytes are needed.
pub fn parse(buf: &mut BytesMut) -> Result<Option<Op>, ParseError> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() > MAX_LINE {
            return Err(ParseError("line too long".into()));
        }
        return Ok(None);
    };
    let line = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut words = line.split_ascii_whitespace();
    let verb = words.next().unwrap_or("").to_ascii_uppercase();
    let op = match verb.as_str() {
        "MSG" => {
            let args: Vec<&str> = words.collect();
            let ([_, sid, n] | [_, sid, _, n]) = args.as_slice() else {
                return Err(ParseError(line));
            };
            let sid: u64 = sid.parse().map_err(|_| ParseError(line.clone()))?;
            let n: usize = n.parse().map_err(|_| ParseError(line.clone()))?;
            // The size comes from the server: one near usize::MAX must not wrap the sum (it
            // would then pass the check, and `split_to` would panic).
            let Some(total) = n.checked_add(end + 4) else {
                return Err(ParseError(line));
            };
            if buf.len() < total {
                return Ok(None);
            }
            buf.advance(end + 2);
            let payload = buf.split_to(n).freeze();
            buf.advance(2);
            return Ok(Some(Op::Msg { sid, payload }));
        }
        "INFO" => {
            // Only the TLS flags matter here; an INFO that is not JSON offers no TLS.
            let info: serde_json::Value =
                serde_json::from_str(line[4..].trim()).unwrap_or_default();
            let flag = |name: &str| info.get(name).and_then(serde_json::Value::as_bool);
            let tls_required = flag("tls_required").unwrap_or(false);
            Op::Info {
                tls_required,
                tls_available: tls_required || flag("tls_available") == Some(true),
            }
        }
        "PING" => Op::Ping,
        "PONG" => Op::Pong,
        "+OK" => Op::Ok,
        "-ERR" => Op::Err(line[4..].trim().trim_matches('\'').to_owned()),
        _ => return Err(ParseError(line)),
    };
    buf.advance(end + 2);
    Ok(Some(op))
}

impl crate::broker::Broker for Nats {
    fn publish(&mut self, p: PublishCall, to: ReplyTo, now_ms: u64, out: &mut Outbox) {
        // NATS confirms nothing per message (as in Centrifugo): written is published.
        let ok = supported_channel(&p.channel)
            && Nats::publish(self, &p.channel, &p.publication, now_ms);
        out.answer(to, if ok { Reply::Published(None) } else { Reply::Failed });
    }

    fn publish_presence_event(
        &mut self,
        channel: &Arc<str>,
        info: Arc<ClientInfo>,
        join: bool,
        _: &mut Outbox,
    ) {
        Nats::publish_presence_event(self, channel, &info, join);
    }

    fn history(
        &mut self,
        _: &Arc<str>,
        _: HistoryPolicy,
        _: HistoryQuery,
        to: ReplyTo,
        _: u64,
        out: &mut Outbox,
    ) {
        out.answer(to, Reply::History(Err(HistoryError::NotAvailable)));
    }

    fn remove_history(&mut self, _: &str, to: ReplyTo, out: &mut Outbox) {
        out.answer(to, Reply::Failed);
    }

    fn top(&mut self, _: &str, to: ReplyTo, out: &mut Outbox) {
        out.answer(to, Reply::Position(None));
    }

    fn gate(&mut self, sub: SubscribeCall, to: ReplyTo) -> Gate {
        if sub.positioned() {
            // Positioning needs a stream the NATS broker does not keep.
            return Gate::Refused;
        }
        if !supported_channel(&sub.channel) {
            // Never subscribed (see `want`): nothing to wait for.
            return Gate::Open(sub);
        }
        let up = self.up;
        match self.subs.get_mut(&sub.channel) {
            Some(e) if e.active && up => Gate::Open(sub),
            // Held across a reconnect too: the resubscription's `PONG` releases it, as it
            // does the interest acknowledgements.
            Some(e) => {
                e.held.push((to, sub));
                Gate::Held
            }
            // Interest precedes the call on the lane: without it the channel lost its last
            // subscriber meanwhile and the answer no longer matters.
            None => Gate::Refused,
        }
    }

    fn read_position(
        &mut self,
        _: &Arc<str>,
        _: HistoryPolicy,
        _: Option<HistoryQuery>,
        to: ReplyTo,
        _: u64,
        out: &mut Outbox,
    ) {
        out.answer(to, Reply::Failed);
    }

    fn want(&mut self, channel: &Arc<str>, ack: Option<(ShardId, u64)>) -> bool {
        // A wildcard subject would bring other channels' messages: never subscribed.
        !supported_channel(channel) || Nats::want(self, channel, ack)
    }

    fn unwant(&mut self, channel: &str, out: &mut Outbox) {
        for (to, _) in Nats::unwant(self, channel) {
            out.answer(to, Reply::Failed);
        }
    }

    fn publish_control(&mut self, data: &[u8]) {
        Nats::publish_control(self, data);
    }

    fn publish_to_node(&mut self, uid: &str, data: &[u8]) {
        Nats::publish_to_node(self, uid, data);
    }

    fn connects_nodes(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::RawJson;

    fn settings() -> Arc<Settings> {
        let cfg = crate::config::Nats::default();
        Arc::new(Settings::from_config(&cfg).unwrap())
    }

    #[test]
    fn urls_parse() {
        let mut cfg = crate::config::Nats::default();
        let s = Settings::from_config(&cfg).unwrap();
        assert_eq!((s.host.as_str(), s.port), ("localhost", 4222));
        cfg.url = "nats://u:p@10.1.1.1:4333".into();
        let s = Settings::from_config(&cfg).unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.user.as_str(), s.password.as_str()),
            ("10.1.1.1", 4333, "u", "p")
        );
        assert!(s.tls.is_none());
        cfg.url = "tls://x:1".into();
        let s = Settings::from_config(&cfg).unwrap();
        assert!(s.tls.is_some() && s.port == 1, "tls:// means TLS");
        cfg.url = "nats://x:1".into();
        cfg.tls.enabled = true;
        assert!(Settings::from_config(&cfg).unwrap().tls.is_some());
        cfg.tls.server_ca_pem = "/nonexistent/ca.pem".into();
        let e = Settings::from_config(&cfg).unwrap_err();
        assert!(e.starts_with("broker.nats.tls.server_ca_pem: "), "{e}");
        cfg.url = "http://x:1".into();
        assert!(Settings::from_config(&cfg).is_err());
    }

    #[test]
    fn operations_parse_across_partial_reads() {
        let mut buf =
            BytesMut::from(&b"INFO {\"server_id\":\"x\"}\r\nPING\r\nMSG a.b 7 5\r\nhel"[..]);
        let info = Op::Info { tls_required: false, tls_available: false };
        assert_eq!(parse(&mut buf), Ok(Some(info)));
        let mut tls = BytesMut::from(&b"INFO {\"tls_required\":true}\r\n"[..]);
        let info = Op::Info { tls_required: true, tls_available: true };
        assert_eq!(parse(&mut tls), Ok(Some(info)));
        assert_eq!(parse(&mut buf), Ok(Some(Op::Ping)));
        assert_eq!(parse(&mut buf), Ok(None));
        buf.extend_from_slice(b"lo\r\nMSG a.b 7 r.x 0\r\n\r\n-ERR 'Stale Connection'\r\n");
        assert_eq!(
            parse(&mut buf),
            Ok(Some(Op::Msg { sid: 7, payload: Bytes::from_static(b"hello") }))
        );
        assert_eq!(parse(&mut buf), Ok(Some(Op::Msg { sid: 7, payload: Bytes::new() })));
        assert_eq!(parse(&mut buf), Ok(Some(Op::Err("Stale Connection".into()))));
        assert!(buf.is_empty());
        let mut bad = BytesMut::from(&b"HELLO\r\n"[..]);
        assert!(parse(&mut bad).is_err());
    }

    #[test]
    fn a_payload_size_near_usize_max_is_an_error_not_a_panic() {
        // Found by fuzz/ (nats_protocol): `end + 2 + n + 2` overflowed.
        let mut buf = BytesMut::from(&b"MSG a 1 18446744073709551615\r\n"[..]);
        assert!(parse(&mut buf).is_err());
        let mut buf = BytesMut::from(&b"MSG a 1 r 18446744073709551612\r\nxy"[..]);
        assert!(parse(&mut buf).is_err());
    }

    #[test]
    fn subscriptions_are_confirmed_by_the_pong_after_them() {
        let mut n = Nats::new(settings(), true);
        let ch: Arc<str> = Arc::from("news");
        assert!(!n.want(&ch, None), "down: confirmed only after the reconnect");
        n.resubscribe();
        let sent = String::from_utf8_lossy(&n.out).into_owned();
        let own = format!("SUB centrifugo.node.{} 2\r\n", crate::node::get().uid);
        let expected =
            format!("SUB centrifugo.control 1\r\n{own}SUB centrifugo.client.news 3\r\nPING\r\n");
        assert!(sent.starts_with(&expected), "{sent}");
        let other: Arc<str> = Arc::from("other");
        assert!(!n.want(&other, Some((ShardId(1), 5))));
        assert!(!n.want(&other, Some((ShardId(2), 6))), "still waiting");
        assert!(n.pong().acks.is_empty(), "the first PONG confirms only news");
        let released = n.pong();
        assert_eq!(released.acks.len(), 2);
        assert!(n.want(&other, None), "active now");
        n.out.clear();
        n.unwant("other");
        assert_eq!(&n.out[..], b"UNSUB 4\r\n");
    }

    #[test]
    fn a_subscribe_is_answered_only_once_the_server_confirmed_the_sub() {
        use crate::broker::Broker;
        use crate::shard::id::Lane;
        let call = |channel: &str| SubscribeCall {
            channel: Arc::from(channel),
            info: Arc::new(ClientInfo::default()),
            presence: true,
            join: true,
            position: None,
        };
        let to = |req| ReplyTo { origin: ShardId(1), req, lane: Lane::Main };
        let mut n = Nats::new(settings(), true);
        n.resubscribe();
        n.pong();
        let ch: Arc<str> = Arc::from("room");
        assert!(!n.want(&ch, Some((ShardId(1), 1))));
        assert!(matches!(n.gate(call("room"), to(7)), Gate::Held), "SUB not confirmed yet");
        let released = n.pong();
        assert_eq!(released.acks.len(), 1);
        assert_eq!(released.calls.len(), 1, "the held call goes on with the acknowledgement");
        assert_eq!(released.calls[0].0, to(7));
        assert!(matches!(n.gate(call("room"), to(8)), Gate::Open(_)), "active now");
        assert!(matches!(n.gate(call("gone"), to(9)), Gate::Refused), "no interest");

        n.down();
        assert!(matches!(n.gate(call("room"), to(10)), Gate::Held), "held across a reconnect");
        let mut out = Outbox::default();
        Broker::unwant(&mut n, "room", &mut out);
        assert!(
            matches!(out.pop(), Some(crate::broker::Effect::Answer(t, Reply::Failed)) if t == to(10)),
            "a call held for a channel without subscribers is failed, not forgotten"
        );
    }

    #[test]
    fn messages_become_events_of_their_channel() {
        let mut n = Nats::new(settings(), true);
        n.resubscribe();
        let ch: Arc<str> = Arc::from("c");
        n.want(&ch, None);
        let p = Publication {
            data: RawJson::from_value_str("{\"a\":1}").unwrap(),
            ..Default::default()
        };
        let payload = Bytes::from(protobuf::encode_broker_push_pub("c", &p, 1));
        assert!(
            matches!(n.message(3, payload), Incoming::Event(c, Event::Pub(p)) if &*c == "c" && p.data.as_bytes() == b"{\"a\":1}")
        );
        let info =
            ClientInfo { user: "u".into(), client: "x".into(), conn_info: None, chan_info: None };
        let payload = Bytes::from(protobuf::encode_broker_push_presence("c", &info, false));
        assert!(matches!(n.message(3, payload), Incoming::Event(_, Event::Leave(_))));
        assert!(matches!(n.message(1, Bytes::from_static(b"ctl")), Incoming::Control(_)));
        assert!(matches!(n.message(99, Bytes::new()), Incoming::Other));
        assert!(!supported_channel("a.*") && !supported_channel("a>") && supported_channel("a:b"));
    }

    #[test]
    fn publishing_fails_while_down() {
        let mut n = Nats::new(settings(), false);
        assert!(!n.publish("c", &Publication::default(), 0));
        n.resubscribe();
        n.out.clear();
        assert!(n.publish("c", &Publication::default(), 0));
        assert!(String::from_utf8_lossy(&n.out).starts_with("PUB centrifugo.client.c "));
        n.down();
        assert!(!n.publish("c", &Publication::default(), 0));
    }
}
