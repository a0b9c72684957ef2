//! Client sessions: the per-connection protocol state machine and outbound queue.
//!
//! Owns: a connection's session (connect state, user, subscriptions), its bounded outbound queue
//! and its timers (stale, ping, pong, expiry). Handlers are methods on `Shard` because a command
//! touches the connection and the shard's hub together; they run to completion without I/O and
//! leave their effects in queues. The socket loops in `server` do the reading and writing.
//!
//! Must not: perform I/O, block, or keep a reference into another shard's state.

mod connect;
pub mod delta;
pub mod emulation;
pub mod query;
mod server_ops;
pub mod subscribe;

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::auth::{self, Expiry, TokenError};
use crate::broker::stream::HistoryPolicy;
use crate::broker::PublishCall;
use crate::broker::Reply;
use crate::channel::{self, ChannelError, Subject};
use crate::hub::{Begin, ConnKey};
use crate::protocol::codes;
use crate::protocol::{
    json, protobuf, ClientInfo, Command, Disconnect, ProtocolError, Publication, PublishRequest,
    PushBody, RefreshResult, ReplyBody, Request, SubscribeResult,
};
use crate::shard::id::home_of;
use crate::shard::id::{Lane, RequestId};
use crate::shard::msg::{Answer, Call, ShardMsg};
use crate::shard::{after, Shard};
use crate::transport::websocket::{self, OpCode};
use crate::transport::{stream, Encoding, Transport};
pub use subscribe::{Sub, SubFlags};

/// Version string in `ConnectResult.version`.
pub const SERVER_VERSION: &str = concat!("rotor ", env!("CARGO_PKG_VERSION"));

/// Room reserved in front of an encoded payload for the largest WebSocket header, so a frame is
/// built without copying the payload.
const HEADER_ROOM: usize = 10;

/// One item of a connection's outbound queue.
#[derive(Debug, Clone)]
pub enum Out {
    /// A complete text/binary data frame whose payload starts at `header`; consecutive data
    /// items are merged into one frame at flush time (text newline-joined, binary concatenated:
    /// Protobuf messages are length-delimited already).
    Data {
        /// Whole frame, shared by every subscriber that gets the same bytes.
        frame: Bytes,
        /// Length of the frame header.
        header: u8,
    },
    /// A control frame (close, pong) written as is.
    Control(Bytes),
}

impl Out {
    /// Encodes a JSON payload straight into a text frame.
    pub fn json(encode: impl FnOnce(&mut Vec<u8>)) -> Out {
        Out::frame(OpCode::Text, encode)
    }

    /// Encodes delimited Protobuf messages straight into a binary frame.
    pub fn binary(encode: impl FnOnce(&mut Vec<u8>)) -> Out {
        Out::frame(OpCode::Binary, encode)
    }

    fn frame(op: OpCode, encode: impl FnOnce(&mut Vec<u8>)) -> Out {
        let mut buf = vec![0u8; HEADER_ROOM];
        encode(&mut buf);
        let len = buf.len() - HEADER_ROOM;
        let header = websocket::header_len(len);
        let mut head = Vec::with_capacity(header);
        websocket::write_header(&mut head, op, len);
        let start = HEADER_ROOM - header;
        buf[start..HEADER_ROOM].copy_from_slice(&head);
        let frame = Bytes::from(buf).slice(start..);
        Out::Data { frame, header: header as u8 }
    }

    fn len(&self) -> usize {
        match self {
            Out::Data { frame, .. } => frame.len(),
            Out::Control(b) => b.len(),
        }
    }
}

/// What a writer flushes in one write.
#[derive(Debug)]
pub enum Batch {
    /// A single queued frame, written without copying.
    One(Bytes),
    /// Several frames joined into one buffer.
    Many(Vec<u8>),
}

/// Where a connection is in its life.
#[derive(Debug)]
pub enum State {
    /// Transport open, waiting for `connect`.
    Connecting,
    /// Authenticated.
    Connected(Session),
}

/// An authenticated session.
#[derive(Debug)]
pub struct Session {
    /// Client id sent in `ConnectResult.client` (a UUID kept in binary: 16 bytes inline
    /// instead of a 36-character string on the heap for every connection).
    pub client: uuid::Uuid,
    /// User id (empty = anonymous).
    pub user: Arc<str>,
    /// `info` claim, attached to the client's publications.
    pub conn_info: Option<crate::protocol::RawJson>,
    /// Channels this connection is subscribed to.
    /// A list, not a set: most connections hold one or a few channels, a set allocates buckets
    /// even for one, and `client.channel_limit` (128) bounds the linear search.
    pub subs: Vec<Sub>,
    /// Unix seconds when the connection expires, if it does.
    pub expire_at: Option<i64>,
    /// The user's home shard counts this connection (`client.user_connection_limit`).
    pub counted: bool,
    /// Fingerprint of the token's server-side channel set (`channels`/`subs`); a refresh token
    /// with another set closes the connection with 3010 so it reconnects with the new set.
    pub token_channels: u64,
}

impl Session {
    /// The subscription to `channel`, if any.
    pub fn sub(&self, channel: &str) -> Option<&Sub> {
        self.subs.iter().find(|s| *s.channel == *channel)
    }

    /// Whether the connection is subscribed to `channel`.
    pub fn has_sub(&self, channel: &str) -> bool {
        self.sub(channel).is_some()
    }

    /// Adds a subscription. Capacity grows 1, 2, 4, … instead of `Vec`'s first jump to 4:
    /// most connections hold one channel, and idle memory per connection is a target.
    pub fn push_sub(&mut self, sub: Sub) {
        if self.subs.len() == self.subs.capacity() {
            self.subs.reserve_exact(self.subs.len().max(1));
        }
        self.subs.push(sub);
    }

    /// Removes and returns the subscription to `channel`.
    pub fn remove_sub(&mut self, channel: &str) -> Option<Sub> {
        let i = self.subs.iter().position(|s| *s.channel == *channel)?;
        Some(self.subs.swap_remove(i))
    }

