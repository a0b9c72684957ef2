//! Label values of the client and transport metrics, as Centrifugo writes them.
//!
//! Owns: the small enums that index the per-shard tables and their label strings. Must not:
//! hold counts.

use crate::broker::Event;
use crate::protocol::{PushBody, ReplyBody, Request};
use crate::transport::Transport;

/// The `transport` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportLabel {
    /// `websocket`.
    WebSocket = 0,
    /// `http_stream`.
    HttpStream,
    /// `sse`.
    Sse,
    /// `uni_websocket`.
    UniWebSocket,
    /// `uni_sse`.
    UniSse,
    /// `uni_http_stream`.
    UniHttpStream,
}

impl TransportLabel {
    /// How many there are.
    pub const COUNT: usize = 6;
    /// All, in index order.
    pub const ALL: [TransportLabel; Self::COUNT] = [
        Self::WebSocket,
        Self::HttpStream,
        Self::Sse,
        Self::UniWebSocket,
        Self::UniSse,
        Self::UniHttpStream,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WebSocket => "websocket",
            Self::HttpStream => "http_stream",
            Self::Sse => "sse",
            Self::UniWebSocket => "uni_websocket",
            Self::UniSse => "uni_sse",
            Self::UniHttpStream => "uni_http_stream",
        }
    }
}

impl From<Transport> for TransportLabel {
    fn from(t: Transport) -> Self {
        match t {
            Transport::WebSocket { .. } => Self::WebSocket,
            Transport::HttpStream => Self::HttpStream,
            Transport::Sse => Self::Sse,
            Transport::UniWebSocket { .. } => Self::UniWebSocket,
            Transport::UniSse => Self::UniSse,
            Transport::UniHttpStream => Self::UniHttpStream,
        }
    }
}

/// The `frame_type` label (and, for the first [`FrameType::COMMANDS`], the `method` label of
/// client command metrics): the protocol's frame type names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameType {
    /// `connect`.
    Connect = 0,
    /// `subscribe`.
    Subscribe,
    /// `unsubscribe`.
    Unsubscribe,
    /// `publish`.
    Publish,
    /// `presence`.
    Presence,
    /// `presence_stats`.
    PresenceStats,
    /// `history`.
    History,
    /// `send`.
    Send,
    /// `rpc`.
    Rpc,
    /// `refresh`.
    Refresh,
    /// `sub_refresh`.
    SubRefresh,
    /// `unknown`.
    Unknown,
    /// `push_publication`.
    PushPublication,
    /// `push_join`.
    PushJoin,
    /// `push_leave`.
    PushLeave,
    /// `push_unsubscribe`.
    PushUnsubscribe,
    /// `push_message`.
    PushMessage,
    /// `push_subscribe`.
    PushSubscribe,
    /// `push_connect`.
    PushConnect,
    /// `push_disconnect`.
    PushDisconnect,
    /// `push_refresh`.
    PushRefresh,
    /// `server_ping`.
    ServerPing,
    /// `client_pong`.
    ClientPong,
}

