//! WebSocket permessage-deflate (RFC 7692) without context takeover: the negotiation, the
//! compressed frames a shard shares among its connections, and the inbound shim that inflates
//! a client's compressed messages before tungstenite parses them.
//!
//! Why only without context takeover: with context takeover each connection's compressor
//! keeps a 32 KiB window of everything it sent before, so the same publication compresses to
//! different bytes on every connection and must be compressed once per subscriber (and every
//! connection holds a compressor's state). Without it every message is compressed from an
//! empty window, so the bytes depend only on the message: a shard compresses a publication
//! once per encoding and every subscriber that negotiated deflate gets the same frame
//! (`Compressor` keeps the last few). Upstream (gorilla/websocket) supports only this mode too
//! and shares frames the same way (its prepared messages); clients are told
//! `server_no_context_takeover; client_no_context_takeover`.
//!
//! Owns: the extension header, a shard's compressor and its cache, and per connection the
//! state of a compressed message being received. Must not: parse anything beyond frame
//! headers (tungstenite validates frames, UTF-8 and close codes), or inflate past
//! `decompressed_message_size_limit` (a decompression bomb costs at most that much memory).

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::websocket::{self, OpCode};
use crate::http::Head;

/// The tail every sync-flushed deflate block ends with; RFC 7692 §7.2.1 strips it on the wire.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// RSV1: the message is compressed.
const RSV1: u8 = 0x40;
/// Compressed frames kept per shard: one per encoding a publication goes out in, and both
/// WebSocket endpoints' settings.
const CACHE: usize = 4;

/// The `Sec-WebSocket-Extensions` answer when the client offered permessage-deflate in a form
/// we can serve, else `None` (the connection goes on uncompressed).
pub fn negotiate(head: &Head) -> Option<&'static str> {
    let offers = head
        .headers
        .iter()
        .filter(|(name, _)| name == "sec-websocket-extensions")
        .filter_map(|(_, value)| std::str::from_utf8(value).ok())
        .flat_map(|value| value.split(','));
    for offer in offers {
        let mut params = offer.split(';').map(str::trim);
        if params.next() != Some("permessage-deflate") {
            continue;
        }
        let mut echo_window = false;
        let acceptable = params.all(|p| {
            let (name, value) = p.split_once('=').map_or((p, None), |(n, v)| (n.trim(), Some(v)));
            let value = value.map(|v| v.trim().trim_matches('"'));
            match name {
                "server_no_context_takeover" | "client_no_context_takeover" => value.is_none(),
                // The client's window is its business: we inflate with the largest one.
                "client_max_window_bits" => {
                    value.is_none_or(|v| v.parse::<u8>().is_ok_and(|b| (8..=15).contains(&b)))
                }
                // Our compressor uses a 32 KiB window: a smaller one cannot be promised.
                "server_max_window_bits" => {
                    echo_window = value == Some("15");
                    echo_window
                }
                _ => false,
            }
        });
        if acceptable {
            return Some(if echo_window {
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                 server_max_window_bits=15"
            } else {
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
            });
        }
    }
    None
}

/// Compression settings of one WebSocket endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Settings {
    /// zlib level 1..=9 (`compression_level`; out of range means 1, as upstream's default).
    pub level: u32,
    /// Messages of at most this many bytes go uncompressed (`compression_min_size`).
    pub min_size: usize,
}

impl Settings {
    /// From an endpoint's `compression_level` and `compression_min_size`.
    pub fn new(level: i64, min_size: usize) -> Settings {
        let level = u32::try_from(level).ok().filter(|l| (1..=9).contains(l)).unwrap_or(1);
        Settings { level, min_size }
    }
}

/// A shard's compressor: compresses each distinct frame once and hands the same compressed
/// frame to every connection that asks for it while it is among the last `CACHE`.
#[derive(Debug)]
pub struct Compressor {
    engines: Vec<(u32, Compress)>,
    /// (original frame, settings, compressed frame). Holding the original keeps its buffer
    /// alive, so its address cannot be reused by another frame while the entry exists.
    cache: Vec<(Bytes, Settings, (Bytes, u8))>,
    scratch: Vec<u8>,
}