    /// This client as presence and join/leave show it, with a subscription's channel info.
    pub fn info(&self, chan_info: Option<crate::protocol::RawJson>) -> ClientInfo {
        ClientInfo {
            user: self.user.to_string(),
            client: self.client.to_string(),
            conn_info: self.conn_info.clone(),
            chan_info,
        }
    }
}

/// A connection owned by this shard.
#[derive(Debug)]
pub struct Conn {
    /// Slot generation (see [`ConnKey`]).
    pub generation: u32,
    /// How the client is reached.
    pub transport: Transport,
    /// The connection speaks Protobuf (binary frames) instead of JSON.
    pub protobuf: bool,
    /// Protocol state.
    pub state: State,
    /// Frames waiting for the writer.
    pub queue: VecDeque<Out>,
    /// Bytes in `queue`, bounded by `client.queue_max_size`.
    pub queued_bytes: usize,
    /// The writer task, parked while the queue is empty.
    pub writer: Option<Waker>,
    /// The reader task, parked until the connection closes.
    pub reader: Option<Waker>,
    /// Set once the server decided to close; the close frame is the last queued item.
    pub closing: Option<Disconnect>,
    /// A ping was sent and its pong has not arrived.
    pub awaiting_pong: bool,
    /// The reader task has finished; the writer stops once the queue is empty.
    pub reading_done: bool,
}

impl Conn {
    /// A fresh connection waiting for `connect`.
    pub fn new(generation: u32, transport: Transport, protobuf: bool) -> Conn {
        Conn {
            generation,
            transport,
            protobuf,
            state: State::Connecting,
            queue: VecDeque::new(),
            queued_bytes: 0,
            writer: None,
            reader: None,
            closing: None,
            awaiting_pong: false,
            reading_done: false,
        }
    }

    /// The bytes this connection's messages are encoded as.
    pub fn encoding(&self) -> Encoding {
        Encoding::of(self.transport, self.protobuf)
    }

    /// WebSocket ping frames instead of protocol pings.
    pub fn native_ping(&self) -> bool {
        matches!(self.transport, Transport::WebSocket { native_ping: true })
    }

    /// Takes everything queued as one write. Consecutive data frames become a single frame with
    /// newline-joined payloads (what SDKs expect from a batching server).
    pub fn take_batch(&mut self) -> Option<Batch> {
        match self.transport {
            Transport::WebSocket { .. } | Transport::UniWebSocket { join: true } => {
                self.take_ws_batch()
            }
            Transport::UniWebSocket { join: false } => {
                // One message per push: the queued frames are written back to back.
                if self.queue.len() <= 1 {
                    return self.take_ws_batch();
                }
                let mut buf = Vec::with_capacity(self.queued_bytes);
                for out in self.queue.drain(..) {
                    match out {
                        Out::Data { frame, .. } | Out::Control(frame) => {
                            buf.extend_from_slice(&frame);
                        }
                    }
                }
                self.queued_bytes = 0;
                Some(Batch::Many(buf))
            }
            _ => self.take_stream_batch(),
        }
    }

    /// A streaming response's batch: the queued messages framed for the transport in one chunk
    /// (control items, the final chunk, are written as they are).
    fn take_stream_batch(&mut self) -> Option<Batch> {
        if self.queue.is_empty() {
            return None;
        }
        let mut body = Vec::with_capacity(self.queued_bytes + 8 * self.queue.len());
        let mut buf = Vec::with_capacity(body.capacity() + 16);
        for out in self.queue.drain(..) {
            match out {
                Out::Data { frame, header } => stream::append_message(
                    self.transport,
                    self.protobuf,
                    &frame[usize::from(header)..],
                    &mut body,
                ),
                Out::Control(b) => {
                    stream::append_chunk(&body, &mut buf);
                    body.clear();
                    buf.extend_from_slice(&b);
                }
            }
        }
        stream::append_chunk(&body, &mut buf);
        self.queued_bytes = 0;
        Some(Batch::Many(buf))
    }

    fn take_ws_batch(&mut self) -> Option<Batch> {
        if self.queue.len() <= 1 {
            let out = self.queue.pop_front()?;
            self.queued_bytes = 0;
            return Some(Batch::One(match out {
                Out::Data { frame, .. } => frame,
                Out::Control(b) => b,
            }));
        }
        let mut buf = Vec::with_capacity(self.queued_bytes + 16);
        let mut run: Vec<(Bytes, u8)> = Vec::new();
        let flush_run = |run: &mut Vec<(Bytes, u8)>, buf: &mut Vec<u8>| {
            match run.len() {
                0 => {}
                1 => buf.extend_from_slice(&run[0].0),
                _ => {
                    // A connection speaks one protocol, so a run is all text or all binary.
                    let text = run[0].0.first().is_some_and(|b| b & 0x0f == OpCode::Text as u8);
                    let (op, seps) =
                        if text { (OpCode::Text, run.len() - 1) } else { (OpCode::Binary, 0) };
                    let len: usize =
                        run.iter().map(|(f, h)| f.len() - usize::from(*h)).sum::<usize>() + seps;
                    websocket::write_header(buf, op, len);
                    for (i, (f, h)) in run.iter().enumerate() {
                        if i > 0 && text {
                            buf.push(b'\n');
                        }
                        buf.extend_from_slice(&f[usize::from(*h)..]);
                    }
                }
            }
            run.clear();
        };
        for out in self.queue.drain(..) {
            match out {
                Out::Data { frame, header } => run.push((frame, header)),
                Out::Control(b) => {
                    flush_run(&mut run, &mut buf);
                    buf.extend_from_slice(&b);
                }
            }
        }
        flush_run(&mut run, &mut buf);
        self.queued_bytes = 0;
        Some(Batch::Many(buf))
    }

    pub(crate) fn session(&self) -> Option<&Session> {
        match &self.state {
            State::Connected(s) => Some(s),
            State::Connecting => None,
        }
    }
}

