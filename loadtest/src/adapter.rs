//! Target adapters: how clients talk to a server (the [`ClientProtocol`] a worker runs per
//! connection) and how the coordinator publishes ([`Publisher`]). A [`ProtocolSpec`] is the
//! serialisable description that travels to worker processes and builds both halves.
//!
//! Rotor and the `raw` floor server both speak the Centrifugo JSON protocol
//! ([`CentrifugoJson`]) and take publishes on `POST /api/publish` ([`HttpApiPublisher`]).
//! The peers: `nats-server` speaks the NATS client protocol in binary WebSocket frames
//! ([`NatsWs`]) and takes `PUB` on its plain TCP port ([`NatsPublisher`]); the socket.io 4
//! server in `loadtest/peers` speaks Engine.IO v4 / Socket.IO packets in text frames
//! ([`SocketIo`]) and takes `POST /publish` ([`HttpApiPublisher::with_path`]).
//! Adding a peer means one new `ProtocolSpec` variant, a `ClientProtocol` that frames its
//! connect/subscribe and recognises its deliveries, and a `Publisher` speaking its publish
//! path; scenarios and measurement stay as they are.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};

/// Serialisable description of a target's wire protocol.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProtocolSpec {
    /// Centrifugo protocol v2, JSON over WebSocket; publishes through the HTTP API.
    CentrifugoJson {
        /// WebSocket path (`/connection/websocket`).
        ws_path: String,
        /// HS256 secret for connection tokens; `None` sends an empty token.
        hmac_secret: Option<String>,
        /// API key for `/api/publish`.
        api_key: String,
        /// Clients subscribe with one of this many distinct tags filters, all of which pass
        /// the load's publications (tagged `lt=1`); 0 = no filter.
        #[serde(default)]
        tags_filters: usize,
        /// Publications carry the tag `lt=1` (implied by `tags_filters`): a baseline with the
        /// same bytes on the wire and no filters.
        #[serde(default)]
        tagged: bool,
    },
    /// Centrifugo protocol v2 in Protobuf over WebSocket (`?format=protobuf`); publishes
    /// through the HTTP API.
    CentrifugoProtobuf {
        /// HS256 secret for connection tokens; `None` sends an empty token.
        hmac_secret: Option<String>,
        /// API key for `/api/publish`.
        api_key: String,
    },
    /// Centrifugo's unidirectional SSE (`POST /connection/uni_sse`): the token's `channels`
    /// claim subscribes server-side; publishes through the HTTP API.
    CentrifugoUniSse {
        /// HS256 secret for connection tokens.
        hmac_secret: Option<String>,
        /// API key for `/api/publish`.
        api_key: String,
    },
    /// NATS client protocol over WebSocket (binary frames); `PUB` over plain TCP.
    NatsWs {
        /// The server's plain TCP client port, for the publisher.
        publish_addr: SocketAddr,
    },
    /// Socket.IO 4 (Engine.IO v4) over WebSocket; `POST /publish` on the same port.
    SocketIo,
}

impl ProtocolSpec {
    /// Centrifugo's protocol as `flavor` clients speak it.
    pub fn centrifugo(flavor: Flavor, hmac_secret: Option<String>, api_key: String) -> Self {
        match flavor {
            Flavor::Protobuf => ProtocolSpec::CentrifugoProtobuf { hmac_secret, api_key },
            Flavor::UniSse => ProtocolSpec::CentrifugoUniSse { hmac_secret, api_key },
            Flavor::Json => ProtocolSpec::CentrifugoJson {
                ws_path: "/connection/websocket".into(),
                hmac_secret,
                api_key,
                tags_filters: 0,
                tagged: false,
            },
        }
    }

    /// JSON clients subscribe with `n` distinct tags filters (`--tags-filters`), and
    /// publications are tagged when `n > 0` or `tagged` (`--tag-publications`); other
    /// protocols ignore both.
    pub fn with_tags_filters(mut self, n: usize, tagged: bool) -> Self {
        if let ProtocolSpec::CentrifugoJson { tags_filters, tagged: t, .. } = &mut self {
            *tags_filters = n;
            *t = tagged || n > 0;
        }
        self
    }

    /// The per-connection client side.
    pub fn client(&self) -> Box<dyn ClientProtocol> {
        match self {
            ProtocolSpec::CentrifugoJson { ws_path, hmac_secret, tags_filters, .. } => {
                Box::new(CentrifugoJson {
                    ws_path: ws_path.clone(),
                    tags_filters: *tags_filters,
                    key: hmac_secret
                        .as_ref()
                        .map(|s| jsonwebtoken::EncodingKey::from_secret(s.as_bytes())),
                })
            }
            ProtocolSpec::CentrifugoProtobuf { hmac_secret, .. } => Box::new(CentrifugoProtobuf {
                key: hmac_secret
                    .as_ref()
                    .map(|s| jsonwebtoken::EncodingKey::from_secret(s.as_bytes())),
            }),
            ProtocolSpec::CentrifugoUniSse { hmac_secret, .. } => Box::new(CentrifugoUniSse {
                key: hmac_secret
                    .as_ref()
                    .map(|s| jsonwebtoken::EncodingKey::from_secret(s.as_bytes())),
            }),
            ProtocolSpec::NatsWs { .. } => Box::new(NatsWs),
            ProtocolSpec::SocketIo => Box::new(SocketIo),
        }
    }

