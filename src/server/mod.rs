//! Socket loops of one shard: accepting (and TLS, `socket`), HTTP/1.1 keep-alive (reading
//! requests within their limits: `request`), the WebSocket reader (bidi and uni), the HTTP
//! streaming transports (`streaming`), what every connection task shares
//! (`conn`: commands in order, the writer, the end of a connection), the operator endpoints
//! (`ops`: metrics, health) and the admin UI (`admin`), which of them each listener serves
//! (`Port`: main and internal), the timer task, and the tasks that drain each peer's lane into
//! the shard (`spawn_pump`; the pump is `shard::mesh`'s).
//!
//! Owns: the glommio sockets and tasks. All protocol decisions are made by `client`, `api` and
//! `shard` on `&mut Shard`; this module only moves bytes and wakes tasks. It never holds a shard
//! borrow across `.await`.

use std::borrow::Cow;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future::or;
use futures_lite::io::{AsyncReadExt, ReadHalf};
use glommio::channels::shared_channel::ConnectedReceiver;
use glommio::net::{TcpListener, TcpStream};
use glommio::timer::sleep;
use tungstenite::Message;

use crate::api;
use crate::client::conn::ConnKey;
use crate::client::queue::Out;
use crate::http::{self, BodyKind, Head, HttpError};
use crate::protocol::{codes, json, protobuf, Command, Disconnect};
use crate::shard::id::Lane;
use crate::shard::id::ShardId;
use crate::shard::mesh;
use crate::shard::msg::{Frame, ShardMsg};
use crate::shard::{shutdown_signal, ShardRef};
use crate::transport::deflate::{self, Inflater};
use crate::transport::websocket::{self, Wire};
use crate::transport::Transport;

mod admin;
pub mod admission;
mod conn;
pub mod ops;
pub mod proxy;
mod request;
mod socket;
mod streaming;

use conn::{closed_then_wait, disconnect, finish_conn, handle_commands, shard_header, write_loop};
pub use conn::{ConnectionRate, Env, Port, Reply};
use request::{
    admit_body, api_path, discard, http_reply, linger, read_body, read_head, DISCARD_MAX_BYTES,
};
use socket::{send, Socket};

/// Idle time allowed between HTTP requests on a keep-alive connection.
const HTTP_IDLE: Duration = Duration::from_secs(60);
/// Inline read buffer of an idle WebSocket connection (most client frames fit).
const WS_IDLE_READ: usize = 256;
/// Heap read buffer used while a connection streams more than `WS_IDLE_READ` per read.
const WS_BURST_READ: usize = 8192;
/// tungstenite's frame-parsing chunk when `websocket.read_buffer_size` is 0.
const WS_PARSE_CHUNK: usize = 256;
/// WebSocket close for an inbound message over `websocket.message_size_limit` (RFC 6455 1009).
const CLOSE_MESSAGE_TOO_BIG: Disconnect =
    Disconnect { code: 1009, reason: Cow::Borrowed("message too big") };
/// WebSocket close for a text frame that is not UTF-8 (RFC 6455 1007).
const CLOSE_INVALID_PAYLOAD: Disconnect =
    Disconnect { code: 1007, reason: Cow::Borrowed("invalid utf-8") };
/// WebSocket close for a frame-level protocol violation (RFC 6455 1002).
const CLOSE_PROTOCOL_ERROR: Disconnect =
    Disconnect { code: 1002, reason: Cow::Borrowed("protocol error") };
/// Timer task resolution.
const TIMER_TICK: Duration = Duration::from_millis(250);
/// First and longest wait after a failed accept (EMFILE: connections must close first).
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_millis(500);
/// At most one accept-failure log line per this long.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(10);

/// The decisions a connection takes on a parsed request head before it reads a body, for the
/// fuzz targets in `fuzz/` (which have no socket). Not an API: each function only forwards.
#[doc(hidden)]
pub mod fuzzing {
    use std::sync::Arc;