/// What a timer entry checks when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerKind {
    /// No `connect` within `client.stale_close_delay` → 3502.
    Stale,
    /// Time to send a ping.
    Ping,
    /// The pong for the last ping is due → 3012 if missing.
    Pong,
    /// The connection's expiry plus `client.expired_close_delay` → 3005 unless refreshed.
    Expire,
    /// A subscription's expiry plus `client.expired_sub_close_delay` → 2501 / 3006.
    SubExpire,
}

/// A connection timer in the shard's heap (earliest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timer {
    /// When it fires.
    pub at: Instant,
    /// Connection it belongs to.
    pub key: ConnKey,
    /// What to check.
    pub kind: TimerKind,
}

impl Ord for Timer {
    fn cmp(&self, other: &Self) -> Ordering {
        other.at.cmp(&self.at)
    }
}

impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// What the reader must do after a command was handled.
#[derive(Debug)]
pub enum Step {
    /// Continue with the next command.
    Next,
    /// The connection is closing; stop handling commands.
    Stop,
    /// Wait until the home shards of `channels` acknowledged this shard's interest, then call
    /// `Shard::complete_subscriptions` with `then`.
    AwaitInterest {
        /// Channels whose registration is awaited.
        channels: Vec<Arc<str>>,
        /// The reply to send once they are registered.
        then: Then,
    },
    /// A token names a key (JWKS `kid`) not fetched yet; `client_command` turns this into
    /// `AwaitKeys`.
    KeysPending {
        /// The token.
        token: String,
        /// A subscription token (else a connection token).
        subscription: bool,
    },
    /// Wait for the key fetch (if any), then handle `retry` again; a key still unknown then is
    /// an invalid token.
    AwaitKeys {
        /// The fetch to wait for; `None` = verify again at once.
        fetch: Option<crate::auth::KeysFetch>,
        /// The command to handle again.
        retry: Box<Command>,
    },
    /// Wait for another shard's answer to `req`, then call `Shard::resume` with `then`.
    AwaitAnswer {
        /// Parked request.
        req: RequestId,
        /// What to do with the answer.
        then: Resume,
    },
    /// Wait for the home shards of a connect's server-side subscriptions, then call
    /// `Shard::finish_connect`.
    AwaitConnect {
        /// One parked request per subscription, in order.
        reqs: Vec<RequestId>,
        /// The held reply.
        wait: Box<connect::ConnectWait>,
    },
}

/// What a command does once its cross-shard answer is in.
#[derive(Debug)]
pub enum Resume {
    /// Admit a connect once the user's home shard checked `client.user_connection_limit`.
    Admit(Box<connect::PendingConnect>),
    /// Reply to a `publish`.
    Publish {
        /// Command id.
        id: u32,
    },
    /// Finish a subscription that needed the home shard (see `subscribe`).
    Subscribe(Box<subscribe::PendingSub>),
    /// Reply to a `history`.
    History {
        /// Command id.
        id: u32,
    },
    /// Reply to a `presence` (`stats`: `presence_stats`).
    Presence {
        /// Command id.
        id: u32,
        /// Answer with counts only.
        stats: bool,
    },
}

