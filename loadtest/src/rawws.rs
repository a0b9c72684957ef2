//! A small WebSocket client for the workers, used with `--tls`, `--ws-compression` or
//! `--raw-ws`: the HTTP upgrade by hand (offering permessage-deflate without context takeover
//! when compressing), masked client frames out, server frames in. A frame with RSV1 set is
//! inflated (raw deflate plus the `00 00 ff ff` tail the sender removed, from an empty window
//! every message). It runs over a plain TCP socket or a rustls client stream, and every byte
//! read from the TCP socket (TLS records included) is counted in [`WIRE_RX`].

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use flate2::{Decompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Bytes this process's clients read from their TCP sockets.
pub static WIRE_RX: AtomicU64 = AtomicU64::new(0);

/// A byte stream a client runs over.
pub trait Io: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Io for T {}

/// A TCP socket whose reads add to [`WIRE_RX`].
pub struct Counted(pub TcpStream);

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.0).poll_read(cx, buf);
        WIRE_RX.fetch_add((buf.filled().len() - before) as u64, Ordering::Relaxed);
        r
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The worker's TLS client setup: trusts only `ca_pem`, no session resumption (every connect
/// is a full handshake, as for distinct devices).
pub fn tls_connector(ca_pem: &str) -> Result<tokio_rustls::TlsConnector, String> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.map_err(|e| format!("CA PEM: {e}"))?).map_err(|e| format!("CA: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// What the connection produced next.
pub enum Event {
    /// A whole data message (text or binary), inflated.
    Data(Vec<u8>),
    /// A control frame (pings are answered here).
    Control,
    /// The connection ended: the close code, or why.
    Closed(String),
}

/// Largest message accepted (compressed or not).
const MAX_MESSAGE: usize = 16 << 20;
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];
const MASK: [u8; 4] = [0x37, 0xa1, 0x5c, 0x0e];

/// A frame header: (fin, rsv1, opcode, header length, payload length).
type Header = (bool, bool, u8, usize, usize);

/// One client WebSocket connection.
pub struct RawWs {
    io: Box<dyn Io>,
    buf: Vec<u8>,
    /// Inflater when permessage-deflate was agreed.
    inflater: Option<Decompress>,
    /// A fragmented message being collected, and whether its first frame had RSV1.
    partial: Option<(Vec<u8>, bool)>,
}

impl RawWs {
    /// Upgrades `io` at `host` + `path`; with `deflate` the extension is offered and must be
    /// accepted.
    pub async fn connect(
        mut io: Box<dyn Io>,
        host: &str,
        path: &str,
        deflate: bool,
    ) -> Result<Self, String> {
        let ext = if deflate {
            "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; \
             server_no_context_takeover\r\n"
        } else {
            ""
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n"
        );
        io.write_all(request.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
        io.flush().await.map_err(|e| format!("send: {e}"))?;
        let mut ws = RawWs { io, buf: Vec::with_capacity(4096), inflater: None, partial: None };
        let end = loop {
            if let Some(p) = ws.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            if ws.buf.len() > 16 * 1024 || !ws.fill().await? {
                return Err("no upgrade response".into());
            }
        };
        let head = String::from_utf8_lossy(&ws.buf[..end]).to_ascii_lowercase();
        if !head.starts_with("http/1.1 101") {
            return Err(format!("upgrade refused: {}", head.lines().next().unwrap_or("")));
        }
        let agreed = head.lines().any(|l| {
            l.starts_with("sec-websocket-extensions:") && l.contains("permessage-deflate")
        });
        if deflate && !agreed {
            return Err("server did not accept permessage-deflate".into());
        }
        if agreed {
            ws.inflater = Some(Decompress::new(false));
        }
        ws.buf.drain(..end);
        Ok(ws)
    }

    async fn fill(&mut self) -> Result<bool, String> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.io.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// Sends one masked, unfragmented, uncompressed frame.
    pub async fn send(&mut self, opcode: u8, payload: &[u8]) -> Result<(), String> {
        let mut frame = Vec::with_capacity(payload.len() + 14);
        frame.push(0x80 | opcode);
        match payload.len() {
            n @ 0..=125 => frame.push(0x80 | n as u8),
            n @ 126..=0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&MASK);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        self.io.write_all(&frame).await.map_err(|e| format!("send: {e}"))?;
        self.io.flush().await.map_err(|e| format!("send: {e}"))
    }

    /// Header of the frame at the start of the buffer, or `None` while incomplete.
    fn header(&self) -> Result<Option<Header>, String> {
        let b = &self.buf;
        if b.len() < 2 {
            return Ok(None);
        }
        if b[1] & 0x80 != 0 {
            return Err("masked server frame".into());
        }
        let (hl, len) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (4, usize::from(u16::from_be_bytes([b[2], b[3]]))),
            127 if b.len() >= 10 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&b[2..10]);
                (10, usize::try_from(u64::from_be_bytes(n)).unwrap_or(usize::MAX))
            }
            126 | 127 => return Ok(None),
            n => (2, usize::from(n)),
        };
        if len > MAX_MESSAGE {
            return Err("oversized frame".into());
        }
        Ok(Some((b[0] & 0x80 != 0, b[0] & 0x40 != 0, b[0] & 0x0f, hl, len)))
    }

    /// The next message or control frame.
    pub async fn next(&mut self) -> Event {
        match self.next_inner().await {
            Ok(ev) => ev,
            Err(e) => Event::Closed(e),
        }
    }

    async fn next_inner(&mut self) -> Result<Event, String> {
        loop {
            let Some((fin, rsv1, opcode, hl, len)) = self.header()? else {
                if !self.fill().await? {
                    return Ok(Event::Closed("eof".into()));
                }
                continue;
            };
            if self.buf.len() < hl + len {
                if !self.fill().await? {
                    return Ok(Event::Closed("eof".into()));
                }
                continue;
            }
            let payload: Vec<u8> = self.buf[hl..hl + len].to_vec();
            self.buf.drain(..hl + len);
            match opcode {
                0x8 => {
                    return Ok(Event::Closed(match payload.get(..2) {
                        Some(c) => u16::from_be_bytes([c[0], c[1]]).to_string(),
                        None => "close".into(),
                    }))
                }
                0x9 => {
                    self.send(0xA, &payload).await?;
                    return Ok(Event::Control);
                }
                0xA => return Ok(Event::Control),
                0x1 | 0x2 if fin => return self.message(payload, rsv1).map(Event::Data),
                0x1 | 0x2 => self.partial = Some((payload, rsv1)),
                0x0 => {
                    let (mut data, compressed) =
                        self.partial.take().ok_or("continuation without a start")?;
                    data.extend_from_slice(&payload);
                    if data.len() > MAX_MESSAGE {
                        return Err("oversized message".into());
                    }
                    if fin {
                        return self.message(data, compressed).map(Event::Data);
                    }
                    self.partial = Some((data, compressed));
                }
                other => return Err(format!("opcode {other}")),
            }
        }
    }

    fn message(&mut self, data: Vec<u8>, compressed: bool) -> Result<Vec<u8>, String> {
        if !compressed {
            return Ok(data);
        }
        let engine = self.inflater.as_mut().ok_or("RSV1 without permessage-deflate")?;
        inflate(engine, &data)
    }
}

