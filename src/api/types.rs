//! Server HTTP API JSON types (spec §3.1–§3.5): request decoding and response encoding for
//! `publish` and `broadcast`, API error codes, the method table, and the legacy `/api` stream
//! format.
//!
//! Owns: the wire shapes only. Must not: execute anything, check API keys, or touch channels,
//! brokers or HTTP (the caller maps [`ApiDecodeError`] to HTTP 400 and [`ApiError`] to replies).
//!
//! Binary payloads (`b64data`): the decoded bytes are the publication payload exactly as
//! upstream. If they happen to be valid JSON they are used as a [`RawJson`] (like `data`);
//! otherwise they are returned as [`PublishPayload::Binary`] and the executor decides (upstream
//! publishes them and closes JSON subscribers that would receive them with 3506).

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::protocol::json::{starts_object, write_json_string};
use crate::protocol::RawJson;

/// Go's `base64.StdEncoding`: standard alphabet, padding required, non-zero trailing bits
/// tolerated.
const STD_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
        .with_decode_allow_trailing_bits(true),
);

/// An API error (`{"code":N,"message":".."}`; no `temporary` in the API, spec §3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// Error code.
    pub code: u32,
    /// Message.
    pub message: Cow<'static, str>,
}

const fn api_error(code: u32, message: &'static str) -> ApiError {
    ApiError { code, message: Cow::Borrowed(message) }
}

/// 100: internal server error (also broker failures, bad `channels` pattern).
pub const API_ERROR_INTERNAL: ApiError = api_error(100, "internal server error");
/// 102: namespace not configured.
pub const API_ERROR_UNKNOWN_CHANNEL: ApiError = api_error(102, "unknown channel");
/// 104: unknown method in batch/legacy, unknown RPC extension.
pub const API_ERROR_NOT_FOUND: ApiError = api_error(104, "not found");
/// 107: missing/invalid field, invalid base64, rejected data.
pub const API_ERROR_BAD_REQUEST: ApiError = api_error(107, "bad request");
/// 108: feature disabled for the namespace.
pub const API_ERROR_NOT_AVAILABLE: ApiError = api_error(108, "not available");
/// 112: `since` epoch mismatch.
pub const API_ERROR_UNRECOVERABLE_POSITION: ApiError = api_error(112, "unrecoverable position");
/// 113: (ext) conflict.
pub const API_ERROR_CONFLICT: ApiError = api_error(113, "conflict");

impl ApiError {
    /// HTTP status in transport error mode (spec §3.1): 100 → 500; 102, 104 → 404;
    /// 107, 108 → 400; 112 → 416; 113 → 409; anything else → 500.
    pub fn http_status(&self) -> u16 {
        match self.code {
            102 | 104 => 404,
            107 | 108 => 400,
            112 => 416,
            113 => 409,
            _ => 500,
        }
    }
}

/// A request body that is not valid JSON for the method (caller answers HTTP 400), or an
/// empty legacy body.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiDecodeError {
    /// No JSON value in the body.
    #[error("empty request body")]
    Empty,
    /// The body (or a legacy stream item) is not a JSON object.
    #[error("request body is not a JSON object")]
    NotObject,
    /// Malformed JSON or wrong field types.
    #[error("invalid request body: {0}")]
    Json(#[from] serde_json::Error),
}

fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Tags as a Go map: `null` is empty, a repeated key keeps the last value, output sorted by key
/// (the order `Publication.tags` is written in).
fn sorted_tags<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
    let map: Option<BTreeMap<String, String>> = Option::deserialize(d)?;
    Ok(map.unwrap_or_default().into_iter().collect())
}

