//! End-to-end tests against the real binary: 3 shards, round-robin placement (the k-th accepted
//! TCP connection lands on shard k mod 3, reported in the `x-rotor-shard` response header).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::needless_pass_by_value,
    reason = "test harness code: a failure must panic loudly, and helpers take what tests build"
)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[test]
fn publish_via_api_on_shard0_reaches_subscribers_on_shards_1_and_2_once_in_order() {
    let server = Server::start(base_config());
    // Connection order decides placement: API on shard 0, subscribers on 1 and 2.
    let mut api = server.http();
    let health = api.post("/health", &[], "");
    assert_eq!((health.status, health.header("x-rotor-shard")), (200, Some("0")));
    let mut a = server.ws();
    let mut b = server.ws();
    assert_eq!((a.shard.as_str(), b.shard.as_str()), ("1", "2"));
    // Home on shard 2: the publish crosses 0 → 2, deliveries go 2 → 1 and 2 → 2 (inline).
    let channel = channel_homed_at("news", 2, 3);
    for c in [&mut a, &mut b] {
        let reply = c.handshake(&token("u1"));
        assert!(reply["connect"]["client"].as_str().is_some_and(|s| !s.is_empty()), "{reply}");
        assert_eq!(c.subscribe(&channel), json!({"id": 2, "subscribe": {}}));
    }
    for n in 0..50 {
        let r = api
            .api("publish", json!({"channel": channel, "data": {"n": n, "text": "héllo \"q\""}}));
        assert_eq!((r.status, r.json()), (200, json!({"result": {}})));
    }
    for c in [&mut a, &mut b] {
        for n in 0..50 {
            let push = c.next_json();
            assert_eq!(
                push,
                json!({"push": {"channel": channel, "pub": {"data": {"n": n, "text": "héllo \"q\""}}}})
            );
        }
        c.expect_silence(Duration::from_millis(300));
    }
}

#[test]
fn publish_result_carries_offset_and_epoch_when_history_is_on() {
    let server = Server::start(base_config());
    let mut api = server.http();
    let mut sub = server.ws();
    sub.handshake(&token("u"));
    sub.subscribe("hist:a");
    let first = api.api("publish", json!({"channel": "hist:a", "data": {"x": 1}})).json();
    let second = api.api("publish", json!({"channel": "hist:a", "data": {"x": 2}})).json();
    assert_eq!(first["result"]["offset"], 1);
    assert_eq!(second["result"]["offset"], 2);
    let epoch = first["result"]["epoch"].as_str().unwrap();
    assert_eq!(epoch.len(), 8);
    assert_eq!(second["result"]["epoch"], epoch);
    assert_eq!(sub.next_json()["push"]["pub"], json!({"data": {"x": 1}, "offset": 1}));
    assert_eq!(sub.next_json()["push"]["pub"], json!({"data": {"x": 2}, "offset": 2}));
}

#[test]
fn broadcast_reaches_200_clients_exactly_once() {
    let server = Server::start(base_config());
    let mut clients: Vec<Client> = (0..200).map(|_| server.ws()).collect();
    let tok = token("many");
    for c in &mut clients {
        let id = c.command(json!({"connect": {"token": tok}}));
        assert_eq!(id, 1);
    }
    for c in &mut clients {
        assert!(c.next_json()["connect"].is_object());
        c.command(json!({"subscribe": {"channel": "room"}}));
    }
    for c in &mut clients {
        assert_eq!(c.next_json(), json!({"id": 2, "subscribe": {}}));
    }
    let mut api = server.http();
    let r =
        api.api("broadcast", json!({"channels": ["room", "chat:empty"], "data": {"all": true}}));
    assert_eq!(r.json(), json!({"result": {"responses": [{"result": {}}, {"result": {}}]}}));
    let mut shards = std::collections::BTreeMap::new();
    for c in &mut clients {
        assert_eq!(
            c.next_json(),
            json!({"push": {"channel": "room", "pub": {"data": {"all": true}}}})
        );
        *shards.entry(c.shard.clone()).or_insert(0) += 1;
    }
    assert_eq!(shards.len(), 3, "clients spread over all shards: {shards:?}");
    for c in clients.iter_mut().take(20) {
        c.expect_silence(Duration::from_millis(50));
    }
}

