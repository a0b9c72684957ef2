//! Proxies to the application backend (spec §9), end to end: the real binary, a real backend
//! process (`tests/support/proxy_backend.py`, Python's standard library) on a free loopback
//! port that records what it receives, and a WebSocket client.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::needless_pass_by_value,
    reason = "test harness code: a failure must panic loudly, and helpers take what tests build"
)]

mod common;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{
    eventually, free_port, make_certificates, merge, wait_for_port, Client, Event, Http, Server,
};
use serde_json::{json, Value};

/// The recording backend; stopped by PID on drop.
struct Backend {
    child: Child,
    port: u16,
    /// Its HTTPS port, when started with a certificate.
    tls_port: u16,
}

impl Backend {
    fn start() -> Backend {
        Self::start_with(&[])
    }

    /// `tls`: the certificate and key files to also serve HTTPS with.
    fn start_with(tls: &[&std::path::Path]) -> Backend {
        Self::spawn(tls, &[])
    }

    fn spawn(tls: &[&std::path::Path], env: &[(&str, &str)]) -> Backend {
        let (port, tls_port) = (free_port(), free_port());
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/proxy_backend.py");
        let mut cmd = Command::new("python3");
        cmd.envs(env.iter().copied());
        cmd.arg(script).arg(port.to_string());
        if !tls.is_empty() {
            cmd.arg(tls_port.to_string()).args(tls);
        }
        let child = cmd.spawn().unwrap();
        wait_for_port(port, "proxy backend");
        if !tls.is_empty() {
            wait_for_port(tls_port, "proxy backend (HTTPS)");
        }
        Backend { child, port, tls_port }
    }

    fn url(&self, event: &str) -> String {
        format!("http://127.0.0.1:{}/{event}", self.port)
    }

    /// Makes `event` answer `body` with `status` after `delay_ms`.
    fn script(&self, event: &str, status: u16, body: Value, delay_ms: u64) {
        let script = json!({"event": event, "status": status, "body": body, "delay_ms": delay_ms});
        let r = Http::connect(self.port).post("/_script", &[], &script.to_string());
        assert_eq!(r.status, 200);
    }

    /// Every request of `event` received so far.
    fn requests(&self, event: &str) -> Vec<Value> {
        let mut http = Http::connect(self.port);
        let r = http.raw(b"GET /_log HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n");
        let log: Vec<Value> = serde_json::from_slice(&r.body).unwrap();
        log.into_iter().filter(|e| e["event"] == event).collect()
    }

