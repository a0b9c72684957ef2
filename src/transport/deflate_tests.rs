//! permessage-deflate: negotiation answers, frames shared per distinct message, and the
//! inbound shim (fragments, control frames between them, limits, bad data).

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

use super::deflate::{negotiate, Compressor, InflateError, Inflater, Limits, Settings};
use crate::client::queue::Out;
use crate::http::parse_head;

fn head(extensions: &[&str]) -> crate::http::Head {
    let mut text = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for e in extensions {
        text.push_str(&format!("Sec-WebSocket-Extensions: {e}\r\n"));
    }
    text.push_str("\r\n");
    parse_head(text.as_bytes()).unwrap().unwrap().0
}

const PLAIN: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

#[test]
fn offers_we_can_serve_are_accepted_without_context_takeover() {
    assert_eq!(negotiate(&head(&[])), None);
    assert_eq!(negotiate(&head(&["x-webkit-deflate-frame"])), None);
    // What browsers and Node's `ws` send.
    assert_eq!(negotiate(&head(&["permessage-deflate; client_max_window_bits"])), Some(PLAIN));
    assert_eq!(negotiate(&head(&["permessage-deflate"])), Some(PLAIN));
    // A smaller server window cannot be promised: that offer is skipped for the next one.
    let offers = "permessage-deflate; server_max_window_bits=10, permessage-deflate";
    assert_eq!(negotiate(&head(&[offers])), Some(PLAIN));
    assert_eq!(negotiate(&head(&["permessage-deflate; server_max_window_bits=10"])), None);
    let echoed = negotiate(&head(&["permessage-deflate; server_max_window_bits=15"])).unwrap();
    assert!(echoed.ends_with("server_max_window_bits=15"), "{echoed}");
    assert_eq!(negotiate(&head(&["permessage-deflate; unknown_param"])), None);
}

fn inflate_frame(frame: &[u8]) -> Vec<u8> {
    assert_eq!(frame[0] & 0x40, 0x40, "RSV1 set");
    let (skip, len) = match frame[1] & 0x7f {
        126 => (4, usize::from(u16::from_be_bytes([frame[2], frame[3]]))),
        n => (2, usize::from(n)),
    };
    let mut body = frame[skip..].to_vec();
    assert_eq!(body.len(), len);
    body.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(1 << 20);
    Decompress::new(false).decompress_vec(&body, &mut out, FlushDecompress::Sync).unwrap();
    out
}

#[test]
fn a_frame_is_compressed_once_and_shared_and_small_ones_stay_plain() {
    let json = format!("{{\"data\":\"{}\"}}", "abc".repeat(700));
    let Out::Data { frame, header } = Out::json(|b| b.extend_from_slice(json.as_bytes())) else {
        panic!()
    };
    let mut c = Compressor::default();
    let settings = Settings::new(1, 0);
    let (first, h) = c.compress(&frame, usize::from(header), settings).unwrap();
    assert!(first.len() < frame.len() / 4, "{} vs {}", first.len(), frame.len());
    assert_eq!(first[0] & 0x0f, 1, "still a text frame");
    assert_eq!(usize::from(h), if first.len() - 2 > 125 { 4 } else { 2 });
    assert_eq!(inflate_frame(&first), json.as_bytes());
    // Every subscriber queued the same frame: the same compressed bytes, not a copy.
    let (again, _) = c.compress(&frame.clone(), usize::from(header), settings).unwrap();
    assert_eq!(again.as_ptr(), first.as_ptr());
    // Equal bytes in another buffer are compressed anew (to the same bytes).
    let copy = Bytes::copy_from_slice(&frame);
    let (other, _) = c.compress(&copy, usize::from(header), settings).unwrap();
    assert_ne!(other.as_ptr(), first.as_ptr());
    assert_eq!(other, first);
    // At most min_size bytes: not compressed.
    assert!(c.compress(&frame, usize::from(header), Settings::new(1, json.len())).is_none());
    // Level 9 is valid too, and out-of-range levels mean 1.
    assert_eq!(Settings::new(0, 0), Settings::new(1, 0));
    let (best, _) = c.compress(&frame, usize::from(header), Settings::new(9, 0)).unwrap();
    assert_eq!(inflate_frame(&best), json.as_bytes());
}