    use super::{admin, request, streaming, Port, Reply};
    use crate::config::Config;
    use crate::http::Head;

    /// How large a body the request may send, or the answer it gets on its head alone.
    pub fn admit_body(cfg: &Config, port: Port, head: &Head) -> Result<usize, Reply> {
        request::admit_body(cfg, port, head)
    }

    /// The HTTP API method path the request addresses on this port, if any.
    pub fn api_path<'h>(cfg: &Config, port: Port, head: &'h Head) -> Option<&'h str> {
        request::api_path(cfg, port, head)
    }

    /// An admin tail request: its channel, or the status and reason it is refused with.
    pub fn tail_request(
        cfg: &Config,
        port: Port,
        head: &Head,
    ) -> Option<Result<Arc<str>, (u16, &'static str)>> {
        admin::tail_request(cfg, port, head)
    }

    /// The body limit of the streaming or emulation endpoint at the request's path, if any.
    pub fn stream_endpoint_limit(cfg: &Config, head: &Head) -> Option<usize> {
        streaming::Endpoint::at(cfg, &head.path).map(|(_, limit)| limit)
    }
}

/// Serves one accepted TCP connection: HTTP requests until it upgrades to WebSocket or closes.
pub async fn serve_connection(shard: ShardRef, env: Rc<Env>, mut tcp: TcpStream) {
    let shard_id = shard.borrow().id();
    // Held until this function returns: the connection closed, or its client transport runs in
    // a task of its own.
    let Some(_slot) = env.admission.enter() else {
        refuse_full(shard_id, &env, &mut tcp).await;
        return;
    };
    let _ = tcp.set_nodelay(true);
    let _ = tcp.set_read_timeout(Some(HTTP_IDLE));
    let head_timeout = shard.borrow().cfg().runtime.http_head_timeout;
    let Some(mut stream) = socket::accept(tcp, env.tls.as_ref()).await else { return };
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut first = true;
    loop {
        let head = read_head(&mut stream, &mut buf, head_timeout, first, &env.admission).await;
        first = false;
        let head = match head {
            Ok(Some(h)) => h,
            Ok(None) => return,
            Err(e) => {
                let _ =
                    send(&mut stream, &error_response(shard_id, e.status(), &e.to_string())).await;
                return;
            }
        };
        let cfg = Arc::clone(shard.borrow().cfg());
        let clients = env.port.clients();
        let bidi = clients && !cfg.websocket.disabled && head.path == cfg.websocket.handler_prefix;
        let uni =
            clients && cfg.uni_websocket.enabled && head.path == cfg.uni_websocket.handler_prefix;
        let tail = match admin::tail_request(&cfg, env.port, &head) {
            Some(Ok(channel)) => Some(channel),
            Some(Err((status, why))) => {
                let _ = send(&mut stream, &error_response(shard_id, status, why)).await;
                return;
            }
            None => None,
        };
        let new_client = bidi
            || uni
            || matches!(
                streaming::Endpoint::at(&cfg, &head.path),
                Some((streaming::Endpoint::Stream(_), _))
            );
        if clients && new_client && over_rate(&env) {
            let why = "connection rate limit reached";
            let _ = send(&mut stream, &error_response(shard_id, 503, why)).await;
            return;
        }
        if bidi || uni || tail.is_some() {
            let any = websocket::OriginPolicy::any();
            let origins = if tail.is_some() { &any } else { &env.origins };
            match websocket::check_upgrade(&head, origins) {
                Ok(mut up) => {
                    let compression = if uni {
                        cfg.uni_websocket.compression
                    } else {
                        bidi && cfg.websocket.compression
                    };
                    if compression {
                        up.deflate = deflate::negotiate(&head);
                    }
                    let transport = if uni || tail.is_some() {
                        Transport::UniWebSocket { join: cfg.uni_websocket.join_push_messages }
                    } else {
                        Transport::WebSocket { native_ping: up.frame_ping_pong }
                    };
                    // A uni client may put its connect request in the URL.
                    let connect = if uni { head.query_param("cf_connect") } else { None };
                    // The WebSocket phase runs in a task of its own, so this HTTP future (its
                    // buffers, head and request state) is freed instead of living as long as
                    // the connection. Only the bytes after the upgrade request go along.
                    let leftover = buf.as_slice().to_vec();
                    let forwarded = shard.borrow().proxies().keep_transport_headers(&head.headers);
                    let ws = WsOpen { up, transport, connect, tail, leftover, forwarded };
                    glommio::spawn_local(serve_websocket(shard, stream, ws)).detach();
                }
                Err(e) => {
                    let body = http::json_error_body(&e.to_string());
                    let mut extra = shard_header(shard_id).to_vec();
                    extra.extend_from_slice(e.headers());
                    let resp = http::response(e.status(), "application/json", &extra, &body, false);
                    let _ = send(&mut stream, &resp).await;
                }
            }
            return;
        }
        let endpoint = streaming::Endpoint::at(&cfg, &head.path).filter(|_| clients);
        let limit = match endpoint {
            Some((_, limit)) => limit,
            None => match admit_body(&cfg, env.port, &head) {
                Ok(limit) => limit,
                Err(reply) => {
                    // Answered from the head alone. A small body is read and dropped so the
                    // connection can carry the next request (as Go's net/http does); a large
                    // one is not read: the connection closes after the answer.
                    let small = match head.body {
                        BodyKind::Empty => true,
                        BodyKind::Length(n) => n <= DISCARD_MAX_BYTES,
                        BodyKind::Chunked => false,
                    };
                    let keep_alive = small
                        && head.keep_alive()
                        && discard(&mut stream, &mut buf, &head, head_timeout).await.is_ok();
                    let mut extra = shard_header(shard_id).to_vec();
                    extra.extend(reply.headers.iter().map(|(k, v)| (*k, v.as_str())));
                    let resp = http::response(
                        reply.status,
                        reply.content_type,
                        &extra,
                        &reply.body,
                        keep_alive,
                    );
                    if send(&mut stream, &resp).await.is_err() {
                        return;
                    }
                    if !keep_alive {
                        linger(&mut stream).await;
                        return;
                    }
                    continue;
                }
            },
        };
        if head.body != BodyKind::Empty
            && head.header_has_token("expect", "100-continue")
            && buf.is_empty()
        {
            let _ = send(&mut stream, b"HTTP/1.1 100 Continue\r\n\r\n").await;
        }
        let (body, _lease) = match read_body(&mut stream, &mut buf, &head, limit, &env.admission)
            .await
        {
            Ok(read) => read,
            Err(e) => {
                let _ =
                    send(&mut stream, &error_response(shard_id, e.status(), &e.to_string())).await;
                if matches!(e, HttpError::Busy | HttpError::BodyTooLarge) {
                    // The body is still coming: drain a moment so the answer is not lost to
                    // a reset.
                    linger(&mut stream).await;
                }
                return;
            }
        };
        let keep_alive = head.keep_alive() && !shard.borrow().shutting_down();
        let reply = match endpoint {
            Some((e, _)) => match streaming::request(&shard, &env, e, &head, body).await {
                Ok(open) => {
                    // Like WebSocket, a stream gets a task of its own.
                    glommio::spawn_local(streaming::serve(shard, stream, open)).detach();
                    return;
                }
                Err(reply) => reply,
            },
            // Boxed: API request state is allocated per request, not carried by every
            // connection.
            None => Box::pin(route(&shard, env.port, &head, body)).await,
        };
        let mut extra = shard_header(shard_id).to_vec();
        extra.extend(reply.headers.iter().map(|(k, v)| (*k, v.as_str())));
        if head.minor_version == 0 && keep_alive {
            // HTTP/1.0 closes unless the response says otherwise.
            extra.push(("Connection", "keep-alive"));
        }
        let resp =
            http::response(reply.status, reply.content_type, &extra, &reply.body, keep_alive);
        if send(&mut stream, &resp).await.is_err() || !keep_alive {
            return;
        }
    }
}