    /// Waits for the `n`-th request of `event`.
    fn nth(&self, event: &str, n: usize) -> Value {
        eventually(Duration::from_secs(10), Duration::from_millis(20), || {
            self.requests(event).into_iter().nth(n).ok_or(format!("no {event} request #{n}"))
        })
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config whose every proxy points at `backend`; `patch` is merged in.
fn config(backend: &Backend, patch: Value) -> Value {
    let mut cfg = common::base_config();
    merge(
        &mut cfg,
        json!({
            "client": {"proxy": {
                "connect": {"enabled": true, "endpoint": backend.url("connect"), "timeout": "2s",
                    "http_headers": ["Cookie", "x-real-ip"], "emulated_headers": ["authorization"],
                    "http": {"static_headers": {"x-static": "s1"},
                        "status_to_code_transforms": [{"status_code": 418, "to_error": {"code": 1418, "message": "teapot"}}]}},
            }},
            "channel": {"proxy": {
                "subscribe": {"endpoint": backend.url("subscribe"), "include_connection_meta": true},
                "publish": {"endpoint": backend.url("publish")},
                "sub_refresh": {"endpoint": backend.url("sub_refresh")}
            }},
            "rpc": {"proxy": {"endpoint": backend.url("rpc"), "include_connection_meta": true,
                "emulated_headers": ["authorization"], "http_headers": ["cookie"]},
                "without_namespace": {"proxy_enabled": true}},
        }),
    );
    let namespaces = cfg["channel"]["namespaces"].as_array_mut().unwrap();
    namespaces.push(json!({"name": "px", "subscribe_proxy_enabled": true,
        "publish_proxy_enabled": true, "history_size": 10, "history_ttl": "60s"}));
    merge(&mut cfg, patch);
    cfg
}

fn connect_with(server: &Server, headers: &[(&str, &str)], connect: Value) -> (Client, Value) {
    let mut c = Client::connect(server.port, "/connection/websocket", headers);
    let id = c.command(json!({ "connect": connect }));
    let reply = c.next_json();
    assert_eq!(reply["id"], id, "{reply}");
    (c, reply)
}

fn rpc(c: &mut Client, method: &str, data: Value) -> Value {
    let id = c.command(json!({"rpc": {"method": method, "data": data}}));
    let reply = c.next_json();
    assert_eq!(reply["id"], id, "{reply}");
    reply
}

#[test]
fn connect_proxy_authenticates_by_cookie_and_forwards_only_listed_headers() {
    let backend = Backend::start();
    let server = Server::start(config(&backend, json!({})));
    let headers = [("Cookie", "session=alice"), ("X-Real-IP", "10.0.0.7"), ("X-Secret", "no")];
    let connect = json!({"name": "test", "version": "1.2", "data": {"k": "v"},
        "headers": {"Authorization": "Bearer t1", "X-Other": "no", "x-static": "client-set"}});
    let (mut c, reply) = connect_with(&server, &headers, connect);
    let client = reply["connect"]["client"].as_str().unwrap().to_owned();
    let req = backend.nth("connect", 0);
    let (h, body) = (&req["headers"], &req["body"]);
    assert_eq!(h["cookie"], "session=alice");
    assert_eq!(h["x-real-ip"], "10.0.0.7");
    assert_eq!(h["authorization"], "Bearer t1", "listed emulated header");
    assert_eq!(h["x-static"], "s1", "a client's emulated header it does not list never reaches");
    assert_eq!(h["content-type"], "application/json");
    assert!(h.get("x-secret").is_none() && h.get("x-other").is_none(), "{h}");
    assert_eq!(body["client"], client.as_str());
    assert_eq!(body["transport"], "websocket");
    assert_eq!(body["protocol"], "json");
    assert_eq!(body["encoding"], "json");
    assert_eq!((body["name"].as_str(), body["version"].as_str()), (Some("test"), Some("1.2")));
    assert_eq!(body["data"], json!({"k": "v"}));
    // The connection is alice's: the RPC proxy sees her, and the headers it lists.
    let reply = rpc(&mut c, "whoami", json!({"q": 1}));
    assert_eq!(reply["rpc"]["data"], json!({"method": "whoami", "echo": {"q": 1}}));
    let req = backend.nth("rpc", 0);
    assert_eq!(req["body"]["user"], "alice");
    assert_eq!(req["body"]["method"], "whoami");
    assert_eq!(req["headers"]["authorization"], "Bearer t1");
    assert_eq!(req["headers"]["cookie"], "session=alice");
    assert!(req["headers"].get("x-real-ip").is_none(), "the RPC proxy does not list it");
}

#[test]
fn connect_result_sets_user_info_data_subscriptions_and_server_only_meta() {
    let backend = Backend::start();
    let server = Server::start(config(&backend, json!({})));
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    backend.script(
        "connect",
        200,
        json!({"result": {"user": "bob", "info": {"role": "x"}, "b64info": b64(r#"{"role":"admin"}"#),
            "data": {"welcome": true}, "channels": ["chat:news"],
            "subs": {"chat:extra": {"b64data": b64(r#"{"x":1}"#)}},
            "meta": {"tenant": 7}}}),
        0,
    );
    let (mut c, reply) = connect_with(&server, &[], json!({}));
    let text = reply.to_string();
    assert!(!text.contains("tenant"), "meta never reaches the client: {text}");
    let result = &reply["connect"];
    assert_eq!(result["data"], json!({"welcome": true}));
    assert!(result.get("expires").is_none(), "{result}");
    assert!(result["subs"].get("chat:news").is_some(), "{result}");
    assert_eq!(result["subs"]["chat:extra"]["data"], json!({"x": 1}), "b64data wins");
    // Publishing into a server-side subscription shows bob with the b64 info.
    let id = c.command(json!({"publish": {"channel": "chat:news", "data": {"m": 1}}}));
    let mut seen = (false, None);
    while !(seen.0 && seen.1.is_some()) {
        let v = c.next_json();
        if v["id"] == id {
            seen.0 = true;
        } else if v["push"]["channel"] == "chat:news" {
            seen.1 = Some(v["push"]["pub"]["info"].clone());
        }
    }
    let info = seen.1.unwrap();
    assert_eq!(info["user"], "bob");
    assert_eq!(info["conn_info"], json!({"role": "admin"}));
    // Later proxies that ask for it get the meta.
    rpc(&mut c, "m", json!({}));
    assert_eq!(backend.nth("rpc", 0)["body"]["meta"], json!({"tenant": 7}));
}

#[test]
fn backend_errors_disconnects_failures_and_status_transforms_reach_the_client() {
    let backend = Backend::start();
    let mut cfg = config(&backend, json!({}));
    cfg["client"]["proxy"]["connect"]["timeout"] = json!("500ms");
    let server = Server::start(cfg);
    let error = |backend: &Backend, status: u16, body: Value, delay: u64| {
        backend.script("connect", status, body, delay);
        let (_c, reply) = connect_with(&server, &[], json!({}));
        reply["error"].clone()
    };
    let custom = json!({"error": {"code": 1001, "message": "nope", "temporary": true}});
    let e = error(&backend, 200, custom, 0);
    assert_eq!((e["code"].as_u64(), e["message"].as_str()), (Some(1001), Some("nope")));
    assert_eq!(e["temporary"], true);
    assert_eq!(error(&backend, 500, json!({}), 0)["code"], 100, "non-200");
    assert_eq!(error(&backend, 200, json!({}), 1500)["code"], 100, "timeout");
    assert_eq!(error(&backend, 200, json!("{not json"), 0)["code"], 100, "bad body");
    let e = error(&backend, 418, json!({}), 0);
    assert_eq!((e["code"].as_u64(), e["message"].as_str()), (Some(1418), Some("teapot")));
    // A disconnect wins over an error.
    backend.script(
        "connect",
        200,
        json!({"error": {"code": 1001}, "disconnect": {"code": 4501, "reason": "go away"}}),
        0,
    );
    let mut c = Client::connect(server.port, "/connection/websocket", &[]);
    c.command(json!({"connect": {}}));
    assert_eq!(c.expect_close(), (4501, "go away".to_owned()));
    // No credentials and anonymous connects not allowed: 3501.
    backend.script("connect", 200, json!({}), 0);
    let mut c = Client::connect(server.port, "/connection/websocket", &[]);
    c.command(json!({"connect": {}}));
    assert_eq!(c.expect_close().0, 3501);
}

#[test]
fn a_token_bypasses_the_connect_proxy_and_its_meta_reaches_later_proxies() {
    let backend = Backend::start();
    let server = Server::start(config(&backend, json!({})));
    let token = common::token_with(json!({"sub": "tok", "meta": {"plan": "gold"}}));
    let (mut c, reply) = connect_with(&server, &[], json!({ "token": token }));
    assert!(reply["connect"]["client"].is_string(), "{reply}");
    assert!(!reply.to_string().contains("gold"), "meta stays on the server: {reply}");
    rpc(&mut c, "m", json!({}));
    let req = backend.nth("rpc", 0);
    assert_eq!(
        (req["body"]["user"].as_str(), req["body"]["meta"].clone()),
        (Some("tok"), json!({"plan": "gold"}))
    );
    let (_c2, _) = connect_with(&server, &[("Cookie", "session=c")], json!({}));
    assert_eq!(backend.requests("connect").len(), 1, "only the connect without a token");
}

#[test]
fn subscribe_proxy_allows_denies_and_sets_subscription_data() {
    let backend = Backend::start();
    let server = Server::start(config(&backend, json!({})));
    backend.script(
        "connect",
        200,
        json!({"result": {"user": "carol", "meta": {"plan": "pro"}}}),
        0,
    );
    let (mut c, _) = connect_with(&server, &[], json!({}));
    let reply = c.subscribe("px:open");
    assert!(reply.get("error").is_none(), "{{}} allows: {reply}");
    let req = backend.nth("subscribe", 0);
    assert_eq!(req["body"]["channel"], "px:open");
    assert_eq!(req["body"]["user"], "carol");
    assert_eq!(req["body"]["meta"], json!({"plan": "pro"}), "include_connection_meta");
    let reply = c.subscribe("px:forbidden");
    assert_eq!(reply["error"]["code"], 403);
    assert_eq!(reply["error"]["message"], "forbidden");
    backend.script(
        "subscribe",
        200,
        json!({"result": {"data": {"hello": 1}, "override": {"force_recovery": {"value": true}}}}),
        0,
    );
    let reply = c.subscribe("px:data");
    assert_eq!(reply["subscribe"]["data"], json!({"hello": 1}));
    assert_eq!(reply["subscribe"]["recoverable"], true, "override from the proxy");
    // Namespaces without the proxy never call it.
    c.subscribe("chat:plain");
    assert_eq!(backend.requests("subscribe").len(), 3);
}

#[test]
fn publish_proxy_rewrites_data_before_subscribers_see_it() {
    let backend = Backend::start();
    let server = Server::start(config(&backend, json!({})));
    let (mut sub, _) = connect_with(&server, &[("Cookie", "session=s")], json!({}));
    sub.subscribe("px:room");
    let (mut publisher, _) = connect_with(&server, &[("Cookie", "session=p")], json!({}));
    let id = publisher.command(json!({"publish": {"channel": "px:room", "data": {"text": "hi"}}}));
    assert_eq!(publisher.next_json(), json!({"id": id, "publish": {}}));
    let push = common::next_pub(&mut sub, "px:room");
    assert_eq!(push["data"], json!({"input": {"text": "hi"}, "sanitized": true}));
    assert_eq!(push["info"]["user"], "p");
    let req = backend.nth("publish", 0);
    assert_eq!(
        (req["body"]["channel"].as_str(), req["body"]["user"].as_str()),
        (Some("px:room"), Some("p"))
    );
    // A denial reaches the publisher and nothing is published.
    backend.script("publish", 200, json!({"error": {"code": 1403, "message": "moderated"}}), 0);
    let id = publisher.command(json!({"publish": {"channel": "px:room", "data": {"text": "bad"}}}));
    let reply = publisher.next_json();
    assert_eq!(
        (reply["id"].as_u64(), reply["error"]["code"].as_u64()),
        (Some(u64::from(id)), Some(1403))
    );
    // Skip history and tags from the result.
    backend.script(
        "publish",
        200,
        json!({"result": {"tags": {"t": "1"}, "skip_history": true}}),
        0,
    );
    publisher.command(json!({"publish": {"channel": "px:room", "data": {"n": 3}}}));
    let push = common::next_pub(&mut sub, "px:room");
    assert_eq!((push["data"].clone(), push["tags"].clone()), (json!({"n": 3}), json!({"t": "1"})));
    let history = server.http().api("history", json!({"channel": "px:room", "limit": 10})).json();
    let pubs = history["result"]["publications"].as_array().cloned().unwrap_or_default();
    assert_eq!(pubs.len(), 1, "skip_history kept the last one out: {history}");
}

#[test]
fn rpc_round_trip_and_errors_from_the_backend() {
    let backend = Backend::start();
    let server = Server::start(config(&backend, json!({})));
    let (mut c, _) = connect_with(&server, &[("Cookie", "session=r")], json!({}));
    let reply = rpc(&mut c, "getCurrentYear", json!({}));
    assert_eq!(reply["rpc"]["data"]["method"], "getCurrentYear");
    backend.script(
        "rpc",
        200,
        json!({"error": {"code": 1500, "message": "busy", "temporary": true}}),
        0,
    );
    let reply = rpc(&mut c, "x", json!({}));
    assert_eq!(
        (reply["error"]["code"].as_u64(), reply["error"]["temporary"].as_bool()),
        (Some(1500), Some(true))
    );
    backend.script("rpc", 503, json!({}), 0);
    assert_eq!(rpc(&mut c, "x", json!({}))["error"]["code"], 100);
    backend.script("rpc", 200, json!({"disconnect": {"code": 4000, "reason": "bye"}}), 0);
    c.command(json!({"rpc": {"method": "x"}}));
    assert_eq!(c.expect_close(), (4000, "bye".to_owned()));
}

#[test]
fn commands_after_a_pending_one_keep_their_order_and_pings_do_not_time_out_meanwhile() {
    let backend = Backend::start();
    let mut cfg =
        config(&backend, json!({"client": {"ping_interval": "1s", "pong_timeout": "500ms"}}));
    cfg["rpc"]["proxy"]["timeout"] = json!("5s");
    let server = Server::start(cfg);
    let (mut c, _) = connect_with(&server, &[("Cookie", "session=o")], json!({}));
    // The backend takes longer than two ping periods: the client's pongs wait unread behind
    // the pending command, and the connection must not be closed for them (3012).
    backend.script("rpc", 200, json!({"result": {"data": {"slow": true}}}), 2500);
    let first = c.command(json!({"rpc": {"method": "slow"}}));
    let second = c.command(json!({"presence_stats": {"channel": "chat:x"}}));
    let a = c.next_json();
    let b = c.next_json();
    assert_eq!(
        (a["id"].as_u64(), b["id"].as_u64()),
        (Some(u64::from(first)), Some(u64::from(second)))
    );
    assert_eq!(a["rpc"]["data"], json!({"slow": true}));
}

#[test]
fn refresh_proxy_extends_a_connection_past_its_first_expiry() {
    let backend = Backend::start();
    let mut cfg = config(&backend, json!({}));
    cfg["client"]["proxy"]["refresh"] = json!({"enabled": true, "endpoint": backend.url("refresh"), "include_connection_meta": true});
    // Without a refresh, the connection would be closed a second after its expiry.
    cfg["client"]["expired_close_delay"] = json!("1s");
    let server = Server::start(cfg);
    let at = common::now() + 2;
    backend.script(
        "connect",
        200,
        json!({"result": {"user": "dan", "expire_at": at, "meta": {"m": 1}}}),
        0,
    );
    let (mut c, reply) = connect_with(&server, &[], json!({}));
    assert!(reply["connect"].get("expires").is_none(), "server-side refresh: {reply}");
    let req = backend.nth("refresh", 0);
    assert_eq!(req["body"]["user"], "dan");
    assert_eq!(req["body"]["meta"], json!({"m": 1}));
    // The connection keeps answering until well past its first expiry and the close delay.
    eventually(Duration::from_secs(10), Duration::from_millis(200), || {
        let reply = rpc(&mut c, "alive", json!({}));
        assert!(reply.get("rpc").is_some(), "{reply}");
        (common::now() > at + 2).then_some(()).ok_or("still before expiry + delay".to_owned())
    });
    // The client was never told it expires: a refresh from it is a protocol violation.
    c.command(json!({"refresh": {"token": common::token("dan")}}));
    assert_eq!(c.expect_close().0, 3501);
    // A refresh that says expired closes the connection with 3005.
    backend.script("refresh", 200, json!({"result": {"expired": true}}), 0);
    backend.script(
        "connect",
        200,
        json!({"result": {"user": "eve", "expire_at": common::now() + 1}}),
        0,
    );
    let (mut c, _) = connect_with(&server, &[], json!({}));
    assert_eq!(c.expect_close().0, 3005);
}

#[test]
fn sub_refresh_proxy_keeps_and_ends_a_subscription() {
    let backend = Backend::start();
    let mut cfg = config(&backend, json!({}));
    let namespaces = cfg["channel"]["namespaces"].as_array_mut().unwrap();
    namespaces.push(
        json!({"name": "sr", "subscribe_proxy_enabled": true, "sub_refresh_proxy_enabled": true}),
    );
    let server = Server::start(cfg);
    let (mut c, _) = connect_with(&server, &[("Cookie", "session=f")], json!({}));
    backend.script("subscribe", 200, json!({"result": {"expire_at": common::now() + 1}}), 0);
    let reply = c.subscribe("sr:a");
    assert!(reply["subscribe"].get("expires").is_none(), "server-side: {reply}");
    let req = backend.nth("sub_refresh", 0);
    assert_eq!(
        (req["body"]["channel"].as_str(), req["body"]["user"].as_str()),
        (Some("sr:a"), Some("f"))
    );
    backend.script("sub_refresh", 200, json!({"result": {"expired": true}}), 0);
    backend.script("subscribe", 200, json!({"result": {"expire_at": common::now() + 1}}), 0);
    c.subscribe("sr:b");
    loop {
        match c.next_event() {
            Event::Json(v)
                if v["push"]["channel"] == "sr:b" && v["push"].get("unsubscribe").is_some() =>
            {
                assert_eq!(v["push"]["unsubscribe"]["code"], 2501, "{v}");
                break;
            }
            Event::Json(_) => {}
            Event::Closed(code, reason) => panic!("closed {code} {reason}"),
        }
    }
    // sr:a is refreshed by the server: a client sub_refresh for it is a protocol violation.
    c.command(json!({"sub_refresh": {"channel": "sr:a", "token": "t"}}));
    assert_eq!(c.expect_close().0, 3501);
}

#[test]
fn unidirectional_transports_use_the_connect_proxy() {
    let backend = Backend::start();
    let server = Server::start(config(&backend, json!({"uni_websocket": {"enabled": true}})));
    let mut c =
        Client::connect(server.port, "/connection/uni_websocket", &[("Cookie", "session=u")]);
    c.send_text("{}");
    let push = c.next_json();
    assert!(push["connect"]["client"].is_string(), "{push}");
    assert_eq!(backend.nth("connect", 0)["body"]["transport"], "uni_websocket");
    let mut c = Client::connect(server.port, "/connection/uni_websocket", &[]);
    c.send_text("{}");
    assert_eq!(c.expect_close().0, 4501, "the backend's disconnect");
}

#[test]
fn proxy_config_mistakes_are_refused_naming_the_key() {
    let out = |cfg: Value| {
        let dir = std::env::temp_dir().join(format!("rotor-proxy-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("{}.json", free_port()));
        std::fs::write(&file, cfg.to_string()).unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_rotor"))
            .args(["checkconfig", "-c", file.to_str().unwrap()])
            .output()
            .unwrap();
        (o.status.success(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let (ok, err) = out(
        json!({"client": {"proxy": {"connect": {"enabled": true, "endpoint": "grpc://127.0.0.1:1"}}}}),
    );
    assert!(!ok && err.contains("client.proxy.connect.endpoint") && err.contains("gRPC"), "{err}");
    let (ok, err) = out(
        json!({"channel": {"namespaces": [{"name": "aa", "subscribe_proxy_enabled": true, "subscribe_proxy_name": "nope"}]}}),
    );
    assert!(!ok && err.contains("channel.namespaces[0].subscribe_proxy_name"), "{err}");
    let (ok, err) = out(json!({"rpc": {"without_namespace": {"proxy_enabled": true}}}));
    assert!(!ok && err.contains("rpc.without_namespace.proxy_name"), "{err}");
    let (ok, err) = out(json!({"proxies": [{"name": "p", "endpoint": "http://127.0.0.1:1/x"}],
        "channel": {"namespaces": [{"name": "aa", "publish_proxy_enabled": true, "publish_proxy_name": "p"}]}}));
    assert!(ok, "a named proxy resolves: {err}");
}

/// Publish → every subscriber received it, `rounds` times; the latencies, sorted.
fn delivery_latencies(server: &Server, subs: &mut [Client], rounds: usize) -> Vec<Duration> {
    let mut http = server.http();
    let mut out: Vec<Duration> = (0..rounds)
        .map(|n| {
            let t = Instant::now();
            let r = http.api("publish", json!({"channel": "chat:lat", "data": {"n": n}}));
            assert_eq!(r.status, 200);
            for s in subs.iter_mut() {
                assert_eq!(common::next_pub(s, "chat:lat")["data"]["n"], n);
            }
            t.elapsed()
        })
        .collect();
    out.sort();
    out
}

#[test]
fn connects_waiting_on_a_slow_backend_do_not_delay_publications_on_their_shard() {
    let backend = Backend::start();
    let mut cfg = config(&backend, json!({"runtime": {"shards": 1}}));
    cfg["client"]["proxy"]["connect"]["timeout"] = json!("10s");
    let server = Server::start(cfg);
    let mut subs: Vec<Client> = (0..20)
        .map(|i| {
            let mut c = Client::connect(server.port, "/connection/websocket", &[]);
            c.handshake(&common::token(&format!("lat{i}")));
            c.subscribe("chat:lat");
            c
        })
        .collect();
    let base = delivery_latencies(&server, &mut subs, 30);
    // 1,000 connects on the same (only) shard, each held 1.5 s by the backend.
    backend.script("connect", 200, json!({"result": {"user": "w"}}), 1500);
    let mut waiting: Vec<Client> = (0..1000)
        .map(|_| {
            let mut c = Client::connect(server.port, "/connection/websocket", &[]);
            c.command(json!({"connect": {}}));
            c
        })
        .collect();
    eventually(Duration::from_secs(10), Duration::from_millis(20), || {
        let n = backend.requests("connect").len();
        (n >= 1000).then_some(()).ok_or(format!("{n} of 1000 connects reached the backend"))
    });
    let started = Instant::now();
    let loaded = delivery_latencies(&server, &mut subs, 30);
    let spent = started.elapsed();
    assert!(spent < Duration::from_millis(1200), "measured while connects waited: {spent:?}");
    let (base_p50, loaded_p50) = (base[base.len() / 2], loaded[loaded.len() / 2]);
    let loaded_max = loaded[loaded.len() - 1];
    eprintln!(
        "delivery to 20 subscribers: p50 {base_p50:?} max {:?} alone; p50 {loaded_p50:?} max \
         {loaded_max:?} with 1,000 connects waiting on the backend",
        base[base.len() - 1]
    );
    assert!(
        loaded_p50 < base_p50 * 10 + Duration::from_millis(50),
        "p50 {loaded_p50:?} with 1,000 waiting connects vs {base_p50:?} without"
    );
    assert!(
        loaded_max < Duration::from_millis(500),
        "max {loaded_max:?}: blocked behind the backend"
    );
    for c in &mut waiting {
        let reply = c.next_json();
        assert!(reply["connect"]["client"].is_string(), "{reply}");
    }
}

#[test]
fn https_endpoints_are_verified_against_the_configured_ca() {
    let dir = std::env::temp_dir().join(format!(
        "rotor-proxy-tls-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let [ca, cert, key] = make_certificates(&dir);
    let backend = Backend::start_with(&[&cert, &key]);
    let https = |event: &str| format!("https://127.0.0.1:{}/{event}", backend.tls_port);
    let connect = |ca_pem: Option<&std::path::Path>| {
        let mut proxy =
            json!({"enabled": true, "endpoint": https("connect"), "http_headers": ["cookie"]});
        if let Some(ca) = ca_pem {
            proxy["http"] =
                json!({"tls": {"enabled": true, "server_ca_pem": ca.to_str().unwrap()}});
        }
        let mut cfg = common::base_config();
        merge(&mut cfg, json!({"client": {"proxy": {"connect": proxy}}}));
        let server = Server::start(cfg);
        let (_c, reply) = connect_with(&server, &[("Cookie", "session=tls")], json!({}));
        reply
    };
    let reply = connect(Some(&ca));
    assert!(reply["connect"]["client"].is_string(), "verified with server_ca_pem: {reply}");
    assert_eq!(backend.nth("connect", 0)["headers"]["cookie"], "session=tls");
    // Without the CA the backend's certificate is not trusted: the call fails, error 100.
    assert_eq!(connect(None)["error"]["code"], 100);
    assert_eq!(backend.requests("connect").len(), 1, "nothing reached an untrusted backend");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_kept_alive_connection_the_backend_closed_is_replaced_without_an_error() {
    let backend = Backend::spawn(&[], &[("BACKEND_IDLE_TIMEOUT", "0.3")]);
    let server = Server::start(config(&backend, json!({})));
    let (mut c, _) = connect_with(&server, &[("Cookie", "session=k")], json!({}));
    assert!(rpc(&mut c, "one", json!({})).get("rpc").is_some());
    // The backend drops the idle connection Rotor's RPC proxy kept: wait for that.
    eventually(Duration::from_secs(10), Duration::from_millis(50), || {
        let closed = backend.requests("_closed");
        let rpc_closed = closed.iter().any(|c| c["served"].to_string().contains("rpc"));
        rpc_closed.then_some(()).ok_or(format!("closed so far: {closed:?}"))
    });
    let reply = rpc(&mut c, "two", json!({}));
    assert_eq!(reply["rpc"]["data"]["method"], "two", "{reply}");
}

#[test]
fn named_proxies_serve_rpc_namespaces_and_binary_encoding_sends_base64() {
    let backend = Backend::start();
    let server = Server::start(config(
        &backend,
        json!({
            "proxies": [{"name": "bin", "endpoint": backend.url("rpc"), "binary_encoding": true}],
            "rpc": {"namespaces": [
                {"name": "files", "proxy_enabled": true, "proxy_name": "bin"},
                {"name": "off"}
            ]}
        }),
    ));
    let (mut c, _) = connect_with(&server, &[("Cookie", "session=n")], json!({}));
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    backend.script("rpc", 200, json!({"result": {"b64data": b64(r#"{"size":3}"#)}}), 0);
    let reply = rpc(&mut c, "files:stat", json!({"path": "/a"}));
    assert_eq!(reply["rpc"]["data"], json!({"size": 3}));
    let req = backend.nth("rpc", 0);
    assert_eq!(req["body"]["encoding"], "binary");
    assert_eq!(req["body"]["b64data"], b64(r#"{"path":"/a"}"#));
    assert!(req["body"].get("data").is_none(), "{req}");
    assert_eq!(rpc(&mut c, "off:x", json!({}))["error"]["code"], 108, "no proxy in namespace");
    assert_eq!(rpc(&mut c, "nope:x", json!({}))["error"]["code"], 104, "unknown namespace");
    // The default RPC proxy (JSON encoding) still serves methods without a namespace.
    rpc(&mut c, "plain", json!({"v": 1}));
    assert_eq!(backend.nth("rpc", 1)["body"]["data"], json!({"v": 1}));
}

#[test]
fn a_connection_that_closes_while_its_proxy_call_waits_is_forgotten() {
    let backend = Backend::start();
    let server = Server::start(config(&backend, json!({"runtime": {"shards": 1}})));
    backend.script("connect", 200, json!({"result": {"user": "gone"}}), 300);
    let mut c = Client::connect(server.port, "/connection/websocket", &[]);
    c.command(json!({"connect": {}}));
    backend.nth("connect", 0);
    drop(c);
    // Once the late answer has come back, the shard serves others, and counts nobody.
    backend.script("connect", 200, json!({"result": {"user": "next"}}), 0);
    let (mut next, reply) = connect_with(&server, &[], json!({}));
    assert!(reply["connect"]["client"].is_string(), "{reply}");
    eventually(Duration::from_secs(10), Duration::from_millis(50), || {
        let info = server.http().api("info", json!({})).json();
        let clients = info["result"]["nodes"][0]["num_clients"].as_u64();
        (clients == Some(1)).then_some(()).ok_or(format!("{info}"))
    });
    assert!(rpc(&mut next, "still", json!({})).get("rpc").is_some());
}

#[test]
fn protobuf_clients_send_and_get_binary_payloads_through_a_binary_encoding_proxy() {
    use common::pb_client::{next, send};
    use rotor::protocol::pb;
    let backend = Backend::start();
    let server = Server::start(config(
        &backend,
        json!({
            "proxies": [{"name": "bin", "endpoint": backend.url("rpc"), "binary_encoding": true}],
            "rpc": {"namespaces": [{"name": "files", "proxy_enabled": true, "proxy_name": "bin"}]}
        }),
    ));
    let headers = [("Sec-WebSocket-Protocol", "centrifuge-protobuf"), ("Cookie", "session=pb")];
    let mut c = Client::connect(server.port, "/connection/websocket", &headers);
    let connect = pb::ConnectRequest::default();
    send(&mut c, &[pb::Command { id: 1, connect: Some(connect), ..Default::default() }]);
    let reply = next(&mut c).remove(0);
    assert!(reply.connect.is_some_and(|r| !r.client.is_empty()), "connected through the proxy");
    assert_eq!(backend.nth("connect", 0)["body"]["protocol"], "protobuf");
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    backend.script("rpc", 200, json!({"result": {"b64data": b64(&[0xfe, 0x02])}}), 0);
    let rpc = |id: u32, method: &str| pb::Command {
        id,
        rpc: Some(pb::RpcRequest { method: method.into(), data: vec![0xff, 0x00, 0x01].into() }),
        ..Default::default()
    };
    send(&mut c, &[rpc(2, "files:raw")]);
    let reply = next(&mut c).remove(0);
    assert_eq!(reply.rpc.map(|r| r.data.to_vec()), Some(vec![0xfe, 0x02]), "bytes back as sent");
    let req = backend.nth("rpc", 0);
    assert_eq!(
        (req["body"]["encoding"].as_str(), req["body"]["protocol"].as_str()),
        (Some("binary"), Some("protobuf"))
    );
    assert_eq!(req["body"]["b64data"], b64(&[0xff, 0x00, 0x01]));
    // The default RPC proxy expects JSON: bytes that are not JSON cannot be sent to it.
    send(&mut c, &[rpc(3, "plain")]);
    let reply = next(&mut c).remove(0);
    assert_eq!(reply.error.map(|e| e.code), Some(100));
    assert_eq!(backend.requests("rpc").len(), 1, "nothing was sent");
}
