//! RESP reply reader: what a Redis server sends on the engine's links. The input is the byte
//! stream, arriving in reads of a size chosen by the input; frames are cut as
//! `broker::redis::io` does (`redis_protocol::resp2::decode::decode_bytes_mut` on the
//! buffer), and every frame goes through each reader of replies: the PUB/SUB classifier
//! (`broker::redis::incoming`, with the payload formats of `parse_message`), the answer of
//! each kind of command (`broker::redis::answer`), and the `CLUSTER SLOTS` reader.
//!
//! Checked besides "no panic": every frame consumes bytes, and the frames do not depend on
//! how the stream was split into reads (the link's reader relies on it).
#![no_main]

use std::sync::LazyLock;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::types::BytesFrame;
use rotor::broker::redis::{self, Address, Keys, Parse};
use rotor::broker::stream::{HistoryQuery, Position};

static KEYS: LazyLock<[Keys; 2]> =
    LazyLock::new(|| [Keys::new("centrifugo", false), Keys::new("centrifugo", true)]);

static SEED: LazyLock<Option<Address>> = LazyLock::new(|| {
    Address::parse("redis://127.0.0.1:6379", &rotor::config::Redis::default()).ok()
});

/// The frames of `stream` read in pieces of `read` bytes, up to the first decoding error.
fn frames(stream: &[u8], read: usize) -> Vec<BytesFrame> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in stream.chunks(read) {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            match decode_bytes_mut(&mut buf) {
                Ok(Some((frame, used, _))) => {
                    assert!(used > 0 && buf.len() < before, "a frame that consumed nothing");
                    out.push(frame);
                }
                Ok(None) => break,
                Err(_) => return out,
            }
        }
    }
    out
}

fn query(epoch: &str) -> HistoryQuery {
    let since = Some(Position { offset: 1, epoch: epoch.to_owned() });
    HistoryQuery { limit: Some(10), since, reverse: false }
}

/// Every reader of replies, on one frame.
fn read(frame: &BytesFrame) {
    for keys in KEYS.iter() {
        let _ = redis::incoming(keys, "node-uid", frame.clone());
    }
    for parse in [
        Parse::Published,
        Parse::Subscribed(None),
        Parse::Subscribed(Some(query("abcd"))),
        Parse::History(query("")),
        Parse::History(query("abcd")),
        Parse::Top,
        Parse::Presence,
        Parse::Done,
    ] {
        let _ = redis::answer(parse, Ok(frame.clone()));
    }
    if let Some(seed) = SEED.as_ref() {
        let _ = redis::from_cluster_slots(seed, frame);
    }
    match frame {
        BytesFrame::BulkString(b) => {
            let _ = redis::parse_message(b);
        }
        BytesFrame::Array(items) => items.iter().for_each(read_payloads),
        _ => {}
    }
}

/// Payloads inside arrays, read as PUB/SUB payloads whatever their channel.
fn read_payloads(frame: &BytesFrame) {
    match frame {
        BytesFrame::BulkString(b) => {
            let _ = redis::parse_message(b);
        }
        BytesFrame::Array(items) => items.iter().for_each(read_payloads),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let [read_size, stream @ ..] = data else { return };
    let whole = frames(stream, stream.len().max(1));
    let pieces = frames(stream, usize::from(*read_size) + 1);
    assert_eq!(whole, pieces, "frames depend on how the stream was split into reads");
    for frame in &whole {
        read(frame);
    }
});
