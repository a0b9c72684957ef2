//! Client protocol v2: encoding-independent domain types (spec §2).
//!
//! Owns: the decoded `Command`/`Request` shapes, the result and push payload shapes the server
//! writes back, `RawJson` payloads, and the error/disconnect/unsubscribe value types (their
//! instances live in [`codes`]). The JSON codec is in [`json`], the Protobuf one in
//! [`protobuf`] (messages generated from `proto/client.proto` into [`pb`]).
//!
//! Must not: do any I/O, know about shards, channels' namespaces, brokers or connection state.
//! Semantic checks (id rules, empty channel → 3501, unknown `delta` → 3501, …) belong to the
//! caller; this module only reports what the client sent.

#![deny(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "bytes from the network are parsed here: a silent truncation is a bug"
)]

use std::borrow::Cow;

use bytes::Bytes;

pub mod codes;
pub mod fossil;
mod frame;
pub mod json;
/// Generated Protobuf messages of the client protocol (`proto/client.proto`, prost).
#[allow(clippy::all, missing_docs, reason = "generated code")]
pub mod pb;
pub mod protobuf;

pub use frame::decode_commands;

/// An application payload: valid JSON text with every raw `\n` byte removed.
///
/// Payloads are passed through byte-for-byte (spec §2.2), so numbers and key order are exactly
/// what the publisher sent. Raw `\n` can only be insignificant whitespace in valid JSON, and
/// removing it keeps newline framing intact. The empty value means "absent" and is never written
/// by the encoders. Cloning is cheap (reference-counted), and the type is `Send`, so one payload
/// can be shared by every shard that delivers it.
///
/// The field is public so other modules can wrap bytes they already validated; doing so is a
/// promise that the bytes are valid JSON without raw `\n`. Prefer [`RawJson::parse`].
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct RawJson(pub Bytes);

impl RawJson {
    /// The empty (absent) payload.
    pub const fn empty() -> Self {
        RawJson(Bytes::new())
    }

    /// Validates `text` as one JSON value and stores it (minus raw `\n`).
    pub fn from_value_str(text: &str) -> Result<Self, serde_json::Error> {
        Self::parse(text.as_bytes())
    }

    /// Validates `bytes` as one JSON value and stores it (minus raw `\n`). Surrounding
    /// whitespace is trimmed because it is not part of the value.
    pub fn parse(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let raw: &serde_json::value::RawValue = serde_json::from_slice(bytes)?;
        Ok(Self::from_raw_value(raw))
    }

    /// Like [`RawJson::parse`] but reuses the allocation of `bytes` when it has no `\n`.
    pub fn parse_bytes(bytes: &Bytes) -> Result<Self, serde_json::Error> {
        let raw: &serde_json::value::RawValue = serde_json::from_slice(bytes)?;
        Ok(Self::from_raw_in(raw.get(), Some(bytes)))
    }

    /// Copies an already validated raw value (minus raw `\n`).
    pub fn from_raw_value(raw: &serde_json::value::RawValue) -> Self {
        Self::from_raw_in(raw.get(), None)
    }

    /// Builds a payload from text that serde_json already validated. When `backing` holds the
    /// text (it was deserialized from that buffer) and no `\n` must be stripped, the payload is a
    /// zero-copy slice of `backing`.
    pub(crate) fn from_raw_in(text: &str, backing: Option<&Bytes>) -> Self {
        let bytes = text.as_bytes();
        if bytes.contains(&b'\n') {
            let stripped: Vec<u8> = bytes.iter().copied().filter(|&b| b != b'\n').collect();
            return RawJson(Bytes::from(stripped));
        }
        if let Some(buf) = backing {
            // Pointer-range check (safe arithmetic on addresses) so `slice_ref` cannot panic.
            let start = buf.as_ptr() as usize;
            let end = start + buf.len();
            let p = bytes.as_ptr() as usize;
            if !bytes.is_empty() && p >= start && p + bytes.len() <= end {
                return RawJson(buf.slice_ref(bytes));
            }
        }
        RawJson(Bytes::copy_from_slice(bytes))
    }

    /// The JSON text.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The JSON text as `&str` (valid JSON is always UTF-8).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    /// The shared buffer.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// True for the absent payload.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Length of the JSON text in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl std::fmt::Debug for RawJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawJson({})", String::from_utf8_lossy(&self.0))
    }
}

