//! JSON command decoder: a frame of newline-delimited Centrifugo commands as a WebSocket text
//! message or an HTTP request body carries it (`protocol::decode_commands(false, …)`, the
//! line-by-line `json::commands` iterator, the streaming `json::FrameDecoder` of
//! HTTP-streaming bodies, and the uni-transport connect and emulation bodies).
//!
//! Checked besides "no panic": the zero-copy and copying decoders read the same commands; the
//! iterator yields exactly the frame's commands when the frame decodes; the streaming decoder
//! fails, or gives the same commands, whether the bytes come in one push or split at a point
//! chosen by the input.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rotor::protocol::{decode_commands, json, Command};

/// Feeds `chunks` to a fresh streaming decoder and ends it: the commands of the pushes that
/// succeeded, and whether one failed.
fn stream(chunks: &[&[u8]], max_line: usize) -> (Vec<Command>, bool) {
    let mut decoder = json::FrameDecoder::new(max_line);
    let mut out = Vec::new();
    for chunk in chunks {
        match decoder.push(chunk) {
            Ok(commands) => out.extend(commands),
            Err(_) => return (out, true),
        }
    }
    match decoder.finish() {
        Ok(commands) => out.extend(commands),
        Err(_) => return (out, true),
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    let frame = Bytes::copy_from_slice(data);
    let whole = decode_commands(false, &frame);
    assert_eq!(whole, json::decode_frame(data).ok(), "zero-copy and copying decoders differ");

    let mut lines = Vec::new();
    for command in json::commands_bytes(&frame) {
        match command {
            Ok(c) => lines.push(c),
            Err(_) => break,
        }
    }
    if let Some(all) = &whole {
        assert_eq!(&lines, all, "the iterator and the frame decoder differ");
    }

    // Streaming: a line limit above the input's length, so only the split point differs.
    let split = data.first().map_or(0, |&b| usize::from(b) * data.len() / 256);
    let (head, tail) = data.split_at(split);
    // A push that fails returns no command (the stream is dropped), so the commands compare
    // only when neither failed.
    let (one, one_failed) = stream(&[data], data.len() + 1);
    let (two, two_failed) = stream(&[head, tail], data.len() + 1);
    assert_eq!(one_failed, two_failed, "an error depends on where the bytes were split");
    if !one_failed {
        assert_eq!(one, two, "the streaming decoder depends on where the bytes were split");
    }
    // And a small line limit (from the input), for the too-long paths.
    let small = usize::from(data.get(1).copied().unwrap_or(0));
    let _ = stream(&[head, tail], small);

    let _ = json::decode_connect_request(data);
    let _ = json::decode_emulation_request(data);
});
