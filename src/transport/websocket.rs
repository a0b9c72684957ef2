//! WebSocket transport pieces that need no socket: the upgrade answer, origin checks, server frame
//! building, and an in-memory wire that lets tungstenite's [`WebSocketContext`] parse client frames.
//!
//! Owns: the byte format of what goes to a WebSocket client. Must not own connection state or
//! touch the hub: `server` drives it.
//!
//! Why frames are built here and not by tungstenite: a publication is encoded once per shard and the
//! same unmasked server frame (header + payload in one allocation) is queued to every subscriber.
//! tungstenite is still the one reading client frames (masking, fragmentation, control frames, size
//! limits) and answering pings and closes.

use std::io::{self, Read, Write};

use base64::Engine as _;
use bytes::Bytes;
use globset::{GlobBuilder, GlobMatcher};
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};

use crate::http::Head;

/// WebSocket opcodes the server sends itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// UTF-8 text (JSON protocol).
    Text = 0x1,
    /// Binary (Protobuf protocol).
    Binary = 0x2,
    /// Connection close.
    Close = 0x8,
    /// Native ping (`?cf_ws_frame_ping_pong=true`).
    Ping = 0x9,
}

/// Length of the header of an unmasked server frame carrying `len` payload bytes.
pub fn header_len(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    }
}

