//! The JSON shapes of proxy requests and answers (spec §9.2, §9.4), as upstream's
//! `proxyproto` JSON encoding writes and reads them.
//!
//! Owns: field names and which fields are left out when empty. Must not: decide anything
//! (what an answer means is `proxy::verdict` and the client commands).

use std::collections::HashMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// One request body; every field but the first four is left out when empty.
#[derive(Debug, Default, Serialize)]
pub struct Request<'a> {
    /// Client id.
    pub client: &'a str,
    /// Transport name (`websocket`, `sse`, …).
    pub transport: &'a str,
    /// `json` or `protobuf`.
    pub protocol: &'a str,
    /// `json`, or `binary` when payloads travel as `b64data`.
    pub encoding: &'a str,
    /// Connect: SDK name.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub name: &'a str,
    /// Connect: SDK version.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub version: &'a str,
    /// Connect: channels the client asks to be subscribed to.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub channels: &'a [&'a str],
    /// User id.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub user: &'a str,
    /// Channel.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub channel: &'a str,
    /// RPC method.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub method: &'a str,
    /// Payload as JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<&'a RawValue>,
    /// Payload as base64 (`binary_encoding`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub b64data: String,
    /// The connection's meta (`include_connection_meta`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<&'a RawValue>,
}

/// Base64 of a payload, as `b64data` carries it.
pub fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// The answer envelope.
#[derive(Debug, Deserialize)]
pub struct Envelope<R> {
    /// What the backend decided.
    #[serde(default = "Option::default")]
    pub result: Option<R>,
    /// A protocol error for the client.
    pub error: Option<ErrorBody>,
    /// A disconnect for the client.
    pub disconnect: Option<DisconnectBody>,
}

/// `error`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ErrorBody {
    /// Code (custom ones in 400–1999).
    pub code: u32,
    /// Message.
    pub message: String,
    /// The client may retry.
    pub temporary: bool,
}

/// `disconnect`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DisconnectBody {
    /// Code (custom ones in 4000–4999).
    pub code: u32,
    /// Reason.
    pub reason: String,
}

/// A JSON value the backend sent, kept as text.
pub type Raw = Option<Box<RawValue>>;

/// Connect result.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ConnectResult {
    /// User id.
    pub user: String,
    /// Unix seconds; 0 = never.
    pub expire_at: i64,
    /// Connection info.
    pub info: Raw,
    /// Connection info as base64 (wins).
    pub b64info: String,
    /// `ConnectResult.data` for the client.
    pub data: Raw,
    /// Same as base64 (wins).
    pub b64data: String,
    /// Server-side subscriptions with namespace defaults.
    pub channels: Vec<String>,
    /// Server-side subscriptions with options (the subscribe result's fields).
    pub subs: HashMap<String, SubscribeResult>,
    /// Kept on the server, sent to later proxies.
    pub meta: Raw,
}

/// `override` of a subscribe or connect `subs` result: each a `{"value": bool}` wrapper.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Override {
    /// `presence`.
    pub presence: Option<BoolValue>,
    /// `join_leave`.
    pub join_leave: Option<BoolValue>,
    /// `force_recovery`.
    pub force_recovery: Option<BoolValue>,
    /// `force_positioning`.
    pub force_positioning: Option<BoolValue>,
    /// `force_push_join_leave`.
    pub force_push_join_leave: Option<BoolValue>,
}

/// `{"value": bool}`.
#[derive(Debug, Default, Deserialize, Clone, Copy)]
#[serde(default)]
pub struct BoolValue {
    /// The value.
    pub value: bool,
}

impl Override {
    /// As the overrides a subscription token carries.
    pub fn overrides(&self) -> crate::auth::SubscribeOverrides {
        let v = |b: Option<BoolValue>| b.map(|b| b.value);
        crate::auth::SubscribeOverrides {
            presence: v(self.presence),
            join_leave: v(self.join_leave),
            force_recovery: v(self.force_recovery),
            force_positioning: v(self.force_positioning),
            force_push_join_leave: v(self.force_push_join_leave),
        }
    }
}

/// Refresh and sub_refresh result.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RefreshResult {
    /// Close (3005) / unsubscribe now.
    pub expired: bool,
    /// New expiry, Unix seconds; 0 = never.
    pub expire_at: i64,
    /// New info.
    pub info: Raw,
    /// New info as base64 (wins).
    pub b64info: String,
    /// New connection meta (refresh only).
    pub meta: Raw,
}

/// Subscribe result.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SubscribeResult {
    /// Unix seconds; 0 = never.
    pub expire_at: i64,
    /// Channel info.
    pub info: Raw,
    /// Channel info as base64 (wins).
    pub b64info: String,
    /// `SubscribeResult.data`.
    pub data: Raw,
    /// Same as base64 (wins).
    pub b64data: String,
    /// Namespace option overrides.
    #[serde(rename = "override")]
    pub override_: Option<Override>,
}

/// Publish result.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PublishResult {
    /// Replacement payload.
    pub data: Raw,
    /// Same as base64 (wins).
    pub b64data: String,
    /// Keep it out of history.
    pub skip_history: bool,
    /// Publication tags.
    pub tags: HashMap<String, String>,
    /// Idempotency key.
    pub idempotency_key: String,
    /// Send as a delta where subscribers negotiated it.
    pub delta: bool,
    /// Version (0 = none).
    pub version: u64,
    /// Version epoch.
    pub version_epoch: String,
}

/// RPC result.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RpcResult {
    /// Answer payload.
    pub data: Raw,
    /// Same as base64 (wins).
    pub b64data: String,
}

/// The payload a result carries: `b64…` when set (bad base64 is an error), else the JSON one.
pub fn pick(json: &Raw, b64: &str) -> Result<Option<bytes::Bytes>, base64::DecodeError> {
    if !b64.is_empty() {
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64)?;
        return Ok(Some(bytes::Bytes::from(bytes)));
    }
    Ok(json.as_ref().map(|raw| bytes::Bytes::copy_from_slice(raw.get().as_bytes())))
}
