//! JWT verification for connection and subscription tokens (spec §4).
//!
//! Owns: which algorithms are enabled by which configured key, signature checks
//! (with HMAC key rotation, or keys from a JWKS endpoint via `jwks`), `exp`/`nbf`/
//! `aud`/`iss` checks against a caller-supplied clock, and the expiry arithmetic
//! callers apply to verified claims.
//! Must not: touch sockets or config loading, read the wall clock (every claim check
//! takes `now_unix` so it is testable and shard-local; only the JWKS cache age uses the
//! monotonic clock), block the calling thread (JWKS fetches run on their own thread and
//! are awaited by the caller through [`TokenVerifier::fetch_keys`]), resolve channels
//! (the caller maps claim channels through `crate::channel`), or decide protocol
//! replies beyond the documented mapping of [`TokenError`] to codes.
//!
//! Signatures are checked with `jsonwebtoken`'s crypto layer; header and claim
//! decoding are done here so that `info`/`meta`/`data` reach clients byte-exact and so
//! that time checks use our clock with no leeway, as upstream does.

mod claims;
mod jwks;
mod jwks_fetch;
#[cfg(test)]
mod test_keys;

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use regex::Regex;
use serde::Deserialize;

use crate::config;

pub use claims::{
    ConnectionClaims, RawBytes, ServerSideSub, SubscribeOverrides, SubscriptionClaims, TokenError,
};
pub use jwks::KeysFetch;

/// Longest connection or subscription lifetime we honour; later expiries are clamped.
pub const MAX_TTL_SECS: i64 = 365 * 24 * 60 * 60;

/// A token configuration we cannot run with. Names the offending config key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthConfigError {
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
}

/// Failure to produce a token with [`encode_hs256`].
#[derive(Debug, thiserror::Error)]
#[error("cannot encode token: {0}")]
pub struct EncodeError(#[from] jsonwebtoken::errors::Error);

/// When a verified connection or subscription must be re-validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// No expiry: no `exp`, or `expire_at` ≤ 0.
    Never,
    /// Unix seconds, in the future, at most [`MAX_TTL_SECS`] from now.
    At(i64),
    /// The computed expiry is not in the future → error 110.
    AlreadyExpired,
}

impl Expiry {
    /// Seconds left (`ConnectResult.ttl` / `SubscribeResult.ttl`), if it expires.
    pub fn ttl(self, now_unix: i64) -> Option<i64> {
        match self {
            Expiry::At(at) => Some(at - now_unix),
            Expiry::Never | Expiry::AlreadyExpired => None,
        }
    }
}

/// Expiry of a connection per spec §4.2/§4.4: `expire_at` wins over `exp`
/// (`expire_at` ≤ 0 = never expires, `exp` still having been checked).
pub fn connection_expiry(claims: &ConnectionClaims, now_unix: i64) -> Expiry {
    expiry(claims.exp, claims.expire_at, now_unix)
}

/// Expiry of a token subscription; same rules as [`connection_expiry`].
pub fn subscription_expiry(claims: &SubscriptionClaims, now_unix: i64) -> Expiry {
    expiry(claims.exp, claims.expire_at, now_unix)
}

fn expiry(exp: Option<i64>, expire_at: Option<i64>, now_unix: i64) -> Expiry {
    let at = match (expire_at, exp) {
        (Some(at), _) if at <= 0 => return Expiry::Never,
        (Some(at), _) | (None, Some(at)) => at,
        (None, None) => return Expiry::Never,
    };
    if at <= now_unix {
        Expiry::AlreadyExpired
    } else {
        Expiry::At(at.min(now_unix.saturating_add(MAX_TTL_SECS)))
    }
}

/// Signs `claims` with HS256; for tests and the `gentoken`-style CLI helpers.
pub fn encode_hs256(secret: &str, claims: &serde_json::Value) -> Result<String, EncodeError> {
    let header = jsonwebtoken::Header::new(Algorithm::HS256);
    Ok(jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret.as_bytes()))?)
}

/// Previous HMAC key accepted during a rotation window.
#[derive(Clone, Debug)]
struct PreviousHmac {
    key: DecodingKey,
    /// Unix seconds; 0 = no limit.
    valid_until: i64,
}