/// Appends an unmasked, final server frame header.
pub fn write_header(out: &mut Vec<u8>, op: OpCode, len: usize) {
    out.push(0x80 | op as u8);
    match len {
        0..=125 => out.push(len as u8),
        126..=65535 => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

/// A complete server frame: header and payload in one shared allocation.
pub fn frame(op: OpCode, payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(header_len(payload.len()) + payload.len());
    write_header(&mut out, op, payload.len());
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// A close frame with code and reason. Reasons longer than 123 bytes are cut at a char boundary.
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    frame(OpCode::Close, &payload)
}

/// Why an upgrade request was refused, with the HTTP status to answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeError {
    /// Not a valid RFC 6455 upgrade request.
    #[error("{0}")]
    BadRequest(&'static str),
    /// A well-formed upgrade with a method other than GET: 405, as Centrifugo's upgrader
    /// (gorilla/websocket) answers it, with the `Allow` header RFC 9110 requires.
    #[error("websocket upgrade needs GET")]
    Method,
    /// A `Sec-WebSocket-Version` other than 13 (answered with the version we speak).
    #[error("unsupported Sec-WebSocket-Version")]
    Version,
    /// `Origin` not allowed by `client.allowed_origins`.
    #[error("request origin is not authorized")]
    Forbidden,
}

impl UpgradeError {
    /// HTTP status for this refusal.
    pub fn status(&self) -> u16 {
        match self {
            UpgradeError::BadRequest(_) | UpgradeError::Version => 400,
            UpgradeError::Forbidden => 403,
            UpgradeError::Method => 405,
        }
    }

    /// Headers the refusal carries (RFC 6455 §4.4: the versions the server speaks).
    pub fn headers(&self) -> &'static [(&'static str, &'static str)] {
        match self {
            UpgradeError::Version => &[("Sec-WebSocket-Version", "13")],
            UpgradeError::Method => &[("Allow", "GET")],
            _ => &[],
        }
    }
}

/// What a valid upgrade request asks for.
#[derive(Debug, Clone)]
pub struct Upgrade {
    /// `Sec-WebSocket-Accept` value.
    pub accept: String,
    /// Subprotocol to echo, if the client offered one of ours.
    pub subprotocol: Option<&'static str>,
    /// `?cf_ws_frame_ping_pong=true`: native ping frames instead of protocol pings.
    pub frame_ping_pong: bool,
    /// The client speaks Protobuf (`centrifuge-protobuf` subprotocol or `?format=protobuf`).
    pub protobuf: bool,
    /// The `Sec-WebSocket-Extensions` answer when permessage-deflate is on and negotiated.
    pub deflate: Option<&'static str>,
}

/// Validates an upgrade request (RFC 6455 §4.2.1) and the origin policy.
pub fn check_upgrade(head: &Head, origins: &OriginPolicy) -> Result<Upgrade, UpgradeError> {
    // The order of gorilla/websocket's checks: not an upgrade at all is 400 whatever the
    // method; an upgrade with the wrong method is 405.
    if !head.header_has_token("upgrade", "websocket") {
        return Err(UpgradeError::BadRequest("missing Upgrade: websocket"));
    }
    if !head.header_has_token("connection", "upgrade") {
        return Err(UpgradeError::BadRequest("missing Connection: upgrade"));
    }
    if head.method != "GET" {
        return Err(UpgradeError::Method);
    }
    if head.header("sec-websocket-version") != Some(b"13") {
        return Err(UpgradeError::Version);
    }
    let key = head.header("sec-websocket-key").ok_or(UpgradeError::BadRequest("missing key"))?;
    // RFC 6455 §4.2.1: a base64-encoded 16-byte nonce.
    let nonce = base64::engine::general_purpose::STANDARD.decode(key.trim_ascii());
    if nonce.map_or(true, |n| n.len() != 16) {
        return Err(UpgradeError::BadRequest("Sec-WebSocket-Key is not a 16-byte base64 nonce"));
    }
    if !origins.allows(head.header_str("origin")) {
        return Err(UpgradeError::Forbidden);
    }
    let offered_protobuf = head.header_has_token("sec-websocket-protocol", "centrifuge-protobuf");
    let offered_json = head.header_has_token("sec-websocket-protocol", "centrifuge-json");
    let query_format = head.query_param("format").or_else(|| head.query_param("cf_protocol"));
    let protobuf = offered_protobuf || query_format.as_deref() == Some("protobuf");
    let subprotocol = if offered_protobuf {
        Some("centrifuge-protobuf")
    } else {
        offered_json.then_some("centrifuge-json")
    };
    Ok(Upgrade {
        accept: tungstenite::handshake::derive_accept_key(key),
        subprotocol,
        frame_ping_pong: head.query_param("cf_ws_frame_ping_pong").as_deref() == Some("true"),
        protobuf,
        deflate: None,
    })
}

/// The `101 Switching Protocols` answer.
pub fn switching_protocols(up: &Upgrade, shard: usize) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\nx-rotor-shard: {shard}\r\n",
        up.accept
    );
    if let Some(p) = up.subprotocol {
        out.push_str("Sec-WebSocket-Protocol: ");
        out.push_str(p);
        out.push_str("\r\n");
    }
    if let Some(e) = up.deflate {
        out.push_str("Sec-WebSocket-Extensions: ");
        out.push_str(e);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// `client.allowed_origins` compiled once: gobwas-glob semantics (`*` spans any characters,
/// `?`, `[...]`, `{a,b}`), matched against the lower-cased `Origin` header.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    any: bool,
    globs: Vec<GlobMatcher>,
}

/// A pattern in `client.allowed_origins` that does not compile.
#[derive(Debug, Clone, thiserror::Error)]
#[error("client.allowed_origins[{index}]: invalid pattern {pattern:?}: {message}")]
pub struct OriginPatternError {
    /// Position in the list.
    pub index: usize,
    /// The pattern as configured.
    pub pattern: String,
    /// What the glob compiler said.
    pub message: String,
}

impl OriginPolicy {
    /// Compiles the configured patterns.
    pub fn new(patterns: &[String]) -> Result<Self, OriginPatternError> {
        let mut policy = OriginPolicy::default();
        for (index, p) in patterns.iter().enumerate() {
            if p == "*" {
                policy.any = true;
                continue;
            }
            let glob = GlobBuilder::new(&p.to_lowercase())
                .literal_separator(false)
                .backslash_escape(true)
                .build()
                .map_err(|e| OriginPatternError {
                    index,
                    pattern: p.clone(),
                    message: e.to_string(),
                })?;
            policy.globs.push(glob.compile_matcher());
        }
        Ok(policy)
    }

