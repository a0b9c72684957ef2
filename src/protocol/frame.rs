//! What needs a codec beyond the domain types: decoding a whole frame of commands in the
//! connection's encoding, and a text as a JSON string payload.
//!
//! Owns: no state. Must not: hold encoding rules of its own (they are `json`'s and
//! `protobuf`'s).

use bytes::Bytes;

use crate::protocol::{json, protobuf, Command, RawJson};

/// Decodes one frame of commands as the connection speaks: newline-separated JSON (payloads
/// sliced from `frame` without copying) or length-delimited Protobuf. `None` when it does not
/// decode, including an empty frame; callers answer that with 3501 or an HTTP 400.
pub fn decode_commands(protobuf: bool, frame: &Bytes) -> Option<Vec<Command>> {
    if protobuf {
        protobuf::decode_frame(frame).ok()
    } else {
        json::decode_frame_bytes(frame).ok()
    }
}

impl RawJson {
    /// A JSON string value whose content is `text` (properly escaped). Used for JSON delta
    /// subscriptions, where every `pub.data` is a string (spec §11.3).
    pub fn json_string(text: &str) -> Self {
        let mut out = Vec::with_capacity(text.len() + 2);
        json::write_json_string(&mut out, text);
        RawJson(Bytes::from(out))
    }
}
