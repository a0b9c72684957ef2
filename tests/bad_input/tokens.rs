//! Tokens: forged, confused, expired and misdirected connection and subscription tokens.

use serde_json::{json, Value};

use super::common::*;
use super::{error_reply, forge, Catalogue, AUD, ISS};

/// Valid claims for `user`, merged with `extra`.
fn claims(user: &str, extra: Value) -> Value {
    let mut c = json!({"sub": user, "exp": now() + 3600, "aud": AUD, "iss": ISS});
    merge(&mut c, extra);
    c
}

fn hs256() -> Value {
    json!({"alg": "HS256", "typ": "JWT"})
}

/// Connects an attacker with `token` and expects the close `(code, reason)`.
fn connect_closes(cat: &Catalogue, token: &str, code: u16, reason: &str) {
    let mut c = cat.attacker();
    c.command(json!({"connect": {"token": token}}));
    assert_eq!(c.expect_close(), (code, reason.to_string()), "token {token}");
}

/// Connects an attacker with `token` and expects the connect error `code`.
fn connect_fails(cat: &Catalogue, token: &str, code: u32, message: &str) {
    let mut c = cat.attacker();
    assert_eq!(c.handshake(token), error_reply(1, code, message), "token {token}");
}

/// A subscription token.
fn sub_token(user: &str, channel: &str, extra: Value) -> String {
    let mut c = claims(user, json!({"channel": channel}));
    merge(&mut c, extra);
    token_with(c)
}

/// A connected attacker subscribing to `channel` with `token`: the reply.
fn subscribe_with(cat: &Catalogue, channel: &str, token: &str) -> (Client, Value) {
    let mut c = cat.connected_attacker();
    let id = c.command(json!({"subscribe": {"channel": channel, "token": token}}));
    assert_eq!(id, 2);
    let reply = event_value(c.next_event());
    (c, reply)
}

/// An event as JSON: the message, or `{"closed":[code, reason]}`.
fn event_value(e: Event) -> Value {
    match e {
        Event::Json(v) => v,
        Event::Closed(code, reason) => json!({"closed": [code, reason]}),
    }
}

#[test]
fn bad_tokens_are_refused_with_their_codes() {
    let mut cat = Catalogue::start();

    cat.case("alg none", |cat| {
        let none = forge(json!({"alg": "none", "typ": "JWT"}), claims("mallory", json!({})), None);
        connect_closes(cat, &none, 3500, "invalid token");
    });
    cat.case("HS256 signed with another secret", |cat| {
        let wrong = forge(hs256(), claims("mallory", json!({})), Some("not-the-secret"));
        connect_closes(cat, &wrong, 3500, "invalid token");
    });
    cat.case("RS256 header with an HMAC signature (alg confusion)", |cat| {
        let header = json!({"alg": "RS256", "typ": "JWT"});
        let confused = forge(header, claims("mallory", json!({})), Some(SECRET));
        connect_closes(cat, &confused, 3500, "invalid token");
    });
    cat.case("token that is not base64", |cat| {
        connect_closes(cat, "e30.!!!not*base64!!!.e30", 3500, "invalid token");
    });
    cat.case("wrong audience", |cat| {
        let t = token_with(claims("mallory", json!({"aud": "someone-else"})));
        connect_closes(cat, &t, 3500, "invalid token");
    });
    cat.case("wrong issuer", |cat| {
        let t = token_with(claims("mallory", json!({"iss": "evil-issuer"})));
        connect_closes(cat, &t, 3500, "invalid token");
    });
    cat.case("channel claim in a connection token", |cat| {
        let t = token_with(claims("mallory", json!({"channel": "chat:a"})));
        connect_closes(cat, &t, 3500, "invalid token");
    });
    cat.case("no token, anonymous connections not allowed", |cat| {
        let mut c = cat.attacker();
        c.command(json!({"connect": {}}));
        assert_eq!(c.expect_close(), (3501, "bad request".to_string()));
    });
    cat.case("expired token", |cat| {
        let t = token_with(claims("mallory", json!({"exp": now() - 60})));
        connect_fails(cat, &t, 109, "token expired");
    });
    cat.case("nbf in the future", |cat| {
        let t = token_with(claims("mallory", json!({"nbf": now() + 600})));
        connect_fails(cat, &t, 109, "token expired");
    });
    cat.case("expire_at in the past", |cat| {
        let t = token_with(claims("mallory", json!({"expire_at": now() - 60})));
        connect_fails(cat, &t, 110, "expired");
    });
    cat.case("refresh with a forged token", |cat| {
        let mut c = cat.connected_attacker();
        let forged = forge(hs256(), claims("attacker", json!({})), Some("not-the-secret"));
        c.command(json!({"refresh": {"token": forged}}));
        assert_eq!(c.expect_close(), (3500, "invalid token".to_string()));
    });

    cat.case("subscription token signed with another secret", |cat| {
        let claims = claims("attacker", json!({"channel": "$secret"}));
        let wrong = forge(hs256(), claims, Some("not-the-secret"));
        let (_c, reply) = subscribe_with(cat, "$secret", &wrong);
        assert_eq!(reply, error_reply(2, 103, "permission denied"));
    });
    cat.case("expired subscription token", |cat| {
        let t = sub_token("attacker", "$secret", json!({"exp": now() - 60}));
        let (_c, reply) = subscribe_with(cat, "$secret", &t);
        assert_eq!(reply, error_reply(2, 109, "token expired"));
    });
    cat.case("subscription token for channel A used on channel B", |cat| {
        let t = sub_token("attacker", "$public", json!({}));
        let (_c, reply) = subscribe_with(cat, "$secret", &t);
        assert_eq!(reply, json!({"closed": [3500, "invalid token"]}));
    });
    cat.case("subscription token of another user", |cat| {
        let t = sub_token("victim", "$secret", json!({}));
        let (_c, reply) = subscribe_with(cat, "$secret", &t);
        assert_eq!(reply, json!({"closed": [3500, "invalid token"]}));
    });
    cat.case("control: a good subscription token works", |cat| {
        let t = sub_token("attacker", "$secret", json!({}));
        let (_c, reply) = subscribe_with(cat, "$secret", &t);
        assert_eq!(reply["id"], 2, "{reply}");
        assert!(reply["subscribe"].is_object(), "{reply}");
    });
}
