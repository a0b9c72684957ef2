//! HTTP/1.1: oversized, ambiguous and malformed requests, and API requests without the key.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::json;

use super::common::*;
use super::Catalogue;

/// Sends `request` and checks the answer's status and JSON body.
fn refused(cat: &Catalogue, request: &[u8], status: u16, error: &str) -> Response {
    let r = cat.raw_http(request);
    assert_eq!((r.status, r.json()), (status, json!({"error": error})), "{r:?}");
    r
}

/// A publish request head with `headers` (Host and the API key are added).
fn publish_head(headers: &str) -> String {
    format!(
        "POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {API_KEY}\r\n{headers}\r\n"
    )
}

#[test]
fn bad_http_requests_are_refused_with_their_status() {
    let mut cat = Catalogue::start();

    cat.case("head over 16 KiB", |cat| {
        let req =
            format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n", "a".repeat(20_000));
        refused(cat, req.as_bytes(), 431, "request header fields too large");
    });
    cat.case("more than 64 headers", |cat| {
        let headers: String = (0..70).map(|i| format!("X-H{i}: v\r\n")).collect();
        let req = format!("GET /health HTTP/1.1\r\nHost: x\r\n{headers}\r\n");
        refused(cat, req.as_bytes(), 431, "request header fields too large");
    });
    cat.case("API body over 8 MiB", |cat| {
        let mut req = publish_head(&format!("Content-Length: {}\r\n", 9 << 20)).into_bytes();
        req.extend_from_slice(&[b' '; 64 * 1024]);
        refused(cat, &req, 413, "payload too large");
    });
    cat.case("Content-Length not a number", |cat| {
        let req = publish_head("Content-Length: 12abc\r\n");
        refused(cat, req.as_bytes(), 400, "bad request: bad Content-Length");
    });
    cat.case("two different Content-Lengths", |cat| {
        let req = publish_head("Content-Length: 2\r\nContent-Length: 3\r\n") + "{}x";
        refused(cat, req.as_bytes(), 400, "bad request: conflicting Content-Length headers");
    });
    cat.case("Content-Length with Transfer-Encoding (smuggling)", |cat| {
        // Whatever framing a front proxy picked, the smuggled GET must never be answered.
        let smuggled = "0\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n";
        let req = publish_head(&format!(
            "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
            smuggled.len()
        )) + smuggled;
        let mut s = TcpStream::connect(("127.0.0.1", cat.server.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).unwrap();
        let answer = String::from_utf8(answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{answer}");
        assert!(answer.contains("\r\nConnection: close\r\n"), "{answer}");
        assert!(answer.contains(&format!("\r\nx-rotor-shard: {}\r\n", cat.shard())), "{answer}");
        assert!(
            answer
                .ends_with(r#"{"error":"bad request: both Content-Length and Transfer-Encoding"}"#),
            "one answer only: {answer}"
        );
    });
    cat.case("head not finished within runtime.http_head_timeout", |cat| {
        let mut s = TcpStream::connect(("127.0.0.1", cat.server.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").unwrap();
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).unwrap();
        let answer = String::from_utf8(answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{answer}");
        assert!(answer.ends_with(r#"{"error":"request timeout"}"#), "{answer}");
    });
    cat.case("chunked body with a bad chunk size", |cat| {
        let req = publish_head("Transfer-Encoding: chunked\r\n") + "zz\r\n{}\r\n0\r\n\r\n";
        refused(cat, req.as_bytes(), 400, "bad request: bad chunk size");
    });
    cat.case("Transfer-Encoding gzip", |cat| {
        let req = publish_head("Transfer-Encoding: gzip\r\n");
        refused(cat, req.as_bytes(), 501, "transfer coding not implemented");
    });
    cat.case("HTTP/1.1 without Host", |cat| {
        refused(cat, b"GET /health HTTP/1.1\r\n\r\n", 400, "bad request: missing Host header");
    });
    cat.case("garbage request line", |cat| {
        refused(cat, b"HELLO\x01WORLD\r\n\r\n", 400, "bad request: malformed request head");
    });
    cat.case("GET on an API method", |cat| {
        let r = refused(
            cat,
            b"GET /api/publish HTTP/1.1\r\nHost: x\r\n\r\n",
            405,
            "method not allowed",
        );
        assert_eq!(r.header("allow"), Some("POST"));
    });
    cat.case("API request without a key", |cat| {
        let body = json!({"channel": "chat:a", "data": {}}).to_string();
        let r = cat.server.http().post("/api/publish", &[], &body);
        cat.same_shard(&r);
        assert_eq!((r.status, r.body.as_slice()), (401, &b""[..]), "{r:?}");
    });
    cat.case("API request with a wrong key", |cat| {
        let body = json!({"channel": "chat:a", "data": {}}).to_string();
        let r = cat.server.http().post("/api/publish", &[("X-API-Key", "guess")], &body);
        cat.same_shard(&r);
        assert_eq!((r.status, r.body.as_slice()), (401, &b""[..]), "{r:?}");
    });
}
