//! The physical floor (`rotor-loadtest raw-server`, hidden): a minimal single-threaded server
//! that accepts WebSocket clients, answers the Centrifugo connect and subscribe commands with
//! fixed replies, and per `POST /api/publish` writes one Centrifugo-style push frame —
//! byte-identical to Rotor's `{"push":{"channel":..,"pub":{"data":..}}}` — to every subscriber
//! with plain non-blocking `write()` calls (a per-connection backlog only when the kernel
//! buffer is full). No queues, no shards, no batching: the cost of the kernel's TCP work plus
//! the least user-space work a fan-out can do. Exits on stdin EOF or after `--max-seconds`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::error::{Context, Error, Result};

/// Largest request head or client frame the server accepts.
const MAX_IN: usize = 64 * 1024;

struct Conn {
    write: OwnedWriteHalf,
    backlog: RefCell<Vec<u8>>,
    dead: Cell<bool>,
    wake: Notify,
}

impl Conn {
    /// Plain non-blocking write of `frame`; what the kernel does not take goes to the backlog.
    fn push(&self, frame: &[u8]) {
        if self.dead.get() {
            return;
        }
        let mut backlog = self.backlog.borrow_mut();
        if !backlog.is_empty() {
            backlog.extend_from_slice(frame);
            return;
        }
        match self.write.try_write(frame) {
            Ok(n) if n == frame.len() => {}
            Ok(n) => {
                backlog.extend_from_slice(&frame[n..]);
                self.wake.notify_one();
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                backlog.extend_from_slice(frame);
                self.wake.notify_one();
            }
            Err(_) => self.dead.set(true),
        }
    }

    async fn drain_backlog(&self) {
        loop {
            self.wake.notified().await;
            while !self.dead.get() && !self.backlog.borrow().is_empty() {
                if self.write.writable().await.is_err() {
                    self.dead.set(true);
                    break;
                }
                let mut backlog = self.backlog.borrow_mut();
                match self.write.try_write(&backlog) {
                    Ok(n) => {
                        backlog.drain(..n);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => self.dead.set(true),
                }
            }
            if self.dead.get() {
                return;
            }
        }
    }
}

#[derive(Default)]
struct State {
    channels: RefCell<HashMap<String, Vec<Rc<Conn>>>>,
    frame: RefCell<Vec<u8>>,
}

/// Entry point of the `raw-server` subcommand.
pub fn main(listen: SocketAddr, max_seconds: u64) -> Result<()> {
    let state = Rc::new(State::default());
    serve_loopback("raw-server", listen, max_seconds, move |stream| {
        tokio::task::spawn_local(serve(Rc::clone(&state), stream));
    })
}

/// Runs a single-threaded server of this binary (`name` is its subcommand): listens on
/// loopback `listen`, prints `<name> listening on <addr>`, hands every accepted socket to
/// `accept`, and exits after `max_seconds` or when the coordinator's end of stdin closes.
pub fn serve_loopback(
    name: &str,
    listen: SocketAddr,
    max_seconds: u64,
    mut accept: impl FnMut(TcpStream),
) -> Result<()> {
    if !listen.ip().is_loopback() {
        return Err(Error::Args(format!("{name} listens on loopback only, not {listen}")));
    }
    // Stop when the coordinator goes away (its end of our stdin closes).
    std::thread::spawn(|| {
        let mut sink = String::new();
        while matches!(std::io::stdin().lock().read_line(&mut sink), Ok(n) if n > 0) {
            sink.clear();
        }
        std::process::exit(0);
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let sock = TcpSocket::new_v4().context("listener socket")?;
        sock.set_reuseaddr(true).context("SO_REUSEADDR")?;
        sock.bind(listen).context(format!("binding {listen}"))?;
        let listener: TcpListener = sock.listen(4096).context("listen")?;
        let addr = listener.local_addr().context("local_addr")?;
        println!("{name} listening on {addr}");
        let _ = std::io::stdout().flush();
        let deadline = tokio::time::sleep(Duration::from_secs(max_seconds));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        let _ = stream.set_nodelay(true);
                        accept(stream);
                    }
                }
                _ = &mut deadline => return Ok(()),
            }
        }
    })
}