/// One message inflated from an empty window (no context takeover).
pub fn inflate(engine: &mut Decompress, body: &[u8]) -> Result<Vec<u8>, String> {
    engine.reset(false);
    let mut out = Vec::with_capacity(body.len() * 4 + 64);
    for chunk in [body, &TAIL[..]] {
        let mut input = chunk;
        loop {
            let before = engine.total_in();
            let status = engine
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
                .map_err(|e| format!("inflate: {e}"))?;
            let used = usize::try_from(engine.total_in() - before).unwrap_or(0);
            input = &input[used..];
            if status == Status::StreamEnd {
                return Ok(out);
            }
            if out.len() > MAX_MESSAGE {
                return Err("oversized message".into());
            }
            if out.len() == out.capacity() {
                out.reserve(out.capacity());
            } else if input.is_empty() {
                break;
            } else if used == 0 {
                return Err("inflate stalled".into());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use flate2::{Compress, Compression, FlushCompress};

    #[test]
    fn inflates_a_message_without_its_tail() {
        let text = br#"[{"id":1,"name":"alpha"},{"id":2,"name":"alpha"}]"#.repeat(20);
        let mut c = Compress::new(Compression::fast(), false);
        let mut out = Vec::with_capacity(text.len() + 64);
        c.compress_vec(&text, &mut out, FlushCompress::Sync).unwrap();
        assert!(out.ends_with(&super::TAIL));
        out.truncate(out.len() - 4);
        let mut d = flate2::Decompress::new(false);
        for _ in 0..2 {
            assert_eq!(super::inflate(&mut d, &out).unwrap(), text);
        }
    }
}
