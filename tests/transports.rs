//! End to end over the transports that are not bidirectional WebSocket: http_stream and SSE
//! emulation with `/emulation` (JSON and Protobuf), unidirectional SSE, HTTP-stream and
//! WebSocket, CORS and `/connection/init`, driven with plain HTTP/1.1 on raw sockets.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::needless_pass_by_value,
    reason = "test harness code: a failure must panic loudly, and helpers take what tests build"
)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::api_publish as publish;
use common::*;
use prost::Message as _;
use rotor::protocol::pb;
use serde_json::{json, Value};
use tungstenite::Message;

fn config() -> Value {
    let mut c = base_config();
    merge(
        &mut c,
        json!({
            "client": {"allowed_origins": ["http://app.example"]},
            "http_stream": {"enabled": true},
            "sse": {"enabled": true},
            "uni_sse": {"enabled": true},
            "uni_http_stream": {"enabled": true},
            "uni_websocket": {"enabled": true},
            "init": {"enabled": true}
        }),
    );
    c
}

/// A streaming HTTP response read from a raw socket: the head, then the chunked body.
struct Stream {
    sock: TcpStream,
    status: u16,
    head: String,
    raw: Vec<u8>,
    body: Vec<u8>,
    ended: bool,
}

impl Stream {
    fn open(port: u16, request: &[u8]) -> Stream {
        let mut sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        sock.write_all(request).unwrap();
        let mut s = Stream {
            sock,
            status: 0,
            head: String::new(),
            raw: Vec::new(),
            body: Vec::new(),
            ended: false,
        };
        let end = loop {
            if let Some(p) = s.raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            assert!(s.fill(), "closed before the response head");
        };
        s.head = String::from_utf8(s.raw[..end].to_vec()).unwrap();
        s.raw.drain(..end);
        s.status = s.head.split(' ').nth(1).unwrap().parse().unwrap();
        s
    }

