//! JWT claim decoding: turns a verified payload (JSON text) into typed connection or
//! subscription claims.
//!
//! Owns the claim grammar of spec §4.2/§4.3 (types, `b64*` precedence, raw JSON
//! pass-through) and [`TokenError`], what every token check reports. It must not look at signatures, keys, clocks or channel
//! configuration: time checks live in `auth::mod`, namespace checks in the caller.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

/// Why a token was refused.
///
/// Reply mapping (spec §4.4): `Invalid` → disconnect 3500 at connect/refresh/
/// sub_refresh, error 103 at subscribe; `Expired` → error 109 at connect/subscribe
/// (and sub_refresh, project decision Q1), disconnect 3005 at connection refresh;
/// `BadConnectionInfo` → error 100; `KeysPending` → not an answer yet (see there).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("invalid token: {0}")]
    Invalid(Cow<'static, str>),
    #[error("token expired")]
    Expired,
    /// JWKS mode: the token's key (`kid`) is not in the cache, or the cached key set
    /// is older than an hour. Call `TokenVerifier::fetch_keys`, await the returned
    /// future if any, then verify once more; `KeysPending` again is an invalid token.
    #[error("token signing keys are being fetched")]
    KeysPending,
    /// A connection token's `b64info` is not valid base64; upstream treats this as
    /// an internal error rather than an invalid token.
    #[error("bad base64 in connection token b64info")]
    BadConnectionInfo,
}

/// Raw claim bytes handed to clients verbatim: either the JSON text of the claim
/// (with `\n` bytes removed, so it can never break newline-delimited JSON framing;
/// a raw newline can only be insignificant whitespace in valid JSON) or the decoded
/// bytes of its `b64*` twin.
pub type RawBytes = Bytes;

/// Per-subscription overrides of namespace options carried by a token
/// (`override` object, each key `{"value": bool}`). `None` = use the namespace value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubscribeOverrides {
    pub presence: Option<bool>,
    pub join_leave: Option<bool>,
    pub force_push_join_leave: Option<bool>,
    pub force_positioning: Option<bool>,
    pub force_recovery: Option<bool>,
}

/// One entry of a connection token's `subs` map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerSideSub {
    pub channel: String,
    /// `b64info` (decoded) wins over `info`.
    pub info: Option<RawBytes>,
    /// `b64data` (decoded) wins over `data`.
    pub data: Option<RawBytes>,
    pub overrides: SubscribeOverrides,
}

/// Claims of a verified connection token.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectionClaims {
    /// `sub` (or the configured `user_id_claim`); empty = anonymous.
    pub user: String,
    pub exp: Option<i64>,
    pub expire_at: Option<i64>,
    /// `b64info` (decoded) wins over `info`.
    pub info: Option<RawBytes>,
    /// Server-side channels with namespace defaults. Always empty when `subs` is
    /// present in the token, because `subs` replaces `channels` (spec §4.2).
    pub channels: Vec<String>,
    /// Server-side channels with per-channel options, ordered by channel name.
    pub subs: Option<Vec<ServerSideSub>>,
    pub meta: Option<RawBytes>,
}

/// Claims of a verified subscription token.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubscriptionClaims {
    /// `sub` (or the configured `user_id_claim`); must equal the connection's user.
    pub user: String,
    /// Never empty: a subscription token without `channel` is invalid.
    pub channel: String,
    /// When set, must equal the subscribing connection's client id.
    pub client: Option<String>,
    pub exp: Option<i64>,
    pub expire_at: Option<i64>,
    /// `b64info` (decoded) wins over `info`; becomes `ClientInfo.chan_info`.
    pub info: Option<RawBytes>,
    /// `b64data` (decoded) wins over `data`; returned in `SubscribeResult.data`.
    pub data: Option<RawBytes>,
    pub overrides: SubscribeOverrides,
}

/// Registered claims every token kind shares, checked by the verifier.
#[derive(Debug, Default)]
pub(crate) struct Standard {
    pub exp: Option<i64>,
    pub nbf: Option<i64>,
    pub aud: Vec<String>,
    pub iss: Option<String>,
}