#[test]
fn client_publish_permissions_and_subscribe_errors() {
    let server = Server::start(base_config());
    let mut c = server.ws();
    c.handshake(&token("u"));
    // Publish allowed for subscribers of chat:, the publication carries the publisher's info.
    c.subscribe("chat:x");
    let id = c.command(json!({"publish": {"channel": "chat:x", "data": {"m": 1}}}));
    let mut got = [c.next_json(), c.next_json()];
    got.sort_by_key(|v| v.get("id").is_some());
    assert_eq!(got[0]["push"]["pub"]["data"], json!({"m": 1}));
    assert_eq!(got[0]["push"]["pub"]["info"]["user"], "u");
    assert_eq!(got[1], json!({"id": id, "publish": {}}));
    // Not allowed in ro: → 103.
    c.subscribe("ro:x");
    let id = c.command(json!({"publish": {"channel": "ro:x", "data": {"m": 1}}}));
    assert_eq!(
        c.next_json(),
        json!({"id": id, "error": {"code": 103, "message": "permission denied"}})
    );
    // Unknown namespace → 102; already subscribed → 105.
    let id = c.command(json!({"subscribe": {"channel": "nope:x"}}));
    assert_eq!(
        c.next_json(),
        json!({"id": id, "error": {"code": 102, "message": "unknown channel"}})
    );
    let id = c.command(json!({"subscribe": {"channel": "chat:x"}}));
    assert_eq!(
        c.next_json(),
        json!({"id": id, "error": {"code": 105, "message": "already subscribed"}})
    );
    // Unsubscribe is always a success.
    let id = c.command(json!({"unsubscribe": {"channel": "never"}}));
    assert_eq!(c.next_json(), json!({"id": id, "unsubscribe": {}}));
}

#[test]
fn malformed_json_disconnects_with_3501_while_other_clients_keep_working() {
    let server = Server::start(base_config());
    let mut good = server.ws();
    good.handshake(&token("good"));
    good.subscribe("chat:ok");
    let mut bad = server.ws();
    bad.handshake(&token("bad"));
    bad.send_text("{\"id\":2,\"subscribe\":");
    assert_eq!(bad.expect_close(), (3501, "bad request".to_string()));
    let mut api = server.http();
    api.api("publish", json!({"channel": "chat:ok", "data": {"still": "fine"}}));
    assert_eq!(good.next_json()["push"]["pub"]["data"], json!({"still": "fine"}));
}

