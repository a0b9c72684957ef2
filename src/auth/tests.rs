//! Behaviour tests for `auth`: what a client sending a given token observes.

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;

use super::test_keys::{EC_PRIVATE_PEM, EC_PUBLIC_PEM, RSA_PRIVATE_PEM, RSA_PUBLIC_PEM};
use super::*;

const SECRET: &str = "secret";
const NOW: i64 = 1_700_000_000;

fn hmac_token_cfg(secret: &str) -> config::Token {
    config::Token { hmac_secret_key: secret.into(), ..Default::default() }
}

fn verifier() -> TokenVerifier {
    TokenVerifier::new(&hmac_token_cfg(SECRET), false).unwrap()
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Signs the exact header and payload text given (no re-serialisation), so tests
/// control every byte the verifier sees.
fn sign_raw(alg: Algorithm, key: &EncodingKey, header: &str, payload: &str) -> String {
    let message = format!("{}.{}", b64url(header.as_bytes()), b64url(payload.as_bytes()));
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).unwrap();
    format!("{message}.{signature}")
}

fn hs(alg: Algorithm, secret: &str, claims: &serde_json::Value) -> String {
    let header = jsonwebtoken::Header::new(alg);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

fn hs256_raw(payload: &str) -> String {
    sign_raw(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        r#"{"alg":"HS256","typ":"JWT"}"#,
        payload,
    )
}

#[allow(clippy::needless_pass_by_value, reason = "asserts take what the call returned")]
fn assert_invalid<T: std::fmt::Debug>(r: Result<T, TokenError>) {
    assert!(matches!(r, Err(TokenError::Invalid(_))), "expected Invalid, got {r:?}");
}

#[test]
fn hmac_tokens_of_every_size_verify() {
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let jwt = hs(alg, SECRET, &json!({"sub": "42", "exp": NOW + 60}));
        let claims = verifier().verify_connection(&jwt, NOW).unwrap();
        assert_eq!(claims.user, "42", "{alg:?}");
        assert_eq!(claims.exp, Some(NOW + 60));
    }
}

#[test]
fn token_signed_with_another_secret_is_invalid() {
    let jwt = hs(Algorithm::HS256, "other", &json!({"sub": "42"}));
    assert_invalid(verifier().verify_connection(&jwt, NOW));
}