/// Requirement on `aud` or `iss`: the exact `audience`/`issuer` value or a match of
/// `audience_regex`/`issuer_regex` (RE2 semantics: unanchored unless the pattern is).
#[derive(Clone, Debug)]
enum ClaimRule {
    Exact(String),
    Pattern(Regex),
}

impl ClaimRule {
    /// Errors name the regex key under `section`, the config path of both keys.
    fn new(
        section: &str,
        (exact_key, exact): (&str, &str),
        (pattern_key, pattern): (&str, &str),
    ) -> Result<Option<Self>, AuthConfigError> {
        let invalid = |reason: String| AuthConfigError::Invalid {
            key: format!("{section}.{pattern_key}"),
            reason,
        };
        match (exact.is_empty(), pattern.is_empty()) {
            (true, true) => Ok(None),
            (false, true) => Ok(Some(ClaimRule::Exact(exact.to_owned()))),
            (true, false) => Regex::new(pattern)
                .map(|re| Some(ClaimRule::Pattern(re)))
                .map_err(|e| invalid(format!("not a valid regular expression: {e}"))),
            (false, false) => {
                Err(invalid(format!("cannot be combined with {section}.{exact_key}")))
            }
        }
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            ClaimRule::Exact(exact) => value == exact,
            ClaimRule::Pattern(re) => re.is_match(value),
        }
    }
}

/// Verifies tokens for one token configuration. Build once and share (`Arc`) between
/// shards: apart from the JWKS key cache, which all clones share, it is immutable.
#[derive(Clone, Debug)]
pub struct TokenVerifier {
    /// Set with `jwks_public_endpoint`; then the static keys below are all `None`.
    jwks: Option<Arc<jwks::Jwks>>,
    hmac: Option<DecodingKey>,
    hmac_previous: Option<PreviousHmac>,
    rsa: Option<DecodingKey>,
    ecdsa: Option<DecodingKey>,
    audience: Option<ClaimRule>,
    issuer: Option<ClaimRule>,
    user_id_claim: Option<String>,
    skip_signature_verify: bool,
    /// `client.insecure`: token expiry is ignored for connection tokens (spec §4.6).
    ignore_expiry: bool,
}

impl TokenVerifier {
    /// Verifier for `client.token` (config keys in errors are named under it).
    pub fn new(
        token: &config::Token,
        skip_signature_verify: bool,
    ) -> Result<Self, AuthConfigError> {
        Self::with_section(token, skip_signature_verify, "client.token")
    }

    /// Verifier for connection tokens from the `client` section.
    pub fn for_connections(client: &config::Client) -> Result<Self, AuthConfigError> {
        let mut v = Self::new(&client.token, client.insecure_skip_token_signature_verify)?;
        v.ignore_expiry = client.insecure;
        Ok(v)
    }

    /// Verifier for subscription tokens: `client.subscription_token` when enabled,
    /// otherwise the connection token keys verify both kinds (spec §4.1).
    pub fn for_subscriptions(client: &config::Client) -> Result<Self, AuthConfigError> {
        let skip = client.insecure_skip_token_signature_verify;
        if client.subscription_token.enabled {
            Self::with_section(&client.subscription_token.token, skip, "client.subscription_token")
        } else {
            Self::new(&client.token, skip)
        }
    }