/// Declares the wire struct and the public struct of a publish-like request; they differ only
/// in the target field (`channel` vs `channels`). Serde's `flatten` cannot be used because it
/// does not support `RawValue`.
macro_rules! publish_like {
    ($(#[$doc:meta])* $name:ident, $wire:ident, $target:ident: $ty:ty, $target_doc:literal) => {
        #[derive(Deserialize)]
        struct $wire<'a> {
            #[serde(default, deserialize_with = "nullable")]
            $target: $ty,
            #[serde(borrow, default)]
            data: Option<&'a RawValue>,
            #[serde(default, deserialize_with = "nullable")]
            b64data: String,
            #[serde(default, deserialize_with = "nullable")]
            skip_history: bool,
            #[serde(default, deserialize_with = "sorted_tags")]
            tags: Vec<(String, String)>,
            #[serde(default, deserialize_with = "nullable")]
            idempotency_key: String,
            #[serde(default, deserialize_with = "nullable")]
            delta: bool,
            #[serde(default, deserialize_with = "nullable")]
            version: u64,
            #[serde(default, deserialize_with = "nullable")]
            version_epoch: String,
        }

        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct $name {
            #[doc = $target_doc]
            pub $target: $ty,
            /// Raw JSON payload (`\n` stripped); `None` when absent or `null`.
            pub data: Option<RawJson>,
            /// Base64 (std, padded) binary payload; wins over `data` when non-empty.
            pub b64data: Option<String>,
            /// Do not store in history.
            pub skip_history: bool,
            /// Tags, sorted by key.
            pub tags: Vec<(String, String)>,
            /// Per-channel idempotency key (duplicates within 5 min return the first result).
            pub idempotency_key: String,
            /// Mark for delta delivery.
            pub delta: bool,
            /// Skip if ≤ the last stored version (needs history).
            pub version: u64,
            /// Version namespace.
            pub version_epoch: String,
        }

        impl $name {
            /// Decodes the JSON body; unknown fields are ignored, `null` means absent.
            pub fn decode(body: &[u8]) -> Result<Self, ApiDecodeError> {
                if !starts_object(body) {
                    return Err(ApiDecodeError::NotObject);
                }
                let w: $wire<'_> = serde_json::from_slice(body)?;
                Ok($name {
                    $target: w.$target,
                    data: w.data.map(RawJson::from_raw_value),
                    b64data: Some(w.b64data).filter(|s| !s.is_empty()),
                    skip_history: w.skip_history,
                    tags: w.tags,
                    idempotency_key: w.idempotency_key,
                    delta: w.delta,
                    version: w.version,
                    version_epoch: w.version_epoch,
                })
            }

            /// Resolves the payload: non-empty `b64data` wins (invalid base64 → 107), then
            /// `data`. `Ok(None)` means no payload at all (upstream rejects empty data with 107
            /// by default; that policy is the executor's).
            pub fn payload(&self) -> Result<Option<PublishPayload>, ApiError> {
                resolve_payload(self.data.as_ref(), self.b64data.as_deref())
            }
        }
    };
}

publish_like!(
    /// `POST /api/publish` body (spec §3.3).
    PublishRequest, WirePublish, channel: String, "Target channel (required; empty → 107)."
);

publish_like!(
    /// `POST /api/broadcast` body (spec §3.3).
    BroadcastRequest, WireBroadcast, channels: Vec<String>,
    "Target channels in order (required, non-empty; else 107)."
);

/// The publication payload a publish/broadcast request resolves to.
#[derive(Debug, Clone, PartialEq)]
pub enum PublishPayload {
    /// `data`, or `b64data` whose bytes are valid JSON.
    Json(RawJson),
    /// `b64data` bytes that are not valid JSON (undeliverable to JSON clients: 3506).
    Binary(Bytes),
}

fn resolve_payload(
    data: Option<&RawJson>,
    b64data: Option<&str>,
) -> Result<Option<PublishPayload>, ApiError> {
    if let Some(b64) = b64data.filter(|s| !s.is_empty()) {
        // Go's StdEncoding skips \r and \n inside the input.
        let cleaned: Cow<'_, str> = if b64.contains(['\r', '\n']) {
            Cow::Owned(b64.chars().filter(|&c| c != '\r' && c != '\n').collect())
        } else {
            Cow::Borrowed(b64)
        };
        let bytes = STD_BASE64.decode(cleaned.as_bytes()).map_err(|_| API_ERROR_BAD_REQUEST)?;
        if bytes.is_empty() {
            return Ok(None);
        }
        return Ok(Some(match RawJson::parse(&bytes) {
            Ok(json) => PublishPayload::Json(json),
            Err(_) => PublishPayload::Binary(Bytes::from(bytes)),
        }));
    }
    Ok(data.filter(|d| !d.is_empty()).cloned().map(PublishPayload::Json))
}

