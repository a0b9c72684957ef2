//! Protobuf command decoder: a frame of length-delimited Centrifugo `Command`s as a WebSocket
//! binary message carries it (`protocol::protobuf::decode_frame`,
//! `protocol::decode_commands(true, …)`), and the streaming `protobuf::StreamDecoder` of
//! HTTP-streaming bodies, fed the same bytes split at a point chosen by the input.
//!
//! Checked besides "no panic": both entry points of the frame decoder agree; a frame that
//! decodes whole gives the same commands from the streaming decoder, with nothing left over;
//! the streaming decoder gives the same commands whether the bytes come in one push or two.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rotor::protocol::{decode_commands, protobuf, Command};

/// Pushes `chunks` to a fresh streaming decoder: the commands before the first error,
/// whether an error came, and whether bytes of an unfinished command are left.
fn stream(chunks: &[&[u8]]) -> (Vec<Command>, bool, bool) {
    let mut decoder = protobuf::StreamDecoder::default();
    let mut out = Vec::new();
    for chunk in chunks {
        match decoder.push(chunk) {
            Ok(commands) => out.extend(commands),
            Err(_) => return (out, true, decoder.has_partial()),
        }
    }
    (out, false, decoder.has_partial())
}

fuzz_target!(|data: &[u8]| {
    let whole = protobuf::decode_frame(data).ok();
    assert_eq!(whole, decode_commands(true, &Bytes::copy_from_slice(data)));

    let split = data.first().map_or(0, |&b| usize::from(b) * data.len() / 256);
    let (head, tail) = data.split_at(split);
    let (one, one_failed, one_partial) = stream(&[data]);
    let (two, two_failed, two_partial) = stream(&[head, tail]);
    assert_eq!(one_failed, two_failed, "an error depends on where the bytes were split");
    if !one_failed {
        assert_eq!(one, two, "the streaming decoder depends on where the bytes were split");
        assert_eq!(one_partial, two_partial);
    }
    if let Some(commands) = whole {
        assert!(!one_failed && !one_partial, "a frame that decodes must stream whole");
        assert_eq!(one, commands, "the frame and the streaming decoder differ");
    }
});