impl Default for Compressor {
    fn default() -> Self {
        Compressor { engines: Vec::new(), cache: Vec::with_capacity(CACHE), scratch: Vec::new() }
    }
}

impl Compressor {
    /// The compressed form of a data `frame` whose header is `header` bytes long (a frame and
    /// its header's length), or `None` when it is not worth compressing (at most `min_size`
    /// bytes, or no smaller compressed).
    pub fn compress(
        &mut self,
        frame: &Bytes,
        header: usize,
        settings: Settings,
    ) -> Option<(Bytes, u8)> {
        let payload = frame.get(header..)?;
        if payload.len() <= settings.min_size || payload.is_empty() {
            return None;
        }
        let hit = self.cache.iter().find(|(original, s, _)| {
            *s == settings && original.as_ptr() == frame.as_ptr() && original.len() == frame.len()
        });
        if let Some((_, _, compressed)) = hit {
            return Some(compressed.clone());
        }
        let op = if frame.first().is_some_and(|b| b & 0x0f == OpCode::Binary as u8) {
            OpCode::Binary
        } else {
            OpCode::Text
        };
        let compressed = self.deflate(op, payload, settings.level)?;
        if self.cache.len() == CACHE {
            self.cache.remove(0);
        }
        self.cache.push((frame.clone(), settings, compressed.clone()));
        Some(compressed)
    }

    /// One message compressed from an empty window into a complete frame with RSV1 set.
    fn deflate(&mut self, op: OpCode, payload: &[u8], level: u32) -> Option<(Bytes, u8)> {
        let at = match self.engines.iter().position(|(l, _)| *l == level) {
            Some(at) => at,
            None => {
                self.engines.push((level, Compress::new(Compression::new(level), false)));
                self.engines.len() - 1
            }
        };
        let engine = &mut self.engines[at].1;
        engine.reset();
        let out = &mut self.scratch;
        out.clear();
        // Deflate adds a few bytes per 16 KiB block to incompressible input: one call mostly.
        out.reserve(payload.len() + payload.len() / 1024 + 64);
        let mut consumed = 0;
        loop {
            let before = engine.total_in();
            engine.compress_vec(&payload[consumed..], out, FlushCompress::Sync).ok()?;
            consumed += usize::try_from(engine.total_in() - before).ok()?;
            // A sync flush is complete once it returns with output room to spare.
            if consumed == payload.len() && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity().max(64));
        }
        if !out.ends_with(&TAIL) || out.len() - TAIL.len() >= payload.len() {
            // Incompressible: the plain frame is smaller.
            return None;
        }
        let body = &out[..out.len() - TAIL.len()];
        let header = websocket::header_len(body.len());
        let mut frame = Vec::with_capacity(header + body.len());
        websocket::write_header(&mut frame, op, body.len());
        frame[0] |= RSV1;
        frame.extend_from_slice(body);
        Some((Bytes::from(frame), u8::try_from(header).ok()?))
    }
}

/// Why an inbound compressed message was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum InflateError {
    /// Over `message_size_limit` on the wire, or `decompressed_message_size_limit` inflated.
    TooBig,
    /// Not a valid compressed message.
    Invalid,
}

/// One connection's inbound side: rewrites its wire bytes so tungstenite sees every
/// compressed message as one plain frame (masked with a zero key, as client frames must be).
#[derive(Debug, Default)]
pub struct Inflater {
    /// The compressed message being received: its opcode and payload so far.
    message: Option<(u8, Vec<u8>)>,
    /// Wire bytes of the current uncompressed message, against `message_size_limit`.
    plain: usize,
}

/// Limits of an inbound message.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of one message on the wire (`message_size_limit`).
    pub wire: usize,
    /// Bytes of one message inflated (`decompressed_message_size_limit`).
    pub inflated: usize,
}