    /// Every origin passes (requests authorised otherwise, such as the admin UI's tail).
    pub fn any() -> Self {
        OriginPolicy { any: true, ..OriginPolicy::default() }
    }

    /// Requests without `Origin` always pass (non-browser clients); with an empty list every
    /// browser request is refused, as in Centrifugo.
    pub fn allows(&self, origin: Option<&str>) -> bool {
        let Some(origin) = origin else { return true };
        if self.any {
            return true;
        }
        let lower = origin.to_lowercase();
        self.globs.iter().any(|g| g.is_match(lower.as_str()))
    }
}

/// tungstenite settings for client frames: small read chunks keep idle connections cheap.
pub fn context(message_size_limit: usize, read_buffer_size: usize) -> WebSocketContext {
    let config = WebSocketConfig::default()
        .read_buffer_size(read_buffer_size.max(256))
        .write_buffer_size(0)
        .max_message_size(Some(message_size_limit))
        .max_frame_size(Some(message_size_limit));
    WebSocketContext::new(Role::Server, Some(config))
}

/// In-memory stream for a [`WebSocketContext`]: reads drain `input`, writes append to `output`.
/// An empty input reads as `WouldBlock`, which tungstenite treats as "need more bytes".
pub struct Wire<'a> {
    /// Bytes received from the socket and not yet parsed.
    pub input: &'a mut Vec<u8>,
    /// Frames tungstenite wants to send (pongs, close replies).
    pub output: &'a mut Vec<u8>,
}

impl Read for Wire<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.input.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.input.len());
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input.drain(..n);
        Ok(n)
    }
}

