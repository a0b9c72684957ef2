//! Server API: bodies that are not JSON, unknown methods and requests the methods refuse.

use serde_json::{json, Value};

use super::common::*;
use super::Catalogue;

/// POSTs `body` to `/api/<method>` with the key; the status and JSON body.
fn call(cat: &Catalogue, method: &str, body: &str) -> (u16, Value) {
    let r = cat.server.http().post(&format!("/api/{method}"), &[("X-API-Key", API_KEY)], body);
    cat.same_shard(&r);
    (r.status, r.json())
}

/// `{"error":{"code":C,"message":M}}` as the API writes it.
fn api_error(code: u32, message: &str) -> Value {
    json!({"error": {"code": code, "message": message}})
}

#[test]
fn bad_api_requests_are_refused_with_their_codes() {
    let mut cat = Catalogue::start();

    cat.case("body not JSON", |cat| {
        assert_eq!(
            call(cat, "publish", r#"{"channel": "chat:a", "data": tru"#),
            (400, json!({"error": "bad request"}))
        );
    });
    cat.case("unknown method path", |cat| {
        assert_eq!(call(cat, "frobnicate", "{}"), (404, json!({"error": "unknown method"})));
    });
    cat.case("publish without channel", |cat| {
        assert_eq!(
            call(cat, "publish", r#"{"data": {"x": 1}}"#),
            (200, api_error(107, "bad request"))
        );
    });
    cat.case("publish to an unknown namespace", |cat| {
        let body = json!({"channel": "nowhere:a", "data": {}}).to_string();
        assert_eq!(call(cat, "publish", &body), (200, api_error(102, "unknown channel")));
    });
    cat.case("publish with bad b64data", |cat| {
        let body = json!({"channel": "chat:a", "b64data": "***not base64***"}).to_string();
        assert_eq!(call(cat, "publish", &body), (200, api_error(107, "bad request")));
    });
    cat.case("publish without data", |cat| {
        let body = json!({"channel": "chat:a"}).to_string();
        assert_eq!(call(cat, "publish", &body), (200, api_error(107, "bad request")));
    });
    cat.case("history where history is off", |cat| {
        let body = json!({"channel": "chat:a", "limit": 10}).to_string();
        assert_eq!(call(cat, "history", &body), (200, api_error(108, "not available")));
    });
    cat.case("presence where presence is off", |cat| {
        let body = json!({"channel": "chat:a"}).to_string();
        assert_eq!(call(cat, "presence", &body), (200, api_error(108, "not available")));
    });
    cat.case("broadcast with no channels", |cat| {
        let body = json!({"channels": [], "data": {}}).to_string();
        assert_eq!(call(cat, "broadcast", &body), (200, api_error(107, "bad request")));
    });
    cat.case("batch with an unknown and a null command", |cat| {
        let body = json!({"commands": [
            {"publish": {"channel": "chat:batch", "data": {"ok": true}}},
            {"frobnicate": {"channel": "chat:batch"}},
            null,
        ]})
        .to_string();
        let replies = json!({"replies": [
            {"publish": {}},
            {"error": {"code": 104, "message": "not found"}},
            {"error": {"code": 107, "message": "bad request"}},
        ]});
        assert_eq!(call(cat, "batch", &body), (200, replies));
    });
    cat.case("transport error mode", |cat| {
        let r = cat.server.http().post(
            "/api/publish",
            &[("X-API-Key", API_KEY), ("X-Centrifugo-Error-Mode", "transport")],
            r#"{"data": {}}"#,
        );
        cat.same_shard(&r);
        assert_eq!((r.status, r.json()), (400, json!({"code": 107, "message": "bad request"})));
    });
    cat.case("legacy /api with an empty body", |cat| {
        let r = cat.server.http().post("/api", &[("X-API-Key", API_KEY)], "");
        cat.same_shard(&r);
        assert_eq!((r.status, r.json()), (400, json!({"error": "empty body"})));
    });
}
