//! Target adapters: how clients talk to a server (the [`ClientProtocol`] a worker runs per
//! connection) and how the coordinator publishes ([`Publisher`]). A [`ProtocolSpec`] is the
//! serialisable description that travels to worker processes and builds both halves.
//!
//! Rotor and the `raw` floor server both speak the Centrifugo JSON protocol
//! ([`CentrifugoJson`]) and take publishes on `POST /api/publish` ([`HttpApiPublisher`]).
//! Adding a peer (`nats` over WebSocket, `socketio`) means one new `ProtocolSpec` variant, a
//! `ClientProtocol` that frames its connect/subscribe and recognises its deliveries, and a
//! `Publisher` speaking its publish path; scenarios and measurement stay as they are.

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
    },
}

impl ProtocolSpec {
    /// The per-connection client side.
    pub fn client(&self) -> Box<dyn ClientProtocol> {
        match self {
            ProtocolSpec::CentrifugoJson { ws_path, hmac_secret, .. } => Box::new(CentrifugoJson {
                ws_path: ws_path.clone(),
                key: hmac_secret
                    .as_ref()
                    .map(|s| jsonwebtoken::EncodingKey::from_secret(s.as_bytes())),
            }),
        }
    }

    /// The coordinator's publisher for a server at `addr`.
    pub fn publisher(&self, addr: SocketAddr) -> Box<dyn Publisher> {
        match self {
            ProtocolSpec::CentrifugoJson { api_key, .. } => {
                Box::new(HttpApiPublisher::new(addr, api_key.clone()))
            }
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

/// What one inbound text frame meant for a connection.
#[derive(Debug, Default)]
pub struct Inbound {
    /// The connection is now connected and subscribed.
    pub ready: bool,
    /// Send timestamps of the publications delivered in this frame.
    pub delivered_ts: Vec<u64>,
    /// Frames to send back (pongs).
    pub replies: Vec<String>,
    /// The server rejected connect or subscribe.
    pub error: Option<String>,
    /// Parts of the frame that were not understood.
    pub unknown: u64,
}

/// Per-connection protocol state the adapter keeps between frames.
#[derive(Debug, Default)]
pub struct Session {
    /// Replies to the opening commands seen so far.
    pub replies_seen: u32,
    /// connect and subscribe both answered.
    pub ready: bool,
}

/// Client side of a target's protocol, run once per connection inside a worker.
pub trait ClientProtocol {
    /// WebSocket path to upgrade on.
    fn ws_path(&self) -> &str;
    /// Text frames to send right after the upgrade (connect, subscribe).
    fn open_frames(&self, client: usize, channel: &str) -> Result<Vec<String>>;
    /// Interprets one inbound text frame.
    fn on_text(&self, session: &mut Session, text: &str, out: &mut Inbound);
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
}

#[derive(Serialize)]
struct Claims {
    sub: String,
    exp: u64,
}

impl ClientProtocol for CentrifugoJson {
    fn ws_path(&self) -> &str {
        &self.ws_path
    }

    fn open_frames(&self, client: usize, channel: &str) -> Result<Vec<String>> {
        let token = match &self.key {
            Some(key) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let claims = Claims { sub: format!("lt{client}"), exp: now + 3600 };
                jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, key)
                    .map_err(|e| Error::Args(format!("signing token: {e}")))?
            }
            None => String::new(),
        };
        let connect =
            serde_json::json!({"id": 1, "connect": {"token": token, "name": "rotor-loadtest"}});
        let subscribe = serde_json::json!({"id": 2, "subscribe": {"channel": channel}});
        Ok(vec![format!("{connect}\n{subscribe}")])
    }

    fn on_text(&self, session: &mut Session, text: &str, out: &mut Inbound) {
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
                out.replies.push("{}".to_owned());
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

/// `POST /api/publish` over one keep-alive HTTP/1.1 connection, reconnecting once on failure.
pub struct HttpApiPublisher {
    addr: SocketAddr,
    api_key: String,
    conn: Option<BufReader<TcpStream>>,
    body: Vec<u8>,
}

impl HttpApiPublisher {
    /// A publisher for the server at `addr`.
    pub fn new(addr: SocketAddr, api_key: String) -> Self {
        Self { addr, api_key, conn: None, body: Vec::new() }
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
        self.body.extend_from_slice(b",\"data\":");
        self.body.extend_from_slice(payload.as_bytes());
        self.body.push(b'}');
        let mut request = format!(
            "POST /api/publish HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             X-API-Key: {}\r\nContent-Length: {}\r\n\r\n",
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

#[cfg(test)]
mod tests {
    use super::*;

    fn proto() -> Box<dyn ClientProtocol> {
        ProtocolSpec::CentrifugoJson {
            ws_path: "/connection/websocket".into(),
            hmac_secret: Some("s3cret".into()),
            api_key: "k".into(),
        }
        .client()
    }

    #[test]
    fn open_frames_are_connect_then_subscribe() {
        let frames = proto().open_frames(5, "bench").unwrap();
        assert_eq!(frames.len(), 1);
        let lines: Vec<serde_json::Value> =
            frames[0].split('\n').map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines[0]["id"], 1);
        assert!(lines[0]["connect"]["token"].as_str().unwrap().split('.').count() == 3);
        assert_eq!(lines[1]["subscribe"]["channel"], "bench");
    }

    #[test]
    fn replies_pings_and_pushes() {
        let p = proto();
        let mut s = Session::default();
        let mut out = Inbound::default();
        p.on_text(
            &mut s,
            "{\"id\":1,\"connect\":{\"client\":\"x\"}}\n{\"id\":2,\"subscribe\":{}}",
            &mut out,
        );
        assert!(out.ready && s.ready);
        let mut out = Inbound::default();
        let push = r#"{"push":{"channel":"bench","pub":{"data":{"ts":9,"seq":0,"pad":""}}}}"#;
        p.on_text(&mut s, &format!("{push}\n{push}\n{{}}"), &mut out);
        assert_eq!(out.delivered_ts, vec![9, 9]);
        assert_eq!(out.replies, vec!["{}".to_owned()]);
        let mut out = Inbound::default();
        p.on_text(
            &mut s,
            r#"{"id":2,"error":{"code":103,"message":"permission denied"}}"#,
            &mut out,
        );
        assert!(out.error.is_some());
    }

    #[test]
    fn channel_names() {
        assert_eq!(channel_name(7, 1), "bench");
        assert_eq!(channel_name(7, 5), "bench2");
    }
}