impl Write for Wire<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse_head;
    use tungstenite::Message;

    fn head(extra: &str) -> Head {
        let text = format!(
            "GET /connection/websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
             Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
        );
        parse_head(text.as_bytes()).unwrap().unwrap().0
    }

    #[test]
    fn accept_key_matches_rfc_example() {
        let up = check_upgrade(&head(""), &OriginPolicy::default()).unwrap();
        assert_eq!(up.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert!(up.subprotocol.is_none());
        assert!(!up.frame_ping_pong);
        let up = check_upgrade(
            &head("Sec-WebSocket-Protocol: centrifuge-json\r\n"),
            &OriginPolicy::default(),
        )
        .unwrap();
        assert_eq!(up.subprotocol, Some("centrifuge-json"));
    }

    #[test]
    fn a_bad_version_or_nonce_is_refused_with_400() {
        let text = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                    Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        let old = parse_head(text.as_bytes()).unwrap().unwrap().0;
        let err = check_upgrade(&old, &OriginPolicy::default()).unwrap_err();
        assert_eq!((err.status(), err.headers()), (400, &[("Sec-WebSocket-Version", "13")][..]));
        for key in ["x", "dGhlIHNhbXBsZQ==", "dGhlIHNhbXBsZSBub25jZSBsb25nZXI=", "%%%%"] {
            let text = format!(
                "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
            );
            let h = parse_head(text.as_bytes()).unwrap().unwrap().0;
            let err = check_upgrade(&h, &OriginPolicy::default()).unwrap_err();
            assert_eq!((err.status(), err.headers()), (400, &[][..]), "{key}");
        }
    }

    #[test]
    fn protobuf_is_chosen_by_subprotocol_or_query() {
        let up = check_upgrade(
            &head("Sec-WebSocket-Protocol: centrifuge-protobuf\r\n"),
            &OriginPolicy::default(),
        )
        .unwrap();
        assert!(up.protobuf);
        assert_eq!(up.subprotocol, Some("centrifuge-protobuf"));
        let mut h = head("");
        h.query = "cf_protocol=protobuf".into();
        let up = check_upgrade(&h, &OriginPolicy::default()).unwrap();
        assert!(up.protobuf && up.subprotocol.is_none());
        assert!(!check_upgrade(&head(""), &OriginPolicy::default()).unwrap().protobuf);
    }

    #[test]
    fn an_upgrade_with_another_method_is_405_and_a_non_upgrade_post_400() {
        let mut h = head("");
        h.method = "POST".into();
        let err = check_upgrade(&h, &OriginPolicy::default()).unwrap_err();
        assert_eq!((err.status(), err.headers()), (405, &[("Allow", "GET")][..]));
        h.headers.retain(|(n, _)| n != "upgrade");
        assert_eq!(check_upgrade(&h, &OriginPolicy::default()).unwrap_err().status(), 400);
    }

    #[test]
    fn missing_upgrade_headers_are_400() {
        let mut h = head("");
        h.headers.retain(|(n, _)| n != "sec-websocket-key");
        assert_eq!(check_upgrade(&h, &OriginPolicy::default()).unwrap_err().status(), 400);
        let mut h = head("");
        h.headers.retain(|(n, _)| n != "upgrade");
        assert_eq!(check_upgrade(&h, &OriginPolicy::default()).unwrap_err().status(), 400);
    }

    #[test]
    fn origin_globs_follow_gobwas_semantics() {
        let p = OriginPolicy::new(&[
            "https://*.example.com".into(),
            "http://localhost:?000".into(),
            "https://app[0-9].test".into(),
            "https://{a,b}.site".into(),
        ])
        .unwrap();
        assert!(p.allows(None), "no Origin header always passes");
        assert!(p.allows(Some("https://x.y.example.com")), "* spans dots");
        assert!(p.allows(Some("HTTPS://WWW.EXAMPLE.COM")), "case-insensitive");
        assert!(!p.allows(Some("https://example.com")));
        assert!(p.allows(Some("http://localhost:3000")));
        assert!(!p.allows(Some("http://localhost:30000")));
        assert!(p.allows(Some("https://app7.test")));
        assert!(!p.allows(Some("https://appx.test")));
        assert!(p.allows(Some("https://b.site")));
        assert!(!p.allows(Some("https://c.site")));
        let empty = OriginPolicy::new(&[]).unwrap();
        assert!(!empty.allows(Some("https://any.site")), "empty list refuses browsers");
        assert!(OriginPolicy::new(&["*".into()]).unwrap().allows(Some("https://any.site")));
        let err = OriginPolicy::new(&["https://[bad".into()]).unwrap_err();
        assert!(err.to_string().starts_with("client.allowed_origins[0]"));
    }

    #[test]
    fn frames_have_minimal_headers() {
        for len in [0usize, 125, 126, 65535, 65536] {
            let f = frame(OpCode::Text, &vec![b'a'; len]);
            assert_eq!(f.len(), header_len(len) + len);
            assert_eq!(f[0], 0x81);
        }
        let c = close_frame(3001, "shutdown");
        assert_eq!(&c[..], b"\x88\x0a\x0b\xb9shutdown");
        let long = close_frame(3000, &"é".repeat(100));
        assert!(long.len() <= 2 + 125);
    }

    #[test]
    fn tungstenite_reads_masked_client_frames_through_wire() {
        // A masked text frame "hello" split over two reads.
        let mask = [1u8, 2, 3, 4];
        let mut wire_bytes = vec![0x81, 0x80 | 5];
        wire_bytes.extend_from_slice(&mask);
        wire_bytes.extend(b"hello".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        let mut ctx = context(65536, 4096);
        let (mut input, mut output) = (wire_bytes[..4].to_vec(), Vec::new());
        let r = ctx.read(&mut Wire { input: &mut input, output: &mut output });
        assert!(
            matches!(r, Err(tungstenite::Error::Io(ref e)) if e.kind() == io::ErrorKind::WouldBlock)
        );
        input.extend_from_slice(&wire_bytes[4..]);
        let msg = ctx.read(&mut Wire { input: &mut input, output: &mut output }).unwrap();
        assert_eq!(msg, Message::text("hello"));
    }
}