    /// The coordinator's publisher for a server at `addr`.
    pub fn publisher(&self, addr: SocketAddr) -> Box<dyn Publisher> {
        match self {
            ProtocolSpec::CentrifugoJson { api_key, tagged, .. } => {
                let publisher = HttpApiPublisher::new(addr, api_key.clone());
                Box::new(if *tagged { publisher.tagged() } else { publisher })
            }
            ProtocolSpec::CentrifugoProtobuf { api_key, .. }
            | ProtocolSpec::CentrifugoUniSse { api_key, .. } => {
                Box::new(HttpApiPublisher::new(addr, api_key.clone()))
            }
            ProtocolSpec::NatsWs { publish_addr } => Box::new(NatsPublisher::new(*publish_addr)),
            ProtocolSpec::SocketIo => Box::new(HttpApiPublisher::with_path(addr, "/publish")),
        }
    }
}

/// How clients of a Centrifugo-protocol target connect.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Flavor {
    /// JSON over WebSocket.
    #[default]
    Json,
    /// Protobuf over WebSocket.
    Protobuf,
    /// Unidirectional SSE (JSON events).
    UniSse,
}

impl Flavor {
    /// From the `--protobuf` / `--uni-sse` flags.
    pub fn from_flags(protobuf: bool, uni_sse: bool) -> Flavor {
        if uni_sse {
            Flavor::UniSse
        } else if protobuf {
            Flavor::Protobuf
        } else {
            Flavor::Json
        }
    }
}

/// The channel name client `i` subscribes to when there are `channels` channels.
pub fn channel_name(i: usize, channels: usize) -> String {
    if channels <= 1 {
        "bench".to_owned()
    } else {
        format!("bench{}", i % channels)
    }
}

/// A WebSocket data frame to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Text frame.
    Text(String),
    /// Binary frame.
    Binary(Vec<u8>),
}

/// What one inbound data frame meant for a connection.
#[derive(Debug, Default)]
pub struct Inbound {
    /// The connection is now connected and subscribed.
    pub ready: bool,
    /// Send timestamps of the publications delivered in this frame.
    pub delivered_ts: Vec<u64>,
    /// Frames to send back (pongs, and the next opening command of stepwise handshakes).
    pub replies: Vec<Frame>,
    /// The server rejected connect or subscribe.
    pub error: Option<String>,
    /// Parts of the frame that were not understood.
    pub unknown: u64,
}

/// Per-connection protocol state the adapter keeps between frames.
#[derive(Debug, Default)]
pub struct Session {
    /// The channel this connection subscribes to.
    pub channel: String,
    /// Replies to the opening commands seen so far (or the handshake step reached).
    pub replies_seen: u32,
    /// connect and subscribe both answered.
    pub ready: bool,
    /// Unparsed tail of a byte-stream protocol (NATS lines split across frames).
    pub buf: Vec<u8>,
}

impl Session {
    /// A fresh session for a client subscribing to `channel`.
    pub fn new(channel: &str) -> Self {
        Self { channel: channel.to_owned(), ..Self::default() }
    }
}

/// Client side of a target's protocol, run once per connection inside a worker.
pub trait ClientProtocol {
    /// WebSocket path (with query) to upgrade on.
    fn ws_path(&self) -> &str;
    /// Frames to send right after the upgrade (connect, subscribe); protocols whose server
    /// speaks first return none and answer its greeting in [`ClientProtocol::on_frame`].
    fn open_frames(&self, client: usize, channel: &str) -> Result<Vec<Frame>>;
    /// Interprets one inbound data frame (text or binary payload bytes).
    fn on_frame(&self, session: &mut Session, data: &[u8], out: &mut Inbound);
    /// For an HTTP streaming transport instead of WebSocket: the path and POST body that open
    /// the stream; each event's data then goes to [`ClientProtocol::on_frame`].
    fn stream_request(&self, _client: usize, _channel: &str) -> Result<Option<(String, String)>> {
        Ok(None)
    }
}

/// Publishing side, used by the coordinator.
pub trait Publisher: Send {
    /// Publishes `payload` (a JSON object) to `channel`; returns when the server accepted it.
    fn publish(&mut self, channel: &str, payload: &str) -> Result<()>;
}

/// Centrifugo protocol v2 with JSON frames, the way the official k6 script drives it: connect
/// and subscribe in one frame, `{}` pings answered with `{}`.
pub struct CentrifugoJson {
    ws_path: String,
    key: Option<jsonwebtoken::EncodingKey>,
    tags_filters: usize,
}