    /// `section` is the config path of `token`, used only to name keys in errors.
    pub fn with_section(
        token: &config::Token,
        skip_signature_verify: bool,
        section: &str,
    ) -> Result<Self, AuthConfigError> {
        let key = |name: &str| format!("{section}.{name}");
        let audience = ClaimRule::new(
            section,
            ("audience", &token.audience),
            ("audience_regex", &token.audience_regex),
        )?;
        let issuer = ClaimRule::new(
            section,
            ("issuer", &token.issuer),
            ("issuer_regex", &token.issuer_regex),
        )?;
        if !token.user_id_claim.is_empty()
            && !token.user_id_claim.bytes().all(|b| b.is_ascii_alphabetic() || b == b'_')
        {
            return Err(AuthConfigError::Invalid {
                key: key("user_id_claim"),
                reason: "must match ^[a-zA-Z_]+$".into(),
            });
        }
        let pem =
            |name: &str,
             value: &str,
             parse: fn(&[u8]) -> jsonwebtoken::errors::Result<DecodingKey>| {
                if value.is_empty() {
                    return Ok(None);
                }
                parse(value.as_bytes()).map(Some).map_err(|e| AuthConfigError::Invalid {
                    key: key(name),
                    reason: format!("not a usable PEM public key: {e}"),
                })
            };
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        if !token.jwks_public_endpoint.is_empty() {
            let jwks =
                jwks_source(&token.jwks_public_endpoint, &audience, &issuer).map_err(|reason| {
                    AuthConfigError::Invalid { key: key("jwks_public_endpoint"), reason }
                })?;
            return Ok(TokenVerifier {
                jwks: Some(Arc::new(jwks)),
                hmac: None,
                hmac_previous: None,
                rsa: None,
                ecdsa: None,
                audience,
                issuer,
                user_id_claim: non_empty(&token.user_id_claim),
                skip_signature_verify,
                ignore_expiry: false,
            });
        }
        Ok(TokenVerifier {
            jwks: None,
            hmac: non_empty(&token.hmac_secret_key).map(|s| DecodingKey::from_secret(s.as_bytes())),
            hmac_previous: non_empty(&token.hmac_previous_secret_key).map(|s| PreviousHmac {
                key: DecodingKey::from_secret(s.as_bytes()),
                valid_until: token.hmac_previous_secret_key_valid_until,
            }),
            rsa: pem("rsa_public_key", &token.rsa_public_key, DecodingKey::from_rsa_pem)?,
            ecdsa: pem("ecdsa_public_key", &token.ecdsa_public_key, DecodingKey::from_ec_pem)?,
            audience,
            issuer,
            user_id_claim: non_empty(&token.user_id_claim),
            skip_signature_verify,
            ignore_expiry: false,
        })
    }

    /// Verifies a connection token at time `now_unix`.
    pub fn verify_connection(
        &self,
        jwt: &str,
        now_unix: i64,
    ) -> Result<ConnectionClaims, TokenError> {
        let payload = self.verified_payload(jwt, now_unix)?;
        let map = claims::ClaimMap::parse(&payload)?;
        let claims = map.connection(self.user_id_claim.as_deref())?;
        self.check_standard(&map, now_unix)?;
        Ok(claims)
    }

    /// Verifies a subscription token at time `now_unix`. The caller still compares
    /// `user`, `channel` and `client` with the subscribing connection.
    pub fn verify_subscription(
        &self,
        jwt: &str,
        now_unix: i64,
    ) -> Result<SubscriptionClaims, TokenError> {
        let payload = self.verified_payload(jwt, now_unix)?;
        let map = claims::ClaimMap::parse(&payload)?;
        let claims = map.subscription(self.user_id_claim.as_deref())?;
        self.check_standard(&map, now_unix)?;
        Ok(claims)
    }

    /// Time first, then audience and issuer: a token that is both expired and
    /// mis-addressed reports expiry, as upstream does.
    fn check_standard(&self, map: &claims::ClaimMap<'_>, now_unix: i64) -> Result<(), TokenError> {
        let std = map.standard()?;
        let expired =
            std.exp.is_some_and(|exp| exp <= now_unix) || std.nbf.is_some_and(|nbf| nbf > now_unix);
        if expired && !self.ignore_expiry {
            return Err(TokenError::Expired);
        }
        if let Some(rule) = &self.audience {
            if !std.aud.iter().any(|a| rule.matches(a)) {
                return Err(TokenError::Invalid("audience mismatch".into()));
            }
        }
        if let Some(rule) = &self.issuer {
            if !std.iss.as_deref().is_some_and(|iss| rule.matches(iss)) {
                return Err(TokenError::Invalid("issuer mismatch".into()));
            }
        }
        Ok(())
    }