/// Turns away a connection the shard's HTTP stage has no room for
/// (`runtime.http_stage_connections`): a cleartext client reads 503; a TLS one is closed
/// before the handshake, whose CPU is what an overloaded shard must not spend.
async fn refuse_full(shard_id: ShardId, env: &Env, tcp: &mut TcpStream) {
    if env.tls.is_none() {
        let why = "too many connections in the HTTP stage";
        let _ =
            futures_lite::io::AsyncWriteExt::write_all(tcp, &error_response(shard_id, 503, why))
                .await;
    }
    tracing::debug!("HTTP stage full; connection refused");
}

/// Whether a new client connection exceeds this shard's share of
/// `client.connection_rate_limit` (upstream answers those 503 before the transport starts).
fn over_rate(env: &Env) -> bool {
    env.rate.as_ref().is_some_and(|r| !r.borrow_mut().admit(Instant::now()))
}

/// A JSON error answer that closes the connection.
fn error_response(shard_id: ShardId, status: u16, message: &str) -> Vec<u8> {
    let body = http::json_error_body(message);
    http::response(status, "application/json", &shard_header(shard_id), &body, false)
}

async fn route(shard: &ShardRef, port: Port, head: &Head, body: Vec<u8>) -> Reply {
    let cfg = Arc::clone(shard.borrow().cfg());
    if port.ops() {
        if let Some(reply) = ops::route(shard, &cfg, head).await {
            return reply;
        }
    }
    if let Some(method) = api_path(&cfg, port, head) {
        return http_reply(api::handle_http(shard, head, method, body).await);
    }
    // Last: with the default empty prefix the admin UI takes every path left.
    if cfg.admin.enabled && port.internal(cfg.admin.external) {
        if let Some(reply) = admin::route(shard, &cfg, head, &body).await {
            return reply;
        }
    }
    Reply::json(404, http::json_error_body("not found"))
}