    fn post(port: u16, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Stream {
        let mut req =
            format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n", body.len());
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        Stream::open(port, &bytes)
    }

    fn get(port: u16, path: &str) -> Stream {
        Stream::open(port, format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.split("\r\n").find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match self.sock.read(&mut chunk) {
            Ok(n) if n > 0 => {
                self.raw.extend_from_slice(&chunk[..n]);
                true
            }
            _ => false,
        }
    }

    /// Decodes whole chunks from `raw` into `body`; false once the stream ended or broke.
    fn more(&mut self) -> bool {
        loop {
            if let Some(p) = self.raw.windows(2).position(|w| w == b"\r\n") {
                let size = usize::from_str_radix(std::str::from_utf8(&self.raw[..p]).unwrap(), 16)
                    .expect("chunk size");
                if size == 0 {
                    self.ended = true;
                    return false;
                }
                if self.raw.len() >= p + 2 + size + 2 {
                    self.body.extend_from_slice(&self.raw[p + 2..p + 2 + size]);
                    assert_eq!(&self.raw[p + 2 + size..p + 4 + size], b"\r\n");
                    self.raw.drain(..p + 4 + size);
                    return true;
                }
            }
            if !self.fill() {
                return false;
            }
        }
    }

    /// Next message cut at `sep`, or None when the stream ends.
    fn next_message(&mut self, prefix: &[u8], sep: &[u8]) -> Option<Vec<u8>> {
        loop {
            if let Some(p) = self.body.windows(sep.len()).position(|w| w == sep) {
                let msg = self.body[..p].to_vec();
                self.body.drain(..p + sep.len());
                let msg = msg.strip_prefix(prefix).unwrap_or_else(|| panic!("{msg:?}")).to_vec();
                return Some(msg);
            }
            if !self.more() {
                return None;
            }
        }
    }

    /// Next JSON line of an http_stream (pings `{}` skipped).
    fn line(&mut self) -> Option<Value> {
        self.json(b"", b"\n")
    }

    /// Next SSE event's JSON (pings skipped).
    fn event(&mut self) -> Option<Value> {
        self.json(b"data: ", b"\n\n")
    }

    fn json(&mut self, prefix: &[u8], sep: &[u8]) -> Option<Value> {
        loop {
            let msg = self.next_message(prefix, sep)?;
            let v: Value = serde_json::from_slice(&msg).expect("json message");
            if v != json!({}) {
                return Some(v);
            }
        }
    }

    /// Next delimited Protobuf reply.
    fn reply(&mut self) -> Option<pb::Reply> {
        loop {
            let mut rest = &self.body[..];
            if let Ok(r) = pb::Reply::decode_length_delimited(&mut rest) {
                let used = self.body.len() - rest.len();
                self.body.drain(..used);
                if r != pb::Reply::default() {
                    return Some(r);
                }
                continue;
            }
            if !self.more() {
                return None;
            }
        }
    }
}

/// Percent-encodes every byte (a valid query value whatever it holds).
fn url_encode(text: &str) -> String {
    text.bytes().map(|b| format!("%{b:02X}")).collect()
}

fn emulate(server: &Server, node: &str, session: &str, commands: &[Value]) -> u16 {
    let data: Vec<String> = commands.iter().map(Value::to_string).collect();
    let body = json!({"node": node, "session": session, "data": data.join("\n")});
    server.http().post("/emulation", &[], &body.to_string()).status
}

#[test]
fn http_stream_emulation_carries_replies_pushes_and_the_final_disconnect() {
    let server = Server::start(config());
    let connect = json!({"id": 1, "connect": {"token": token("alice")}}).to_string();
    let mut s = Stream::post(server.port, "/connection/http_stream", &[], connect.as_bytes());
    assert_eq!(s.status, 200);
    assert_eq!(s.header("transfer-encoding"), Some("chunked"));
    assert_eq!(s.header("x-accel-buffering"), Some("no"));
    let reply = s.line().unwrap();
    assert_eq!(reply["id"], 1, "{reply}");
    let session = reply["connect"]["session"].as_str().expect("session").to_owned();
    let node = reply["connect"]["node"].as_str().expect("node").to_owned();
    assert!(reply["connect"]["pong"].as_bool().unwrap_or(false), "{reply}");

    // Commands arrive through /emulation (on other TCP connections, so possibly other
    // shards); their replies come on the stream.
    let sub = json!({"id": 2, "subscribe": {"channel": "chat:room"}});
    assert_eq!(emulate(&server, &node, &session, &[sub]), 204);
    let reply = s.line().unwrap();
    assert_eq!(reply["id"], 2, "{reply}");
    publish(&server, "chat:room", json!({"text": "hi"}));
    let push = s.line().unwrap();
    assert_eq!(push["push"]["channel"], "chat:room");
    assert_eq!(push["push"]["pub"]["data"], json!({"text": "hi"}));

    // Several commands in one emulation request, in order.
    let cmds = [
        json!({"id": 3, "publish": {"channel": "chat:room", "data": {"n": 1}}}),
        json!({"id": 4, "unsubscribe": {"channel": "chat:room"}}),
    ];
    assert_eq!(emulate(&server, &node, &session, &cmds), 204);
    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.push(s.line().unwrap());
    }
    assert!(seen.iter().any(|v| v["id"] == 3 && v.get("error").is_none()), "{seen:?}");
    assert!(seen.iter().any(|v| v["push"]["pub"]["data"] == json!({"n": 1})), "{seen:?}");
    assert_eq!(seen.last().unwrap()["id"], 4, "{seen:?}");

    let r = server.http().api("disconnect", json!({"user": "alice"}));
    assert_eq!(r.status, 200);
    let last = s.line().unwrap();
    assert_eq!(last["push"]["disconnect"]["code"], 3503, "{last}");
    assert_eq!(s.line(), None);
    assert!(s.ended, "the response ends with the last chunk");
}

#[test]
fn http_stream_speaks_protobuf_when_the_body_is_octet_stream() {
    let server = Server::start(config());
    let mut frame = Vec::new();
    let connect = pb::Command {
        id: 1,
        connect: Some(pb::ConnectRequest { token: token("bob"), ..Default::default() }),
        ..Default::default()
    };
    connect.encode_length_delimited(&mut frame).unwrap();
    let octet = [("Content-Type", "application/octet-stream")];
    let mut s = Stream::post(server.port, "/connection/http_stream", &octet, &frame);
    assert_eq!(s.status, 200);
    let reply = s.reply().unwrap();
    let result = reply.connect.expect("connect result");
    assert!(!result.session.is_empty() && !result.node.is_empty());

    let mut data = Vec::new();
    let sub = pb::Command {
        id: 2,
        subscribe: Some(pb::SubscribeRequest { channel: "news".into(), ..Default::default() }),
        ..Default::default()
    };
    sub.encode_length_delimited(&mut data).unwrap();
    let req =
        pb::EmulationRequest { node: result.node, session: result.session, data: data.into() };
    let mut http = server.http();
    let mut raw = format!(
        "POST /emulation HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\n\r\n",
        req.encoded_len()
    )
    .into_bytes();
    raw.extend_from_slice(&req.encode_to_vec());
    assert_eq!(http.raw(&raw).status, 204);
    assert_eq!(s.reply().unwrap().id, 2);
    publish(&server, "news", json!({"x": 1}));
    let push = s.reply().unwrap().push.expect("push");
    assert_eq!(push.channel, "news");
    assert_eq!(&push.r#pub.expect("pub").data[..], br#"{"x":1}"#);
}

#[test]
fn sse_emulation_connects_from_the_query_and_sends_events() {
    let server = Server::start(config());
    let connect = json!({"id": 1, "connect": {"token": token("carol")}}).to_string();
    let query = url_encode(&connect);
    let mut s = Stream::get(server.port, &format!("/connection/sse?cf_connect={query}"));
    assert_eq!(s.status, 200);
    assert_eq!(s.header("content-type"), Some("text/event-stream; charset=utf-8"));
    assert!(s.next_message(b"", b"\r\n").unwrap().is_empty(), "starts with an empty line");
    let reply = s.event().unwrap();
    let session = reply["connect"]["session"].as_str().unwrap().to_owned();
    let node = reply["connect"]["node"].as_str().unwrap().to_owned();
    let sub = json!({"id": 2, "subscribe": {"channel": "news"}});
    assert_eq!(emulate(&server, &node, &session, &[sub]), 204);
    assert_eq!(s.event().unwrap()["id"], 2);
    publish(&server, "news", json!("sse"));
    assert_eq!(s.event().unwrap()["push"]["pub"]["data"], "sse");
}

#[test]
fn emulation_rejects_what_it_cannot_route() {
    let server = Server::start(config());
    let mut http = server.http();
    assert_eq!(http.post("/emulation", &[], "not json").status, 400);
    let body = json!({"node": "elsewhere", "session": "0.x", "data": "{}"}).to_string();
    assert_eq!(http.post("/emulation", &[], &body).status, 404);
    let big = json!({"node": "n", "session": "s", "data": "x".repeat(70_000)}).to_string();
    assert_eq!(server.http().post("/emulation", &[], &big).status, 413);
    // A stream needs a connect command first.
    let r = server.http().post("/connection/http_stream", &[], r#"{"id":1,"ping":{}}"#);
    assert_eq!(r.status, 400);
}

#[test]
fn cors_preflight_and_headers_follow_allowed_origins() {
    let server = Server::start(config());
    let mut http = server.http();
    let r = http.raw(
        b"OPTIONS /emulation HTTP/1.1\r\nHost: x\r\nOrigin: http://app.example\r\n\
          Access-Control-Request-Headers: content-type\r\n\r\n",
    );
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("http://app.example"));
    assert_eq!(r.header("access-control-allow-methods"), Some("POST, OPTIONS"));
    assert_eq!(r.header("access-control-allow-headers"), Some("content-type"));
    assert_eq!(r.header("access-control-max-age"), Some("300"));
    let r =
        http.raw(b"OPTIONS /emulation HTTP/1.1\r\nHost: x\r\nOrigin: http://evil.example\r\n\r\n");
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), None);
    let r = http.raw(b"GET /connection/init HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((r.status, r.json()), (200, json!({})));
}

#[test]
fn transports_are_off_unless_enabled() {
    let server = Server::start(base_config());
    let mut http = server.http();
    for path in ["/connection/http_stream", "/connection/uni_http_stream", "/emulation"] {
        assert_eq!(http.post(path, &[], "{}").status, 404, "{path}");
    }
}

#[test]
fn uni_sse_sends_the_connect_push_then_bare_publications_and_pings() {
    let mut cfg = config();
    merge(&mut cfg, json!({"client": {"ping_interval": "1s", "pong_timeout": "500ms"}}));
    let server = Server::start(cfg);
    let tok = token_with(json!({"sub": "dave", "exp": now() + 3600, "channels": ["news"]}));
    let req = json!({"token": tok}).to_string();
    let query = url_encode(&req);
    let mut s = Stream::get(server.port, &format!("/connection/uni_sse?cf_connect={query}"));
    assert_eq!(s.status, 200);
    assert!(s.next_message(b"", b"\r\n").unwrap().is_empty());
    let first = s.event().unwrap();
    let connect = &first["connect"];
    assert!(connect["client"].is_string() && connect["session"].is_string(), "{first}");
    assert!(connect["subs"]["news"].is_object(), "{first}");
    assert!(connect.get("pong").is_none(), "no pong from a unidirectional client: {first}");
    publish(&server, "news", json!({"n": 1}));
    let push = s.event().unwrap();
    assert_eq!(push, json!({"channel": "news", "pub": {"data": {"n": 1}}}));
    // Pings keep coming and nothing is expected back.
    for _ in 0..2 {
        let ping = s.next_message(b"data: ", b"\n\n").unwrap();
        assert_eq!(ping, b"{}");
    }
}

#[test]
fn uni_http_stream_turns_a_connect_error_into_a_disconnect_push() {
    let server = Server::start(config());
    let expired = token_with(json!({"sub": "erin", "exp": now() - 10}));
    let body = json!({"token": expired}).to_string();
    let mut s = Stream::post(server.port, "/connection/uni_http_stream", &[], body.as_bytes());
    assert_eq!(s.status, 200);
    let push = s.line().unwrap();
    assert_eq!(push, json!({"disconnect": {"code": 3005, "reason": "connection expired"}}));
    assert_eq!(s.line(), None);
    assert!(s.ended);

    let bad = server.http().post("/connection/uni_http_stream", &[], "[1]");
    assert_eq!(bad.status, 400);
    // Uni HTTP-stream is POST only.
    let mut http = server.http();
    let r = http.raw(b"GET /connection/uni_http_stream HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 405);
}

#[test]
fn connect_code_to_http_response_answers_a_refused_connect_in_http() {
    let mut cfg = config();
    let map = json!({"enabled": true, "transforms": [
        {"code": 109, "to": {"status_code": 401, "body": "token expired"}},
        {"code": 3500, "to": {"status_code": 403}}
    ]});
    merge(
        &mut cfg,
        json!({
            "uni_sse": {"connect_code_to_http_response": map.clone()},
            "uni_http_stream": {"connect_code_to_http_response": map}
        }),
    );
    let server = Server::start(cfg);
    let expired = json!({"token": token_with(json!({"sub": "ann", "exp": now() - 10}))});
    let forged = json!({"token": format!("{}x", token("ann"))});
    for path in ["/connection/uni_http_stream", "/connection/uni_sse"] {
        // An error code listed with a body: that status and body.
        let r = server.http().post(path, &[], &expired.to_string());
        assert_eq!((r.status, r.body.as_slice()), (401, &b"token expired"[..]), "{path}");
        // A disconnect code listed without a body: its reason.
        let r = server.http().post(path, &[], &forged.to_string());
        assert_eq!((r.status, r.body.as_slice()), (403, &b"invalid token"[..]), "{path}");
        // A code not listed (101, no token at all): 500.
        let r = server.http().post(path, &[], "{}");
        assert_eq!((r.status, r.body.as_slice()), (500, &b"Internal Server Error"[..]), "{path}");
    }
    // Accepted: the stream starts as usual, with the connect push first.
    let body = json!({"token": token("ann")}).to_string();
    let mut s = Stream::post(server.port, "/connection/uni_http_stream", &[], body.as_bytes());
    assert_eq!(s.status, 200);
    assert!(s.line().unwrap()["connect"]["client"].is_string());
    // Validation names the key.
    let mut bad = config();
    let zero = json!({"enabled": true, "transforms": [{"code": 0, "to": {"status_code": 400}}]});
    merge(&mut bad, json!({"uni_sse": {"connect_code_to_http_response": zero}}));
    let path = std::env::temp_dir().join(format!("rotor-cc2h-{}.json", std::process::id()));
    std::fs::write(&path, bad.to_string()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rotor"))
        .args(["checkconfig", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("uni_sse.connect_code_to_http_response.transforms[0].code"),
        "{stderr}"
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn uni_http_stream_delivers_server_side_subscriptions() {
    let server = Server::start(config());
    let tok = token_with(json!({"sub": "fay", "exp": now() + 3600, "channels": ["a", "b"]}));
    let body = json!({"token": tok}).to_string();
    let mut s = Stream::post(server.port, "/connection/uni_http_stream", &[], body.as_bytes());
    let connect = s.line().unwrap();
    assert!(connect["connect"]["subs"]["a"].is_object(), "{connect}");
    publish(&server, "b", json!(2));
    publish(&server, "a", json!(1));
    assert_eq!(s.line().unwrap(), json!({"channel": "b", "pub": {"data": 2}}));
    assert_eq!(s.line().unwrap(), json!({"channel": "a", "pub": {"data": 1}}));
}

#[test]
fn uni_websocket_takes_the_connect_from_the_first_message_or_the_url() {
    let server = Server::start(config());
    let tok = token_with(json!({"sub": "gus", "exp": now() + 3600, "channels": ["news"]}));
    let mut c = Client::connect(server.port, "/connection/uni_websocket", &[]);
    c.send_text(&json!({"token": tok}).to_string());
    let first = c.next_json();
    assert!(first["connect"]["subs"]["news"].is_object(), "{first}");
    // Later messages are ignored.
    c.send_text("not even json");
    publish(&server, "news", json!(1));
    publish(&server, "news", json!(2));
    assert_eq!(c.next_json(), json!({"channel": "news", "pub": {"data": 1}}));
    assert_eq!(c.next_json(), json!({"channel": "news", "pub": {"data": 2}}));
    let r = server.http().api("disconnect", json!({"user": "gus"}));
    assert_eq!(r.status, 200);
    assert_eq!(c.next_json()["disconnect"]["code"], 3503);
    assert_eq!(c.expect_close().0, 3503);

    let req = json!({"token": tok}).to_string();
    let query = url_encode(&req);
    let mut c =
        Client::connect(server.port, &format!("/connection/uni_websocket?cf_connect={query}"), &[]);
    assert!(c.next_json()["connect"]["client"].is_string());

    let mut bad = Client::connect(server.port, "/connection/uni_websocket", &[]);
    bad.ws.send(Message::text("[]")).unwrap();
    assert_eq!(bad.expect_close().0, 3501);
}

#[test]
fn many_streams_at_once_each_get_their_connect_and_publications() {
    let server = Server::start(config());
    let mut streams: Vec<Stream> = (0..12)
        .map(|i| {
            let tok = token_with(
                json!({"sub": format!("m{i}"), "exp": now() + 3600, "channels": ["many"]}),
            );
            let body = json!({"token": tok}).to_string();
            Stream::post(server.port, "/connection/uni_sse", &[], body.as_bytes())
        })
        .collect();
    for s in &mut streams {
        assert!(s.next_message(b"", b"\r\n").unwrap().is_empty());
        assert!(s.event().unwrap()["connect"].is_object());
    }
    publish(&server, "many", json!("all"));
    for s in &mut streams {
        assert_eq!(s.event().unwrap()["pub"]["data"], "all");
    }
}

#[test]
fn uni_websocket_can_close_without_the_disconnect_push() {
    let mut cfg = config();
    merge(&mut cfg, json!({"uni_websocket": {"disable_disconnect_push": true}}));
    let server = Server::start(cfg);
    let tok = token_with(json!({"sub": "hal", "exp": now() + 3600}));
    let mut c = Client::connect(server.port, "/connection/uni_websocket", &[]);
    c.send_text(&json!({"token": tok}).to_string());
    assert!(c.next_json()["connect"].is_object());
    assert_eq!(server.http().api("disconnect", json!({"user": "hal"})).status, 200);
    assert_eq!(c.next_event(), Event::Closed(3503, "force disconnect".into()));
}

#[test]
fn emulation_posted_to_another_node_reaches_the_session_through_redis() {
    let redis = RedisServer::start();
    let redis_port = redis.port;
    let start = |name: &str| {
        let mut c = config();
        let address = format!("127.0.0.1:{redis_port}");
        merge(
            &mut c,
            json!({"node": {"name": name}, "engine": {"type": "redis", "redis": {"address": address}}}),
        );
        Server::start(c)
    };
    let (a, b) = (start("a"), start("b"));
    let connect = json!({"id": 1, "connect": {"token": token("alice")}}).to_string();
    let mut s = Stream::post(a.port, "/connection/http_stream", &[], connect.as_bytes());
    let reply = s.line().unwrap();
    let session = reply["connect"]["session"].as_str().expect("session").to_owned();
    let node = reply["connect"]["node"].as_str().expect("node").to_owned();

    // The load balancer sent the command to node b: b forwards it to a, which owns the session.
    let sub = json!({"id": 2, "subscribe": {"channel": "chat:room"}});
    eventually(Duration::from_secs(10), Duration::from_millis(200), || {
        // 404 until b has heard a's first announcement.
        let status = emulate(&b, &node, &session, std::slice::from_ref(&sub));
        if status == 204 {
            return Ok(());
        }
        assert_eq!(status, 404);
        Err("b never learnt of a".to_owned())
    });
    let reply = s.line().unwrap();
    assert_eq!(reply["id"], 2, "{reply}");
    publish(&b, "chat:room", json!({"via": "b"}));
    assert_eq!(s.line().unwrap()["push"]["pub"]["data"], json!({"via": "b"}));
    assert_eq!(emulate(&b, "no-such-node", &session, &[sub]), 404);
}