/// Top-level claims by name, values still raw. Keys are owned because JSON keys may
/// contain escapes; values borrow from the payload text.
pub(crate) struct ClaimMap<'a>(HashMap<String, &'a RawValue>);

impl<'a> ClaimMap<'a> {
    pub(crate) fn parse(payload: &'a str) -> Result<Self, TokenError> {
        serde_json::from_str(payload)
            .map(ClaimMap)
            .map_err(|_| invalid("claims are not a JSON object"))
    }

    /// Present and not `null`.
    fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.0.get(name).copied().filter(|raw| raw.get() != "null")
    }

    fn typed<T: Deserialize<'a>>(&self, name: &str) -> Result<Option<T>, TokenError> {
        match self.get(name) {
            None => Ok(None),
            Some(raw) => serde_json::from_str(raw.get()).map(Some).map_err(|_| {
                TokenError::Invalid(format!("claim `{name}` has a wrong type").into())
            }),
        }
    }

    fn string(&self, name: &str) -> Result<Option<String>, TokenError> {
        self.typed::<String>(name)
    }

    /// JWT NumericDate: seconds since the epoch, fractions allowed (and truncated).
    fn numeric_date(&self, name: &str) -> Result<Option<i64>, TokenError> {
        match self.typed::<serde_json::Number>(name)? {
            None => Ok(None),
            Some(n) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => Ok(Some(i)),
                // `as` saturates on overflow, which keeps absurd dates absurd.
                (None, Some(f)) if f.is_finite() => Ok(Some(f as i64)),
                _ => Err(invalid("numeric date out of range")),
            },
        }
    }

    /// The user id: `user_id_claim` when configured, else `sub`; absent = anonymous.
    fn user(&self, user_id_claim: Option<&str>) -> Result<String, TokenError> {
        Ok(self.string(user_id_claim.unwrap_or("sub"))?.unwrap_or_default())
    }

    pub(crate) fn standard(&self) -> Result<Standard, TokenError> {
        let aud = match self.get("aud") {
            None => Vec::new(),
            Some(raw) => {
                #[derive(Deserialize)]
                #[serde(untagged)]
                enum Audience {
                    One(String),
                    Many(Vec<String>),
                }
                match serde_json::from_str::<Audience>(raw.get()) {
                    Ok(Audience::One(a)) => vec![a],
                    Ok(Audience::Many(list)) => list,
                    Err(_) => return Err(invalid("claim `aud` has a wrong type")),
                }
            }
        };
        Ok(Standard {
            exp: self.numeric_date("exp")?,
            nbf: self.numeric_date("nbf")?,
            aud,
            iss: self.string("iss")?,
        })
    }

    pub(crate) fn connection(
        &self,
        user_id_claim: Option<&str>,
    ) -> Result<ConnectionClaims, TokenError> {
        // A subscription token must never open a connection.
        if self.string("channel")?.is_some_and(|c| !c.is_empty()) {
            return Err(invalid("connection token must not contain `channel`"));
        }
        let subs = match self.get("subs") {
            None => None,
            Some(raw) => Some(parse_subs(raw)?),
        };
        let channels = if subs.is_some() {
            Vec::new()
        } else {
            self.typed::<Vec<String>>("channels")?.unwrap_or_default()
        };
        // Upstream answers a bad connection `b64info` with an internal error (100),
        // unlike every other bad base64 claim, which makes the token invalid.
        let info = match self.string("b64info")?.filter(|s| !s.is_empty()) {
            Some(b64) => Some(decode_b64(&b64).ok_or(TokenError::BadConnectionInfo)?),
            None => self.raw("info"),
        };
        Ok(ConnectionClaims {
            user: self.user(user_id_claim)?,
            exp: self.numeric_date("exp")?,
            expire_at: self.typed::<i64>("expire_at")?,
            info,
            channels,
            subs,
            meta: self.raw("meta"),
        })
    }

    pub(crate) fn subscription(
        &self,
        user_id_claim: Option<&str>,
    ) -> Result<SubscriptionClaims, TokenError> {
        let channel = self.string("channel")?.unwrap_or_default();
        if channel.is_empty() {
            return Err(invalid("subscription token without `channel`"));
        }
        let overrides = match self.get("override") {
            None => SubscribeOverrides::default(),
            Some(raw) => parse_overrides(raw)?,
        };
        Ok(SubscriptionClaims {
            user: self.user(user_id_claim)?,
            channel,
            client: self.string("client")?.filter(|c| !c.is_empty()),
            exp: self.numeric_date("exp")?,
            expire_at: self.typed::<i64>("expire_at")?,
            info: b64_or_raw(self.string("b64info")?, self.get("info"))?,
            data: b64_or_raw(self.string("b64data")?, self.get("data"))?,
            overrides,
        })
    }

    fn raw(&self, name: &str) -> Option<RawBytes> {
        self.get(name).map(raw_bytes)
    }
}