/// A reply held back until subscriptions are registered with their home shards.
#[derive(Debug)]
pub enum Then {
    /// Answer a `subscribe` command.
    Subscribe {
        /// Command id.
        id: u32,
        /// The result (token `data`, expiry).
        result: Box<SubscribeResult>,
    },
}

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Shard {
    /// Registers a connection's first timers.
    pub fn start_conn_timers(&mut self, key: ConnKey) {
        let stale = self.cfg.client.stale_close_delay;
        if !stale.is_zero() {
            self.timers.push(Timer { at: after(stale), key, kind: TimerKind::Stale });
        }
    }

    /// Queues a frame for a connection; overflowing `client.queue_max_size` disconnects it with
    /// 3008 (slow) instead, dropping what it had not read yet.
    pub fn enqueue(&mut self, key: ConnKey, out: Out) {
        self.enqueue_as(key, |_| Some(out));
    }

    /// [`Shard::enqueue`] with the frame chosen by the connection's encoding (`make(encoding)`),
    /// in one connection lookup: the fan-out path calls this for every subscriber. `None` means
    /// the protocol cannot carry the message (binary data for JSON): the connection is closed
    /// with 3506 instead.
    pub fn enqueue_as(&mut self, key: ConnKey, make: impl FnOnce(Encoding) -> Option<Out>) {
        let max = self.cfg.client.queue_max_size;
        let Some(conn) = self.conn_mut(key) else { return };
        if conn.closing.is_some() {
            return;
        }
        let Some(out) = make(conn.encoding()) else {
            self.disconnect(key, codes::DISCONNECT_INAPPROPRIATE_PROTOCOL);
            return;
        };
        if conn.queued_bytes + out.len() > max {
            self.stats.slow_disconnects += 1;
            self.disconnect(key, codes::DISCONNECT_SLOW);
            return;
        }
        conn.queued_bytes += out.len();
        conn.queue.push_back(out);
        if let Some(w) = conn.writer.take() {
            w.wake();
        }
    }

    /// Marks a connection whose socket failed: no close frame can be sent, both tasks stop.
    pub fn abort(&mut self, key: ConnKey, d: Disconnect) {
        self.drop_subscriptions(key);
        let Some(conn) = self.conn_mut(key) else { return };
        conn.closing.get_or_insert(d);
        conn.queue.clear();
        conn.queued_bytes = 0;
        if let Some(w) = conn.reader.take() {
            w.wake();
        }
    }

    pub(crate) fn reply(&mut self, key: ConnKey, id: u32, body: &ReplyBody) {
        if self.conn_mut(key).is_some_and(|c| c.transport.unidirectional()) {
            self.uni_reply(key, body);
            return;
        }
        self.enqueue_as(key, |encoding| {
            Some(match encoding {
                Encoding::Protobuf => Out::binary(|buf| protobuf::encode_reply(id, body, buf)),
                _ => Out::json(|buf| json::encode_reply(id, body, buf)),
            })
        });
    }

    /// A unidirectional client sent no command, so only its connect has an answer: a success
    /// becomes the `connect` push, an error a disconnect (spec §1.6).
    fn uni_reply(&mut self, key: ConnKey, body: &ReplyBody) {
        match body {
            ReplyBody::Connect(result) => {
                let push = PushBody::Connect(result.clone());
                self.push(key, "", &push);
            }
            ReplyBody::Error(e) => {
                let d = self.uni_connect_error(e.code);
                self.disconnect(key, d);
            }
            _ => {}
        }
    }

    /// Whether a connection is open and still subscribed to `channel` (it may have closed or
    /// unsubscribed while its subscription was being completed).
    pub(crate) fn holds_sub(&mut self, key: ConnKey, channel: &str) -> bool {
        self.conn_mut(key)
            .is_some_and(|c| c.closing.is_none() && c.session().is_some_and(|s| s.has_sub(channel)))
    }

    /// Arms the timer that closes a connection with 3005 once `at` plus
    /// `client.expired_close_delay` passed without a refresh. It re-checks the session's
    /// `expire_at` when it fires, so an extra timer after a refresh is harmless.
    pub(crate) fn arm_expiry(&mut self, key: ConnKey, at: i64, now: i64) {
        let wait =
            Duration::from_secs((at - now).max(0) as u64) + self.cfg.client.expired_close_delay;
        self.timers.push(Timer { at: after(wait), key, kind: TimerKind::Expire });
    }

    /// Whether a connection speaks Protobuf.
    pub fn is_protobuf(&mut self, key: ConnKey) -> bool {
        self.conn_mut(key).is_some_and(|c| c.protobuf)
    }

    /// Queues one push in the connection's protocol. A JSON connection cannot carry a binary
    /// publication: it is closed with 3506 instead (spec §2.2).
    pub(crate) fn push(&mut self, key: ConnKey, channel: &str, body: &PushBody) {
        let binary = matches!(body, PushBody::Publication(p) if p.binary);
        self.enqueue_as(key, |encoding| match encoding {
            Encoding::Protobuf => {
                Some(Out::binary(|buf| protobuf::encode_push(channel, body, buf)))
            }
            _ if binary => None,
            Encoding::Json => Some(Out::json(|buf| {
                json::encode_push(channel, body, json::PushFraming::Reply, buf);
            })),
            Encoding::JsonPush => Some(Out::json(|buf| {
                json::encode_push(channel, body, json::PushFraming::Bare, buf);
            })),
        });
    }

    /// Queues a channel event (publication, join, leave) for one connection.
    pub(crate) fn push_event(&mut self, key: ConnKey, channel: &str, event: &crate::broker::Event) {
        if let crate::broker::Event::Pub(p) = event {
            // Not from the live fan-out (events kept while subscribing): full payloads.
            if self.delta_state(key, channel, false).is_some() {
                self.enqueue_as(key, |encoding| delta::publication_out(channel, p, None, encoding));
                return;
            }
        }
        self.enqueue_as(key, |encoding| event_out(channel, event, encoding));
    }

    pub(crate) fn reply_error(&mut self, key: ConnKey, id: u32, err: ProtocolError) {
        self.reply(key, id, &ReplyBody::Error(err));
    }

    /// Closes a connection from the server side: unsubscribes it everywhere, drops unsent frames,
    /// queues the close frame and wakes both socket tasks.
    pub fn disconnect(&mut self, key: ConnKey, d: Disconnect) {
        self.drop_subscriptions(key);
        let uni_ws_push = !self.cfg.uni_websocket.disable_disconnect_push;
        let Some(conn) = self.conn_mut(key) else { return };
        if conn.closing.is_some() {
            return;
        }
        conn.queue.clear();
        // WebSocket carries the code in its close frame; the other transports (and uni
        // WebSocket, before its close frame, unless configured not to) get a `disconnect`
        // push, then the stream ends.
        let push = match conn.transport {
            Transport::WebSocket { .. } => false,
            Transport::UniWebSocket { .. } => uni_ws_push,
            _ => true,
        };
        if push {
            let body = PushBody::Disconnect(d.clone());
            let push = match conn.encoding() {
                Encoding::Protobuf => Out::binary(|buf| protobuf::encode_push("", &body, buf)),
                Encoding::Json => Out::json(|buf| json::encode_disconnect_push(&d, buf)),
                Encoding::JsonPush => Out::json(|buf| {
                    json::encode_push("", &body, json::PushFraming::Bare, buf);
                }),
            };
            conn.queue.push_back(push);
        }
        let end = if conn.transport.websocket() {
            websocket::close_frame(d.code, &d.reason)
        } else {
            Bytes::from_static(stream::END)
        };
        conn.closing = Some(d);
        conn.queue.push_back(Out::Control(end));
        conn.queued_bytes = conn.queue.iter().map(Out::len).sum();
        if let Some(w) = conn.writer.take() {
            w.wake();
        }
        if let Some(w) = conn.reader.take() {
            w.wake();
        }
    }

    /// Removes a connection's subscriptions from the hub (telling home shards when this shard's
    /// last subscriber of a channel leaves, and about presence and leave).
    pub fn drop_subscriptions(&mut self, key: ConnKey) {
        let Some(conn) = self.conn_mut(key) else { return };
        let subs = match &mut conn.state {
            State::Connected(s) => std::mem::take(&mut s.subs),
            State::Connecting => return,
        };
        for sub in subs {
            self.unsubscribed(key, sub);
        }
    }

    /// Starts subscribing a connection to a channel on this shard: the first local subscriber
    /// asks the home shard to record this shard (see `hub`).
    pub(crate) fn begin_subscription(&mut self, channel: &Arc<str>) {
        if let Begin::Request(generation) = self.hub.begin(channel) {
            let home = home_of(channel, self.count);
            let msg = ShardMsg::Interest {
                channel: Arc::clone(channel),
                shard: self.id,
                subscribed: true,
                ack: Some(generation),
            };
            self.send(Lane::Main, home, msg);
        }
    }

    /// Finishes subscriptions whose registration was awaited, then sends the held reply. A
    /// connection that closed (or dropped the channel) meanwhile gives its place up instead.
    pub fn complete_subscriptions(&mut self, key: ConnKey, channels: &[Arc<str>], then: Then) {
        if self.conn_mut(key).is_some_and(|c| c.closing.is_none()) {
            match then {
                Then::Subscribe { id, result } => {
                    self.reply(key, id, &ReplyBody::Subscribe(*result));
                }
            }
        }
        // Liveness is decided after queuing the reply: the reply itself can overflow the queue
        // and disconnect the client (3008), and a closed connection must not join the hub.
        // The reply is queued before the connection joins the hub, so no publication of these
        // channels can reach the client ahead of it.
        for ch in channels {
            if self.holds_sub(key, ch) {
                self.hub.finish(ch, key);
            } else if self.hub.abandon(ch) {
                self.interest_off(ch);
            }
        }
    }

    pub(crate) fn interest_off(&mut self, channel: &Arc<str>) {
        let home = home_of(channel, self.count);
        let msg = ShardMsg::Interest {
            channel: Arc::clone(channel),
            shard: self.id,
            subscribed: false,
            ack: None,
        };
        self.send(Lane::Main, home, msg);
    }

    /// A WebSocket pong frame arrived (native ping mode).
    pub fn native_pong(&mut self, key: ConnKey) {
        if let Some(c) = self.conn_mut(key).filter(|c| c.native_ping()) {
            c.awaiting_pong = false;
        }
    }

    /// Forgets a connection whose socket tasks have finished.
    pub fn remove_conn(&mut self, key: ConnKey) {
        self.drop_subscriptions(key);
        self.close_session(key);
        if self.conn_mut(key).is_some() {
            let conn = self.conns.remove(key.slot as usize);
            if let State::Connected(s) = conn.state {
                self.connections.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                if s.counted {
                    self.user_gone(&s.user);
                }
            }
        }
    }

    /// Fires due timers; returns when the next one is due.
    pub fn run_timers(&mut self, now: Instant) -> Option<Instant> {
        while let Some(t) = self.timers.peek().copied() {
            if t.at > now {
                return Some(t.at);
            }
            self.timers.pop();
            self.fire(t, now);
        }
        None
    }

    fn fire(&mut self, t: Timer, now: Instant) {
        let ping = self.cfg.client.ping_interval;
        let pong = self.cfg.client.pong_timeout;
        let expired_delay = self.cfg.client.expired_close_delay;
        let ping_frame = self.ping_frame.clone();
        let pb_ping_frame = self.pb_ping_frame.clone();
        let Some(conn) = self.conn_mut(t.key) else { return };
        if conn.closing.is_some() {
            return;
        }
        match t.kind {
            TimerKind::Stale => {
                if matches!(conn.state, State::Connecting) {
                    self.disconnect(t.key, codes::DISCONNECT_STALE);
                }
            }
            TimerKind::Ping => {
                // Unidirectional clients cannot answer.
                let pong = if conn.transport.unidirectional() { Duration::ZERO } else { pong };
                conn.awaiting_pong = !pong.is_zero();
                let out = if conn.native_ping() {
                    Out::Control(websocket::frame(OpCode::Ping, b""))
                } else if conn.protobuf {
                    Out::Data { frame: pb_ping_frame, header: 2 }
                } else {
                    Out::Data { frame: ping_frame, header: 2 }
                };
                self.enqueue(t.key, out);
                self.timers.push(Timer { at: now + ping, key: t.key, kind: TimerKind::Ping });
                if !pong.is_zero() {
                    self.timers.push(Timer { at: now + pong, key: t.key, kind: TimerKind::Pong });
                }
            }
            TimerKind::Pong => {
                if conn.awaiting_pong {
                    self.disconnect(t.key, codes::DISCONNECT_NO_PONG);
                }
            }
            TimerKind::SubExpire => self.expire_subs(t.key),
            TimerKind::Expire => {
                let deadline = conn.session().and_then(|s| s.expire_at);
                if let Some(at) = deadline {
                    let close_at = at.saturating_add(expired_delay.as_secs() as i64);
                    if unix_now() >= close_at {
                        self.disconnect(t.key, codes::DISCONNECT_EXPIRED);
                    } else {
                        let wait = Duration::from_secs((close_at - unix_now()).max(1) as u64);
                        self.timers.push(Timer {
                            at: now + wait,
                            key: t.key,
                            kind: TimerKind::Expire,
                        });
                    }
                }
            }
        }
    }

    /// Handles one decoded command from a connection.
    pub fn client_command(&mut self, key: ConnKey, cmd: Command) -> Step {
        let Some(conn) = self.conn_mut(key) else { return Step::Stop };
        if conn.closing.is_some() {
            return Step::Stop;
        }
        let connected = matches!(conn.state, State::Connected(_));
        let id = cmd.id;
        let needs_id = !matches!(cmd.request, Request::Pong | Request::Send(_));
        if needs_id && id == 0 {
            return self.bad_request(key);
        }
        // Commands that verify a token may have to wait for a key fetch and run again.
        let retry = match &cmd.request {
            Request::Connect(_) | Request::Refresh(_) | Request::SubRefresh(_) => Some(cmd.clone()),
            Request::Subscribe(r) if !r.token.is_empty() => Some(cmd.clone()),
            _ => None,
        };
        let step = self.dispatch(key, id, connected, cmd);
        match (step, retry) {
            (Step::KeysPending { token, subscription }, Some(retry)) => {
                let verifier = if subscription { &self.sub_verifier } else { &self.verifier };
                Step::AwaitKeys { fetch: verifier.fetch_keys(&token), retry: Box::new(retry) }
            }
            (Step::KeysPending { .. }, None) => Step::Next,
            (step, _) => step,
        }
    }

    /// Handles a command again after a key fetch: a key still missing is an invalid token.
    pub fn retry_command(&mut self, key: ConnKey, cmd: Command) -> Step {
        self.keys_retry = true;
        let step = self.client_command(key, cmd);
        self.keys_retry = false;
        step
    }

    fn dispatch(&mut self, key: ConnKey, id: u32, connected: bool, cmd: Command) -> Step {
        match cmd.request {
            Request::Connect(req) if !connected => self.connect(key, id, req),
            Request::Connect(_) => self.bad_request(key),
            _ if !connected => self.bad_request(key),
            Request::Pong => {
                let Some(conn) = self.conn_mut(key) else { return Step::Stop };
                if !conn.awaiting_pong {
                    return self.bad_request(key);
                }
                conn.awaiting_pong = false;
                Step::Next
            }
            Request::Ping => self.bad_request(key),
            Request::Send(_) => {
                self.disconnect(key, codes::DISCONNECT_NOT_AVAILABLE);
                Step::Stop
            }
            Request::Subscribe(req) => self.subscribe(key, id, req),
            Request::Unsubscribe(req) => {
                if req.channel.is_empty() {
                    return self.bad_request(key);
                }
                let removed = match self.conn_mut(key).map(|c| &mut c.state) {
                    Some(State::Connected(s)) => s.remove_sub(&req.channel),
                    _ => None,
                };
                if let Some(sub) = removed {
                    self.unsubscribed(key, sub);
                }
                self.reply(key, id, &ReplyBody::Unsubscribe);
                Step::Next
            }
            Request::Publish(req) => self.client_publish(key, id, req),
            Request::Refresh(req) => self.refresh(key, id, &req.token),
            Request::Presence(r) => self.client_presence(key, id, &r.channel, false),
            Request::PresenceStats(r) => self.client_presence(key, id, &r.channel, true),
            Request::History(r) => self.client_history(key, id, r),
            Request::SubRefresh(r) => self.sub_refresh(key, id, r),
            Request::Rpc(r) => {
                let body = rpc_reply(&self.cfg.rpc, &r.method);
                self.reply(key, id, &body);
                Step::Next
            }
        }
    }

    pub(crate) fn bad_request(&mut self, key: ConnKey) -> Step {
        self.disconnect(key, codes::DISCONNECT_BAD_REQUEST);
        Step::Stop
    }

    fn refresh(&mut self, key: ConnKey, id: u32, token: &str) -> Step {
        if token.is_empty() {
            return self.bad_request(key);
        }
        let now = unix_now();
        let claims = match self.verifier.verify_connection(token, now) {
            Ok(c) => c,
            Err(TokenError::Expired) => {
                self.disconnect(key, codes::DISCONNECT_EXPIRED);
                return Step::Stop;
            }
            Err(TokenError::BadConnectionInfo) => {
                self.reply_error(key, id, codes::ERROR_INTERNAL);
                return Step::Next;
            }
            Err(TokenError::KeysPending) if !self.keys_retry => {
                return Step::KeysPending { token: token.to_owned(), subscription: false };
            }
            Err(TokenError::Invalid(_) | TokenError::KeysPending) => {
                self.disconnect(key, codes::DISCONNECT_INVALID_TOKEN);
                return Step::Stop;
            }
        };
        let Some(conn) = self.conn_mut(key) else { return Step::Stop };
        let State::Connected(session) = &mut conn.state else { return Step::Stop };
        if *session.user != *claims.user {
            self.disconnect(key, codes::DISCONNECT_INVALID_TOKEN);
            return Step::Stop;
        }
        if session.token_channels != token_channels(&claims) {
            self.disconnect(key, codes::DISCONNECT_INSUFFICIENT_STATE);
            return Step::Stop;
        }
        let expiry = match auth::connection_expiry(&claims, now) {
            Expiry::Never => None,
            Expiry::At(at) => Some(at),
            Expiry::AlreadyExpired => {
                self.reply_error(key, id, codes::ERROR_EXPIRED);
                return Step::Next;
            }
        };
        session.expire_at = expiry;
        if let Some(info) = claims.info {
            session.conn_info = Some(crate::protocol::RawJson(info));
        }
        if let Some(at) = expiry {
            self.arm_expiry(key, at, now);
        }
        let body = match expiry {
            Some(at) => ReplyBody::Refresh(RefreshResult {
                expires: true,
                ttl: u32::try_from(at - now).unwrap_or(u32::MAX),
                ..RefreshResult::default()
            }),
            None => ReplyBody::Refresh(RefreshResult::default()),
        };
        self.reply(key, id, &body);
        Step::Next
    }

    fn client_publish(&mut self, key: ConnKey, id: u32, req: PublishRequest) -> Step {
        if req.channel.is_empty() {
            return self.bad_request(key);
        }
        let insecure = self.cfg.client.insecure;
        let namespaces = Arc::clone(&self.namespaces);
        let global_format = self.cfg.channel.publication_data_format.clone();
        let Some(conn) = self.conn_mut(key) else { return Step::Stop };
        let Some(session) = conn.session() else { return Step::Stop };
        let channel: Arc<str> = Arc::from(req.channel.as_str());
        let subscribed = session.has_sub(&channel);
        let info = session.info(None);
        let user = Arc::clone(&session.user);
        let resolved = match namespaces.resolve(&channel) {
            Ok(r) => r,
            Err(e) => {
                self.reply_error(key, id, channel_error(e));
                return Step::Next;
            }
        };
        let who = Subject { user: &user, insecure };
        if let Err(e) = channel::check_publish(&resolved, &who, subscribed) {
            self.reply_error(key, id, channel_error(e));
            return Step::Next;
        }
        let format = if resolved.options.publication_data_format.is_empty() {
            global_format.as_str()
        } else {
            resolved.options.publication_data_format.as_str()
        };
        // A JSON client's payload was parsed as JSON already; a Protobuf client's is any bytes.
        let json = !self.is_protobuf(key) || is_json(req.data.as_bytes());
        if !data_format_ok(format, req.data.as_bytes(), json) {
            self.reply_error(key, id, codes::ERROR_BAD_REQUEST);
            return Step::Next;
        }
        let history = history_policy(resolved.options, false);
        let publication = Publication {
            data: req.data,
            info: Some(info),
            binary: !json,
            delta_eligible: resolved.options.delta_publish,
            ..Publication::default()
        };
        let call = Call::Publish(PublishCall {
            channel: Arc::clone(&channel),
            publication,
            history,
            idempotency_key: None,
            version: None,
        });
        let req = self.call_home(&channel, call);
        Step::AwaitAnswer { req, then: Resume::Publish { id } }
    }

    /// Continues a command once its cross-shard answer is in (`None`: lost on shutdown);
    /// returns what the reader does next (a connect may wait again).
    pub fn resume(&mut self, key: ConnKey, then: Resume, answer: Option<Answer>) -> Step {
        match then {
            Resume::Admit(pending) => return self.admit(key, *pending, answer),
            Resume::Publish { id } => match answer {
                Some(Answer::Channel(Reply::Published(_))) => {
                    self.reply(key, id, &ReplyBody::Publish)
                }
                _ => self.reply_error(key, id, codes::ERROR_INTERNAL),
            },
            Resume::Subscribe(pending) => return self.finish_subscribe(key, *pending, answer),
            Resume::History { id } => self.finish_history(key, id, answer),
            Resume::Presence { id, stats } => self.finish_presence(key, id, stats, answer),
        }
        Step::Next
    }
}