impl Inflater {
    /// Moves every complete frame at the front of `input` to `out`, inflating compressed
    /// messages; an incomplete frame stays in `input` for the next read.
    pub fn feed(
        &mut self,
        input: &mut Vec<u8>,
        out: &mut Vec<u8>,
        limits: Limits,
    ) -> Result<(), InflateError> {
        let mut at = 0;
        while let Some((head, len, mask)) = parse_header(&input[at..]) {
            let start = at + head;
            let Some(end) = start.checked_add(len).filter(|e| *e <= input.len()) else {
                if len > limits.wire {
                    return Err(InflateError::TooBig);
                }
                break;
            };
            let b0 = input[at];
            let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
            let data = opcode < 8;
            if !data {
                // Control frames pass as they are, even between the fragments of a message.
                out.extend_from_slice(&input[at..end]);
            } else if b0 & RSV1 != 0 || (opcode == 0 && self.message.is_some()) {
                if b0 & RSV1 != 0 && (opcode == 0 || self.message.is_some()) {
                    return Err(InflateError::Invalid);
                }
                let (_, body) = self.message.get_or_insert_with(|| (opcode, Vec::new()));
                if body.len() + len > limits.wire {
                    return Err(InflateError::TooBig);
                }
                let from = body.len();
                body.extend_from_slice(&input[start..end]);
                if let Some(key) = mask {
                    for (i, b) in body[from..].iter_mut().enumerate() {
                        *b ^= key[i % 4];
                    }
                }
                if fin {
                    let (op, body) = self.message.take().ok_or(InflateError::Invalid)?;
                    let plain = inflate(&body, limits.inflated)?;
                    write_masked_frame(out, op, &plain);
                }
            } else {
                self.plain = if opcode == 0 { self.plain + len } else { len };
                if self.plain > limits.wire {
                    return Err(InflateError::TooBig);
                }
                out.extend_from_slice(&input[at..end]);
            }
            at = end;
        }
        input.drain(..at);
        Ok(())
    }
}

/// A frame header at the front of `bytes`: its length, the payload length, the mask key.
fn parse_header(bytes: &[u8]) -> Option<(usize, usize, Option<[u8; 4]>)> {
    let b1 = *bytes.get(1)?;
    let (mut head, len) = match b1 & 0x7f {
        126 => (4, usize::from(u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?]))),
        127 => {
            let raw: [u8; 8] = bytes.get(2..10)?.try_into().ok()?;
            (10, usize::try_from(u64::from_be_bytes(raw)).unwrap_or(usize::MAX))
        }
        n => (2, usize::from(n)),
    };
    let mask = if b1 & 0x80 != 0 {
        let key: [u8; 4] = bytes.get(head..head + 4)?.try_into().ok()?;
        head += 4;
        Some(key)
    } else {
        None
    };
    Some((head, len, mask))
}

/// One message inflated from an empty window, refused past `limit` bytes. The decompressor
/// is the thread's (one per shard): without context takeover nothing carries over between
/// messages or connections.
fn inflate(body: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
    thread_local! {
        static ENGINE: std::cell::RefCell<Decompress> =
            std::cell::RefCell::new(Decompress::new(false));
    }
    ENGINE.with(|engine| {
        let mut engine = engine.borrow_mut();
        engine.reset(false);
        let mut out: Vec<u8> =
            Vec::with_capacity(body.len().saturating_mul(4).min(limit + 1).max(16));
        for chunk in [body, &TAIL[..]] {
            let mut input = chunk;
            loop {
                let before = (engine.total_in(), out.len());
                let status = engine
                    .decompress_vec(input, &mut out, FlushDecompress::Sync)
                    .map_err(|_| InflateError::Invalid)?;
                let used = usize::try_from(engine.total_in() - before.0)
                    .map_err(|_| InflateError::Invalid)?;
                input = &input[used..];
                if out.len() > limit {
                    return Err(InflateError::TooBig);
                }
                if status == Status::StreamEnd {
                    // The client ended the stream itself (a final block): nothing follows.
                    return Ok(out);
                }
                if out.len() == out.capacity() {
                    // Room for at most one byte past the limit, so a bomb stops right there.
                    out.reserve(out.capacity().min(limit + 1 - out.len()).max(1));
                } else if input.is_empty() {
                    break;
                } else if used == 0 && out.len() == before.1 {
                    return Err(InflateError::Invalid);
                }
            }
        }
        Ok(out)
    })
}

/// A complete client frame (FIN, masked with a zero key so the payload is unchanged).
fn write_masked_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(payload);
}
