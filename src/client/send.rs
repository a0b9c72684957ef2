//! What a shard writes to one client: replies, pushes, channel events and the close, each in the
//! connection's encoding, bounded by `client.queue_max_size`.
//!
//! Owns: the rules for a single connection's output (a unidirectional client gets pushes only, a
//! JSON client cannot carry binary data, an overflowing queue closes with 3008). Fan-out to many
//! is `hub::fanout`'s. Must not: perform I/O.

use bytes::Bytes;

use crate::broker::Event;
use crate::client::conn::{ConnKey, Refused};
use crate::client::queue::Out;
use crate::client::Clients;
use crate::hub::encode::event_out;
use crate::hub::{delta, fanout};
use crate::metrics::FrameType;
use crate::protocol::{codes, json, protobuf, Disconnect, ProtocolError, PushBody, ReplyBody};
use crate::transport::websocket;
use crate::transport::{stream, Encoding, Transport};

/// Logs a server-side close once, as upstream does (`closing client connection` with the
/// client, user and reason): at info for what an operator should look into (a client that
/// misbehaves, falls behind or hits a server error), at debug for the ordinary ones.
fn log_disconnect(c: &crate::client::conn::Conn, d: &Disconnect) {
    let (client, user) = match c.session() {
        Some(s) => (s.client.to_string(), s.user.to_string()),
        None => (String::new(), String::new()),
    };
    let (code, reason) = (d.code, &*d.reason);
    if code == 3004 || code == 3008 || (3500..3600).contains(&code) {
        tracing::info!(%client, %user, code, reason, "closing client connection");
    } else {
        tracing::debug!(%client, %user, code, reason, "closing client connection");
    }
}