/// A WebSocket connection about to start.
struct WsOpen {
    up: websocket::Upgrade,
    transport: Transport,
    /// A uni client's `cf_connect` (a bare connect request).
    connect: Option<String>,
    /// The channel an admin UI tail follows (the connection is authorised already).
    tail: Option<Arc<str>>,
    /// Bytes that followed the upgrade request.
    leftover: Vec<u8>,
    /// The request headers some proxy forwards (spec §9.3).
    forwarded: Vec<(String, Vec<u8>)>,
}

async fn serve_websocket(shard: ShardRef, mut stream: Socket, ws: WsOpen) {
    let WsOpen { up, transport, connect, tail, leftover, forwarded } = ws;
    let (shard_id, cfg) = {
        let s = shard.borrow();
        (s.id(), Arc::clone(s.cfg()))
    };
    if send(&mut stream, &websocket::switching_protocols(&up, shard_id.index())).await.is_err() {
        return;
    }
    let _ = stream.tcp().set_read_timeout(None);
    let uni = transport.unidirectional();
    let write_timeout =
        if uni { cfg.uni_websocket.write_timeout } else { cfg.websocket.write_timeout };
    // The writer applies the write timeout itself (it lets a closing connection linger).
    let stall = (!write_timeout.is_zero()).then_some(write_timeout);
    // Unidirectional WebSocket is JSON only.
    let key = shard.borrow_mut().open_conn(transport, up.protobuf && !uni, forwarded);
    let size_limit =
        if uni { cfg.uni_websocket.message_size_limit } else { cfg.websocket.message_size_limit };
    let mut read = ReadState::default();
    if up.deflate.is_some() {
        if let Some(c) = shard.borrow_mut().conns().get_mut(key) {
            c.deflate = true;
        }
        let configured = if uni { 0 } else { cfg.websocket.decompressed_message_size_limit };
        let inflated = if configured == 0 { size_limit.saturating_mul(10) } else { configured };
        let limits = deflate::Limits { wire: size_limit, inflated };
        read.deflate = Some((Inflater::default(), limits));
    }
    let (reader, writer) = futures_lite::io::split(stream);
    let writer_task = glommio::spawn_local(write_loop(shard.clone(), key, writer, stall));
    if let Some(text) = connect {
        read.connect_sent = true;
        uni_connect(&shard, key, text.as_bytes()).await;
    } else if let Some(channel) = tail {
        read.connect_sent = true;
        shard.borrow_mut().with_clients(|c| c.admin_tail(key, channel));
    }
    read_loop(&shard, key, reader, leftover, size_limit, cfg.websocket.read_buffer_size, read)
        .await;
    finish_conn(&shard, key, writer_task).await;
}