/// `publish` result: stream position when the channel has history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishResult {
    /// Offset (0 = no history, omitted).
    pub offset: u64,
    /// Epoch (empty = no history, omitted).
    pub epoch: String,
}

impl PublishResult {
    /// Appends the result object: `{"offset":N,"epoch":".."}` or `{}`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        if self.offset != 0 {
            out.extend_from_slice(b"\"offset\":");
            out.extend_from_slice(self.offset.to_string().as_bytes());
        }
        if !self.epoch.is_empty() {
            if self.offset != 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"\"epoch\":");
            write_json_string(out, &self.epoch);
        }
        out.push(b'}');
    }
}

/// Appends the error object `{"code":N,"message":".."}` (also the transport-error-mode body).
pub fn encode_error_object(e: &ApiError, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"code\":");
    out.extend_from_slice(e.code.to_string().as_bytes());
    out.extend_from_slice(b",\"message\":");
    write_json_string(out, &e.message);
    out.push(b'}');
}

/// Appends `{"result":<result_object>}`; `result_object` is already-encoded JSON.
pub fn encode_result_response(result_object: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"result\":");
    out.extend_from_slice(result_object);
    out.push(b'}');
}

/// Appends `{"error":{"code":N,"message":".."}}`.
pub fn encode_error_response(e: &ApiError, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"error\":");
    encode_error_object(e, out);
    out.push(b'}');
}

/// Appends a publish response: `{"result":{..}}` or `{"error":{..}}`.
pub fn encode_publish_response(r: &Result<PublishResult, ApiError>, out: &mut Vec<u8>) {
    match r {
        Ok(res) => {
            out.extend_from_slice(b"{\"result\":");
            res.encode(out);
            out.push(b'}');
        }
        Err(e) => encode_error_response(e, out),
    }
}

/// Appends a broadcast result object `{"responses":[<publish response>, ...]}` in channel order
/// (wrap it with [`encode_result_response`]; the legacy route embeds it as is).
pub fn encode_broadcast_result(rs: &[Result<PublishResult, ApiError>], out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"responses\":[");
    for (i, r) in rs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        encode_publish_response(r, out);
    }
    out.extend_from_slice(b"]}");
}

/// Server API methods: per-method path segments (`/api/<name>`) and the legacy enum (§3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs, reason = "variant names are the method names")]
pub enum ApiMethod {
    Publish,
    Broadcast,
    Unsubscribe,
    Disconnect,
    Presence,
    PresenceStats,
    History,
    HistoryRemove,
    Channels,
    Info,
    Rpc,
    Subscribe,
    Refresh,
    Connections,
    UpdateUserStatus,
    GetUserStatus,
    DeleteUserStatus,
    BlockUser,
    UnblockUser,
    RevokeToken,
    InvalidateUserTokens,
    DeviceRegister,
    DeviceUpdate,
    DeviceRemove,
    DeviceList,
    DeviceTopicList,
    DeviceTopicUpdate,
    UserTopicList,
    UserTopicUpdate,
    SendPushNotification,
    UpdatePushStatus,
    CancelPush,
    MapPublish,
    MapRemove,
    MapReadState,
    MapReadStream,
    MapStats,
    MapClear,
    SharedPollPublish,
    /// `/api/batch` only; not part of the legacy enum.
    Batch,
}