impl Clients<'_> {
    /// Queues a frame; a refusal closes the connection (3008 slow, 3506 for what its protocol
    /// cannot carry).
    pub fn enqueue(&mut self, key: ConnKey, frame: Option<FrameType>, out: Out) {
        self.enqueue_as(key, frame, |_| Some(out));
    }

    /// [`Clients::enqueue`] with the frame chosen by the connection's encoding
    /// (`make(encoding)`; `None`: the protocol cannot carry it).
    pub fn enqueue_as(
        &mut self,
        key: ConnKey,
        frame: Option<FrameType>,
        make: impl FnOnce(Encoding) -> Option<Out>,
    ) {
        let max = self.env.cfg.client.queue_max_size;
        let sent = self.conns.enqueue_as(key, max, (self.metrics, frame), make);
        self.refused(key, sent);
    }

    /// Closes a connection whose queue refused a frame.
    pub fn refused(&mut self, key: ConnKey, sent: Result<(), Refused>) {
        match sent {
            Ok(()) | Err(Refused::Closed) => {}
            Err(Refused::Unsupported) => {
                self.disconnect(key, codes::DISCONNECT_INAPPROPRIATE_PROTOCOL);
            }
            Err(Refused::Overflow) => {
                self.metrics.slow_disconnects += 1;
                self.disconnect(key, codes::DISCONNECT_SLOW);
            }
        }
    }

    /// Queues the reply to command `id`.
    pub fn reply(&mut self, key: ConnKey, id: u32, body: &ReplyBody) {
        let method = self.command_done(key, body);
        if self.conns.get(key).is_some_and(|c| c.transport.unidirectional()) {
            self.uni_reply(key, body);
            return;
        }
        self.enqueue_as(key, Some(method), |encoding| {
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
                let d = if self.connect_answered_by_http(key) {
                    // The stream has not started: the error itself becomes the HTTP answer
                    // (`server::streaming`), never a disconnect the client would see.
                    let code = u16::try_from(e.code).unwrap_or(u16::MAX);
                    Disconnect { code, reason: e.message.clone() }
                } else {
                    self.uni_connect_error(e.code)
                };
                self.disconnect(key, d);
            }
            _ => {}
        }
    }

    /// Whether this connection's connect is answered in HTTP when refused
    /// (`connect_code_to_http_response` of uni SSE and uni HTTP-stream).
    fn connect_answered_by_http(&self, key: ConnKey) -> bool {
        let cfg = &self.env.cfg;
        match self.conns.get(key).map(|c| c.transport) {
            Some(Transport::UniSse) => cfg.uni_sse.connect_code_to_http_response.enabled,
            Some(Transport::UniHttpStream) => {
                cfg.uni_http_stream.connect_code_to_http_response.enabled
            }
            _ => false,
        }
    }

    /// The disconnect a unidirectional client gets for a connect error:
    /// `client.connect_code_to_unidirectional_disconnect` when enabled, else the built-in map
    /// (spec §1.6).
    fn uni_connect_error(&self, code: u32) -> Disconnect {
        let map = &self.env.cfg.client.connect_code_to_unidirectional_disconnect;
        if map.enabled {
            if let Some(t) = map.transforms.iter().find(|t| t.code == code) {
                return Disconnect { code: t.to.code, reason: t.to.reason.clone().into() };
            }
        }
        match code {
            109 | 110 => codes::DISCONNECT_EXPIRED,
            111 => codes::DISCONNECT_TOO_MANY_REQUESTS,
            103 => codes::DISCONNECT_PERMISSION_DENIED,
            _ => codes::DISCONNECT_SERVER_ERROR,
        }
    }

    /// The reply to a connection's command is going out: its duration and error code are
    /// counted. Returns the frame type the reply counts as.
    fn command_done(&mut self, key: ConnKey, body: &ReplyBody) -> FrameType {
        let now = self.conns.micros();
        let started = self.conns.get_mut(key).and_then(|c| c.command.take());
        let method = started
            .map(|(m, _)| m)
            .or_else(|| FrameType::of_reply(body))
            .unwrap_or(FrameType::Unknown);
        let error = match body {
            ReplyBody::Error(e) => Some(e.code),
            _ => None,
        };
        let took = started.map_or(0, |(_, at)| now.wrapping_sub(at));
        let took = std::time::Duration::from_micros(u64::from(took));
        self.metrics.command_done(method, took, error);
        method
    }

    /// Queues an error reply to command `id`.
    pub fn reply_error(&mut self, key: ConnKey, id: u32, err: ProtocolError) {
        self.reply(key, id, &ReplyBody::Error(err));
    }

    /// Queues one push in the connection's protocol. A JSON connection cannot carry a binary
    /// publication: it is closed with 3506 instead (spec §2.2).
    pub fn push(&mut self, key: ConnKey, channel: &str, body: &PushBody) {
        let binary = matches!(body, PushBody::Publication(p) if p.binary);
        self.enqueue_as(key, Some(FrameType::of_push(body)), |encoding| match encoding {
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

    /// Queues a channel event (publication, join, leave) for one connection, outside the live
    /// fan-out (events kept while subscribing): delta subscribers get full payloads.
    pub fn push_event(&mut self, key: ConnKey, channel: &str, event: &Event) {
        if let Event::Pub(p) = event {
            let delta = self
                .conns
                .get_mut(key)
                .and_then(|c| c.session_mut())
                .and_then(|s| s.delta_state(channel, false));
            if delta.is_some() {
                let out = |encoding| delta::publication_out(channel, p, None, encoding);
                self.enqueue_as(key, Some(FrameType::PushPublication), out);
                return;
            }
        }
        let frame = Some(FrameType::of_event(event));
        self.enqueue_as(key, frame, |encoding| event_out(channel, event, encoding));
    }

    /// Whether a connection speaks Protobuf.
    pub fn is_protobuf(&self, key: ConnKey) -> bool {
        self.conns.get(key).is_some_and(|c| c.protobuf)
    }

    /// Closes a connection from the server side: unsubscribes it everywhere, drops unsent frames,
    /// queues the close and wakes both socket tasks.
    pub fn disconnect(&mut self, key: ConnKey, d: Disconnect) {
        if let Some(c) = self.conns.get(key).filter(|c| c.closing.is_none()) {
            self.metrics.server_disconnect(u32::from(d.code));
            log_disconnect(c, &d);
        }
        self.drop_subscriptions(key);
        let uni_ws_push = !self.env.cfg.uni_websocket.disable_disconnect_push;
        let frames = |conn: &crate::client::conn::Conn, d: &Disconnect| {
            let mut last = Vec::with_capacity(2);
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
                last.push(match conn.encoding() {
                    Encoding::Protobuf => Out::binary(|buf| protobuf::encode_push("", &body, buf)),
                    Encoding::Json => Out::json(|buf| json::encode_disconnect_push(d, buf)),
                    Encoding::JsonPush => Out::json(|buf| {
                        json::encode_push("", &body, json::PushFraming::Bare, buf);
                    }),
                });
            }
            let end = if conn.transport.websocket() {
                websocket::close_frame(d.code, &d.reason)
            } else {
                Bytes::from_static(stream::END)
            };
            last.push(Out::Control(end));
            last
        };
        self.conns.close(key, d, frames);
    }

    /// Delivers a channel event to this shard's subscribers (`ShardMsg::Deliver`). A
    /// publication with an offset past a gap means a delivery to this shard was lost: the
    /// positioned subscribers recover first, then fan-out queues the event to everyone it
    /// reaches; connections whose queue refused it are closed afterwards.
    pub fn deliver(&mut self, channel: &str, event: &Event) {
        if self.hub.observe(channel, event) {
            self.insufficient_state(channel);
        }
        let max = self.env.cfg.client.queue_max_size;
        let mut refused = Vec::new();
        let started = std::time::Instant::now();
        if fanout::deliver(self.hub, self.conns, self.metrics, channel, event, max, &mut refused) {
            self.metrics.deliveries += 1;
            if matches!(event, Event::Pub(_)) {
                let took = started.elapsed();
                self.metrics.broadcast.observe_duration(took, &crate::metrics::BROADCAST_BUCKETS);
            }
        }
        for (key, why) in refused {
            self.refused(key, Err(why));
        }
    }

    /// Marks a connection whose socket failed: no close frame can be sent, both tasks stop.
    pub fn abort(&mut self, key: ConnKey, d: Disconnect) {
        self.drop_subscriptions(key);
        self.conns.abort(key, d);
    }
}