/// What a reader knows beyond the bytes.
#[derive(Default)]
struct ReadState {
    /// A uni WebSocket client's connect request arrived (in the URL or its first message);
    /// later messages are ignored.
    connect_sent: bool,
    /// permessage-deflate: the wire bytes go through the inflater before tungstenite.
    deflate: Option<(Inflater, deflate::Limits)>,
}

impl ReadState {
    /// Appends bytes read from the socket to what tungstenite parses (inflating compressed
    /// messages first); an error is the close the connection gets.
    fn take_in(
        &mut self,
        raw: &mut Vec<u8>,
        input: &mut Vec<u8>,
        bytes: &[u8],
    ) -> Result<(), Disconnect> {
        let Some((inflater, limits)) = &mut self.deflate else {
            input.extend_from_slice(bytes);
            return Ok(());
        };
        raw.extend_from_slice(bytes);
        inflater.feed(raw, input, *limits).map_err(|e| match e {
            deflate::InflateError::TooBig => CLOSE_MESSAGE_TOO_BIG,
            deflate::InflateError::Invalid => CLOSE_PROTOCOL_ERROR,
        })
    }
}

/// Handles a unidirectional client's connect request; one that does not decode closes the
/// connection with 3501.
async fn uni_connect(shard: &ShardRef, key: ConnKey, request: &[u8]) {
    match json::decode_connect_request(request) {
        Ok(req) => {
            let cmd = Command { id: 1, request: crate::protocol::Request::Connect(req) };
            Box::pin(handle_commands(shard, key, vec![cmd], request.len())).await;
        }
        Err(_) => disconnect(shard, key, codes::DISCONNECT_BAD_REQUEST),
    }
}

