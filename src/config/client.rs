//! Connection-level sections: `client.*` with its token keys (`client.token`,
//! `client.subscription_token`), the personal channel and the unidirectional disconnect
//! mapping.
//!
//! Owns: these key names and their defaults. Must not: validate values (that is
//! `validate.rs`), or import from `mod.rs`, which re-exports these types.

use std::time::Duration;

use serde::de::MapAccess;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::codec::{self, DisablableDuration, GoDuration, Plain, Section, SectionVisitor};
use super::proxy::ClientProxies;
use super::section::{section, side_by_side};

section! {
    /// `client.*`.
    pub struct Client {
        /// Glob patterns (gobwas syntax) matched against the lower-cased Origin header.
        allowed_origins: Vec<String> [Plain] = Vec::new(),
        /// Connection token verification (also subscription tokens unless
        /// `subscription_token.enabled`).
        token: Token [Plain] = Token::default(),
        /// Separate subscription token verification.
        subscription_token: SubscriptionToken [Plain] = SubscriptionToken::default(),
        /// Connect without a token as anonymous user.
        allow_anonymous_connect_without_token: bool [Plain] = false,
        /// Reject tokens with an empty user.
        disallow_anonymous_connection_tokens: bool [Plain] = false,
        /// Server ping period; ZERO = disabled (config -1).
        ping_interval: Duration [DisablableDuration] = Duration::from_secs(25),
        /// Wait for pong after a ping; ZERO = disabled (config -1).
        pong_timeout: Duration [DisablableDuration] = Duration::from_secs(8),
        /// Grace period after connection token expiry.
        expired_close_delay: Duration [GoDuration] = Duration::from_secs(25),
        /// Grace period after subscription token expiry.
        expired_sub_close_delay: Duration [GoDuration] = Duration::from_secs(25),
        /// Close connections that did not send connect within this time.
        stale_close_delay: Duration [GoDuration] = Duration::from_secs(10),
        /// Max channels per connection.
        channel_limit: usize [Plain] = 128,
        /// Max bytes queued for one connection before disconnecting it as slow.
        queue_max_size: usize [Plain] = 1_048_576,
        /// Presence refresh period.
        presence_update_interval: Duration [GoDuration] = Duration::from_secs(27),
        /// Commands processed concurrently per connection; 0 = sequential.
        concurrency: usize [Plain] = 0,
        /// Include server time in connect reply.
        connect_include_server_time: bool [Plain] = false,
        /// Max publications a client may request from history.
        history_max_publication_limit: usize [Plain] = 300,
        /// Max publications recovered on subscribe.
        recovery_max_publication_limit: usize [Plain] = 300,
        /// Parse tokens without verifying signatures (testing only).
        insecure_skip_token_signature_verify: bool [Plain] = false,
        /// Take the user id from this HTTP header (authenticating proxy setups).
        user_id_http_header: String [Plain] = String::new(),
        /// Insecure client mode: no auth, all permissions (testing only).
        insecure: bool [Plain] = false,
        /// Max connections per user; 0 = unlimited.
        user_connection_limit: usize [Plain] = 0,
        /// Max connections per node; 0 = unlimited.
        connection_limit: usize [Plain] = 0,
        /// New client connections a node accepts per second (HTTP 503 beyond); 0 = unlimited.
        connection_rate_limit: usize [Plain] = 0,
        /// How often each shard checks its channels' positions against their streams (and
        /// sweeps expired history); spec §6.3.
        channel_position_check_delay: Duration [GoDuration] = Duration::from_secs(40),
        /// Subscribe every connection to its user's personal channel.
        subscribe_to_user_personal_channel: PersonalChannel [Plain] = PersonalChannel::default(),
        /// Connect error codes → disconnects of unidirectional transports (spec §1.6).
        connect_code_to_unidirectional_disconnect: UniDisconnects [Plain] =
            UniDisconnects::default(),
        /// Connect and refresh proxies (spec §9).
        proxy: ClientProxies [Plain] = ClientProxies::default(),
    }
}

section! {
    /// `client.connect_code_to_unidirectional_disconnect`.
    pub struct UniDisconnects {
        /// Use `transforms` before the built-in mapping.
        enabled: bool [Plain] = false,
        /// Error code → disconnect.
        transforms: Vec<UniDisconnectTransform> [Plain] = Vec::new(),
    }
}

/// One `connect_code_to_unidirectional_disconnect.transforms[]` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UniDisconnectTransform {
    /// Connect error code.
    pub code: u32,
    /// The disconnect sent instead.
    pub to: UniDisconnectTo,
}

/// Target of a [`UniDisconnectTransform`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UniDisconnectTo {
    /// Disconnect code.
    pub code: u16,
    /// Disconnect reason.
    #[serde(default)]
    pub reason: String,
}

section! {
    /// `client.subscribe_to_user_personal_channel` (spec §5.5).
    pub struct PersonalChannel {
        /// Subscribe each authenticated connection to `#<user>` server-side.
        enabled: bool [Plain] = false,
        /// Namespace of the channel (`<ns>:#<user>`); empty = no namespace.
        personal_channel_namespace: String [Plain] = String::new(),
        /// A new connection of the user disconnects the older ones (3504).
        single_connection: bool [Plain] = false,
    }
}

section! {
    /// Token verification keys (`client.token.*`, `client.subscription_token.*`).
    pub struct Token {
        /// HS256/384/512 secret (raw bytes of the string).
        hmac_secret_key: String [Plain] = String::new(),
        /// Previous HMAC secret tried on failure (key rotation).
        hmac_previous_secret_key: String [Plain] = String::new(),
        /// Unix seconds until which the previous key is accepted; 0 = no limit.
        hmac_previous_secret_key_valid_until: i64 [Plain] = 0,
        /// RSA public key PEM.
        rsa_public_key: String [Plain] = String::new(),
        /// ECDSA public key PEM.
        ecdsa_public_key: String [Plain] = String::new(),
        /// JWKS URL (http/https); replaces the static keys when set. `{{name}}` takes the
        /// named group `name` of `issuer_regex`/`audience_regex`.
        jwks_public_endpoint: String [Plain] = String::new(),
        /// Required `aud`.
        audience: String [Plain] = String::new(),
        /// Regex some `aud` element must match (not together with `audience`).
        audience_regex: String [Plain] = String::new(),
        /// Required `iss`.
        issuer: String [Plain] = String::new(),
        /// Regex `iss` must match (not together with `issuer`).
        issuer_regex: String [Plain] = String::new(),
        /// Claim holding the user id instead of `sub`.
        user_id_claim: String [Plain] = String::new(),
        /// Accept `issuer_regex`/`audience_regex` groups that are not explicit lists of
        /// values in `jwks_public_endpoint` placeholders (INSECURE: a forged token then
        /// chooses where keys are fetched from; upstream's temporary escape hatch).
        insecure_skip_jwks_endpoint_safety_check: bool [Plain] = false,
    }
}

/// `client.subscription_token.*`: `enabled` plus the [`Token`] keys side by side.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SubscriptionToken {
    /// Use these keys (not `client.token`) for subscription tokens.
    pub enabled: bool,
    /// The keys.
    pub token: Token,
}

side_by_side!(SubscriptionToken { enabled: "enabled", token });