#[derive(Serialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    channels: Vec<String>,
}

/// An HS256 connection token for load-test client `client` (empty without a key).
fn client_token(key: Option<&jsonwebtoken::EncodingKey>, client: usize) -> Result<String> {
    token_with_channels(key, client, Vec::new())
}

/// A connection token whose `channels` claim subscribes the client server-side.
fn token_with_channels(
    key: Option<&jsonwebtoken::EncodingKey>,
    client: usize,
    channels: Vec<String>,
) -> Result<String> {
    let Some(key) = key else { return Ok(String::new()) };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = Claims { sub: format!("lt{client}"), exp: now + 3600, channels };
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, key)
        .map_err(|e| Error::Args(format!("signing token: {e}")))
}

impl ClientProtocol for CentrifugoJson {
    fn ws_path(&self) -> &str {
        &self.ws_path
    }

    fn open_frames(&self, client: usize, channel: &str) -> Result<Vec<Frame>> {
        let token = client_token(self.key.as_ref(), client)?;
        let connect =
            serde_json::json!({"id": 1, "connect": {"token": token, "name": "rotor-loadtest"}});
        let mut subscribe = serde_json::json!({"id": 2, "subscribe": {"channel": channel}});
        if self.tags_filters > 0 {
            // Distinct per group (the `g` branch), and every one passes the load's `lt=1`.
            let group = (client % self.tags_filters).to_string();
            subscribe["subscribe"]["tf"] = serde_json::json!({"op": "or", "nodes": [
                {"key": "lt", "cmp": "eq", "val": "1"},
                {"key": "g", "cmp": "eq", "val": group},
            ]});
        }
        Ok(vec![Frame::Text(format!("{connect}\n{subscribe}"))])
    }

    fn on_frame(&self, session: &mut Session, data: &[u8], out: &mut Inbound) {
        let Ok(text) = std::str::from_utf8(data) else {
            out.unknown += 1;
            return;
        };
        for line in text.split('\n').filter(|l| !l.is_empty()) {
            if line.starts_with("{\"push\"") {
                if line.contains("\"pub\":") {
                    match crate::payload::extract_ts(line) {
                        Some(ts) => out.delivered_ts.push(ts),
                        None => out.unknown += 1,
                    }
                }
                // Other pushes (unsubscribe, disconnect, …) carry nothing to time.
            } else if line == "{}" {
                out.replies.push(Frame::Text("{}".to_owned()));
            } else if line.starts_with("{\"id\":") {
                if line.contains("\"error\":") {
                    out.error = Some(line.to_owned());
                } else {
                    session.replies_seen += 1;
                    if session.replies_seen >= 2 && !session.ready {
                        session.ready = true;
                        out.ready = true;
                    }
                }
            } else {
                out.unknown += 1;
            }
        }
    }
}

/// Centrifugo protocol v2 in Protobuf: the same connect-and-subscribe frame as the JSON
/// adapter, as delimited binary messages; an empty reply is a ping, answered with an empty
/// command. Publication payloads are the JSON the publisher sent.
pub struct CentrifugoProtobuf {
    key: Option<jsonwebtoken::EncodingKey>,
}

impl ClientProtocol for CentrifugoProtobuf {
    fn ws_path(&self) -> &str {
        "/connection/websocket?format=protobuf"
    }