fn invalid(reason: &'static str) -> TokenError {
    TokenError::Invalid(Cow::Borrowed(reason))
}

/// JSON text without `\n` bytes (see [`RawBytes`]).
fn raw_bytes(raw: &RawValue) -> RawBytes {
    let text = raw.get().as_bytes();
    if text.contains(&b'\n') {
        Bytes::from(text.iter().copied().filter(|&b| b != b'\n').collect::<Vec<u8>>())
    } else {
        Bytes::copy_from_slice(text)
    }
}

/// Standard (padded) base64, as upstream uses for `b64*` claims.
fn decode_b64(s: &str) -> Option<RawBytes> {
    base64::engine::general_purpose::STANDARD.decode(s).ok().map(Bytes::from)
}

fn b64_or_raw(b64: Option<String>, raw: Option<&RawValue>) -> Result<Option<RawBytes>, TokenError> {
    match b64.filter(|s| !s.is_empty()) {
        Some(b64) => decode_b64(&b64).map(Some).ok_or_else(|| invalid("bad base64 in claim")),
        None => Ok(raw.map(raw_bytes)),
    }
}

#[derive(Deserialize)]
struct BoolValue {
    #[serde(default)]
    value: bool,
}

#[derive(Deserialize)]
struct OverrideClaim {
    presence: Option<BoolValue>,
    join_leave: Option<BoolValue>,
    force_push_join_leave: Option<BoolValue>,
    force_positioning: Option<BoolValue>,
    force_recovery: Option<BoolValue>,
}

impl From<OverrideClaim> for SubscribeOverrides {
    fn from(o: OverrideClaim) -> Self {
        SubscribeOverrides {
            presence: o.presence.map(|b| b.value),
            join_leave: o.join_leave.map(|b| b.value),
            force_push_join_leave: o.force_push_join_leave.map(|b| b.value),
            force_positioning: o.force_positioning.map(|b| b.value),
            force_recovery: o.force_recovery.map(|b| b.value),
        }
    }
}

fn parse_overrides(raw: &RawValue) -> Result<SubscribeOverrides, TokenError> {
    serde_json::from_str::<OverrideClaim>(raw.get())
        .map(SubscribeOverrides::from)
        .map_err(|_| invalid("claim `override` has a wrong type"))
}

#[derive(Deserialize)]
struct SubClaim<'a> {
    #[serde(borrow)]
    info: Option<&'a RawValue>,
    b64info: Option<String>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    b64data: Option<String>,
    #[serde(rename = "override")]
    overrides: Option<OverrideClaim>,
}

fn parse_subs(raw: &RawValue) -> Result<Vec<ServerSideSub>, TokenError> {
    let map: BTreeMap<String, SubClaim<'_>> =
        serde_json::from_str(raw.get()).map_err(|_| invalid("claim `subs` has a wrong type"))?;
    map.into_iter()
        .map(|(channel, sub)| {
            // serde maps a JSON `null` to `None`, so `info: null` counts as absent.
            Ok(ServerSideSub {
                channel,
                info: b64_or_raw(sub.b64info, sub.info)?,
                data: b64_or_raw(sub.b64data, sub.data)?,
                overrides: sub.overrides.map(SubscribeOverrides::from).unwrap_or_default(),
            })
        })
        .collect()
}