/// The answer to a client `rpc` (spec §5.4). Like upstream, a connection has an RPC handler
/// only when the `ping` extension or an RPC proxy is configured; without one every call is 108.
/// With one: the extension answers its method, a method whose namespace is unknown is 104, a
/// namespace without a proxy is 104 (nothing could answer it), and one with a proxy is 108
/// because Rotor has no RPC proxy yet.
pub fn rpc_reply(rpc: &crate::config::Rpc, method: &str) -> ReplyBody {
    let proxies =
        rpc.without_namespace.proxy_enabled || rpc.namespaces.iter().any(|n| n.proxy_enabled);
    if !rpc.ping.enabled && !proxies {
        return ReplyBody::Error(codes::ERROR_NOT_AVAILABLE);
    }
    if rpc.ping.enabled && method == rpc.ping.method {
        return ReplyBody::Rpc(crate::protocol::RpcResult::default());
    }
    if !proxies {
        return ReplyBody::Error(codes::ERROR_METHOD_NOT_FOUND);
    }
    let proxy_enabled = match method.split_once(rpc.namespace_boundary.as_str()) {
        Some((ns, _)) if !rpc.namespace_boundary.is_empty() => {
            match rpc.namespaces.iter().find(|n| n.name == ns) {
                Some(n) => n.proxy_enabled,
                None => return ReplyBody::Error(codes::ERROR_METHOD_NOT_FOUND),
            }
        }
        _ => rpc.without_namespace.proxy_enabled,
    };
    ReplyBody::Error(if proxy_enabled {
        codes::ERROR_NOT_AVAILABLE
    } else {
        codes::ERROR_METHOD_NOT_FOUND
    })
}