    /// Splits the token, checks its header and signature, and returns the decoded
    /// claims text.
    fn verified_payload(&self, jwt: &str, now_unix: i64) -> Result<String, TokenError> {
        let token = Parts::split(jwt)?;
        let payload = token.payload()?;
        if self.skip_signature_verify {
            return Ok(payload);
        }
        let Some(jwks) = &self.jwks else {
            self.check_signature(token.header.alg, token.message, token.signature, now_unix)?;
            return Ok(payload);
        };
        let kid =
            token.header.kid.as_deref().ok_or(TokenError::Invalid("no `kid` in header".into()))?;
        let url = self.jwks_url(jwks, &payload)?;
        match jwks.lookup(&url, kid) {
            jwks::Lookup::Found(key)
                if key.verifies(token.header.alg, token.message, token.signature) =>
            {
                Ok(payload)
            }
            jwks::Lookup::Found(_) => Err(TokenError::Invalid("bad signature".into())),
            jwks::Lookup::Pending => Err(TokenError::KeysPending),
            jwks::Lookup::Unavailable => Err(TokenError::Invalid("unknown key id".into())),
        }
    }

    /// After [`TokenError::KeysPending`]: starts fetching the key set `jwt` needs, or
    /// joins a fetch already running for it. The future resolves when that fetch has
    /// finished, successfully or not; it never fails and needs no particular executor
    /// (the fetch runs on a background thread). Then call `verify_*` once more and
    /// treat a second `KeysPending` as an invalid token: never loop.
    ///
    /// `None` means there is nothing to wait for (not JWKS mode, a malformed token, or
    /// the cache already has its answer, e.g. the endpoint was just fetched): verify
    /// once more right away.
    pub fn fetch_keys(&self, jwt: &str) -> Option<KeysFetch> {
        let jwks = self.jwks.as_ref().filter(|_| !self.skip_signature_verify)?;
        let token = Parts::split(jwt).ok()?;
        let kid = token.header.kid.as_deref()?;
        let url = self.jwks_url(jwks, &token.payload().ok()?).ok()?;
        jwks.fetch(&url, kid)
    }

    /// The endpoint for this token. Placeholders take named groups of `issuer_regex`
    /// (matched against `iss`) and of `audience_regex` (the first matching `aud`
    /// element); the claims are not verified yet, which is why `jwks` encodes them.
    fn jwks_url(&self, jwks: &jwks::Jwks, payload: &str) -> Result<String, TokenError> {
        let template = jwks.template();
        let unfilled = || TokenError::Invalid("claims do not fill the JWKS endpoint".into());
        if !template.has_vars() {
            return template.render(|_| None).ok_or_else(unfilled);
        }
        let map = claims::ClaimMap::parse(payload)?;
        let std = map.standard()?;
        let mut vars = HashMap::new();
        if let (Some(ClaimRule::Pattern(re)), Some(iss)) = (&self.issuer, &std.iss) {
            collect_groups(re, std::slice::from_ref(iss), &mut vars);
        }
        if let Some(ClaimRule::Pattern(re)) = &self.audience {
            collect_groups(re, &std.aud, &mut vars);
        }
        template.render(|name| vars.get(name).cloned()).ok_or_else(unfilled)
    }

    fn check_signature(
        &self,
        alg: Algorithm,
        message: &str,
        signature: &str,
        now_unix: i64,
    ) -> Result<(), TokenError> {
        let key = match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => self.hmac.as_ref(),
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => self.rsa.as_ref(),
            Algorithm::ES256 | Algorithm::ES384 => self.ecdsa.as_ref(),
            _ => None,
        };
        let previous = self
            .hmac_previous
            .as_ref()
            .filter(|p| p.valid_until == 0 || now_unix < p.valid_until)
            .filter(|_| matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512));
        if key.is_none() && previous.is_none() {
            return Err(TokenError::Invalid("algorithm not enabled".into()));
        }
        let verifies = |key: &DecodingKey| {
            // `Err` covers undecodable signatures and key/algorithm mismatches
            // (e.g. a P-256 key with an ES384 token): all mean "not signed by us".
            jsonwebtoken::crypto::verify(signature, message.as_bytes(), key, alg).unwrap_or(false)
        };
        if key.is_some_and(verifies) || previous.is_some_and(|p| verifies(&p.key)) {
            Ok(())
        } else {
            Err(TokenError::Invalid("bad signature".into()))
        }
    }
}

