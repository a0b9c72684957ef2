//! End to end: connection and subscription tokens verified with keys fetched from a JWKS
//! endpoint (a tiny HTTP server in this test on 127.0.0.1), including a key the server has not
//! fetched yet when the client connects.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::needless_pass_by_value,
    reason = "test harness code: a failure must panic loudly, and helpers take what tests build"
)]

mod common;

#[allow(dead_code, reason = "the key set is shared with the unit tests, which use all of it")]
#[path = "../src/auth/test_keys.rs"]
mod test_keys;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// Serves `body` to every request until the test process ends; counts requests.
fn serve_jwks(body: String) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    std::thread::spawn(move || {
        // Bounded: a test run never needs more than a handful of fetches.
        for stream in listener.incoming().take(64) {
            let Ok(mut s) = stream else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            counter.fetch_add(1, Ordering::SeqCst);
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                body.len(),
                body
            );
            let _ = s.write_all(reply.as_bytes());
        }
    });
    (port, hits)
}

fn rs256(kid: &str, claims: Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    let key = EncodingKey::from_rsa_pem(test_keys::RSA_PRIVATE_PEM.as_bytes()).unwrap();
    encode(&header, &claims, &key).unwrap()
}

#[test]
fn tokens_verify_with_keys_fetched_from_the_jwks_endpoint() {
    let jwks = json!({"keys": [{
        "kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256",
        "n": test_keys::RSA_JWK_N, "e": test_keys::RSA_JWK_E
    }]});
    let (port, hits) = serve_jwks(jwks.to_string());
    let mut cfg = base_config();
    cfg["client"]["token"] =
        json!({"jwks_public_endpoint": format!("http://127.0.0.1:{port}/keys")});
    cfg["channel"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "secret", "history_size": 0}));
    let server = Server::start(cfg);
    // The first connect finds no key cached: the server fetches the key set, then verifies.
    let mut c = server.ws();
    let reply = c.handshake(&rs256("k1", json!({"sub": "ivy", "exp": now() + 600})));
    assert!(reply["connect"]["client"].is_string(), "{reply}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // A subscription token signed by the same key (the namespace allows nothing else).
    let sub_token = rs256("k1", json!({"sub": "ivy", "channel": "secret:x", "exp": now() + 600}));
    let id = c.command(json!({"subscribe": {"channel": "secret:x", "token": sub_token}}));
    let r = c.next_json();
    assert_eq!(r["id"], id);
    assert_eq!(r["subscribe"]["expires"], true, "{r}");
    // A second client: the cached key is used, no new fetch.
    let mut d = server.ws();
    d.handshake(&rs256("k1", json!({"sub": "jay"})));
    assert_eq!(hits.load(Ordering::SeqCst), 1, "the key set is cached");
    // An unknown kid: one fetch, then the token is invalid (3500), no endless retry.
    let mut e = server.ws();
    e.command(json!({"connect": {"token": rs256("other", json!({"sub": "kim"}))}}));
    assert_eq!(e.expect_close(), (3500, "invalid token".to_owned()));
    assert!(hits.load(Ordering::SeqCst) <= 2);
}

#[test]
fn a_jwks_template_fed_by_a_free_form_regex_group_refuses_to_start() {
    // The CVE-2026-32301 setup: a forged token's `iss` would choose the port keys come from.
    let token = json!({
        "jwks_public_endpoint": "http://127.0.0.1:{{port}}/jwks",
        "issuer_regex": "^(?P<port>[0-9]+)$"
    });
    let mut cfg = base_config();
    merge(&mut cfg, json!({"client": {"token": token}}));
    let out = run_refused(&cfg);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("client.token.issuer_regex"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"));
    // A list of ports is explicit, but a value that is part of the address (not a whole host
    // label, path segment or query value) is refused too, naming the endpoint.
    let port_list = json!({
        "jwks_public_endpoint": "http://127.0.0.1:{{port}}/jwks",
        "issuer_regex": "^(?P<port>8080|8081)$"
    });
    let mut cfg = base_config();
    merge(&mut cfg, json!({"client": {"token": port_list}}));
    let out = run_refused(&cfg);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("client.token.jwks_public_endpoint"), "{stderr}");
    // An explicit list of tenants is accepted.
    let safe = json!({
        "jwks_public_endpoint": "http://127.0.0.1:1/{{tenant}}/jwks",
        "issuer_regex": "^(?P<tenant>acme|globex)$"
    });
    let mut cfg = base_config();
    merge(&mut cfg, json!({"client": {"token": safe}}));
    let server = Server::start(cfg);
    assert!(server.port > 0);
}
