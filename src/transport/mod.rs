//! Client transports. Owns the byte formats that reach client sockets; never owns hub, channel or
//! broker state (the `server` connection loops drive transports with what the shard decided).
//!
//! Every message is encoded once per [`Encoding`] into a WebSocket frame with its header in
//! front (`client::queue::Out`); transports that are not WebSocket reuse the payload behind the header
//! and add their own framing when a connection's queue is flushed ([`stream`]). So a shard
//! encodes a publication at most once per encoding, whatever mix of transports listens.

pub mod deflate;
pub mod stream;
pub mod websocket;

/// How a connection reaches its client (spec §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `/connection/websocket`.
    WebSocket {
        /// `?cf_ws_frame_ping_pong=true`: WebSocket ping frames instead of protocol pings.
        native_ping: bool,
    },
    /// `/connection/http_stream` (bidirectional emulation, commands via `/emulation`).
    HttpStream,
    /// `/connection/sse` (bidirectional emulation, JSON only).
    Sse,
    /// `/connection/uni_websocket`.
    UniWebSocket {
        /// `uni_websocket.join_push_messages`: a flushed batch is one newline-joined message.
        join: bool,
    },
    /// `/connection/uni_sse`.
    UniSse,
    /// `/connection/uni_http_stream`.
    UniHttpStream,
}

impl Transport {
    /// The client sends no commands after connecting; it gets bare pushes (spec §1.6).
    pub fn unidirectional(self) -> bool {
        matches!(
            self,
            Transport::UniWebSocket { .. } | Transport::UniSse | Transport::UniHttpStream
        )
    }

    /// Bidirectional emulation over an HTTP response plus `/emulation` requests.
    pub fn emulation(self) -> bool {
        matches!(self, Transport::HttpStream | Transport::Sse)
    }

    /// WebSocket framing (else a chunked HTTP response body).
    pub fn websocket(self) -> bool {
        matches!(self, Transport::WebSocket { .. } | Transport::UniWebSocket { .. })
    }

    /// Messages are Server-Sent Events.
    pub fn sse(self) -> bool {
        matches!(self, Transport::Sse | Transport::UniSse)
    }
}

/// The bytes a message is encoded as; fan-out keeps one encoded copy per value per shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// JSON `Reply` objects (pushes wrapped as `{"push":..}`).
    Json = 0,
    /// Length-delimited Protobuf `Reply` messages.
    Protobuf = 1,
    /// Bare JSON `Push` objects (unidirectional transports).
    JsonPush = 2,
}

impl Encoding {
    /// Number of encodings (size of per-encoding caches).
    pub const COUNT: usize = 3;

    /// The encoding of a connection.
    pub fn of(transport: Transport, protobuf: bool) -> Encoding {
        if transport.unidirectional() {
            Encoding::JsonPush
        } else if protobuf {
            Encoding::Protobuf
        } else {
            Encoding::Json
        }
    }
}

#[cfg(test)]
mod deflate_tests;