/// Named groups of the first of `values` that `re` matches, by group name.
fn collect_groups(re: &Regex, values: &[String], vars: &mut HashMap<String, String>) {
    let Some(caps) = values.iter().find_map(|v| re.captures(v)) else { return };
    for name in re.capture_names().flatten() {
        if let Some(m) = caps.name(name) {
            vars.insert(name.to_owned(), m.as_str().to_owned());
        }
    }
}

/// Every placeholder must be a named group of `issuer_regex` or `audience_regex`,
/// or no token could ever fill it.
fn jwks_source(
    endpoint: &str,
    audience: &Option<ClaimRule>,
    issuer: &Option<ClaimRule>,
) -> Result<jwks::Jwks, String> {
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        return Err("must be an http:// or https:// URL".into());
    }
    let template = jwks::Template::parse(endpoint);
    let groups = |rule: &Option<ClaimRule>| match rule {
        Some(ClaimRule::Pattern(re)) => re.capture_names().flatten().map(str::to_owned).collect(),
        _ => Vec::new(),
    };
    let known = [groups(audience), groups(issuer)].concat();
    if let Some(var) = template.vars().find(|v| !known.iter().any(|k| k == v)) {
        return Err(format!(
            "placeholder {{{{{var}}}}} is not a named group of issuer_regex or audience_regex"
        ));
    }
    Ok(jwks::Jwks::new(template, jwks::Timings::SPEC, jwks_fetch::Limits::SPEC))
}

/// A token split into its three segments, with the header decoded.
struct Parts<'a> {
    header: Header,
    payload_b64: &'a str,
    /// `header.payload`: what the signature covers.
    message: &'a str,
    signature: &'a str,
}

impl<'a> Parts<'a> {
    fn split(jwt: &'a str) -> Result<Self, TokenError> {
        let mut parts = jwt.split('.');
        let (Some(header), Some(payload_b64), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Invalid("not three dot-separated parts".into()));
        };
        Ok(Parts {
            header: parse_header(header)?,
            payload_b64,
            message: &jwt[..header.len() + 1 + payload_b64.len()],
            signature,
        })
    }

    fn payload(&self) -> Result<String, TokenError> {
        let bytes = b64url(self.payload_b64)
            .ok_or(TokenError::Invalid("payload is not base64url".into()))?;
        String::from_utf8(bytes).map_err(|_| TokenError::Invalid("payload is not UTF-8".into()))
    }
}

struct Header {
    alg: Algorithm,
    kid: Option<String>,
}

/// The algorithms a key type can enable; anything else (`none`, PS*, ES512, unknown
/// names) is refused before any key is consulted. EdDSA needs a JWKS Ed25519 key.
fn parse_header(header_b64: &str) -> Result<Header, TokenError> {
    #[derive(Deserialize)]
    struct RawHeader {
        alg: String,
        kid: Option<String>,
    }
    let bytes = b64url(header_b64).ok_or(TokenError::Invalid("header is not base64url".into()))?;
    let header: RawHeader = serde_json::from_slice(&bytes)
        .map_err(|_| TokenError::Invalid("header is not a JSON object with `alg`".into()))?;
    let alg = match header.alg.as_str() {
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return Err(TokenError::Invalid("unsupported algorithm".into())),
    };
    Ok(Header { alg, kid: header.kid })
}

/// JWT segments are unpadded base64url (RFC 7515).
fn b64url(segment: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(segment).ok()
}

#[cfg(test)]
impl TokenVerifier {
    /// Same verifier with its own, empty JWKS cache using `timings`.
    fn with_jwks_timings(mut self, timings: jwks::Timings) -> Self {
        if let Some(source) = &self.jwks {
            let template = source.template().clone();
            let limits = jwks_fetch::Limits::SPEC;
            self.jwks = Some(Arc::new(jwks::Jwks::new(template, timings, limits)));
        }
        self
    }
}

#[cfg(test)]
mod jwks_tests;
#[cfg(test)]
mod tests;