/// (method, snake_case name, legacy enum number).
const METHODS: &[(ApiMethod, &str, Option<u32>)] = &[
    (ApiMethod::Publish, "publish", Some(0)),
    (ApiMethod::Broadcast, "broadcast", Some(1)),
    (ApiMethod::Unsubscribe, "unsubscribe", Some(2)),
    (ApiMethod::Disconnect, "disconnect", Some(3)),
    (ApiMethod::Presence, "presence", Some(4)),
    (ApiMethod::PresenceStats, "presence_stats", Some(5)),
    (ApiMethod::History, "history", Some(6)),
    (ApiMethod::HistoryRemove, "history_remove", Some(7)),
    (ApiMethod::Channels, "channels", Some(8)),
    (ApiMethod::Info, "info", Some(9)),
    (ApiMethod::Rpc, "rpc", Some(10)),
    (ApiMethod::Subscribe, "subscribe", Some(11)),
    (ApiMethod::Refresh, "refresh", Some(12)),
    (ApiMethod::Connections, "connections", Some(14)),
    (ApiMethod::UpdateUserStatus, "update_user_status", Some(15)),
    (ApiMethod::GetUserStatus, "get_user_status", Some(16)),
    (ApiMethod::DeleteUserStatus, "delete_user_status", Some(17)),
    (ApiMethod::BlockUser, "block_user", Some(18)),
    (ApiMethod::UnblockUser, "unblock_user", Some(19)),
    (ApiMethod::RevokeToken, "revoke_token", Some(20)),
    (ApiMethod::InvalidateUserTokens, "invalidate_user_tokens", Some(21)),
    (ApiMethod::DeviceRegister, "device_register", Some(22)),
    (ApiMethod::DeviceUpdate, "device_update", Some(23)),
    (ApiMethod::DeviceRemove, "device_remove", Some(24)),
    (ApiMethod::DeviceList, "device_list", Some(25)),
    (ApiMethod::DeviceTopicList, "device_topic_list", Some(26)),
    (ApiMethod::DeviceTopicUpdate, "device_topic_update", Some(27)),
    (ApiMethod::UserTopicList, "user_topic_list", Some(28)),
    (ApiMethod::UserTopicUpdate, "user_topic_update", Some(29)),
    (ApiMethod::SendPushNotification, "send_push_notification", Some(30)),
    (ApiMethod::UpdatePushStatus, "update_push_status", Some(31)),
    (ApiMethod::CancelPush, "cancel_push", Some(32)),
    (ApiMethod::MapPublish, "map_publish", Some(33)),
    (ApiMethod::MapRemove, "map_remove", Some(34)),
    (ApiMethod::MapReadState, "map_read_state", Some(35)),
    (ApiMethod::MapReadStream, "map_read_stream", Some(36)),
    (ApiMethod::MapStats, "map_stats", Some(37)),
    (ApiMethod::MapClear, "map_clear", Some(38)),
    (ApiMethod::SharedPollPublish, "shared_poll_publish", Some(39)),
    (ApiMethod::Batch, "batch", None),
];

impl ApiMethod {
    /// The `/api/<segment>` route for this method (exact, lowercase snake_case).
    pub fn from_path_segment(segment: &str) -> Option<Self> {
        METHODS.iter().find(|(_, name, _)| *name == segment).map(|(m, _, _)| *m)
    }

    /// Legacy `method` string, matched case-insensitively (`"publish"`, `"PRESENCE_STATS"`).
    /// `batch` is not a legacy method.
    pub fn from_legacy_name(name: &str) -> Option<Self> {
        METHODS
            .iter()
            .find(|(_, n, num)| num.is_some() && n.eq_ignore_ascii_case(name))
            .map(|(m, _, _)| *m)
    }

    /// Legacy numeric `method` (PUBLISH 0 … SHARED_POLL_PUBLISH 39; 13 is unused).
    pub fn from_legacy_number(number: u64) -> Option<Self> {
        METHODS.iter().find(|(_, _, n)| n.map(u64::from) == Some(number)).map(|(m, _, _)| *m)
    }