/// One decoded client command (spec §2.3).
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// `id`; 0 for pongs and fire-and-forget `send`.
    pub id: u32,
    /// The request field that was set.
    pub request: Request,
}

/// The request carried by a [`Command`]: the first non-null field in the order of spec §2.3.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `connect`.
    Connect(ConnectRequest),
    /// `subscribe`.
    Subscribe(SubscribeRequest),
    /// `unsubscribe`.
    Unsubscribe(ChannelRequest),
    /// `publish`.
    Publish(PublishRequest),
    /// `presence`.
    Presence(ChannelRequest),
    /// `presence_stats`.
    PresenceStats(ChannelRequest),
    /// `history`.
    History(HistoryRequest),
    /// `rpc`.
    Rpc(RpcRequest),
    /// `send` (no reply; OSS answers with disconnect 3508).
    Send(SendRequest),
    /// `refresh`.
    Refresh(RefreshRequest),
    /// `sub_refresh`.
    SubRefresh(SubRefreshRequest),
    /// The `ping` command (field 11) with `id > 0`; the caller disconnects with 3501 (§2.10).
    Ping,
    /// A command with `id == 0` and no `send` (including `{}`).
    Pong,
}

/// `connect` request (spec §2.5). (ext) `flag`/`dict`/`profile` are ignored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConnectRequest {
    /// Connection JWT.
    pub token: String,
    /// Custom data for the connect proxy.
    pub data: Option<RawJson>,
    /// Server-side subscriptions to restore, in the order the client sent them.
    pub subs: Vec<(String, SubscribeRequest)>,
    /// Client app name (observability only).
    pub name: String,
    /// Client app version (observability only).
    pub version: String,
    /// Emulated headers for proxy calls, in the order sent.
    pub headers: Vec<(String, String)>,
}

/// `subscribe` request (spec §2.5), also used for `connect.subs` entries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubscribeRequest {
    /// Channel; empty is a protocol violation (caller → 3501).
    pub channel: String,
    /// Subscription JWT.
    pub token: String,
    /// Client asks to recover from (`offset`, `epoch`).
    pub recover: bool,
    /// Last known epoch.
    pub epoch: String,
    /// Last known offset.
    pub offset: u64,
    /// Custom data for the subscribe proxy.
    pub data: Option<RawJson>,
    /// Client asks for positioning.
    pub positioned: bool,
    /// Client asks for recovery capability.
    pub recoverable: bool,
    /// Client asks for join/leave pushes.
    pub join_leave: bool,
    /// Requested delta type (`""` or `"fossil"`; anything else → caller disconnects 3501).
    pub delta: String,
    /// Feature bits: 1 = compaction (ignored), 2 = reject unrecovered (→ error 112).
    pub flag: i64,
    /// (ext) subscription `type`: 0 stream; non-zero → caller answers 103/108 (§2.9).
    pub type_: i32,
    /// Tags filter `tf` (protocol `FilterNode`), unvalidated; the caller answers 107 unless
    /// the namespace allows filters and the tree is well formed.
    pub tf: Option<pb::FilterNode>,
}

/// Subscribe flag bit 2: reply error 112 instead of `recovered:false`.
pub const SUBSCRIBE_FLAG_REJECT_UNRECOVERED: i64 = 2;

/// A request whose only field is `channel` (`unsubscribe`, `presence`, `presence_stats`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChannelRequest {
    /// Channel; empty is a protocol violation (caller → 3501).
    pub channel: String,
}

/// `publish` request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PublishRequest {
    /// Target channel.
    pub channel: String,
    /// Payload; empty when absent (the caller rejects empty data with 107 by default).
    pub data: RawJson,
    /// (ext) 0 stream, 1 map publish (caller answers 108 without map support).
    pub type_: i32,
}

/// `history` request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistoryRequest {
    /// Channel.
    pub channel: String,
    /// Maximum publications (0 = position only; the caller caps it).
    pub limit: i32,
    /// Return publications after this position.
    pub since: Option<StreamPosition>,
    /// Newest first.
    pub reverse: bool,
}

/// A position in a channel stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct StreamPosition {
    /// Offset of a publication (1-based; 0 = before the first).
    pub offset: u64,
    /// Stream epoch.
    pub epoch: String,
}