/// A channel event as one push frame in an encoding; `None` for binary data in JSON.
pub fn event_out(channel: &str, event: &crate::broker::Event, encoding: Encoding) -> Option<Out> {
    use crate::broker::Event;
    let bare = |body: PushBody| {
        Out::json(|buf| json::encode_push(channel, &body, json::PushFraming::Bare, buf))
    };
    Some(match (event, encoding) {
        (Event::Pub(p), Encoding::Json | Encoding::JsonPush) if p.binary => return None,
        (Event::Pub(p), Encoding::Json) => {
            Out::json(|buf| json::encode_publication_push(channel, p, buf))
        }
        (Event::Join(i), Encoding::Json) => {
            Out::json(|buf| json::encode_join_push(channel, i, buf))
        }
        (Event::Leave(i), Encoding::Json) => {
            Out::json(|buf| json::encode_leave_push(channel, i, buf))
        }
        (Event::Pub(p), Encoding::Protobuf) => {
            Out::binary(|buf| protobuf::encode_publication_push(channel, p, buf))
        }
        (Event::Join(i), Encoding::Protobuf) => Out::binary(|buf| {
            protobuf::encode_push(channel, &PushBody::Join((**i).clone()), buf);
        }),
        (Event::Leave(i), Encoding::Protobuf) => Out::binary(|buf| {
            protobuf::encode_push(channel, &PushBody::Leave((**i).clone()), buf);
        }),
        (Event::Pub(p), Encoding::JsonPush) => bare(PushBody::Publication((**p).clone())),
        (Event::Join(i), Encoding::JsonPush) => bare(PushBody::Join((**i).clone())),
        (Event::Leave(i), Encoding::JsonPush) => bare(PushBody::Leave((**i).clone())),
    })
}

