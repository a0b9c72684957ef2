//! Transport sections: `websocket`, the HTTP-streaming and SSE endpoints (bidirectional and
//! unidirectional), `emulation`, `uni_websocket` and the `init` helper endpoint.
//!
//! Owns: these key names and their defaults (endpoint paths, size limits, write deadlines).
//! Must not: validate values (that is `validate.rs`), or import from `mod.rs`, which
//! re-exports these types.

use std::time::Duration;

use serde::de::MapAccess;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::codec::{self, GoDuration, Plain, Section, SectionVisitor};
use super::section::section;

section! {
    /// `websocket.*`.
    pub struct WebSocket {
        /// Turn the WebSocket endpoint off.
        disabled: bool [Plain] = false,
        /// Endpoint path.
        handler_prefix: String [Plain] = "/connection/websocket".to_owned(),
        /// Max incoming message size in bytes.
        message_size_limit: usize [Plain] = 65_536,
        /// Write deadline per frame.
        write_timeout: Duration [GoDuration] = Duration::from_millis(1000),
        /// Socket read buffer; 0 = implementation default.
        read_buffer_size: usize [Plain] = 0,
        /// Socket write buffer; 0 = implementation default.
        write_buffer_size: usize [Plain] = 0,
        /// permessage-deflate (no context takeover) for clients that offer it.
        compression: bool [Plain] = false,
        /// zlib level of compressed messages, 1 (fastest) to 9.
        compression_level: i64 [Plain] = 1,
        /// Messages of at most this many bytes go uncompressed; 0 = compress all.
        compression_min_size: usize [Plain] = 0,
        /// Largest inbound message once inflated; 0 = 10 × `message_size_limit`.
        decompressed_message_size_limit: usize [Plain] = 0,
    }
}

/// Declares the section of an HTTP streaming transport: `enabled`, `handler_prefix` (with
/// the transport's default path) and `max_request_body_size`, then any fields of its own.
macro_rules! stream_section {
    ($(#[$meta:meta])* $name:ident, $path:literal $(, $($own:tt)*)?) => {
        section! {
            $(#[$meta])*
            pub struct $name {
                /// Serve the endpoint.
                enabled: bool [Plain] = false,
                /// Endpoint path.
                handler_prefix: String [Plain] = $path.to_owned(),
                /// Largest connect request body (413 above).
                max_request_body_size: usize [Plain] = 65_536,
                $($($own)*)?
            }
        }
    };
}

stream_section!(
    /// `http_stream.*`.
    HttpStream,
    "/connection/http_stream"
);
stream_section!(
    /// `sse.*`.
    Sse,
    "/connection/sse"
);
stream_section!(
    /// `uni_sse.*`.
    UniSse,
    "/connection/uni_sse",
    /// Answer a refused connect with an HTTP status instead of a stream.
    connect_code_to_http_response: ConnectCodeToHttp [Plain] = ConnectCodeToHttp::default(),
);
stream_section!(
    /// `uni_http_stream.*`.
    UniHttpStream,
    "/connection/uni_http_stream",
    /// Answer a refused connect with an HTTP status instead of a stream.
    connect_code_to_http_response: ConnectCodeToHttp [Plain] = ConnectCodeToHttp::default(),
);

section! {
    /// `<uni transport>.connect_code_to_http_response`: the connect runs before the response
    /// starts, and a refusal becomes an HTTP answer instead of a disconnect on the stream.
    pub struct ConnectCodeToHttp {
        /// Connect first, answer refusals with HTTP.
        enabled: bool [Plain] = false,
        /// Error or disconnect code → status and body (500 for codes not listed).
        transforms: Vec<ConnectHttpTransform> [Plain] = Vec::new(),
    }
}

/// One `connect_code_to_http_response.transforms[]` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectHttpTransform {
    /// Connect error code (or disconnect code) to match.
    pub code: u32,
    /// The HTTP answer.
    pub to: ConnectHttpResponse,
}

/// Target of a [`ConnectHttpTransform`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectHttpResponse {
    /// HTTP status.
    pub status_code: u16,
    /// Body; empty = the error message (or disconnect reason).
    #[serde(default)]
    pub body: String,
}

section! {
    /// `emulation.*` (on whenever `http_stream` or `sse` is).
    pub struct Emulation {
        /// Endpoint path.
        handler_prefix: String [Plain] = "/emulation".to_owned(),
        /// Largest request body (413 above).
        max_request_body_size: usize [Plain] = 65_536,
    }
}

section! {
    /// `uni_websocket.*`.
    pub struct UniWebSocket {
        /// Serve the endpoint.
        enabled: bool [Plain] = false,
        /// Endpoint path.
        handler_prefix: String [Plain] = "/connection/uni_websocket".to_owned(),
        /// Largest connect message.
        message_size_limit: usize [Plain] = 65_536,
        /// Write deadline per flush.
        write_timeout: Duration [GoDuration] = Duration::from_millis(1000),
        /// Send a flushed batch as one newline-joined message.
        join_push_messages: bool [Plain] = false,
        /// Close with the close frame only, without a `disconnect` push first.
        disable_disconnect_push: bool [Plain] = false,
        /// permessage-deflate (no context takeover) for clients that offer it.
        compression: bool [Plain] = false,
        /// zlib level of compressed messages, 1 (fastest) to 9.
        compression_level: i64 [Plain] = 1,
        /// Messages of at most this many bytes go uncompressed; 0 = compress all.
        compression_min_size: usize [Plain] = 0,
    }
}

section! {
    /// `init.*`.
    pub struct Init {
        /// Serve `GET <handler_prefix>` → `{}`.
        enabled: bool [Plain] = false,
        /// Endpoint path.
        handler_prefix: String [Plain] = "/connection/init".to_owned(),
    }
}