/// `rpc` request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RpcRequest {
    /// Payload.
    pub data: Option<RawJson>,
    /// RPC method name.
    pub method: String,
}

/// `send` request (fire-and-forget).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SendRequest {
    /// Payload.
    pub data: Option<RawJson>,
}

/// `refresh` request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RefreshRequest {
    /// New connection JWT.
    pub token: String,
}

/// `sub_refresh` request. (ext) `type`/`track`/`untrack` are ignored (treated as refresh).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubRefreshRequest {
    /// Channel.
    pub channel: String,
    /// New subscription JWT.
    pub token: String,
}

/// Client information attached to publications, join/leave and presence (spec §2.7).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientInfo {
    /// User id (always written, may be empty for anonymous).
    pub user: String,
    /// Client id (always written).
    pub client: String,
    /// Connection info from the token / connect proxy.
    pub conn_info: Option<RawJson>,
    /// Channel info from the subscription token / subscribe proxy.
    pub chan_info: Option<RawJson>,
}

/// A publication as sent to clients (spec §2.7).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Publication {
    /// Payload. For JSON fossil-delta subscriptions the caller puts a JSON string here
    /// ([`RawJson::json_string`]).
    pub data: RawJson,
    /// Publisher info (client publications only).
    pub info: Option<ClientInfo>,
    /// Stream offset; 0 = no history (omitted).
    pub offset: u64,
    /// Tags, sorted by key (Go writes map keys sorted; producers keep this order).
    pub tags: Vec<(String, String)>,
    /// `data` is a fossil delta against the previous payload.
    pub delta: bool,
    /// `data` is not JSON (binary from a Protobuf client or API `b64data`): only Protobuf
    /// connections can receive it; a JSON one is closed with 3506.
    pub binary: bool,
    /// Delta subscribers may get this one as a patch (publisher's `delta`, or the namespace's
    /// `delta_publish`); not on the wire.
    pub delta_eligible: bool,
    /// When it was published (Unix ms), as another node's broker message carries it, for the
    /// PUB/SUB lag metric; 0 when unknown. Not sent to clients.
    pub time: i64,
}

/// An error reply (`Reply.error`, spec §2.12). Instances are in [`codes`]; proxies may build
/// custom ones with codes in [400, 1999].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    /// Error code.
    pub code: u32,
    /// Message.
    pub message: Cow<'static, str>,
    /// Client may retry (written only when true).
    pub temporary: bool,
}

/// A disconnect: WebSocket close code + plain-text reason, or a `disconnect` push on other
/// transports (spec §2.14). Reasons must stay ≤ 123 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// Close code.
    pub code: u16,
    /// Plain-text reason.
    pub reason: Cow<'static, str>,
}

impl Disconnect {
    /// Whether SDKs reconnect after this code: 3000–3499, 4000–4499 and ≥ 5000 reconnect;
    /// 3500–3999 and 4500–4999 are terminal. Codes below 3000 are transport-level and treated
    /// as reconnectable (centrifuge-python does; centrifuge-js treats 1009 as terminal).
    pub fn reconnect(&self) -> bool {
        !matches!(self.code, 3500..=3999 | 4500..=4999)
    }
}

/// A server-side unsubscribe (`Push.unsubscribe`, spec §2.13).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Code.
    pub code: u32,
    /// Reason.
    pub reason: Cow<'static, str>,
}

impl Unsubscribe {
    /// SDK rule: codes ≥ 2500 make the subscription resubscribe; lower codes are terminal.
    pub fn resubscribe(&self) -> bool {
        self.code >= 2500
    }
}

/// `connect` result (spec §2.5); also the body of the `connect` push on unidirectional
/// transports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConnectResult {
    /// Client id.
    pub client: String,
    /// Server version, e.g. `"6.9.1 OSS"`.
    pub version: String,
    /// Client must refresh its token.
    pub expires: bool,
    /// Seconds until expiry.
    pub ttl: u32,
    /// Data from the connect proxy.
    pub data: Option<RawJson>,
    /// Server-side subscriptions established at connect.
    pub subs: Vec<(String, SubscribeResult)>,
    /// Ping interval in seconds (0 = disabled, omitted).
    pub ping: u32,
    /// Client must answer pings.
    pub pong: bool,
    /// Session id (uni / emulated transports).
    pub session: String,
    /// Node id (emulated transports).
    pub node: String,
    /// Server time in Unix ms (0 = omitted).
    pub time: i64,
}

