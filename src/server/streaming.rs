//! The HTTP client transports: http_stream and SSE emulation with their `/emulation` half, the
//! unidirectional SSE and HTTP-stream endpoints, and `/connection/init` (spec §1.2–§1.6).
//!
//! Owns: turning such a request into either a short answer (preflight, error, emulation
//! accepted) or a streaming connection, and that connection's task. Framing is
//! `transport::stream`'s; command handling is `client`'s.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::future::or;
use futures_lite::io::{AsyncReadExt, ReadHalf};
use prost::Message as _;

use super::conn::{finish_conn, handle_commands, shard_header, write_loop, Env, Reply};
use super::socket::{send, Socket};
use crate::broker::control;
use crate::client::conn::ConnKey;
use crate::config::{Config, ConnectCodeToHttp};
use crate::http::{self, Head};
use crate::protocol::{codes, decode_commands, json, pb, Command, Disconnect, Request};
use crate::shard::id::ShardId;
use crate::shard::msg::{Answer, Call};
use crate::shard::{PendingAnswer, ShardRef};
use crate::transport::{stream, Transport};

/// Deadline of one flush to a streaming response (as upstream).
const STREAM_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// An HTTP client endpoint other than the WebSocket ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// A streaming transport.
    Stream(Transport),
    /// `/emulation`.
    Emulation,
    /// `/connection/init`.
    Init,
}

impl Endpoint {
    /// The enabled endpoint at `path`, if any, with the largest request body it takes.
    pub fn at(cfg: &Config, path: &str) -> Option<(Endpoint, usize)> {
        let emulation = cfg.http_stream.enabled || cfg.sse.enabled;
        let (http_stream, sse) = (&cfg.http_stream, &cfg.sse);
        let (uni_sse, uni_http_stream) = (&cfg.uni_sse, &cfg.uni_http_stream);
        let candidates = [
            (
                http_stream.enabled,
                &http_stream.handler_prefix,
                Endpoint::Stream(Transport::HttpStream),
                http_stream.max_request_body_size,
            ),
            (
                sse.enabled,
                &sse.handler_prefix,
                Endpoint::Stream(Transport::Sse),
                sse.max_request_body_size,
            ),
            (
                emulation,
                &cfg.emulation.handler_prefix,
                Endpoint::Emulation,
                cfg.emulation.max_request_body_size,
            ),
            (
                uni_sse.enabled,
                &uni_sse.handler_prefix,
                Endpoint::Stream(Transport::UniSse),
                uni_sse.max_request_body_size,
            ),
            (
                uni_http_stream.enabled,
                &uni_http_stream.handler_prefix,
                Endpoint::Stream(Transport::UniHttpStream),
                uni_http_stream.max_request_body_size,
            ),
            (cfg.init.enabled, &cfg.init.handler_prefix, Endpoint::Init, 0),
        ];
        candidates
            .into_iter()
            .find(|(on, prefix, ..)| *on && *prefix == path)
            .map(|(_, _, endpoint, limit)| (endpoint, limit))
    }
}