#[test]
fn tampered_payload_is_invalid() {
    let jwt = hs(Algorithm::HS256, SECRET, &json!({"sub": "42"}));
    let mut parts: Vec<&str> = jwt.split('.').collect();
    let forged = b64url(br#"{"sub":"admin"}"#);
    parts[1] = &forged;
    assert_invalid(verifier().verify_connection(&parts.join("."), NOW));
}

#[test]
fn alg_none_is_never_accepted_even_without_signature_checks() {
    let payload = b64url(br#"{"sub":"42"}"#);
    for header in [r#"{"alg":"none"}"#, r#"{"alg":"none","typ":"JWT"}"#, r#"{"alg":"None"}"#] {
        let jwt = format!("{}.{payload}.", b64url(header.as_bytes()));
        assert_invalid(verifier().verify_connection(&jwt, NOW));
        let lax = TokenVerifier::new(&hmac_token_cfg(SECRET), true).unwrap();
        assert_invalid(lax.verify_connection(&jwt, NOW));
    }
    // The canonical literal form seen in attacks.
    let jwt = format!("eyJhbGciOiJub25lIn0.{payload}.");
    assert_invalid(verifier().verify_connection(&jwt, NOW));
}

#[test]
fn rsa_token_is_invalid_when_only_hmac_is_configured() {
    let key = EncodingKey::from_rsa_pem(RSA_PRIVATE_PEM.as_bytes()).unwrap();
    let jwt = sign_raw(Algorithm::RS256, &key, r#"{"alg":"RS256"}"#, r#"{"sub":"42"}"#);
    assert_invalid(verifier().verify_connection(&jwt, NOW));
    // A hand-made RS256 header with a garbage signature, too.
    let garbage = format!("{}.{}.AAAA", b64url(br#"{"alg":"RS256"}"#), b64url(br#"{"sub":"1"}"#));
    assert_invalid(verifier().verify_connection(&garbage, NOW));
}

#[test]
fn ecdsa_token_is_invalid_when_only_hmac_is_configured() {
    let key = EncodingKey::from_ec_pem(EC_PRIVATE_PEM.as_bytes()).unwrap();
    let jwt = sign_raw(Algorithm::ES256, &key, r#"{"alg":"ES256"}"#, r#"{"sub":"42"}"#);
    assert_invalid(verifier().verify_connection(&jwt, NOW));
}

#[test]
fn rsa_and_ecdsa_keys_enable_their_algorithms() {
    let cfg = config::Token {
        rsa_public_key: RSA_PUBLIC_PEM.into(),
        ecdsa_public_key: EC_PUBLIC_PEM.into(),
        ..Default::default()
    };
    let v = TokenVerifier::new(&cfg, false).unwrap();
    let rsa = EncodingKey::from_rsa_pem(RSA_PRIVATE_PEM.as_bytes()).unwrap();
    for alg in [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512] {
        let header = format!(r#"{{"alg":"{alg:?}"}}"#);
        let jwt = sign_raw(alg, &rsa, &header, r#"{"sub":"r"}"#);
        assert_eq!(v.verify_connection(&jwt, NOW).unwrap().user, "r", "{alg:?}");
    }
    let ec = EncodingKey::from_ec_pem(EC_PRIVATE_PEM.as_bytes()).unwrap();
    let jwt = sign_raw(Algorithm::ES256, &ec, r#"{"alg":"ES256"}"#, r#"{"sub":"e"}"#);
    assert_eq!(v.verify_connection(&jwt, NOW).unwrap().user, "e");
    // No HMAC key configured: HS tokens are refused.
    assert_invalid(v.verify_connection(&hs(Algorithm::HS256, SECRET, &json!({})), NOW));
}

#[test]
fn hmac_token_keyed_with_the_rsa_public_key_is_refused() {
    // Classic algorithm confusion: HS256 "signed" with the public PEM text.
    let cfg = config::Token { rsa_public_key: RSA_PUBLIC_PEM.into(), ..Default::default() };
    let v = TokenVerifier::new(&cfg, false).unwrap();
    let jwt = hs(Algorithm::HS256, RSA_PUBLIC_PEM, &json!({"sub": "42"}));
    assert_invalid(v.verify_connection(&jwt, NOW));
}

#[test]
fn bad_pem_is_a_config_error_naming_the_key() {
    let cfg = config::Token { rsa_public_key: "not a pem".into(), ..Default::default() };
    let err = TokenVerifier::new(&cfg, false).unwrap_err();
    assert!(
        matches!(&err, AuthConfigError::Invalid { key, .. } if key == "client.token.rsa_public_key")
    );
    let cfg = config::Token { ecdsa_public_key: RSA_PUBLIC_PEM.into(), ..Default::default() };
    let err = TokenVerifier::new(&cfg, false).unwrap_err();
    assert!(
        matches!(&err, AuthConfigError::Invalid { key, .. } if key == "client.token.ecdsa_public_key")
    );
}

#[test]
fn expired_exp_is_expired_and_future_exp_is_fine() {
    let v = verifier();
    let past = hs(Algorithm::HS256, SECRET, &json!({"sub": "1", "exp": NOW - 1}));
    assert_eq!(v.verify_connection(&past, NOW), Err(TokenError::Expired));
    let exactly_now = hs(Algorithm::HS256, SECRET, &json!({"sub": "1", "exp": NOW}));
    assert_eq!(v.verify_connection(&exactly_now, NOW), Err(TokenError::Expired));
    let future = hs(Algorithm::HS256, SECRET, &json!({"sub": "1", "exp": NOW + 1}));
    assert!(v.verify_connection(&future, NOW).is_ok());
    let float = hs(Algorithm::HS256, SECRET, &json!({"sub": "1", "exp": NOW as f64 + 10.5}));
    assert_eq!(v.verify_connection(&float, NOW).unwrap().exp, Some(NOW + 10));
}

#[test]
fn future_nbf_is_expired() {
    let v = verifier();
    let early = hs(Algorithm::HS256, SECRET, &json!({"sub": "1", "nbf": NOW + 5}));
    assert_eq!(v.verify_connection(&early, NOW), Err(TokenError::Expired));
    let sub = hs(Algorithm::HS256, SECRET, &json!({"sub": "1", "channel": "c", "nbf": NOW + 5}));
    assert_eq!(v.verify_subscription(&sub, NOW), Err(TokenError::Expired));
    let ok = hs(Algorithm::HS256, SECRET, &json!({"sub": "1", "nbf": NOW}));
    assert!(v.verify_connection(&ok, NOW).is_ok());
}

#[test]
fn token_without_exp_never_expires() {
    let jwt = hs(Algorithm::HS256, SECRET, &json!({"sub": "1"}));
    let claims = verifier().verify_connection(&jwt, NOW).unwrap();
    assert_eq!(claims.exp, None);
    assert_eq!(connection_expiry(&claims, NOW), Expiry::Never);
}

#[test]
fn signature_is_checked_before_expiry() {
    let jwt = hs(Algorithm::HS256, "other", &json!({"sub": "1", "exp": NOW - 10}));
    assert_invalid(verifier().verify_connection(&jwt, NOW));
}

#[test]
fn channel_claim_makes_a_connection_token_invalid() {
    let jwt = hs(Algorithm::HS256, SECRET, &json!({"sub": "1", "channel": "news"}));
    assert_invalid(verifier().verify_connection(&jwt, NOW));
    // ...but the same token is a fine subscription token.
    assert_eq!(verifier().verify_subscription(&jwt, NOW).unwrap().channel, "news");
}

#[test]
fn empty_sub_is_anonymous() {
    let jwt = hs(Algorithm::HS256, SECRET, &json!({"exp": NOW + 10}));
    assert_eq!(verifier().verify_connection(&jwt, NOW).unwrap().user, "");
}

#[test]
fn user_id_claim_replaces_sub() {
    let cfg = config::Token { user_id_claim: "user_id".into(), ..hmac_token_cfg(SECRET) };
    let v = TokenVerifier::new(&cfg, false).unwrap();
    let jwt = hs(Algorithm::HS256, SECRET, &json!({"sub": "ignored", "user_id": "42"}));
    assert_eq!(v.verify_connection(&jwt, NOW).unwrap().user, "42");
    let sub =
        hs(Algorithm::HS256, SECRET, &json!({"sub": "ignored", "user_id": "7", "channel": "c"}));
    assert_eq!(v.verify_subscription(&sub, NOW).unwrap().user, "7");
    let missing = hs(Algorithm::HS256, SECRET, &json!({"sub": "ignored"}));
    assert_eq!(v.verify_connection(&missing, NOW).unwrap().user, "");
    let bad = config::Token { user_id_claim: "user-id".into(), ..hmac_token_cfg(SECRET) };
    assert!(matches!(
        TokenVerifier::new(&bad, false),
        Err(AuthConfigError::Invalid { key, .. }) if key == "client.token.user_id_claim"
    ));
}

#[test]
fn previous_hmac_key_is_accepted_only_inside_its_window() {
    let cfg = config::Token {
        hmac_secret_key: "new".into(),
        hmac_previous_secret_key: "old".into(),
        hmac_previous_secret_key_valid_until: NOW + 100,
        ..Default::default()
    };
    let v = TokenVerifier::new(&cfg, false).unwrap();
    let old = hs(Algorithm::HS384, "old", &json!({"sub": "1"}));
    let new = hs(Algorithm::HS384, "new", &json!({"sub": "1"}));
    assert!(v.verify_connection(&old, NOW).is_ok());
    assert!(v.verify_connection(&new, NOW).is_ok());
    assert_invalid(v.verify_connection(&old, NOW + 100));
    assert!(v.verify_connection(&new, NOW + 100).is_ok());
    // valid_until 0 = no limit.
    let forever = config::Token { hmac_previous_secret_key_valid_until: 0, ..cfg };
    let v = TokenVerifier::new(&forever, false).unwrap();
    assert!(v.verify_connection(&old, i64::MAX).is_ok());
    assert_invalid(v.verify_connection(&hs(Algorithm::HS256, "third", &json!({})), NOW));
}

#[test]
fn info_and_meta_pass_through_byte_exact_without_newlines() {
    let payload = "{\"sub\":\"1\",\"info\":{\"b\": 1,  \"a\":[1,2.50,\"\\u00e9\\n\"]},\n\"meta\" : {\n\"k\":\"v\"}}";
    let claims = verifier().verify_connection(&hs256_raw(payload), NOW).unwrap();
    assert_eq!(claims.info.as_deref(), Some(&b"{\"b\": 1,  \"a\":[1,2.50,\"\\u00e9\\n\"]}"[..]));
    assert_eq!(claims.meta.as_deref(), Some(&b"{\"k\":\"v\"}"[..]));
    // Scalars are JSON too.
    let claims = verifier().verify_connection(&hs256_raw(r#"{"info":"text"}"#), NOW).unwrap();
    assert_eq!(claims.info.as_deref(), Some(&b"\"text\""[..]));
    let claims = verifier().verify_connection(&hs256_raw(r#"{"info":null}"#), NOW).unwrap();
    assert_eq!(claims.info, None);
}

#[test]
fn b64info_wins_over_info() {
    let jwt =
        hs(Algorithm::HS256, SECRET, &json!({"sub": "1", "info": {"x": 1}, "b64info": "AAEC/w=="}));
    let claims = verifier().verify_connection(&jwt, NOW).unwrap();
    assert_eq!(claims.info.as_deref(), Some(&[0u8, 1, 2, 255][..]));
    let bad = hs(Algorithm::HS256, SECRET, &json!({"sub": "1", "b64info": "%%%"}));
    assert_eq!(verifier().verify_connection(&bad, NOW), Err(TokenError::BadConnectionInfo));
}

#[test]
fn subs_replace_channels_and_carry_options() {
    let jwt = hs256_raw(
        r#"{"sub":"1","channels":["ignored"],"subs":{
            "b":{"info":{"i":1},"b64data":"AQI=","override":{"presence":{"value":true},"join_leave":{"value":false},"force_recovery":{}}},
            "a":{}}}"#,
    );
    let claims = verifier().verify_connection(&jwt, NOW).unwrap();
    assert!(claims.channels.is_empty());
    let subs = claims.subs.unwrap();
    assert_eq!(subs.len(), 2);
    assert_eq!(subs[0], ServerSideSub { channel: "a".into(), ..Default::default() });
    assert_eq!(subs[1].channel, "b");
    assert_eq!(subs[1].info.as_deref(), Some(&b"{\"i\":1}"[..]));
    assert_eq!(subs[1].data.as_deref(), Some(&[1u8, 2][..]));
    assert_eq!(
        subs[1].overrides,
        SubscribeOverrides {
            presence: Some(true),
            join_leave: Some(false),
            force_recovery: Some(false),
            ..Default::default()
        }
    );
    let plain = hs(Algorithm::HS256, SECRET, &json!({"channels": ["x", "y"]}));
    assert_eq!(verifier().verify_connection(&plain, NOW).unwrap().channels, ["x", "y"]);
    let bad = hs(Algorithm::HS256, SECRET, &json!({"subs": {"x": {"b64info": "!"}}}));
    assert_invalid(verifier().verify_connection(&bad, NOW));
}

#[test]
fn subscription_claims_are_decoded() {
    let jwt = hs256_raw(
        r#"{"sub":"u","channel":"$room","client":"c1","exp":1700000100,"expire_at":0,
            "info":{"n":1},"data":[1, 2],"b64info":"","override":{"force_positioning":{"value":true}}}"#,
    );
    let c = verifier().verify_subscription(&jwt, NOW).unwrap();
    assert_eq!(c.user, "u");
    assert_eq!(c.channel, "$room");
    assert_eq!(c.client.as_deref(), Some("c1"));
    assert_eq!(c.exp, Some(1_700_000_100));
    assert_eq!(c.expire_at, Some(0));
    assert_eq!(c.info.as_deref(), Some(&b"{\"n\":1}"[..]));
    assert_eq!(c.data.as_deref(), Some(&b"[1, 2]"[..]));
    assert_eq!(c.overrides.force_positioning, Some(true));
    assert_eq!(subscription_expiry(&c, NOW), Expiry::Never);

    let b64 = hs(Algorithm::HS256, SECRET, &json!({"channel": "c", "data": 1, "b64data": "AQ=="}));
    assert_eq!(
        verifier().verify_subscription(&b64, NOW).unwrap().data.as_deref(),
        Some(&[1u8][..])
    );
    let bad = hs(Algorithm::HS256, SECRET, &json!({"channel": "c", "b64data": "@@"}));
    assert_invalid(verifier().verify_subscription(&bad, NOW));
}

#[test]
fn subscription_token_without_channel_is_invalid() {
    for claims in [json!({"sub": "u"}), json!({"sub": "u", "channel": ""})] {
        let jwt = hs(Algorithm::HS256, SECRET, &claims);
        assert_invalid(verifier().verify_subscription(&jwt, NOW));
    }
}

#[test]
fn audience_and_issuer_are_checked_only_when_configured() {
    let tok = |c: serde_json::Value| hs(Algorithm::HS256, SECRET, &c);
    // Not configured: anything goes.
    assert!(verifier().verify_connection(&tok(json!({"aud": "x", "iss": "y"})), NOW).is_ok());

    let cfg =
        config::Token { audience: "rotor".into(), issuer: "me".into(), ..hmac_token_cfg(SECRET) };
    let v = TokenVerifier::new(&cfg, false).unwrap();
    assert!(v.verify_connection(&tok(json!({"aud": "rotor", "iss": "me"})), NOW).is_ok());
    assert!(v.verify_connection(&tok(json!({"aud": ["a", "rotor"], "iss": "me"})), NOW).is_ok());
    assert_invalid(v.verify_connection(&tok(json!({"aud": "other", "iss": "me"})), NOW));
    assert_invalid(v.verify_connection(&tok(json!({"iss": "me"})), NOW));
    assert_invalid(v.verify_connection(&tok(json!({"aud": "rotor", "iss": "you"})), NOW));
    assert_invalid(v.verify_connection(&tok(json!({"aud": "rotor"})), NOW));
    assert_invalid(v.verify_connection(&tok(json!({"aud": 5, "iss": "me"})), NOW));
    // Expiry is reported before audience, as upstream does.
    let both = tok(json!({"aud": "other", "exp": NOW - 1}));
    assert_eq!(v.verify_connection(&both, NOW), Err(TokenError::Expired));
}

#[test]
fn audience_and_issuer_regexes_match_like_re2() {
    let tok = |c: serde_json::Value| hs(Algorithm::HS256, SECRET, &c);
    let cfg = config::Token {
        audience_regex: "^rotor-(dev|prod)$".into(),
        issuer_regex: r"^https://idp\.example/(?P<tenant>[a-z]+)$".into(),
        ..hmac_token_cfg(SECRET)
    };
    let v = TokenVerifier::new(&cfg, false).unwrap();
    let iss = "https://idp.example/acme";
    assert!(v.verify_connection(&tok(json!({"aud": "rotor-dev", "iss": iss})), NOW).is_ok());
    // Any element of an `aud` array may match.
    let many = tok(json!({"aud": ["web", "rotor-prod"], "iss": iss}));
    assert!(v.verify_connection(&many, NOW).is_ok());
    for bad in [
        json!({"aud": "rotor-test", "iss": iss}),
        json!({"aud": ["web", "api"], "iss": iss}),
        json!({"iss": iss}),
        json!({"aud": "rotor-dev", "iss": "https://idp.example/ACME"}),
        json!({"aud": "rotor-dev", "iss": "https://evil.example/acme"}),
        json!({"aud": "rotor-dev"}),
    ] {
        assert_invalid(v.verify_connection(&tok(bad.clone()), NOW));
        let mut sub = bad;
        sub["channel"] = json!("c");
        assert_invalid(v.verify_subscription(&tok(sub), NOW));
    }
    // Without anchors a regex matches anywhere in the value, as Go's MatchString.
    let cfg = config::Token { issuer_regex: "idp".into(), ..hmac_token_cfg(SECRET) };
    let v = TokenVerifier::new(&cfg, false).unwrap();
    assert!(v.verify_connection(&tok(json!({"iss": "my-idp-1"})), NOW).is_ok());
}

#[test]
fn bad_or_conflicting_claim_regexes_are_config_errors_naming_the_key() {
    let key_of = |cfg: config::Token| match TokenVerifier::new(&cfg, false) {
        Err(AuthConfigError::Invalid { key, .. }) => key,
        other => panic!("expected a config error, got {other:?}"),
    };
    let base = hmac_token_cfg(SECRET);
    let cfg = config::Token { audience_regex: "(".into(), ..base.clone() };
    assert_eq!(key_of(cfg), "client.token.audience_regex");
    let cfg = config::Token { issuer_regex: "[z-a]".into(), ..base.clone() };
    assert_eq!(key_of(cfg), "client.token.issuer_regex");
    let cfg = config::Token { audience: "a".into(), audience_regex: "a".into(), ..base.clone() };
    assert_eq!(key_of(cfg), "client.token.audience_regex");
    let cfg = config::Token { issuer: "i".into(), issuer_regex: "i".into(), ..base };
    let client = config::Client {
        subscription_token: config::SubscriptionToken { enabled: true, token: cfg },
        ..Default::default()
    };
    assert!(matches!(
        TokenVerifier::for_subscriptions(&client),
        Err(AuthConfigError::Invalid { key, .. }) if key == "client.subscription_token.issuer_regex"
    ));
}

#[test]
fn malformed_tokens_are_invalid() {
    let good = hs(Algorithm::HS256, SECRET, &json!({"sub": "1"}));
    let v = verifier();
    for jwt in [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        &format!("{good}.x"),
        &format!("{good}="),
        "!!!.e30.sig",
        &format!("{}.e30.sig", b64url(b"[1]")),
    ] {
        assert_invalid(v.verify_connection(jwt, NOW));
    }
    // Payloads that verify but are not claim objects or have wrong claim types.
    for payload in
        [r"[1]", r#"{"sub":5}"#, r#"{"exp":"soon"}"#, r#"{"channels":"a"}"#, r#"{"expire_at":1.5}"#]
    {
        assert_invalid(v.verify_connection(&hs256_raw(payload), NOW));
    }
}

#[test]
fn skipping_signature_checks_still_checks_claims() {
    let lax = TokenVerifier::new(&config::Token::default(), true).unwrap();
    let jwt = hs(Algorithm::HS512, "whatever", &json!({"sub": "9"}));
    assert_eq!(lax.verify_connection(&jwt, NOW).unwrap().user, "9");
    let expired = hs(Algorithm::HS512, "whatever", &json!({"sub": "9", "exp": NOW - 1}));
    assert_eq!(lax.verify_connection(&expired, NOW), Err(TokenError::Expired));
}

#[test]
fn subscription_verifier_uses_its_own_keys_when_enabled() {
    let mut client = config::Client { token: hmac_token_cfg("conn"), ..Default::default() };
    let sub_tok = hs(Algorithm::HS256, "subs", &json!({"channel": "c"}));
    let conn_tok = hs(Algorithm::HS256, "conn", &json!({"channel": "c"}));
    let shared = TokenVerifier::for_subscriptions(&client).unwrap();
    assert!(shared.verify_subscription(&conn_tok, NOW).is_ok());
    client.subscription_token =
        config::SubscriptionToken { enabled: true, token: hmac_token_cfg("subs") };
    let own = TokenVerifier::for_subscriptions(&client).unwrap();
    assert!(own.verify_subscription(&sub_tok, NOW).is_ok());
    assert_invalid(own.verify_subscription(&conn_tok, NOW));
    assert!(TokenVerifier::for_connections(&client)
        .unwrap()
        .verify_connection(&hs(Algorithm::HS256, "conn", &json!({})), NOW)
        .is_ok());
}

#[test]
fn expiry_follows_expire_at_then_exp_and_is_clamped() {
    let c = |exp, expire_at| ConnectionClaims { exp, expire_at, ..Default::default() };
    assert_eq!(connection_expiry(&c(None, None), NOW), Expiry::Never);
    assert_eq!(connection_expiry(&c(Some(NOW + 60), None), NOW), Expiry::At(NOW + 60));
    assert_eq!(connection_expiry(&c(Some(NOW + 60), Some(NOW + 5)), NOW), Expiry::At(NOW + 5));
    assert_eq!(connection_expiry(&c(Some(NOW + 60), Some(0)), NOW), Expiry::Never);
    assert_eq!(connection_expiry(&c(None, Some(-3)), NOW), Expiry::Never);
    assert_eq!(connection_expiry(&c(Some(NOW + 60), Some(NOW - 1)), NOW), Expiry::AlreadyExpired);
    assert_eq!(connection_expiry(&c(None, Some(NOW)), NOW), Expiry::AlreadyExpired);
    assert_eq!(
        connection_expiry(&c(Some(NOW + 2 * MAX_TTL_SECS), None), NOW),
        Expiry::At(NOW + MAX_TTL_SECS)
    );
    assert_eq!(connection_expiry(&c(Some(i64::MAX), None), i64::MAX - 1), Expiry::At(i64::MAX));
    assert_eq!(Expiry::At(NOW + 30).ttl(NOW), Some(30));
    assert_eq!(Expiry::Never.ttl(NOW), None);
}

#[test]
fn encode_hs256_round_trips() {
    let jwt = encode_hs256(SECRET, &json!({"sub": "cli", "exp": NOW + 604_800})).unwrap();
    let claims = verifier().verify_connection(&jwt, NOW).unwrap();
    assert_eq!((claims.user.as_str(), claims.exp), ("cli", Some(NOW + 604_800)));
    let header = jwt.split('.').next().unwrap();
    assert!(String::from_utf8(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).unwrap()
    )
    .unwrap()
    .contains("HS256"));
}

#[test]
fn insecure_connection_verifier_ignores_expiry_but_keeps_claims() {
    let mut client = config::Client::default();
    client.token.hmac_secret_key = "secret".into();
    client.insecure = true;
    let v = TokenVerifier::for_connections(&client).unwrap();
    let t = encode_hs256("secret", &serde_json::json!({"sub": "42", "exp": 10, "channels": ["a"]}))
        .unwrap();
    let claims = v.verify_connection(&t, 1_000).unwrap();
    assert_eq!((claims.user.as_str(), claims.channels.len()), ("42", 1));
    client.insecure = false;
    let strict = TokenVerifier::for_connections(&client).unwrap();
    assert!(matches!(strict.verify_connection(&t, 1_000), Err(TokenError::Expired)));
}