/// Order-independent fingerprint of a connection token's server-side channels.
pub(crate) fn token_channels(claims: &crate::auth::ConnectionClaims) -> u64 {
    let mut names: Vec<&str> = match &claims.subs {
        Some(subs) => subs.iter().map(|s| s.channel.as_str()).collect(),
        None => claims.channels.iter().map(String::as_str).collect(),
    };
    if names.is_empty() {
        return 0;
    }
    names.sort_unstable();
    names.dedup();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(&names, &mut h);
    std::hash::Hasher::finish(&h)
}

/// Maps a channel-check failure to the client protocol error.
pub fn channel_error(e: ChannelError) -> ProtocolError {
    match e {
        ChannelError::UnknownChannel => codes::ERROR_UNKNOWN_CHANNEL,
        ChannelError::BadRequest => codes::ERROR_BAD_REQUEST,
        ChannelError::PermissionDenied => codes::ERROR_PERMISSION_DENIED,
        ChannelError::NotAvailable => codes::ERROR_NOT_AVAILABLE,
    }
}

/// History settings of a namespace; `skip` for API publishes with `skip_history`.
pub fn history_policy(options: &crate::config::ChannelOptions, skip: bool) -> HistoryPolicy {
    if skip {
        return HistoryPolicy::default();
    }
    HistoryPolicy {
        size: options.history_size,
        ttl: options.history_ttl,
        meta_ttl: options.history_meta_ttl,
    }
}

/// `publication_data_format` check (spec §5.3): `""` rejects empty data, `json` needs valid JSON
/// (always true for JSON-decoded payloads), `json_object` an object, `binary` anything.
pub fn data_format_ok(format: &str, data: &[u8], json: bool) -> bool {
    match format {
        "binary" => true,
        "json_object" => json && data.trim_ascii_start().first() == Some(&b'{'),
        "json" => json && !data.is_empty(),
        _ => !data.is_empty(),
    }
}