async fn read_loop(
    shard: &ShardRef,
    key: ConnKey,
    mut reader: ReadHalf<Socket>,
    leftover: Vec<u8>,
    message_size_limit: usize,
    read_buffer_size: usize,
    mut state: ReadState,
) {
    let uni = shard.borrow_mut().conns().get(key).is_some_and(|c| c.transport.unidirectional());
    // With deflate the inflater holds the wire to message_size_limit; tungstenite sees
    // messages inflated, up to decompressed_message_size_limit.
    let parsed_limit = state.deflate.as_ref().map_or(message_size_limit, |(_, l)| l.inflated);
    let mut ctx = websocket::context(
        parsed_limit,
        if read_buffer_size == 0 { WS_PARSE_CHUNK } else { read_buffer_size },
    );
    let mut raw = Vec::new();
    let mut input = Vec::new();
    let mut fatal = false;
    if let Err(close) = state.take_in(&mut raw, &mut input, &leftover) {
        disconnect(shard, key, close);
        fatal = true;
    }
    let mut output = Vec::new();
    // Idle connections wait on a small inline buffer; a heap buffer is used only while a read
    // fills the small one (a burst or a large message) and is dropped again afterwards.
    let mut small = [0u8; WS_IDLE_READ];
    let mut big: Vec<u8> = Vec::new();
    let mut stop_commands = fatal;
    // Set after tungstenite (or the inflater) reported a fatal frame error: its parser state is
    // then undefined (feeding it more bytes can trip its internal assertions), so the rest of
    // the stream is only drained until the client closes or the close wait ends.
    loop {
        if fatal {
            input.clear();
        }
        // Parse everything buffered first (the upgrade request may have carried frames).
        while !fatal {
            let msg = ctx.read(&mut Wire { input: &mut input, output: &mut output });
            if !output.is_empty() {
                let bytes = bytes::Bytes::from(std::mem::take(&mut output));
                shard.borrow_mut().with_clients(|c| c.enqueue(key, None, Out::Control(bytes)));
            }
            match msg {
                Ok(msg @ (Message::Text(_) | Message::Binary(_))) if uni => {
                    if !state.connect_sent && !stop_commands {
                        state.connect_sent = true;
                        uni_connect(shard, key, &msg.into_data()).await;
                    }
                }
                Ok(msg @ (Message::Text(_) | Message::Binary(_))) => {
                    // A JSON connection sends text frames and a Protobuf one binary frames;
                    // anything else is a protocol violation.
                    let protobuf = shard.borrow_mut().conns().get(key).is_some_and(|c| c.protobuf);
                    let bytes = msg.len();
                    let commands = match (&msg, protobuf) {
                        (Message::Text(t), false) => {
                            json::decode_frame(t.as_bytes()).map_err(|_| ())
                        }
                        (Message::Binary(b), true) => protobuf::decode_frame(b).map_err(|_| ()),
                        _ => Err(()),
                    };
                    match commands {
                        Ok(commands) if !stop_commands => {
                            // Boxed: command handling state exists only while a frame is
                            // processed, not in every idle connection's reader.
                            if !Box::pin(handle_commands(shard, key, commands, bytes)).await {
                                stop_commands = true;
                            }
                        }
                        Ok(_) => {}
                        Err(()) => {
                            disconnect(shard, key, codes::DISCONNECT_BAD_REQUEST);
                            stop_commands = true;
                        }
                    }
                }
                Ok(Message::Close(_)) => {
                    // tungstenite queues its Close reply internally; flush it so the client
                    // sees a clean close handshake.
                    let _ = ctx.flush(&mut Wire { input: &mut input, output: &mut output });
                    if !output.is_empty() {
                        let bytes = bytes::Bytes::from(std::mem::take(&mut output));
                        shard
                            .borrow_mut()
                            .with_clients(|c| c.enqueue(key, None, Out::Control(bytes)));
                    }
                    return;
                }
                Ok(Message::Pong(_)) => shard.borrow_mut().with_clients(|c| c.native_pong(key)),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    break
                }
                Err(tungstenite::Error::Capacity(_)) => {
                    disconnect(shard, key, CLOSE_MESSAGE_TOO_BIG);
                    stop_commands = true;
                    fatal = true;
                }
                Err(tungstenite::Error::Utf8(_)) => {
                    disconnect(shard, key, CLOSE_INVALID_PAYLOAD);
                    stop_commands = true;
                    fatal = true;
                }
                Err(tungstenite::Error::Protocol(_)) => {
                    disconnect(shard, key, CLOSE_PROTOCOL_ERROR);
                    stop_commands = true;
                    fatal = true;
                }
                Err(_) => return,
            }
        }
        if input.is_empty() && input.capacity() > 0 {
            // Idle connections keep no input buffer; the next read allocates a fitting one.
            input = Vec::new();
        }
        if raw.is_empty() && raw.capacity() > 0 {
            raw = Vec::new();
        }
        let buf: &mut [u8] = if big.is_empty() { &mut small } else { &mut big };
        let read = or(async { Some(reader.read(buf).await) }, async {
            closed_then_wait(shard, key).await;
            None
        })
        .await;
        let n = match read {
            Some(Ok(n)) if n > 0 => n,
            _ => return,
        };
        let read = if big.is_empty() { &small[..n] } else { &big[..n] };
        if !fatal {
            if let Err(close) = state.take_in(&mut raw, &mut input, read) {
                disconnect(shard, key, close);
                stop_commands = true;
                fatal = true;
            }
        }
        if big.is_empty() {
            if n == WS_IDLE_READ {
                big = vec![0u8; WS_BURST_READ];
            }
        } else if n < WS_IDLE_READ {
            big = Vec::new();
        }
    }
}

