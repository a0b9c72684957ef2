//! permessage-deflate on the wire with a hand-made client (the frames are the point): the
//! upgrade answer, a compressed command and its compressed reply, and a decompression bomb
//! closed with 1009 while the server's memory stays put.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::needless_pass_by_value,
    reason = "test harness code: a failure must panic loudly, and helpers take what tests build"
)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use serde_json::{json, Value};

struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    /// Upgrades with a permessage-deflate offer; returns the client and the answer's head.
    fn connect(port: u16) -> (Raw, String) {
        Raw::connect_to(port, "/connection/websocket")
    }

    fn connect_to(port: u16, path: &str) -> (Raw, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).unwrap();
        let mut raw = Raw { stream, buf: Vec::new() };
        let end = loop {
            if let Some(p) = raw.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            raw.fill();
        };
        let head = String::from_utf8(raw.buf.drain(..end).collect()).unwrap();
        (raw, head)
    }

    fn fill(&mut self) {
        let mut chunk = [0u8; 65536];
        let n = self.stream.read(&mut chunk).unwrap();
        assert!(n > 0, "server closed the socket");
        self.buf.extend_from_slice(&chunk[..n]);
    }

    /// One masked frame.
    fn send(&mut self, rsv1: bool, opcode: u8, payload: &[u8]) {
        let key = [9u8, 8, 7, 6];
        let mut f = vec![0x80 | (u8::from(rsv1) << 6) | opcode];
        match payload.len() {
            n @ 0..=125 => f.push(0x80 | n as u8),
            n @ 126..=0xffff => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        self.stream.write_all(&f).unwrap();
    }

    /// The next frame: (first byte, payload).
    fn frame(&mut self) -> (u8, Vec<u8>) {
        loop {
            if self.buf.len() >= 2 {
                let (head, len) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => {
                        (4, usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]])))
                    }
                    126 => (usize::MAX, 0),
                    n => (2, usize::from(n)),
                };
                if head != usize::MAX && self.buf.len() >= head + len {
                    let b0 = self.buf[0];
                    let payload = self.buf[head..head + len].to_vec();
                    self.buf.drain(..head + len);
                    return (b0, payload);
                }
            }
            self.fill();
        }
    }
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 1024);
    Compress::new(Compression::best(), false)
        .compress_vec(data, &mut out, FlushCompress::Sync)
        .unwrap();
    out.truncate(out.len() - 4);
    out
}

fn inflate(data: &[u8]) -> Vec<u8> {
    let mut input = data.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(1 << 20);
    Decompress::new(false).decompress_vec(&input, &mut out, FlushDecompress::Sync).unwrap();
    out
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn server() -> Server {
    let mut cfg = base_config();
    merge(
        &mut cfg,
        json!({
            "websocket": {"compression": true},
            "uni_websocket": {"enabled": true, "compression": true, "compression_min_size": 64}
        }),
    );
    Server::start(cfg)
}

#[test]
fn uni_websocket_compresses_what_is_over_its_min_size() {
    let server = server();
    let (mut c, head) = Raw::connect_to(server.port, "/connection/uni_websocket");
    assert!(head.contains("Sec-WebSocket-Extensions: permessage-deflate"), "{head}");
    // Subscribed to `news` server-side by its token.
    let tok = token_with(json!({"sub": "uni", "exp": now() + 3600, "channels": ["news"]}));
    c.send(false, 1, json!({"token": tok}).to_string().as_bytes());
    let (b0, payload) = c.frame();
    let connect: Value = if b0 & 0x40 != 0 {
        serde_json::from_slice(&inflate(&payload)).unwrap()
    } else {
        serde_json::from_slice(&payload).unwrap()
    };
    assert!(connect["connect"]["subs"]["news"].is_object(), "{connect}");
    // A push of a few bytes stays plain; a large one goes compressed.
    api_publish(&server, "news", json!({"small": 1}));
    let (b0, payload) = c.frame();
    assert_eq!(b0 & 0x40, 0, "under compression_min_size: plain");
    assert!(String::from_utf8_lossy(&payload).contains("small"));
    api_publish(&server, "news", json!({"large": "y".repeat(500)}));
    let (b0, payload) = c.frame();
    assert_eq!(b0 & 0x40, 0x40, "over compression_min_size: compressed");
    assert!(String::from_utf8_lossy(&inflate(&payload)).contains("yyyy"));
}

#[test]
fn compressed_commands_get_compressed_replies() {
    let server = server();
    let (mut c, head) = Raw::connect(server.port);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.contains("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
        "{head}"
    );
    let connect = json!({"id": 1, "connect": {"token": token("zip")}}).to_string();
    c.send(true, 1, &deflate(connect.as_bytes()));
    let (b0, payload) = c.frame();
    assert_eq!(b0 & 0x4f, 0x41, "a compressed text frame: {b0:#x}");
    let reply: Value = serde_json::from_slice(&inflate(&payload)).unwrap();
    assert_eq!(reply["id"], 1);
    assert!(reply["connect"]["client"].is_string(), "{reply}");
    // An uncompressed command is fine too.
    c.send(false, 1, json!({"id": 2, "subscribe": {"channel": "z"}}).to_string().as_bytes());
    let (b0, payload) = c.frame();
    let reply: Value = if b0 & 0x40 != 0 {
        serde_json::from_slice(&inflate(&payload)).unwrap()
    } else {
        serde_json::from_slice(&payload).unwrap()
    };
    assert_eq!(reply["id"], 2, "{reply}");
}

#[test]
fn a_decompression_bomb_is_closed_with_1009_and_memory_stays_put() {
    let server = server();
    let (mut c, _) = Raw::connect(server.port);
    let connect = json!({"id": 1, "connect": {"token": token("bomb")}}).to_string();
    c.send(false, 1, connect.as_bytes());
    c.frame();
    let before = rss_kib(server.pid());
    // 60 MiB of spaces in ~60 KiB: under websocket.message_size_limit (64 KiB) on the wire,
    // 100 times the 640 KiB a message may inflate to. Built from one compressed MiB repeated:
    // each sync-flushed segment starts from an empty window, so their concatenation is one
    // valid stream.
    let mut segment = deflate(&vec![b' '; 1 << 20]);
    segment.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut bomb = segment.repeat(60);
    bomb.truncate(bomb.len() - 4);
    assert!(bomb.len() < 65_536, "{}", bomb.len());
    c.send(true, 1, &bomb);
    let (b0, payload) = loop {
        let (b0, payload) = c.frame();
        if b0 & 0x0f == 8 {
            break (b0, payload);
        }
    };
    assert_eq!(b0 & 0x0f, 8, "a close frame");
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1009);
    let after = rss_kib(server.pid());
    assert!(after < before + 16 * 1024, "RSS grew from {before} KiB to {after} KiB");
    // The server still serves others.
    let (mut d, head) = Raw::connect(server.port);
    assert!(head.starts_with("HTTP/1.1 101"));
    d.send(false, 1, json!({"id": 1, "connect": {"token": token("ok")}}).to_string().as_bytes());
    assert!(!d.frame().1.is_empty());
}