/// Whether bytes are one valid JSON value.
pub fn is_json(data: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(payload: &str) -> Out {
        Out::json(|b| b.extend_from_slice(payload.as_bytes()))
    }

    #[test]
    fn json_out_builds_a_complete_text_frame() {
        let Out::Data { frame, header } = data("{\"a\":1}") else { panic!() };
        assert_eq!(header, 2);
        assert_eq!(&frame[..], b"\x81\x07{\"a\":1}");
        let big = "x".repeat(300);
        let Out::Data { frame, header } = data(&big) else { panic!() };
        assert_eq!(header, 4);
        assert_eq!(frame.len(), 304);
    }

    #[test]
    fn batch_joins_data_frames_with_newlines_and_keeps_control_frames_apart() {
        let mut c = Conn::new(1, Transport::WebSocket { native_ping: false }, false);
        for p in ["{\"a\":1}", "{}", "{\"b\":2}"] {
            let o = data(p);
            c.queued_bytes += o.len();
            c.queue.push_back(o);
        }
        c.queue.push_back(Out::Control(websocket::close_frame(3001, "shutdown")));
        let Some(Batch::Many(buf)) = c.take_batch() else { panic!() };
        let joined = b"{\"a\":1}\n{}\n{\"b\":2}";
        let mut expect = vec![0x81, joined.len() as u8];
        expect.extend_from_slice(joined);
        expect.extend_from_slice(&websocket::close_frame(3001, "shutdown"));
        assert_eq!(buf, expect);
        assert!(c.take_batch().is_none());
        assert_eq!(c.queued_bytes, 0);
    }

    #[test]
    fn single_item_is_written_without_copy() {
        let mut c = Conn::new(1, Transport::WebSocket { native_ping: false }, false);
        let o = data("{}");
        let Out::Data { frame, .. } = o.clone() else { panic!() };
        c.queue.push_back(o);
        let Some(Batch::One(b)) = c.take_batch() else { panic!() };
        assert_eq!(b.as_ptr(), frame.as_ptr(), "same allocation");
    }

    #[test]
    fn data_formats() {
        assert!(!data_format_ok("", b"", true));
        assert!(data_format_ok("", b"1", true));
        assert!(data_format_ok("", b"\xff", false), "any bytes from a Protobuf client");
        assert!(!data_format_ok("json", b"\xff", false));
        assert!(data_format_ok("json_object", b" {}", true));
        assert!(!data_format_ok("json_object", b"[1]", true));
        assert!(data_format_ok("binary", b"", true));
        assert!(is_json(b" {\"a\":[1]} ") && !is_json(b"\xff\x00") && !is_json(b""));
    }

    fn test_shard(queue_max_size: usize) -> Shard {
        let mut cfg = crate::config::Config::default();
        cfg.client.token.hmac_secret_key = "k".into();
        cfg.client.queue_max_size = queue_max_size;
        let v = Arc::new(crate::auth::TokenVerifier::for_connections(&cfg.client).unwrap());
        let ns = Arc::new(crate::channel::Namespaces::new(&cfg.channel).unwrap());
        Shard::new(crate::shard::id::ShardId(0), 1, Arc::new(cfg), ns, (v.clone(), v))
    }

    fn connected(shard: &mut Shard, channel: &Arc<str>) -> ConnKey {
        shard.insert_conn(|g| {
            let mut c = Conn::new(g, Transport::WebSocket { native_ping: false }, false);
            c.state = State::Connected(Session {
                client: uuid::Uuid::from_u128(1),
                user: Arc::from("u"),
                conn_info: None,
                subs: vec![Sub::new(Arc::clone(channel), SubFlags::default())],
                expire_at: None,
                counted: false,
                token_channels: 0,
            });
            c
        })
    }

    /// A connected client whose subscribe (command `id`) to `news` completes at once.
    fn subscribed_to_news(shard: &mut Shard, id: u32) -> ConnKey {
        let ch: Arc<str> = Arc::from("news");
        let key = connected(shard, &ch);
        shard.begin_subscription(&ch);
        let then = Then::Subscribe { id, result: Box::default() };
        shard.complete_subscriptions(key, std::slice::from_ref(&ch), then);
        key
    }

    #[test]
    fn a_client_dropped_by_its_own_subscribe_reply_does_not_stay_in_the_hub() {
        // The queue holds less than a subscribe reply frame, so queuing the reply disconnects
        // the client with 3008; it must not join the hub afterwards.
        let mut shard = test_shard(4);
        let key = subscribed_to_news(&mut shard, 1);
        assert_eq!(shard.conn_mut(key).unwrap().closing.as_ref().map(|d| d.code), Some(3008));
        assert!(shard.hub.subscribers("news").is_empty());
        shard.remove_conn(key);
        assert_eq!(shard.hub.channel_count(), 0, "nothing left behind");
    }

    #[test]
    fn subscribe_completion_joins_the_hub_after_the_reply() {
        let mut shard = test_shard(1 << 20);
        let key = subscribed_to_news(&mut shard, 7);
        assert_eq!(shard.hub.subscribers("news"), &[key]);
        let Some(Batch::One(frame)) = shard.conn_mut(key).unwrap().take_batch() else { panic!() };
        assert_eq!(&frame[2..], br#"{"id":7,"subscribe":{}}"#);
    }

    #[test]
    fn timers_pop_earliest_first() {
        let now = Instant::now();
        let key = ConnKey { slot: 0, generation: 0 };
        let mut heap = std::collections::BinaryHeap::new();
        for s in [3u64, 1, 2] {
            heap.push(Timer { at: now + Duration::from_secs(s), key, kind: TimerKind::Ping });
        }
        let order: Vec<u64> =
            std::iter::from_fn(|| heap.pop()).map(|t| (t.at - now).as_secs()).collect();
        assert_eq!(order, vec![1, 2, 3]);
    }
}
