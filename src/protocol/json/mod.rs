//! Newline-delimited JSON codec for client protocol v2 (spec §2.1–§2.7).
//!
//! Owns: the public face of the codec. Decoding client frames into
//! [`Command`](crate::protocol::Command)s (serde_json with borrowed `RawValue` payloads, so
//! payload text passes through byte-for-byte) lives in `decode.rs`; writing replies and pushes
//! directly into a byte buffer (no intermediate `serde_json::Value`; this is the fan-out hot
//! path) lives in `encode.rs`. Everything callers use is re-exported here, so they name
//! `protocol::json::X` and never the halves.
//!
//! Must not: panic on peer input, apply protocol semantics beyond picking the request field
//! (id rules, empty channels etc. are checked by the caller), or do I/O. The two halves share
//! no code and must not import each other or this module; anything both came to need would go
//! in a leaf file of its own.

mod decode;
mod encode;

#[cfg(test)]
mod decode_tests;
#[cfg(test)]
mod encode_tests;

pub(crate) use decode::starts_object;
pub use decode::{
    commands, commands_bytes, decode_connect_request, decode_emulation_request, decode_frame,
    decode_frame_bytes, Commands, DecodeError, EmulationRequest, FrameDecoder,
};
pub use encode::{
    encode_disconnect_push, encode_join_push, encode_leave_push, encode_publication_push,
    encode_push, encode_reply, encode_result_object, encode_unsubscribe_push, write_json_string,
    PushFraming,
};

/// A server ping (empty Reply) and a client pong (empty Command) in JSON.
pub const PING: &[u8] = b"{}";