/// A streaming connection to open.
pub struct Open {
    /// Its transport.
    pub transport: Transport,
    /// It speaks Protobuf.
    pub protobuf: bool,
    /// The connect command (and any that came with it).
    pub commands: Vec<Command>,
    /// Their encoded size.
    pub bytes: usize,
    /// CORS headers for the response.
    pub cors: Vec<(&'static str, String)>,
    /// The request headers some proxy forwards (spec §9.3).
    pub forwarded: Vec<(String, Vec<u8>)>,
}

/// Answers a request to `endpoint`: a short reply, or a stream to open.
pub async fn request(
    shard: &ShardRef,
    env: &Env,
    endpoint: Endpoint,
    head: &Head,
    body: Vec<u8>,
) -> Result<Open, Reply> {
    let cors = stream::cors(head, &env.origins);
    let with_cors = |mut r: Reply| {
        r.headers.extend(cors.iter().cloned());
        r
    };
    let reply =
        |status: u16, message: &str| with_cors(Reply::json(status, http::json_error_body(message)));
    let no_content =
        || Reply { status: 204, content_type: "", headers: Vec::new(), body: Vec::new() };
    let post_only =
        !matches!(endpoint, Endpoint::Stream(Transport::Sse | Transport::UniSse) | Endpoint::Init);
    if head.method == "OPTIONS" && post_only {
        let mut r = no_content();
        r.headers.extend(stream::PREFLIGHT.iter().map(|(k, v)| (*k, (*v).to_owned())));
        return Err(with_cors(r));
    }
    let allowed = match endpoint {
        Endpoint::Init => head.method == "GET",
        _ if post_only => head.method == "POST",
        _ => head.method == "GET" || head.method == "POST",
    };
    if !allowed {
        return Err(reply(405, "method not allowed"));
    }
    let protobuf = head.header_str("content-type") == Some("application/octet-stream");
    let transport = match endpoint {
        Endpoint::Init => return Err(with_cors(Reply::json(200, b"{}".to_vec()))),
        Endpoint::Emulation => {
            return Err(match emulation(shard, protobuf, &body).await {
                Ok(()) => with_cors(no_content()),
                Err((status, message)) => reply(status, message),
            });
        }
        Endpoint::Stream(t) => t,
    };
    // GET carries the connect in `cf_connect` (a whole command for SSE, a bare request for
    // uni SSE); POST in the body.
    let input = Bytes::from(if head.method == "GET" {
        head.query_param("cf_connect").unwrap_or_default().into_bytes()
    } else {
        body
    });
    let protobuf = protobuf && transport == Transport::HttpStream;
    let commands = if transport.unidirectional() {
        match json::decode_connect_request(&input) {
            Ok(req) => vec![Command { id: 1, request: Request::Connect(req) }],
            Err(_) => return Err(reply(400, "malformed connect request")),
        }
    } else {
        match decode_commands(protobuf, &input) {
            Some(c) if matches!(c.first(), Some(Command { request: Request::Connect(_), .. })) => c,
            _ => return Err(reply(400, "expected a connect command")),
        }
    };
    let forwarded = shard.borrow().proxies().keep_transport_headers(&head.headers);
    Ok(Open { transport, protobuf, commands, bytes: input.len(), cors, forwarded })
}

/// `/emulation`: hands the commands to the shard that owns the session, without waiting for
/// it (replies travel on the session's stream). A session of another node is forwarded to it
/// (a one-node survey, as Centrifugo does), and that is awaited. Errors are (status, message).
async fn emulation(
    shard: &ShardRef,
    protobuf: bool,
    body: &[u8],
) -> Result<(), (u16, &'static str)> {
    let (node, session, data) = if protobuf {
        let req = pb::EmulationRequest::decode(body).map_err(|_| (400, "malformed request"))?;
        (req.node, req.session, req.data)
    } else {
        let req = json::decode_emulation_request(body).map_err(|_| (400, "malformed request"))?;
        (req.node, req.session, Bytes::from(req.data.into_bytes()))
    };
    if node != crate::node::get().uid {
        return forward(shard, protobuf, node, session, data).await;
    }
    // Our own clients send the commands themselves, never a JSON string of them.
    let routed = shard.borrow_mut().with_clients(|c| c.emulate_session(&session, data, false));
    routed.map_err(|_| (404, "unknown session"))
}

/// Sends an emulation request to the node owning the session and waits for its answer.
async fn forward(
    shard: &ShardRef,
    protobuf: bool,
    node: String,
    session: String,
    data: Bytes,
) -> Result<(), (u16, &'static str)> {
    // Centrifugo carries a JSON session's commands as the JSON string they came in.
    let data = if protobuf {
        data
    } else {
        let text = std::str::from_utf8(&data).map_err(|_| (400, "malformed request"))?;
        Bytes::from(serde_json::to_vec(text).map_err(|_| (400, "malformed request"))?)
    };
    let req = pb::EmulationRequest { node: node.clone(), session, data };
    let call = Call::Survey {
        op: control::SURVEY_EMULATION.to_owned(),
        data: req.encode_to_vec().into(),
        to_node: Some(node),
    };
    let id = shard.borrow_mut().call(ShardId(0), call);
    match PendingAnswer::new(shard.clone(), id).await {
        Some(Answer::Survey(answers)) if !answers.is_empty() => Ok(()),
        Some(Answer::Survey(_)) => Err((500, "the session's node did not answer")),
        _ => Err((404, "unknown node")),
    }
}

/// Serves a streaming connection until either side ends it.
pub async fn serve(shard: ShardRef, mut stream: Socket, open: Open) {
    let (shard_id, cfg) = {
        let s = shard.borrow();
        (s.id(), Arc::clone(s.cfg()))
    };
    let by_http = match open.transport {
        Transport::UniSse => Some(&cfg.uni_sse.connect_code_to_http_response),
        Transport::UniHttpStream => Some(&cfg.uni_http_stream.connect_code_to_http_response),
        _ => None,
    }
    .filter(|map| map.enabled);
    let key = shard.borrow_mut().open_conn(open.transport, open.protobuf, open.forwarded);
    let mut commands = Some(open.commands);
    if let Some(map) = by_http {
        // Connect before the response starts: a refusal is answered in HTTP (its frames stay
        // queued with no writer and go away with the connection).
        let connect = commands.take().unwrap_or_default();
        Box::pin(handle_commands(&shard, key, connect, open.bytes)).await;
        let refused = match shard.borrow_mut().conns().get(key) {
            Some(c) => c.closing.clone(),
            None => Some(codes::DISCONNECT_SERVER_ERROR),
        };
        if let Some(d) = refused {
            shard.borrow_mut().with_clients(|c| c.remove_conn(key));
            let (status, body) = http_answer(map, &d);
            let mut extra = shard_header(shard_id).to_vec();
            extra.extend(open.cors.iter().map(|(k, v)| (*k, v.as_str())));
            let resp = http::response(status, "text/plain; charset=utf-8", &extra, &body, false);
            let _ = send(&mut stream, &resp).await;
            return;
        }
    }
    let head =
        stream::response_head(open.transport, open.protobuf, &shard_header(shard_id), &open.cors);
    if send(&mut stream, &head).await.is_err() {
        shard.borrow_mut().with_clients(|c| c.remove_conn(key));
        return;
    }
    let _ = stream.tcp().set_read_timeout(None);
    let (reader, writer) = futures_lite::io::split(stream);
    let stall = Some(STREAM_WRITE_TIMEOUT);
    let writer_task = glommio::spawn_local(write_loop(shard.clone(), key, writer, stall));
    if let Some(commands) = commands {
        Box::pin(handle_commands(&shard, key, commands, open.bytes)).await;
    }
    command_loop(&shard, key, reader).await;
    finish_conn(&shard, key, writer_task).await;
}

/// The HTTP answer to a refused connect: the transform for its code, else 500 (as upstream).
fn http_answer(map: &ConnectCodeToHttp, refused: &Disconnect) -> (u16, Vec<u8>) {
    match map.transforms.iter().find(|t| t.code == u32::from(refused.code)) {
        Some(t) if t.to.body.is_empty() => (t.to.status_code, refused.reason.as_bytes().to_vec()),
        Some(t) => (t.to.status_code, t.to.body.as_bytes().to_vec()),
        None => (500, b"Internal Server Error".to_vec()),
    }
}

/// Runs the commands `/emulation` brings, in order, until the connection closes or the client
/// goes away (its socket reads end).
async fn command_loop(shard: &ShardRef, key: ConnKey, mut reader: ReadHalf<Socket>) {
    let mut scratch = [0u8; 64];
    loop {
        let next = or(
            async {
                // The client sends nothing more on this request; a read only ends (EOF or
                // error) when it goes away. Stray bytes are ignored.
                match reader.read(&mut scratch).await {
                    Ok(n) if n > 0 => Some(Vec::new()),
                    _ => None,
                }
            },
            poll_fn(|cx| {
                let mut s = shard.borrow_mut();
                let inbox = s.conns().take_inbox(key);
                let Some(c) = s.conns().get_mut(key) else { return Poll::Ready(None) };
                if c.closing.is_some() {
                    return Poll::Ready(None);
                }
                if !inbox.is_empty() {
                    return Poll::Ready(Some(inbox));
                }
                c.reader = Some(cx.waker().clone());
                Poll::Pending
            }),
        )
        .await;
        let Some(commands) = next else { return };
        if !commands.is_empty() {
            // Counted without a size: `/emulation` queued them decoded.
            Box::pin(handle_commands(shard, key, commands, 0)).await;
        }
    }
}