#[test]
fn protocol_violations_close_with_3501() {
    let server = Server::start(base_config());
    // A command before connect.
    let mut c = server.ws();
    c.command(json!({"subscribe": {"channel": "x"}}));
    assert_eq!(c.expect_close().0, 3501);
    // Missing credentials entirely.
    let mut c = server.ws();
    c.command(json!({"connect": {}}));
    assert_eq!(c.expect_close().0, 3501);
    // A pong with no ping outstanding.
    let mut c = server.ws();
    c.handshake(&token("u"));
    c.send_text("{}");
    assert_eq!(c.expect_close().0, 3501);
    // `send` has no handler in OSS → 3508.
    let mut c = server.ws();
    c.handshake(&token("u"));
    c.send_text(r#"{"send":{"data":{}}}"#);
    assert_eq!(c.expect_close(), (3508, "not available".to_string()));
}

#[test]
fn oversized_frame_is_closed_with_1009() {
    let mut cfg = base_config();
    merge(&mut cfg, json!({"websocket": {"message_size_limit": 1024}}));
    let server = Server::start(cfg);
    let mut c = server.ws();
    c.handshake(&token("u"));
    c.send_text(&format!(
        r#"{{"id":2,"publish":{{"channel":"chat:a","data":"{}"}}}}"#,
        "x".repeat(2048)
    ));
    assert_eq!(c.expect_close().0, 1009);
}

#[test]
fn bad_and_expired_tokens() {
    let server = Server::start(base_config());
    let mut c = server.ws();
    let forged =
        rotor::auth::encode_hs256("other-secret", &json!({"sub": "u", "exp": now() + 60})).unwrap();
    c.command(json!({"connect": {"token": forged}}));
    assert_eq!(c.expect_close(), (3500, "invalid token".to_string()));
    let mut c = server.ws();
    let id = c
        .command(json!({"connect": {"token": token_with(json!({"sub": "u", "exp": now() - 10}))}}));
    assert_eq!(
        c.next_json(),
        json!({"id": id, "error": {"code": 109, "message": "token expired"}})
    );
    // A token with exp is reported as expiring, with a ttl.
    let mut c = server.ws();
    let reply = c.handshake(&token_with(json!({"sub": "u", "exp": now() + 100})));
    assert_eq!(reply["connect"]["expires"], true);
    let ttl = reply["connect"]["ttl"].as_u64().unwrap();
    assert!((95..=100).contains(&ttl), "{ttl}");
    assert_eq!(
        (reply["connect"]["ping"].as_u64(), reply["connect"]["pong"].as_bool()),
        (Some(25), Some(true))
    );
}

#[test]
fn channels_claim_subscribes_on_connect() {
    let server = Server::start(base_config());
    let mut c = server.ws();
    let reply = c.handshake(&token_with(json!({"sub": "u", "channels": ["chat:server-side"]})));
    assert_eq!(reply["connect"]["subs"], json!({"chat:server-side": {}}));
    server.http().api("publish", json!({"channel": "chat:server-side", "data": {"s": 1}}));
    assert_eq!(
        c.next_json(),
        json!({"push": {"channel": "chat:server-side", "pub": {"data": {"s": 1}}}})
    );
    // Unknown namespace in the claim → connect error 102.
    let mut c = server.ws();
    let id = c.command(
        json!({"connect": {"token": token_with(json!({"sub": "u", "channels": ["zzz:a"]}))}}),
    );
    assert_eq!(
        c.next_json(),
        json!({"id": id, "error": {"code": 102, "message": "unknown channel"}})
    );
}

#[test]
fn ping_pong_and_stale_timeouts() {
    let mut cfg = base_config();
    merge(
        &mut cfg,
        json!({"client": {"ping_interval": "1s", "pong_timeout": "500ms", "stale_close_delay": "1s"}}),
    );
    let server = Server::start(cfg);
    // Never connects → 3502 stale.
    let mut stale = server.ws();
    assert_eq!(stale.expect_close(), (3502, "stale".to_string()));
    // Answers pings → stays connected across several intervals.
    let mut good = server.ws();
    let reply = good.handshake(&token("u"));
    assert_eq!(reply["connect"]["ping"], 1);
    let mut silent = server.ws();
    silent.handshake(&token("u"));
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut pings = 0;
    good.ws.get_ref().set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    while Instant::now() < deadline {
        match good.ws.read() {
            Ok(tungstenite::Message::Text(t)) => {
                assert_eq!(t.as_str(), "{}");
                pings += 1;
                good.send_text("{}");
            }
            Err(tungstenite::Error::Io(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(pings >= 2, "pings seen: {pings}");
    // Never answers → 3012 no pong.
    assert_eq!(silent.expect_close(), (3012, "no pong".to_string()));
}

#[test]
fn origin_check_uses_allowed_origins() {
    let mut cfg = base_config();
    merge(&mut cfg, json!({"client": {"allowed_origins": ["https://*.example.com"]}}));
    let server = Server::start(cfg);
    assert!(Client::try_connect(
        server.port,
        "/connection/websocket",
        &[("Origin", "https://app.example.com")]
    )
    .is_ok());
    let err = Client::try_connect(
        server.port,
        "/connection/websocket",
        &[("Origin", "https://evil.test")],
    )
    .err()
    .unwrap();
    match err {
        tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 403),
        other => panic!("expected 403, got {other:?}"),
    }
}

#[test]
fn http_api_errors() {
    let server = Server::start(base_config());
    let mut http = server.http();
    let r = http.post("/api/publish", &[("X-API-Key", "wrong")], r#"{"channel":"a","data":{}}"#);
    assert_eq!(r.status, 401);
    let r = http.post(
        "/api/publish",
        &[("Authorization", "apikey test-api-key")],
        r#"{"channel":"a","data":{}}"#,
    );
    assert_eq!((r.status, r.json()), (200, json!({"result": {}})));
    let r = http.api("frobnicate", json!({}));
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].is_string());
    let r = http.api("publish", json!({"channel": "nope:a", "data": {}}));
    assert_eq!(r.json(), json!({"error": {"code": 102, "message": "unknown channel"}}));
    let r = http.api("publish", json!({"channel": "", "data": {}}));
    assert_eq!(r.json()["error"]["code"], 107);
    let r = http.api("publish", json!({"channel": "a"}));
    assert_eq!(r.json()["error"]["code"], 107, "empty data is rejected by default");
    let r = http.post("/api/publish", &[("X-API-Key", API_KEY)], "{not json");
    assert_eq!(r.status, 400);
    let r = http.post(
        "/api/publish",
        &[("X-API-Key", API_KEY), ("X-Centrifugo-Error-Mode", "transport")],
        r#"{"channel":"nope:a","data":{}}"#,
    );
    assert_eq!((r.status, r.json()), (404, json!({"code": 102, "message": "unknown channel"})));
    // Legacy route: newline-delimited commands and replies.
    let r = http.post(
        "/api",
        &[("Authorization", "apikey test-api-key")],
        "{\"id\":1,\"method\":\"publish\",\"params\":{\"channel\":\"a\",\"data\":{}}}\n{\"method\":\"broadcast\",\"params\":{\"channels\":[\"a\"],\"data\":{}}}",
    );
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body).unwrap();
    let lines: Vec<serde_json::Value> =
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(
        lines,
        vec![json!({"id": 1, "result": {}}), json!({"result": {"responses": [{"result": {}}]}})]
    );
    // Wrong method.
    let r = http.raw(b"GET /api/publish HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 405);
}

#[test]
fn broken_http_heads_get_400_and_unknown_paths_404() {
    let server = Server::start(base_config());
    for head in [
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc",
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabc",
        "GET / HTTP/1.1\r\nHost: x\r\n bad-fold: y\r\n\r\n",
        "NOT HTTP AT ALL\r\n\r\n",
    ] {
        let mut http = server.http();
        let r = http.raw(head.as_bytes());
        assert_eq!(r.status, 400, "{head:?}");
        assert!(r.json()["error"].is_string());
    }
    let mut http = server.http();
    let r = http.raw(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((r.status, r.json()), (404, json!({"error": "not found"})));
    // Chunked API bodies work.
    let body = r#"{"channel":"a","data":{"c":1}}"#;
    let req = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let r = http.raw(req.as_bytes());
    assert_eq!((r.status, r.json()), (200, json!({"result": {}})));
}

#[test]
fn sigterm_sends_3001_to_clients_and_exits_zero() {
    let mut server = Server::start(base_config());
    let mut clients: Vec<Client> = (0..3).map(|_| server.ws()).collect();
    for c in &mut clients {
        c.handshake(&token("u"));
    }
    let status = std::thread::scope(|s| {
        let waiter =
            s.spawn(|| clients.iter_mut().map(common::Client::expect_close).collect::<Vec<_>>());
        let status = server.terminate();
        let closes = waiter.join().unwrap();
        assert!(closes.iter().all(|c| *c == (3001, "shutdown".to_string())), "{closes:?}");
        status
    });
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_publication_made_right_after_subscribe_success_is_delivered() {
    let server = Server::start(base_config());
    let mut api = server.http();
    let mut sub = server.ws();
    assert_eq!(sub.shard, "1");
    sub.handshake(&token("u"));
    // Fresh channels homed on shard 2: subscriber (1), publisher (0) and home (2) all differ, so
    // the subscribe's interest and the publish race on different lanes into the home shard.
    let channels: Vec<String> =
        (0..100).map(|i| format!("race{i}-")).map(|p| channel_homed_at(&p, 2, 3)).collect();
    for (n, ch) in channels.iter().enumerate() {
        assert_eq!(sub.subscribe(ch)["subscribe"], json!({}));
        assert_eq!(api.api("publish", json!({"channel": ch, "data": {"n": n}})).status, 200);
        assert_eq!(
            sub.next_json(),
            json!({"push": {"channel": ch, "pub": {"data": {"n": n}}}}),
            "publication {n} after subscribe success"
        );
    }
}

#[test]
fn native_ping_frames_with_cf_ws_frame_ping_pong() {
    let mut cfg = base_config();
    merge(&mut cfg, json!({"client": {"ping_interval": "1s", "pong_timeout": "500ms"}}));
    let server = Server::start(cfg);
    let mut c =
        Client::connect(server.port, "/connection/websocket?cf_ws_frame_ping_pong=true", &[]);
    let reply = c.handshake(&token("u"));
    assert_eq!(reply["connect"].get("ping"), None, "no app-level ping advertised: {reply}");
    assert_eq!(reply["connect"].get("pong"), None);
    // tungstenite answers ping frames with pong frames while reading; the connection must
    // survive several intervals and never see a `{}` protocol ping.
    let deadline = Instant::now() + Duration::from_secs(3);
    c.ws.get_ref().set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut ping_frames = 0;
    while Instant::now() < deadline {
        match c.ws.read() {
            Ok(tungstenite::Message::Ping(_)) => ping_frames += 1,
            Err(tungstenite::Error::Io(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
        let _ = c.ws.flush();
    }
    assert!(ping_frames >= 2, "ping frames: {ping_frames}");
}

#[test]
fn anonymous_and_insecure_connections() {
    // Without a token and without permission: 3501 (spec §4.6).
    let server = Server::start(base_config());
    let mut c = server.ws();
    c.command(json!({"connect": {}}));
    assert_eq!(c.expect_close(), (3501, "bad request".to_string()));
    drop(server);

    let mut cfg = base_config();
    merge(&mut cfg, json!({"client": {"allow_anonymous_connect_without_token": true}}));
    let server = Server::start(cfg);
    let mut c = server.ws();
    let id = c.command(json!({"connect": {}}));
    let reply = c.next_json();
    assert_eq!(reply["id"], id);
    assert!(reply["connect"]["client"].is_string());
    // Anonymous users need allow_subscribe_for_anonymous as well.
    let id = c.command(json!({"subscribe": {"channel": "chat:a"}}));
    assert_eq!(
        c.next_json(),
        json!({"id": id, "error": {"code": 103, "message": "permission denied"}}),
        "anonymous users also need allow_subscribe_for_anonymous"
    );
    drop(server);

    let mut cfg = base_config();
    merge(&mut cfg, json!({"client": {"insecure": true}}));
    let server = Server::start(cfg);
    let mut c = server.ws();
    c.command(json!({"connect": {}}));
    assert!(c.next_json()["connect"].is_object());
    assert_eq!(c.subscribe("ro:anything")["subscribe"], json!({}), "insecure allows every channel");
    let id = c.command(json!({"publish": {"channel": "ro:anything", "data": {"x": 1}}}));
    let mut got = [c.next_json(), c.next_json()];
    got.sort_by_key(|v| v.get("id").is_some());
    assert_eq!(got[1], json!({"id": id, "publish": {}}));
}

#[test]
fn connection_expires_with_3005_unless_refreshed() {
    let mut cfg = base_config();
    merge(&mut cfg, json!({"client": {"expired_close_delay": "1s"}}));
    let server = Server::start(cfg);
    let mut lapsing = server.ws();
    let reply = lapsing.handshake(&token_with(json!({"sub": "u", "exp": now() + 2})));
    assert_eq!(reply["connect"]["expires"], true);
    let mut refreshed = server.ws();
    refreshed.handshake(&token_with(json!({"sub": "u", "exp": now() + 2})));
    let id = refreshed.command(
        json!({"refresh": {"token": token_with(json!({"sub": "u", "exp": now() + 600}))}}),
    );
    let reply = refreshed.next_json();
    assert_eq!(
        (reply["id"].as_u64(), reply["refresh"]["expires"].as_bool()),
        (Some(u64::from(id)), Some(true))
    );
    assert!(reply["refresh"]["ttl"].as_u64().unwrap() > 590);
    // A refresh token for another user is rejected with 3500.
    let mut other = server.ws();
    other.handshake(&token("u"));
    other.command(json!({"refresh": {"token": token("someone-else")}}));
    assert_eq!(other.expect_close(), (3500, "invalid token".to_string()));
    let started = Instant::now();
    assert_eq!(lapsing.expect_close(), (3005, "connection expired".to_string()));
    assert!(started.elapsed() < Duration::from_secs(6));
    refreshed.expect_silence(Duration::from_millis(500));
}

#[test]
fn a_client_close_is_echoed_with_a_close_frame() {
    let server = Server::start(base_config());
    let mut c = server.ws();
    c.handshake(&token("u"));
    c.ws.close(Some(tungstenite::protocol::CloseFrame {
        code: tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "bye".into(),
    }))
    .unwrap();
    // tungstenite reports ConnectionClosed only after the peer's Close arrived: a clean close.
    loop {
        match c.ws.read() {
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("no clean close handshake: {e}"),
        }
    }
}

#[test]
fn duplicate_token_channels_are_one_subscription() {
    let server = Server::start(base_config());
    let mut c = server.ws();
    let reply = c.handshake(&token_with(json!({"sub": "u", "channels": ["chat:dup", "chat:dup"]})));
    assert_eq!(reply["connect"]["subs"], json!({"chat:dup": {}}));
    server.http().api("publish", json!({"channel": "chat:dup", "data": {"once": true}}));
    assert_eq!(c.next_json()["push"]["pub"]["data"], json!({"once": true}));
    c.expect_silence(Duration::from_millis(300));
}

#[test]
fn a_refresh_that_adds_an_expiry_is_enforced() {
    let mut cfg = base_config();
    merge(&mut cfg, json!({"client": {"expired_close_delay": "1s"}}));
    let server = Server::start(cfg);
    let never = token_with(json!({"sub": "u"}));
    let mut c = server.ws();
    assert_eq!(c.handshake(&never)["connect"].get("expires"), None);
    let id =
        c.command(json!({"refresh": {"token": token_with(json!({"sub": "u", "exp": now() + 1}))}}));
    assert_eq!(c.next_json()["id"], id);
    let started = Instant::now();
    assert_eq!(c.expect_close(), (3005, "connection expired".to_string()));
    assert!(started.elapsed() < Duration::from_secs(6));
}

#[test]
fn connect_includes_server_time_when_asked() {
    let plain = Server::start(base_config());
    let reply = plain.ws().handshake(&token("t1"));
    assert!(reply["connect"].get("time").is_none(), "not sent by default: {reply}");
    let mut cfg = base_config();
    merge(&mut cfg, json!({"client": {"connect_include_server_time": true}}));
    let server = Server::start(cfg);
    let reply = server.ws().handshake(&token("t1"));
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
            as i64;
    let time = reply["connect"]["time"].as_i64().expect("time in the connect result");
    assert!((now_ms - time).abs() < 60_000, "{time} vs {now_ms}");
}

#[test]
fn a_second_rotor_on_a_busy_port_refuses_to_start() {
    let port = free_port();
    let mut cfg = base_config();
    merge(&mut cfg, json!({"http_server": {"port": port}}));
    let first = Server::start(cfg.clone());
    assert_eq!(first.port, port);
    let out = run_refused(&cfg);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("address already in use"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"));
    // The first one still serves, alone.
    let mut http = first.http();
    assert_eq!(http.raw(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").status, 200);
    // Once it is gone, the port is free again.
    drop(first);
    let mut cfg = base_config();
    merge(&mut cfg, json!({"http_server": {"port": port}}));
    let again = Server::start(cfg);
    assert_eq!(again.port, port);
}