/// Reads until `buf` holds a complete request head; returns its length.
async fn read_head(read: &mut OwnedReadHalf, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(pos + 4);
        }
        if buf.len() > MAX_IN {
            return None;
        }
        let mut chunk = [0u8; 4096];
        match read.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn serve(state: Rc<State>, stream: TcpStream) {
    let (mut read, mut write) = stream.into_split();
    let mut buf = Vec::with_capacity(1024);
    loop {
        let Some(head_len) = read_head(&mut read, &mut buf).await else { return };
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        if !matches!(req.parse(&buf[..head_len]), Ok(httparse::Status::Complete(_))) {
            return;
        }
        let header = |name: &str| {
            req.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .map(str::to_owned)
        };
        let path = req.path.unwrap_or("").to_owned();
        if let Some(key) = header("sec-websocket-key") {
            let accept = derive_accept_key(key.as_bytes());
            let resp = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            if write.write_all(resp.as_bytes()).await.is_err() {
                return;
            }
            buf.drain(..head_len);
            websocket(state, read, write, buf).await;
            return;
        }
        let len: usize = header("content-length").and_then(|v| v.trim().parse().ok()).unwrap_or(0);
        if len > MAX_IN {
            return;
        }
        buf.drain(..head_len);
        while buf.len() < len {
            let mut chunk = [0u8; 4096];
            match read.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..len).collect();
        let reply: &[u8] = if path.starts_with("/api/publish") && publish(&state, &body) {
            b"{\"result\":{}}"
        } else {
            b"{\"error\":{\"code\":107,\"message\":\"bad request\"}}"
        };
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            reply.len()
        );
        let mut out = resp.into_bytes();
        out.extend_from_slice(reply);
        if write.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// Builds the push frame once and writes it to every subscriber of the channel.
fn publish(state: &State, body: &[u8]) -> bool {
    let Ok(req) = serde_json::from_slice::<PublishReq<'_>>(body) else { return false };
    let mut payload = Vec::with_capacity(64 + req.data.get().len());
    payload.extend_from_slice(b"{\"push\":{\"channel\":");
    if serde_json::to_writer(&mut payload, &req.channel).is_err() {
        return false;
    }
    payload.extend_from_slice(b",\"pub\":{\"data\":");
    payload.extend_from_slice(req.data.get().as_bytes());
    payload.extend_from_slice(b"}}}");
    let mut frame = state.frame.borrow_mut();
    frame.clear();
    frame_header(&mut frame, payload.len());
    frame.extend_from_slice(&payload);
    let mut channels = state.channels.borrow_mut();
    if let Some(conns) = channels.get_mut(req.channel) {
        conns.retain(|c| !c.dead.get());
        for c in conns.iter() {
            c.push(&frame);
        }
    }
    true
}

#[derive(serde::Deserialize)]
struct PublishReq<'a> {
    channel: &'a str,
    #[serde(borrow)]
    data: &'a serde_json::value::RawValue,
}

/// Appends the header of an unmasked final text frame of `len` payload bytes.
pub fn frame_header(out: &mut Vec<u8>, len: usize) {
    out.push(0x81);
    if len < 126 {
        out.push(len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// Parses one masked client frame from the front of `buf`: `(opcode, payload, consumed)`.
pub fn parse_client_frame(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut at) = match buf[1] & 0x7f {
        126 => (usize::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?])), 4),
        127 => {
            let bytes: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
            (usize::try_from(u64::from_be_bytes(bytes)).ok()?, 10)
        }
        n => (usize::from(n), 2),
    };
    let mask: Option<[u8; 4]> = if masked {
        let m = buf.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        Some(m)
    } else {
        None
    };
    let payload = buf.get(at..at.checked_add(len)?)?;
    let data = match mask {
        Some(m) => payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]).collect(),
        None => payload.to_vec(),
    };
    Some((opcode, data, at + len))
}

async fn websocket(
    state: Rc<State>,
    mut read: OwnedReadHalf,
    write: OwnedWriteHalf,
    mut buf: Vec<u8>,
) {
    let conn = Rc::new(Conn {
        write,
        backlog: RefCell::new(Vec::new()),
        dead: Cell::new(false),
        wake: Notify::new(),
    });
    let drainer = tokio::task::spawn_local({
        let conn = Rc::clone(&conn);
        async move { conn.drain_backlog().await }
    });
    'conn: loop {
        while let Some((opcode, data, used)) = parse_client_frame(&buf) {
            buf.drain(..used);
            match opcode {
                0x1 => {
                    let text = String::from_utf8_lossy(&data);
                    let mut replies = Vec::new();
                    for line in text.split('\n').filter(|l| !l.is_empty()) {
                        let Ok(cmd) = serde_json::from_str::<serde_json::Value>(line) else {
                            continue;
                        };
                        let id = cmd["id"].as_u64().unwrap_or(0);
                        if cmd.get("connect").is_some() {
                            replies.push(format!(
                                "{{\"id\":{id},\"connect\":{{\"client\":\"raw\",\"version\":\"raw\"}}}}"
                            ));
                        } else if let Some(ch) = cmd["subscribe"]["channel"].as_str() {
                            state
                                .channels
                                .borrow_mut()
                                .entry(ch.to_owned())
                                .or_default()
                                .push(Rc::clone(&conn));
                            replies.push(format!("{{\"id\":{id},\"subscribe\":{{}}}}"));
                        }
                    }
                    if !replies.is_empty() {
                        let body = replies.join("\n");
                        let mut frame = Vec::with_capacity(body.len() + 4);
                        frame_header(&mut frame, body.len());
                        frame.extend_from_slice(body.as_bytes());
                        conn.push(&frame);
                    }
                }
                0x8 => break 'conn,
                _ => {}
            }
        }
        if buf.len() > MAX_IN {
            break;
        }
        let mut chunk = [0u8; 4096];
        match read.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    conn.dead.set(true);
    drainer.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_headers() {
        let mut v = Vec::new();
        frame_header(&mut v, 5);
        assert_eq!(v, [0x81, 5]);
        v.clear();
        frame_header(&mut v, 300);
        assert_eq!(v, [0x81, 126, 1, 44]);
    }

    #[test]
    fn masked_frame_round_trip() {
        let mask = [1u8, 2, 3, 4];
        let text = b"hello";
        let mut f = vec![0x81, 0x80 | 5];
        f.extend_from_slice(&mask);
        f.extend(text.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f.push(0xff); // start of the next frame
        let (op, data, used) = parse_client_frame(&f).unwrap();
        assert_eq!((op, data.as_slice(), used), (1, &text[..], 11));
        assert!(parse_client_frame(&f[..5]).is_none());
    }
}