    fn open_frames(&self, client: usize, channel: &str) -> Result<Vec<Frame>> {
        use prost::Message as _;
        use rotor::protocol::pb;
        let token = client_token(self.key.as_ref(), client)?;
        let connect = pb::Command {
            id: 1,
            connect: Some(pb::ConnectRequest {
                token,
                name: "rotor-loadtest".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let subscribe = pb::Command {
            id: 2,
            subscribe: Some(pb::SubscribeRequest { channel: channel.into(), ..Default::default() }),
            ..Default::default()
        };
        let mut frame = Vec::new();
        for c in [connect, subscribe] {
            c.encode_length_delimited(&mut frame)
                .map_err(|e| Error::Args(format!("encoding a command: {e}")))?;
        }
        Ok(vec![Frame::Binary(frame)])
    }

    fn on_frame(&self, session: &mut Session, data: &[u8], out: &mut Inbound) {
        use prost::Message as _;
        use rotor::protocol::pb;
        let mut rest = data;
        while !rest.is_empty() {
            let Ok(reply) = pb::Reply::decode_length_delimited(&mut rest) else {
                out.unknown += 1;
                return;
            };
            if let Some(push) = reply.push {
                if let Some(p) = push.r#pub {
                    match std::str::from_utf8(&p.data).ok().and_then(crate::payload::extract_ts) {
                        Some(ts) => out.delivered_ts.push(ts),
                        None => out.unknown += 1,
                    }
                }
            } else if reply.id == 0 {
                out.replies.push(Frame::Binary(vec![0]));
            } else if let Some(e) = reply.error {
                out.error = Some(format!("error {}: {}", e.code, e.message));
            } else {
                session.replies_seen += 1;
                if session.replies_seen >= 2 && !session.ready {
                    session.ready = true;
                    out.ready = true;
                }
            }
        }
    }
}

/// Centrifugo's unidirectional SSE: one POST opens the stream; the first event is the
/// `connect` push (with the token's channel already subscribed), then bare publication
/// pushes and `{}` pings that need no answer.
pub struct CentrifugoUniSse {
    key: Option<jsonwebtoken::EncodingKey>,
}

impl ClientProtocol for CentrifugoUniSse {
    fn ws_path(&self) -> &str {
        "/connection/uni_sse"
    }

    fn open_frames(&self, _client: usize, _channel: &str) -> Result<Vec<Frame>> {
        Ok(Vec::new())
    }

    fn stream_request(&self, client: usize, channel: &str) -> Result<Option<(String, String)>> {
        let token = token_with_channels(self.key.as_ref(), client, vec![channel.to_owned()])?;
        let body = serde_json::json!({"token": token, "name": "rotor-loadtest"}).to_string();
        Ok(Some((self.ws_path().to_owned(), body)))
    }

    fn on_frame(&self, session: &mut Session, data: &[u8], out: &mut Inbound) {
        let Ok(text) = std::str::from_utf8(data) else {
            out.unknown += 1;
            return;
        };
        if text.starts_with("{\"channel\"") && text.contains("\"pub\":") {
            match crate::payload::extract_ts(text) {
                Some(ts) => out.delivered_ts.push(ts),
                None => out.unknown += 1,
            }
        } else if text.starts_with("{\"connect\"") {
            session.ready = true;
            out.ready = true;
        } else if text.starts_with("{\"disconnect\"") {
            out.error = Some(text.to_owned());
        } else if text != "{}" {
            out.unknown += 1;
        }
    }
}

/// `POST /api/publish` (or another path) over one keep-alive HTTP/1.1 connection,
/// reconnecting once on failure. Expects 200 with a body starting `{"result"`.
pub struct HttpApiPublisher {
    addr: SocketAddr,
    path: &'static str,
    api_key: String,
    conn: Option<BufReader<TcpStream>>,
    body: Vec<u8>,
    /// Publications carry the tag `lt=1` (what `--tags-filters` subscribers filter on).
    tagged: bool,
}

impl HttpApiPublisher {
    /// A publisher for the server at `addr`.
    pub fn new(addr: SocketAddr, api_key: String) -> Self {
        Self { addr, path: "/api/publish", api_key, conn: None, body: Vec::new(), tagged: false }
    }

    /// Publications tagged `lt=1`.
    pub fn tagged(self) -> Self {
        Self { tagged: true, ..self }
    }

    /// A publisher posting the same body to `path`, without an API key.
    pub fn with_path(addr: SocketAddr, path: &'static str) -> Self {
        Self { addr, path, api_key: String::new(), conn: None, body: Vec::new(), tagged: false }
    }

    fn connection(&mut self) -> Result<&mut BufReader<TcpStream>> {
        if self.conn.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))
                .context(format!("connecting to the HTTP API at {}", self.addr))?;
            s.set_nodelay(true).context("TCP_NODELAY")?;
            s.set_read_timeout(Some(Duration::from_secs(10))).context("read timeout")?;
            s.set_write_timeout(Some(Duration::from_secs(10))).context("write timeout")?;
            self.conn = Some(BufReader::new(s));
        }
        self.conn.as_mut().ok_or_else(|| Error::Server("no API connection".into()))
    }

    fn post_once(&mut self, request: &[u8]) -> Result<(u16, Vec<u8>)> {
        let conn = self.connection()?;
        conn.get_mut().write_all(request).context("writing publish request")?;
        // Read the head line by line, then Content-Length bytes of body.
        let mut head = Vec::with_capacity(256);
        loop {
            let before = head.len();
            let n = conn.read_until(b'\n', &mut head).context("reading publish response")?;
            if n == 0 {
                return Err(Error::Server("API connection closed".into()));
            }
            if head.len() > 16 * 1024 {
                return Err(Error::Server("oversized response head".into()));
            }
            if &head[before..] == b"\r\n" {
                break;
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        resp.parse(&head).map_err(|e| Error::Server(format!("bad response head: {e}")))?;
        let status = resp.code.unwrap_or(0);
        let len = resp
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
            .ok_or_else(|| Error::Server("response without Content-Length".into()))?;
        if len > 1 << 20 {
            return Err(Error::Server("oversized response body".into()));
        }
        let mut body = vec![0; len];
        conn.read_exact(&mut body).context("reading publish response body")?;
        Ok((status, body))
    }
}

impl Publisher for HttpApiPublisher {
    fn publish(&mut self, channel: &str, payload: &str) -> Result<()> {
        self.body.clear();
        serde_json::to_writer(&mut self.body, &serde_json::json!({"channel": channel}))
            .context("encoding publish")?;
        // Splice the payload in raw: it is already JSON and must reach clients byte for byte.
        self.body.pop();
        if self.tagged {
            self.body.extend_from_slice(b",\"tags\":{\"lt\":\"1\"}");
        }
        self.body.extend_from_slice(b",\"data\":");
        self.body.extend_from_slice(payload.as_bytes());
        self.body.push(b'}');
        let mut request = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             X-API-Key: {}\r\nContent-Length: {}\r\n\r\n",
            self.path,
            self.addr,
            self.api_key,
            self.body.len()
        )
        .into_bytes();
        request.extend_from_slice(&self.body);
        let (status, body) = match self.post_once(&request) {
            Ok(r) => r,
            Err(_) => {
                self.conn = None;
                self.post_once(&request)?
            }
        };
        if status != 200 || !body.starts_with(b"{\"result\"") {
            return Err(Error::Server(format!(
                "publish answered {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        Ok(())
    }
}

/// The NATS subject of a channel: `:` becomes `.`, anything NATS cannot carry in a subject
/// token (whitespace, wildcards) becomes `_`.
pub fn nats_subject(channel: &str) -> String {
    channel
        .chars()
        .map(|c| match c {
            ':' => '.',
            c if c.is_whitespace() || c == '*' || c == '>' => '_',
            c => c,
        })
        .collect()
}

/// Position of the first `\r\n` in `buf`.
fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// NATS client protocol inside binary WebSocket frames. The server speaks first (`INFO`); the
/// answer is `CONNECT` + `SUB` + `PING` in one frame, and the `PONG` to that `PING` means the
/// subscription is in place (the server handles a connection's commands in order). Frames may
/// split or batch protocol lines, so inbound bytes are parsed as one stream.
pub struct NatsWs;

impl NatsWs {
    /// Largest unparsed tail kept before the stream is declared broken.
    const MAX_BUF: usize = 8 << 20;
}

impl ClientProtocol for NatsWs {
    fn ws_path(&self) -> &str {
        "/"
    }

    fn open_frames(&self, _client: usize, _channel: &str) -> Result<Vec<Frame>> {
        Ok(Vec::new())
    }

    fn on_frame(&self, session: &mut Session, data: &[u8], out: &mut Inbound) {
        session.buf.extend_from_slice(data);
        let mut at = 0;
        while let Some(eol) = find_crlf(&session.buf[at..]) {
            let line = &session.buf[at..at + eol];
            let next = at + eol + 2;
            if let Some(rest) = line.strip_prefix(b"MSG ") {
                // MSG <subject> <sid> [reply-to] <#bytes>
                let Some(len) = std::str::from_utf8(rest)
                    .ok()
                    .and_then(|r| r.split_ascii_whitespace().last())
                    .and_then(|n| n.parse::<usize>().ok())
                else {
                    out.unknown += 1;
                    at = next;
                    continue;
                };
                if session.buf.len() < next + len + 2 {
                    break; // payload not complete yet
                }
                let payload = &session.buf[next..next + len];
                match std::str::from_utf8(payload).ok().and_then(crate::payload::extract_ts) {
                    Some(ts) => out.delivered_ts.push(ts),
                    None => out.unknown += 1,
                }
                at = next + len + 2;
                continue;
            }
            if line == b"PING" {
                out.replies.push(Frame::Binary(b"PONG\r\n".to_vec()));
            } else if line == b"PONG" {
                if !session.ready {
                    session.ready = true;
                    out.ready = true;
                }
            } else if line.starts_with(b"INFO ") {
                if session.replies_seen == 0 {
                    session.replies_seen = 1;
                    let subject = nats_subject(&session.channel);
                    let open = format!(
                        "CONNECT {{\"verbose\":false,\"pedantic\":false,\"name\":\"rotor-loadtest\"}}\r\n\
                         SUB {subject} 1\r\nPING\r\n"
                    );
                    out.replies.push(Frame::Binary(open.into_bytes()));
                }
            } else if line.starts_with(b"-ERR") {
                out.error = Some(String::from_utf8_lossy(line).into_owned());
            } else if line != b"+OK" {
                out.unknown += 1;
            }
            at = next;
        }
        session.buf.drain(..at);
        if session.buf.len() > Self::MAX_BUF {
            out.error = Some("NATS stream: unterminated line".into());
            session.buf.clear();
        }
    }
}

/// Socket.IO 4 over Engine.IO v4, WebSocket transport only. The server speaks first with the
/// open packet `0{…}`; the client connects the default namespace (`40`), waits for `40{…}`,
/// emits `subscribe` with its channel and is ready when the server emits `subscribed` back.
/// Engine.IO pings (`2`) are answered with pongs (`3`); deliveries are `42["pub",<data>]`.
pub struct SocketIo;

impl ClientProtocol for SocketIo {
    fn ws_path(&self) -> &str {
        "/socket.io/?EIO=4&transport=websocket"
    }

    fn open_frames(&self, _client: usize, _channel: &str) -> Result<Vec<Frame>> {
        Ok(Vec::new())
    }

    fn on_frame(&self, session: &mut Session, data: &[u8], out: &mut Inbound) {
        let Ok(text) = std::str::from_utf8(data) else {
            out.unknown += 1;
            return;
        };
        if let Some(event) = text.strip_prefix("42") {
            if event.starts_with("[\"pub\",") {
                match crate::payload::extract_ts(event) {
                    Some(ts) => out.delivered_ts.push(ts),
                    None => out.unknown += 1,
                }
            } else if event.starts_with("[\"subscribed\"") {
                if !session.ready {
                    session.ready = true;
                    out.ready = true;
                }
            } else {
                out.unknown += 1;
            }
        } else if text == "2" {
            out.replies.push(Frame::Text("3".to_owned()));
        } else if text.starts_with("0{") {
            if text.contains("\"pingInterval\"") && session.replies_seen == 0 {
                session.replies_seen = 1;
                out.replies.push(Frame::Text("40".to_owned()));
            } else {
                out.unknown += 1;
            }
        } else if text.starts_with("40") {
            if session.replies_seen == 1 {
                session.replies_seen = 2;
                let sub = serde_json::json!(["subscribe", session.channel]);
                out.replies.push(Frame::Text(format!("42{sub}")));
            }
        } else if let Some(err) = text.strip_prefix("44") {
            out.error = Some(format!("connect_error {err}"));
        } else if text.starts_with('1') || text.starts_with("41") {
            out.error = Some(format!("closed by server: {text}"));
        } else {
            out.unknown += 1;
        }
    }
}

/// `PUB` over one plain TCP connection to nats-server, each followed by `PING` and a wait for
/// the `PONG`, so a publish returns once the server has handed the message to its
/// subscribers' outbound buffers (and the round trip is measured like an HTTP publish).
pub struct NatsPublisher {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
    out: Vec<u8>,
    line: Vec<u8>,
}

impl NatsPublisher {
    /// A publisher for the NATS client port at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, conn: None, out: Vec::new(), line: Vec::new() }
    }

    fn read_line(conn: &mut BufReader<TcpStream>, line: &mut Vec<u8>) -> Result<()> {
        line.clear();
        let n = (&mut *conn)
            .take(64 * 1024)
            .read_until(b'\n', line)
            .context("reading from nats-server")?;
        if n == 0 || !line.ends_with(b"\r\n") {
            return Err(Error::Server("nats-server closed the publisher connection".into()));
        }
        line.truncate(line.len() - 2);
        Ok(())
    }

    fn connection(&mut self) -> Result<&mut BufReader<TcpStream>> {
        if self.conn.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))
                .context(format!("connecting to nats-server at {}", self.addr))?;
            s.set_nodelay(true).context("TCP_NODELAY")?;
            s.set_read_timeout(Some(Duration::from_secs(10))).context("read timeout")?;
            s.set_write_timeout(Some(Duration::from_secs(10))).context("write timeout")?;
            let mut conn = BufReader::new(s);
            Self::read_line(&mut conn, &mut self.line)?;
            if !self.line.starts_with(b"INFO ") {
                return Err(Error::Server(format!(
                    "nats-server greeted with {:?}",
                    String::from_utf8_lossy(&self.line)
                )));
            }
            conn.get_mut()
                .write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"name\":\"rotor-loadtest-pub\"}\r\n")
                .context("sending CONNECT")?;
            self.conn = Some(conn);
        }
        self.conn.as_mut().ok_or_else(|| Error::Server("no NATS connection".into()))
    }

    fn publish_once(&mut self) -> Result<()> {
        let mut line = std::mem::take(&mut self.line);
        let out = std::mem::take(&mut self.out);
        let r = (|| {
            let conn = self.connection()?;
            conn.get_mut().write_all(&out).context("sending PUB")?;
            // Bounded: the server answers our PING after at most a few PINGs of its own.
            for _ in 0..16 {
                Self::read_line(conn, &mut line)?;
                match line.as_slice() {
                    b"PONG" => return Ok(()),
                    b"PING" => conn.get_mut().write_all(b"PONG\r\n").context("sending PONG")?,
                    l if l.starts_with(b"-ERR") => {
                        return Err(Error::Server(String::from_utf8_lossy(l).into_owned()))
                    }
                    _ => {}
                }
            }
            Err(Error::Server("nats-server did not answer PING".into()))
        })();
        self.line = line;
        self.out = out;
        r
    }
}