    /// The snake_case name (path segment and batch command key).
    pub fn name(self) -> &'static str {
        METHODS.iter().find(|(m, _, _)| *m == self).map_or("", |(_, n, _)| n)
    }

    /// The legacy enum number, if the method has one.
    pub fn legacy_number(self) -> Option<u32> {
        METHODS.iter().find(|(m, _, _)| *m == self).and_then(|(_, _, n)| *n)
    }
}

/// One command of the legacy `/api` stream.
#[derive(Debug)]
pub struct LegacyCommand {
    /// `id` (0 when absent; then omitted in the reply).
    pub id: u32,
    /// The method; `None` for an unknown name/number (reply 104 `not found`). A missing or
    /// `null` method is `PUBLISH`, the protobuf enum's zero value, as upstream.
    pub method: Option<ApiMethod>,
    /// The per-method request object (`{}` when absent or `null`); decoding it is the
    /// executor's job and a failure is that reply's error 107.
    pub params: Box<RawValue>,
}

#[derive(Deserialize)]
struct WireLegacy {
    #[serde(default, deserialize_with = "nullable")]
    id: u32,
    #[serde(default)]
    method: serde_json::Value,
    #[serde(default)]
    params: Option<Box<RawValue>>,
}

fn empty_params() -> Box<RawValue> {
    // "{}" is valid JSON, so this cannot fail; fall back to a `null` literal rather than panic.
    RawValue::from_string("{}".to_owned()).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// Parses the legacy `/api` body: one or more `{"id":..,"method":..,"params":{..}}` objects
/// separated by any whitespace. An empty body or malformed JSON fails the whole request (400).
pub fn decode_legacy(body: &[u8]) -> Result<Vec<LegacyCommand>, ApiDecodeError> {
    let mut out = Vec::new();
    let mut stream = serde_json::Deserializer::from_slice(body).into_iter::<WireLegacy>();
    loop {
        let rest = &body[stream.byte_offset()..];
        if rest.iter().all(u8::is_ascii_whitespace) {
            break;
        }
        if !starts_object(rest) {
            return Err(ApiDecodeError::NotObject);
        }
        let Some(item) = stream.next() else { break };
        let w = item?;
        let method = match &w.method {
            serde_json::Value::Null => Some(ApiMethod::Publish),
            serde_json::Value::String(s) => ApiMethod::from_legacy_name(s),
            serde_json::Value::Number(n) => n.as_u64().and_then(ApiMethod::from_legacy_number),
            _ => None,
        };
        let params = match w.params {
            Some(p) if p.get() != "null" => p,
            _ => empty_params(),
        };
        out.push(LegacyCommand { id: w.id, method, params });
    }
    if out.is_empty() {
        return Err(ApiDecodeError::Empty);
    }
    Ok(out)
}

/// One reply of the legacy stream: the result object (already-encoded JSON, `{}` for empty
/// results) or an error.
#[derive(Debug, Clone, PartialEq)]
pub struct LegacyReply {
    /// The command's id (omitted when 0).
    pub id: u32,
    /// Encoded result object or error.
    pub outcome: Result<Vec<u8>, ApiError>,
}

/// Appends the legacy replies joined by `\n` (no trailing newline):
/// `{"id":N,"result":{..}}` / `{"id":N,"error":{..}}`.
pub fn encode_legacy_replies(replies: &[LegacyReply], out: &mut Vec<u8>) {
    for (i, r) in replies.iter().enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        out.push(b'{');
        if r.id != 0 {
            out.extend_from_slice(b"\"id\":");
            out.extend_from_slice(r.id.to_string().as_bytes());
            out.push(b',');
        }
        match &r.outcome {
            Ok(result) => {
                out.extend_from_slice(b"\"result\":");
                out.extend_from_slice(if result.is_empty() { b"{}" } else { result });
            }
            Err(e) => {
                out.extend_from_slice(b"\"error\":");
                encode_error_object(e, out);
            }
        }
        out.push(b'}');
    }
}

#[cfg(test)]
#[path = "types_tests.rs"]
mod tests;
