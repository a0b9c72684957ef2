//! WebSocket handshake: upgrade requests that are not RFC 6455 or not allowed.

use serde_json::json;

use super::common::*;
use super::{Catalogue, GOOD_ORIGIN};

/// An upgrade request to `path` with `method`: the valid headers, minus `drop`, with `set`
/// replacing or adding headers.
fn upgrade(method: &str, path: &str, set: &[(&str, &str)], drop: &[&str]) -> Vec<u8> {
    let mut headers: Vec<(&str, &str)> = vec![
        ("Host", "127.0.0.1"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    headers.retain(|(k, _)| {
        !drop.iter().chain(set.iter().map(|(n, _)| n)).any(|d| d.eq_ignore_ascii_case(k))
    });
    headers.extend_from_slice(set);
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// Sends an upgrade request and checks the refusal's status and JSON body.
fn refused(cat: &Catalogue, request: &[u8], status: u16, error: &str) -> Response {
    let r = cat.raw_http(request);
    assert_eq!((r.status, r.json()), (status, json!({"error": error})), "{r:?}");
    assert_eq!(r.header("upgrade"), None);
    r
}

const WS: &str = "/connection/websocket";

#[test]
fn bad_websocket_handshakes_are_refused_with_their_status() {
    let mut cat = Catalogue::start();

    cat.case("control: a valid upgrade switches protocols", |cat| {
        let r = cat.raw_http(&upgrade("GET", WS, &[("Origin", GOOD_ORIGIN)], &[]));
        assert_eq!(r.status, 101);
        assert_eq!(r.header("sec-websocket-accept"), Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    });
    cat.case("no Sec-WebSocket-Key", |cat| {
        refused(cat, &upgrade("GET", WS, &[], &["Sec-WebSocket-Key"]), 400, "missing key");
    });
    cat.case("Sec-WebSocket-Key not a 16-byte nonce", |cat| {
        let req = upgrade("GET", WS, &[("Sec-WebSocket-Key", "c2hvcnQ=")], &[]);
        refused(cat, &req, 400, "Sec-WebSocket-Key is not a 16-byte base64 nonce");
    });
    cat.case("Sec-WebSocket-Version 12", |cat| {
        let req = upgrade("GET", WS, &[("Sec-WebSocket-Version", "12")], &[]);
        let r = refused(cat, &req, 400, "unsupported Sec-WebSocket-Version");
        assert_eq!(r.header("sec-websocket-version"), Some("13"));
    });
    cat.case("upgrade with POST", |cat| {
        let r = refused(cat, &upgrade("POST", WS, &[], &[]), 405, "websocket upgrade needs GET");
        assert_eq!(r.header("allow"), Some("GET"));
    });
    cat.case("Upgrade: h2c", |cat| {
        let req = upgrade("GET", WS, &[("Upgrade", "h2c")], &[]);
        refused(cat, &req, 400, "missing Upgrade: websocket");
    });
    cat.case("no Connection: upgrade", |cat| {
        let req = upgrade("GET", WS, &[("Connection", "keep-alive")], &[]);
        refused(cat, &req, 400, "missing Connection: upgrade");
    });
    cat.case("unknown path", |cat| {
        refused(cat, &upgrade("GET", "/connection/websockets", &[], &[]), 404, "not found");
    });
    cat.case("Origin not allowed", |cat| {
        let req = upgrade("GET", WS, &[("Origin", "https://evil.example")], &[]);
        refused(cat, &req, 403, "request origin is not authorized");
    });
}