impl Publisher for NatsPublisher {
    fn publish(&mut self, channel: &str, payload: &str) -> Result<()> {
        self.out.clear();
        let subject = nats_subject(channel);
        write!(self.out, "PUB {subject} {}\r\n", payload.len()).context("encoding PUB")?;
        self.out.extend_from_slice(payload.as_bytes());
        self.out.extend_from_slice(b"\r\nPING\r\n");
        match self.publish_once() {
            Ok(()) => Ok(()),
            Err(_) => {
                self.conn = None;
                self.publish_once()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto() -> Box<dyn ClientProtocol> {
        ProtocolSpec::CentrifugoJson {
            ws_path: "/connection/websocket".into(),
            hmac_secret: Some("s3cret".into()),
            api_key: "k".into(),
            tags_filters: 0,
            tagged: false,
        }
        .client()
    }

    #[test]
    fn open_frames_are_connect_then_subscribe() {
        let frames = proto().open_frames(5, "bench").unwrap();
        assert_eq!(frames.len(), 1);
        let Frame::Text(text) = &frames[0] else { panic!("binary open frame") };
        let lines: Vec<serde_json::Value> =
            text.split('\n').map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines[0]["id"], 1);
        assert!(lines[0]["connect"]["token"].as_str().unwrap().split('.').count() == 3);
        assert_eq!(lines[1]["subscribe"]["channel"], "bench");
    }

    #[test]
    fn replies_pings_and_pushes() {
        let p = proto();
        let mut s = Session::new("bench");
        let mut out = Inbound::default();
        p.on_frame(
            &mut s,
            b"{\"id\":1,\"connect\":{\"client\":\"x\"}}\n{\"id\":2,\"subscribe\":{}}",
            &mut out,
        );
        assert!(out.ready && s.ready);
        let mut out = Inbound::default();
        let push = r#"{"push":{"channel":"bench","pub":{"data":{"ts":9,"seq":0,"pad":""}}}}"#;
        p.on_frame(&mut s, format!("{push}\n{push}\n{{}}").as_bytes(), &mut out);
        assert_eq!(out.delivered_ts, vec![9, 9]);
        assert_eq!(out.replies, vec![Frame::Text("{}".to_owned())]);
        let mut out = Inbound::default();
        p.on_frame(
            &mut s,
            br#"{"id":2,"error":{"code":103,"message":"permission denied"}}"#,
            &mut out,
        );
        assert!(out.error.is_some());
    }

    #[test]
    fn uni_sse_adapter_subscribes_by_token_and_times_bare_pushes() {
        let p =
            ProtocolSpec::centrifugo(Flavor::UniSse, Some("s3cret".into()), "k".into()).client();
        assert!(p.open_frames(1, "bench").unwrap().is_empty(), "nothing sent after opening");
        let (path, body) = p.stream_request(1, "bench3").unwrap().expect("a stream request");
        assert_eq!(path, "/connection/uni_sse");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        let token = body["token"].as_str().unwrap();
        let claims = token.split('.').nth(1).unwrap();
        use base64::Engine as _;
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&claims).unwrap();
        assert_eq!(claims["channels"], serde_json::json!(["bench3"]));
        let mut s = Session::new("bench3");
        let mut out = Inbound::default();
        p.on_frame(&mut s, br#"{"connect":{"client":"c"}}"#, &mut out);
        assert!(out.ready);
        let mut out = Inbound::default();
        p.on_frame(&mut s, br#"{"channel":"bench3","pub":{"data":{"ts":123,"pad":""}}}"#, &mut out);
        p.on_frame(&mut s, b"{}", &mut out);
        assert_eq!(out.delivered_ts, vec![123]);
        assert!(out.replies.is_empty(), "pings need no answer");
        assert_eq!(out.unknown, 0);
    }

    #[test]
    fn protobuf_adapter_frames_and_replies() {
        use prost::Message as _;
        use rotor::protocol::pb;
        let p =
            ProtocolSpec::centrifugo(Flavor::Protobuf, Some("s3cret".into()), "k".into()).client();
        assert!(p.ws_path().ends_with("format=protobuf"));
        let frames = p.open_frames(3, "bench").unwrap();
        let Frame::Binary(bytes) = &frames[0] else { panic!("text open frame") };
        let mut rest = &bytes[..];
        let connect = pb::Command::decode_length_delimited(&mut rest).unwrap();
        let subscribe = pb::Command::decode_length_delimited(&mut rest).unwrap();
        assert_eq!(connect.id, 1);
        assert_eq!(connect.connect.unwrap().token.split('.').count(), 3);
        assert_eq!(subscribe.subscribe.unwrap().channel, "bench");
        let mut s = Session::new("bench");
        let mut frame = Vec::new();
        let replies = [
            pb::Reply { id: 1, connect: Some(Default::default()), ..Default::default() },
            pb::Reply { id: 2, subscribe: Some(Default::default()), ..Default::default() },
            pb::Reply::default(),
            pb::Reply {
                push: Some(pb::Push {
                    channel: "bench".into(),
                    r#pub: Some(pb::Publication {
                        data: br#"{"ts":7,"seq":0,"pad":""}"#.to_vec().into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ];
        for r in &replies {
            r.encode_length_delimited(&mut frame).unwrap();
        }
        let mut out = Inbound::default();
        p.on_frame(&mut s, &frame, &mut out);
        assert!(out.ready);
        assert_eq!(out.delivered_ts, vec![7]);
        assert_eq!(out.replies, vec![Frame::Binary(vec![0])], "a ping is answered");
    }

    fn nats() -> Box<dyn ClientProtocol> {
        ProtocolSpec::NatsWs { publish_addr: "127.0.0.1:4222".parse().unwrap() }.client()
    }

    #[test]
    fn nats_handshake_answers_info_and_waits_for_pong() {
        let p = nats();
        assert!(p.open_frames(0, "bench:x").unwrap().is_empty());
        let mut s = Session::new("bench:x");
        let mut out = Inbound::default();
        // INFO split over two frames.
        p.on_frame(&mut s, b"INFO {\"server_id\":\"x\",", &mut out);
        assert!(out.replies.is_empty());
        p.on_frame(&mut s, b"\"max_payload\":1048576}\r\n", &mut out);
        let [Frame::Binary(open)] = out.replies.as_slice() else { panic!("{:?}", out.replies) };
        let open = String::from_utf8(open.clone()).unwrap();
        assert!(open.starts_with("CONNECT {\"verbose\":false,\"pedantic\":false"));
        assert!(open.contains("\r\nSUB bench.x 1\r\nPING\r\n"));
        assert!(!out.ready);
        let mut out = Inbound::default();
        p.on_frame(&mut s, b"PONG\r\n", &mut out);
        assert!(out.ready && s.ready);
    }

    #[test]
    fn nats_msgs_split_and_batched() {
        let p = nats();
        let mut s = Session::new("bench");
        s.ready = true;
        let payload = crate::payload::build(77, 1, 100);
        let msg = format!("MSG bench 1 {}\r\n{payload}\r\n", payload.len());
        let stream = format!("{msg}PING\r\n{msg}{msg}").into_bytes();
        let mut out = Inbound::default();
        // Every split point of the stream must give the same result.
        for cut in [1, 5, 20, msg.len() - 1, msg.len(), msg.len() + 3, stream.len() - 2] {
            let mut s2 = Session::new("bench");
            let mut o = Inbound::default();
            p.on_frame(&mut s2, &stream[..cut], &mut o);
            p.on_frame(&mut s2, &stream[cut..], &mut o);
            assert_eq!(o.delivered_ts, vec![77, 77, 77], "cut at {cut}");
            assert_eq!(o.replies, vec![Frame::Binary(b"PONG\r\n".to_vec())]);
            assert_eq!(o.unknown, 0);
            assert!(s2.buf.is_empty());
        }
        p.on_frame(&mut s, b"-ERR 'Slow Consumer'\r\n", &mut out);
        assert!(out.error.is_some());
    }

    #[test]
    fn socketio_handshake_pings_and_events() {
        let p = ProtocolSpec::SocketIo.client();
        assert!(p.ws_path().starts_with("/socket.io/?EIO=4&transport=websocket"));
        let mut s = Session::new("bench3");
        let mut out = Inbound::default();
        p.on_frame(
            &mut s,
            br#"0{"sid":"a","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#,
            &mut out,
        );
        assert_eq!(out.replies, vec![Frame::Text("40".into())]);
        let mut out = Inbound::default();
        p.on_frame(&mut s, br#"40{"sid":"b"}"#, &mut out);
        assert_eq!(out.replies, vec![Frame::Text(r#"42["subscribe","bench3"]"#.into())]);
        let mut out = Inbound::default();
        p.on_frame(&mut s, br#"42["subscribed","bench3"]"#, &mut out);
        assert!(out.ready && s.ready);
        let mut out = Inbound::default();
        p.on_frame(&mut s, b"2", &mut out);
        p.on_frame(&mut s, br#"42["pub",{"ts":5,"seq":1,"pad":"xx"}]"#, &mut out);
        assert_eq!(out.replies, vec![Frame::Text("3".into())]);
        assert_eq!(out.delivered_ts, vec![5]);
        let mut out = Inbound::default();
        p.on_frame(&mut s, br#"44{"message":"nope"}"#, &mut out);
        assert!(out.error.is_some());
    }

    #[test]
    fn subjects() {
        assert_eq!(nats_subject("news:sport"), "news.sport");
        assert_eq!(nats_subject("a b*>"), "a_b__");
    }

    #[test]
    fn channel_names() {
        assert_eq!(channel_name(7, 1), "bench");
        assert_eq!(channel_name(7, 5), "bench2");
    }
}