/// A client frame: masked, with `rsv1` and `fin` as given.
fn client_frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x11, 0x22, 0x33, 0x44];
    let mut f = vec![(u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode];
    match payload.len() {
        n @ 0..=125 => f.push(0x80 | n as u8),
        n => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

fn deflated(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 64);
    Compress::new(Compression::default(), false)
        .compress_vec(text, &mut out, FlushCompress::Sync)
        .unwrap();
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

const LIMITS: Limits = Limits { wire: 65_536, inflated: 655_360 };

/// Runs `wire` through an inflater (in two reads split at `split`) and parses what comes
/// out with tungstenite as the server does.
fn through(
    wire: &[u8],
    split: usize,
    limits: Limits,
) -> Result<Vec<tungstenite::Message>, InflateError> {
    let mut inflater = Inflater::default();
    let (mut raw, mut parsed) = (wire[..split].to_vec(), Vec::new());
    inflater.feed(&mut raw, &mut parsed, limits)?;
    raw.extend_from_slice(&wire[split..]);
    inflater.feed(&mut raw, &mut parsed, limits)?;
    assert!(raw.is_empty());
    let mut ctx = super::websocket::context(limits.inflated, 256);
    let mut output = Vec::new();
    let mut messages = Vec::new();
    loop {
        match ctx.read(&mut super::websocket::Wire { input: &mut parsed, output: &mut output }) {
            Ok(m) => messages.push(m),
            Err(tungstenite::Error::Io(_)) => return Ok(messages),
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn compressed_client_messages_reach_tungstenite_inflated() {
    let text = "{\"id\":1,\"publish\":{\"channel\":\"a\",\"data\":\"".to_owned()
        + &"z".repeat(3000)
        + "\"}}";
    let body = deflated(text.as_bytes());
    let (a, b) = body.split_at(body.len() / 2);
    let mut wire = client_frame(true, false, 1, b"{\"id\":0}"); // an uncompressed one first
    wire.extend(client_frame(false, true, 1, a)); // first fragment carries RSV1
    wire.extend(client_frame(true, false, 9, b"ping")); // a control frame between fragments
    wire.extend(client_frame(true, false, 0, b)); // the last fragment
    for split in [0, 3, wire.len() / 2, wire.len()] {
        let messages = through(&wire, split, LIMITS).unwrap();
        assert_eq!(messages.len(), 3, "split at {split}");
        assert_eq!(messages[0].to_text().unwrap(), "{\"id\":0}");
        assert!(messages[1].is_ping());
        assert_eq!(messages[2].to_text().unwrap(), text);
    }
}

#[test]
fn a_decompression_bomb_is_refused_at_the_limit_without_inflating_it() {
    // 8 MB of zeros compress to about 8 KB: under the wire limit, far over the inflated one.
    let zeros = vec![0u8; 8 << 20];
    let bomb = deflated(&zeros);
    assert!(bomb.len() < LIMITS.wire, "{}", bomb.len());
    let wire = client_frame(true, true, 2, &bomb);
    assert_eq!(through(&wire, wire.len(), LIMITS).unwrap_err(), InflateError::TooBig);
    // Over the wire limit: refused as soon as the header says so.
    let small = Limits { wire: 1000, inflated: 10_000 };
    let big = client_frame(true, false, 2, &[7u8; 2000]);
    assert_eq!(through(&big, 10, small).unwrap_err(), InflateError::TooBig);
    // Fragments count together.
    let mut parts = client_frame(false, false, 2, &[7u8; 600]);
    parts.extend(client_frame(true, false, 0, &[7u8; 600]));
    assert_eq!(through(&parts, parts.len(), small).unwrap_err(), InflateError::TooBig);
    // Not deflate data.
    let junk = client_frame(true, true, 1, &[0xff; 40]);
    assert_eq!(through(&junk, junk.len(), LIMITS).unwrap_err(), InflateError::Invalid);
    // RSV1 on a continuation frame is a protocol error.
    let mut odd = client_frame(false, false, 1, b"ab");
    odd.extend(client_frame(true, true, 0, b"cd"));
    assert_eq!(through(&odd, odd.len(), LIMITS).unwrap_err(), InflateError::Invalid);
}