/// `subscribe` result (spec §2.5); also used for `ConnectResult.subs` entries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubscribeResult {
    /// Subscription must be refreshed.
    pub expires: bool,
    /// Seconds until expiry.
    pub ttl: u32,
    /// Recovery enabled.
    pub recoverable: bool,
    /// Stream epoch.
    pub epoch: String,
    /// Recovered publications (omitted when empty).
    pub publications: Vec<Publication>,
    /// Recovery succeeded.
    pub recovered: bool,
    /// Stream top (after a successful recovery: the requested offset, §6.4).
    pub offset: u64,
    /// Positioning enabled.
    pub positioned: bool,
    /// Custom data from the token / proxy.
    pub data: Option<RawJson>,
    /// A recovery attempt was made.
    pub was_recovering: bool,
    /// Delta compression negotiated.
    pub delta: bool,
}

/// `presence` result: client id → info, always written (`{}` when nobody is present).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PresenceResult {
    /// Entries in the order to write.
    pub presence: Vec<(String, ClientInfo)>,
}

/// `presence_stats` result (both fields always written).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PresenceStatsResult {
    /// Number of clients.
    pub num_clients: u32,
    /// Number of distinct users.
    pub num_users: u32,
}

/// `history` result (all fields always written; `publications` is `[]` when empty).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistoryResult {
    /// Publications.
    pub publications: Vec<Publication>,
    /// Stream epoch.
    pub epoch: String,
    /// Stream top offset.
    pub offset: u64,
}

/// `rpc` result.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RpcResult {
    /// Payload.
    pub data: Option<RawJson>,
}

/// `refresh` result (current server code fills only `expires`/`ttl`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RefreshResult {
    /// Client id.
    pub client: String,
    /// Server version.
    pub version: String,
    /// Connection expires.
    pub expires: bool,
    /// Seconds until expiry.
    pub ttl: u32,
}

/// `sub_refresh` result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubRefreshResult {
    /// Subscription expires.
    pub expires: bool,
    /// Seconds until expiry.
    pub ttl: u32,
}

/// The body of a reply to a command with `id > 0`.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyBody {
    /// `error`.
    Error(ProtocolError),
    /// `connect`.
    Connect(ConnectResult),
    /// `subscribe`.
    Subscribe(SubscribeResult),
    /// `unsubscribe` (`{}`).
    Unsubscribe,
    /// `publish` (`{}`).
    Publish,
    /// `presence`.
    Presence(PresenceResult),
    /// `presence_stats`.
    PresenceStats(PresenceStatsResult),
    /// `history`.
    History(HistoryResult),
    /// `ping` (`{}`).
    Ping,
    /// `rpc`.
    Rpc(RpcResult),
    /// `refresh`.
    Refresh(RefreshResult),
    /// `sub_refresh`.
    SubRefresh(SubRefreshResult),
}

/// `subscribe` push: a server-side subscription added while connected (API `subscribe`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubscribePush {
    /// Recovery enabled.
    pub recoverable: bool,
    /// Stream epoch.
    pub epoch: String,
    /// Stream top offset.
    pub offset: u64,
    /// Positioning enabled.
    pub positioned: bool,
    /// Custom data.
    pub data: Option<RawJson>,
}

/// The payload of a push (spec §2.6).
#[derive(Debug, Clone, PartialEq)]
pub enum PushBody {
    /// `pub`.
    Publication(Publication),
    /// `join`.
    Join(ClientInfo),
    /// `leave`.
    Leave(ClientInfo),
    /// `unsubscribe`.
    Unsubscribe(Unsubscribe),
    /// `message`.
    Message(RawJson),
    /// `subscribe`.
    Subscribe(SubscribePush),
    /// `connect` (first push on unidirectional transports).
    Connect(ConnectResult),
    /// `disconnect` (non-WebSocket transports, before closing).
    Disconnect(Disconnect),
    /// `refresh`.
    Refresh {
        /// Connection expires.
        expires: bool,
        /// Seconds until expiry.
        ttl: u32,
    },
}