impl FrameType {
    /// How many there are.
    pub const COUNT: usize = 23;
    /// The client command methods (they come first).
    pub const COMMANDS: usize = 12;
    /// All, in index order.
    pub const ALL: [FrameType; Self::COUNT] = [
        Self::Connect,
        Self::Subscribe,
        Self::Unsubscribe,
        Self::Publish,
        Self::Presence,
        Self::PresenceStats,
        Self::History,
        Self::Send,
        Self::Rpc,
        Self::Refresh,
        Self::SubRefresh,
        Self::Unknown,
        Self::PushPublication,
        Self::PushJoin,
        Self::PushLeave,
        Self::PushUnsubscribe,
        Self::PushMessage,
        Self::PushSubscribe,
        Self::PushConnect,
        Self::PushDisconnect,
        Self::PushRefresh,
        Self::ServerPing,
        Self::ClientPong,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Subscribe => "subscribe",
            Self::Unsubscribe => "unsubscribe",
            Self::Publish => "publish",
            Self::Presence => "presence",
            Self::PresenceStats => "presence_stats",
            Self::History => "history",
            Self::Send => "send",
            Self::Rpc => "rpc",
            Self::Refresh => "refresh",
            Self::SubRefresh => "sub_refresh",
            Self::Unknown => "unknown",
            Self::PushPublication => "push_publication",
            Self::PushJoin => "push_join",
            Self::PushLeave => "push_leave",
            Self::PushUnsubscribe => "push_unsubscribe",
            Self::PushMessage => "push_message",
            Self::PushSubscribe => "push_subscribe",
            Self::PushConnect => "push_connect",
            Self::PushDisconnect => "push_disconnect",
            Self::PushRefresh => "push_refresh",
            Self::ServerPing => "server_ping",
            Self::ClientPong => "client_pong",
        }
    }

    /// Index in the command-duration table, for client command methods.
    pub fn command_index(self) -> Option<usize> {
        let i = self as usize;
        (i < Self::COMMANDS).then_some(i)
    }

    /// The frame type of a reply (`None`: an error, whose type is its command's).
    pub fn of_reply(body: &ReplyBody) -> Option<FrameType> {
        Some(match body {
            ReplyBody::Error(_) => return None,
            ReplyBody::Connect(_) => Self::Connect,
            ReplyBody::Subscribe(_) => Self::Subscribe,
            ReplyBody::Unsubscribe => Self::Unsubscribe,
            ReplyBody::Publish => Self::Publish,
            ReplyBody::Presence(_) => Self::Presence,
            ReplyBody::PresenceStats(_) => Self::PresenceStats,
            ReplyBody::History(_) => Self::History,
            ReplyBody::Rpc(_) => Self::Rpc,
            ReplyBody::Refresh(_) => Self::Refresh,
            ReplyBody::SubRefresh(_) => Self::SubRefresh,
            ReplyBody::Ping => Self::Unknown,
        })
    }

    /// The frame type of a push.
    pub fn of_push(body: &PushBody) -> FrameType {
        match body {
            PushBody::Publication(_) => Self::PushPublication,
            PushBody::Join(_) => Self::PushJoin,
            PushBody::Leave(_) => Self::PushLeave,
            PushBody::Unsubscribe(_) => Self::PushUnsubscribe,
            PushBody::Message(_) => Self::PushMessage,
            PushBody::Subscribe(_) => Self::PushSubscribe,
            PushBody::Connect(_) => Self::PushConnect,
            PushBody::Disconnect(_) => Self::PushDisconnect,
            PushBody::Refresh { .. } => Self::PushRefresh,
        }
    }

    /// The frame type of a channel event's push.
    pub fn of_event(event: &Event) -> FrameType {
        match event {
            Event::Pub(_) => Self::PushPublication,
            Event::Join(_) => Self::PushJoin,
            Event::Leave(_) => Self::PushLeave,
        }
    }

    /// The frame type (and method label) of a client command.
    pub fn of_request(request: &Request) -> FrameType {
        match request {
            Request::Connect(_) => Self::Connect,
            Request::Subscribe(_) => Self::Subscribe,
            Request::Unsubscribe(_) => Self::Unsubscribe,
            Request::Publish(_) => Self::Publish,
            Request::Presence(_) => Self::Presence,
            Request::PresenceStats(_) => Self::PresenceStats,
            Request::History(_) => Self::History,
            Request::Rpc(_) => Self::Rpc,
            Request::Send(_) => Self::Send,
            Request::Refresh(_) => Self::Refresh,
            Request::SubRefresh(_) => Self::SubRefresh,
            Request::Pong => Self::ClientPong,
            Request::Ping => Self::Unknown,
        }
    }
}

/// The `client_name` and `client_version` labels of connection metrics. Centrifugo OSS
/// registers no client names, so a name is `unregistered` and no name `unnamed`; likewise
/// `unregistered`/`unversioned` for versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientLabel(pub u8);

impl ClientLabel {
    /// How many there are.
    pub const COUNT: usize = 4;

    /// From what the client's `connect` sent.
    pub fn new(name: &str, version: &str) -> ClientLabel {
        ClientLabel(u8::from(!name.is_empty()) | (u8::from(!version.is_empty()) << 1))
    }

    /// The `client_name` value.
    pub fn name(self) -> &'static str {
        if self.0 & 1 == 0 {
            "unnamed"
        } else {
            "unregistered"
        }
    }

    /// The `client_version` value.
    pub fn version(self) -> &'static str {
        if self.0 & 2 == 0 {
            "unversioned"
        } else {
            "unregistered"
        }
    }
}