/// Fires connection timers (stale, ping, pong, expiry) for the shard.
pub async fn timers(shard: ShardRef) {
    loop {
        let next = shard.borrow_mut().tick();
        let wait = next
            .map_or(TIMER_TICK, |at| at.saturating_duration_since(Instant::now()).min(TIMER_TICK));
        sleep(wait.max(Duration::from_millis(5))).await;
        let done = {
            let mut s = shard.borrow_mut();
            s.shutting_down() && s.conns().is_empty()
        };
        if done {
            return;
        }
    }
}

/// Runs `accept` until shutdown, handing each accepted socket to `serve`. Accept errors (typically
/// EMFILE) back off briefly instead of spinning.
async fn accept_until_shutdown<T, A, F>(shard: &ShardRef, mut accept: A, mut serve: impl FnMut(T))
where
    A: FnMut() -> F,
    F: Future<Output = glommio::Result<T, ()>>,
{
    // Failures (EMFILE above all) are logged once per ACCEPT_LOG_EVERY with how many there
    // were, not once each: at the fd limit a line per retry would flood the log.
    let mut failed: u64 = 0;
    let mut logged: Option<Instant> = None;
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let accepted = or(async { Some(accept().await) }, async {
            shutdown_signal(shard).await;
            None
        })
        .await;
        match accepted {
            None => return,
            Some(Ok(stream)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                serve(stream);
            }
            Some(Err(e)) => {
                failed += 1;
                if logged.is_none_or(|at| at.elapsed() >= ACCEPT_LOG_EVERY) {
                    tracing::warn!(error = %e, failures = failed, "accept failed; backing off");
                    logged = Some(Instant::now());
                    failed = 0;
                }
                sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
}

/// Accepts connections on a `SO_REUSEPORT` listener of this shard until shutdown.
pub async fn accept_loop(shard: ShardRef, env: Rc<Env>, listener: TcpListener) {
    accept_until_shutdown(
        &shard,
        || listener.accept(),
        |stream| {
            glommio::spawn_local(serve_connection(shard.clone(), env.clone(), stream)).detach();
        },
    )
    .await;
}

/// Shard 0's acceptor for round-robin placement: the k-th connection goes to shard k mod n.
pub async fn accept_round_robin(shard: ShardRef, env: Rc<Env>, listener: TcpListener) {
    let mut next: usize = 0;
    accept_until_shutdown(
        &shard,
        || listener.shared_accept(),
        |stream| {
            let count = shard.borrow().count();
            let target = ShardId((next % count) as u16);
            next = next.wrapping_add(1);
            if target == shard.borrow().id() {
                let stream = stream.bind_to_executor();
                glommio::spawn_local(serve_connection(shard.clone(), env.clone(), stream)).detach();
            } else {
                shard.borrow_mut().mesh().send(Lane::Main, target, ShardMsg::Accepted(stream));
            }
        },
    )
    .await;
}

/// Drains one peer's lane into this shard (`mesh::pump`): every frame goes to
/// `Shard::receive`; an accepted socket it hands back becomes a connection task here.
pub fn spawn_pump(shard: &ShardRef, env: &Rc<Env>, rx: ConnectedReceiver<Frame>) {
    let (shard, env) = (shard.clone(), env.clone());
    let pump = mesh::pump(rx, move |frames| {
        for frame in frames {
            let accepted = shard.borrow_mut().receive(frame);
            if let Some(stream) = accepted {
                let stream = stream.bind_to_executor();
                glommio::spawn_local(serve_connection(shard.clone(), env.clone(), stream)).detach();
            }
        }
    });
    glommio::spawn_local(pump).detach();
}
