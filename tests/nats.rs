//! Multi-node end-to-end tests with the NATS broker: a real `nats-server` (Debian package) on a
//! free loopback port, started and stopped by PID here, and two real Rotor nodes using it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::needless_pass_by_value,
    reason = "test harness code: a failure must panic loudly, and helpers take what tests build"
)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    api_publish as publish, base_config, connect_as as connect, eventually, free_port, merge,
    next_pub, wait_for_port, RedisServer, Server,
};
use serde_json::json;

/// A `nats-server` owned by one test, stopped by PID on drop.
struct Nats {
    child: Option<Child>,
    port: u16,
}

fn nats_bin() -> &'static str {
    if std::path::Path::new("/usr/sbin/nats-server").exists() {
        "/usr/sbin/nats-server"
    } else {
        "nats-server"
    }
}

impl Nats {
    fn start() -> Nats {
        let mut n = Nats { child: None, port: free_port() };
        n.spawn();
        n
    }

    fn spawn(&mut self) {
        let child = Command::new(nats_bin())
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server must be installed (Debian package nats-server)");
        self.child = Some(child);
        wait_for_port(self.port, "nats-server");
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

fn node(nats: &Nats, name: &str) -> Server {
    let mut cfg = base_config();
    merge(
        &mut cfg,
        json!({
            "node": {"name": name},
            "broker": {"enabled": true, "type": "nats",
                       "nats": {"url": format!("nats://127.0.0.1:{}", nats.port)}},
            "channel": {"namespaces": [
                {"name": "chat", "allow_subscribe_for_client": true, "join_leave": true,
                 "force_push_join_leave": true},
                {"name": "hist", "allow_subscribe_for_client": true, "history_size": 10,
                 "history_ttl": "60s"}
            ]}
        }),
    );
    Server::start(cfg)
}

#[test]
fn publications_and_join_leave_cross_nodes_over_nats() {
    let nats = Nats::start();
    let (a, b) = (node(&nats, "a"), node(&nats, "b"));
    let mut on_a = connect(&a, "alice");
    on_a.subscribe("chat:room");
    let mut on_b = connect(&b, "bob");
    on_b.subscribe("chat:room");
    loop {
        let m = on_a.next_json();
        if m["push"]["join"]["info"]["user"] == "bob" {
            break;
        }
    }
    for i in 0..5 {
        let r = publish(&b, "chat:room", json!({"n": i}));
        assert_eq!(r, json!({"result": {}}), "no history, no position");
    }
    for c in [&mut on_a, &mut on_b] {
        for i in 0..5 {
            let p = next_pub(c, "chat:room");
            assert_eq!(p["data"], json!({"n": i}));
            assert!(p.get("offset").is_none(), "{p}");
        }
    }
    drop(on_b);
    loop {
        let m = on_a.next_json();
        if m["push"]["leave"]["info"]["user"] == "bob" {
            break;
        }
    }
}

#[test]
fn history_is_not_available_and_nodes_see_each_other() {
    let nats = Nats::start();
    let (a, b) = (node(&nats, "a"), node(&nats, "b"));
    let r = a.http().api("history", json!({"channel": "hist:x"})).json();
    assert_eq!(r["error"]["code"], 108, "{r}");

    let mut c = connect(&a, "carol");
    b.http()
        .api("disconnect", json!({"user": "carol", "disconnect": {"code": 4100, "reason": "x"}}));
    assert_eq!(c.expect_close(), (4100, "x".to_owned()));

    eventually(Duration::from_secs(10), Duration::from_millis(200), || {
        let info = b.http().api("info", json!({})).json();
        let mut names: Vec<String> = info["result"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        (names == ["a", "b"]).then_some(()).ok_or(format!("info never listed both nodes: {info}"))
    });
}

#[test]
fn publishing_fails_fast_while_nats_is_down_and_resumes_after() {
    let mut nats = Nats::start();
    let (a, b) = (node(&nats, "a"), node(&nats, "b"));
    let mut c = connect(&a, "dan");
    c.subscribe("chat:r");
    nats.kill();
    // The broken connection is noticed at its next read; until then a publish may still be
    // written to it. Once noticed, every publish fails at once with 100.
    eventually(Duration::from_secs(10), Duration::from_millis(20), || {
        let started = Instant::now();
        let r = publish(&b, "chat:r", json!({"n": 1}));
        assert!(started.elapsed() < Duration::from_secs(2), "a publish waited: {r}");
        (r["error"]["code"] == 100).then_some(()).ok_or(format!("publish still accepted: {r}"))
    });
    nats.spawn();
    // Once both nodes are back (and A subscribed again), publications flow again.
    eventually(Duration::from_secs(10), Duration::from_millis(100), || {
        let r = publish(&b, "chat:r", json!({"n": 2}));
        if r.get("error").is_none() {
            c.ws.get_ref().set_read_timeout(Some(Duration::from_millis(500))).unwrap();
            if let Ok(tungstenite::Message::Text(t)) = c.ws.read() {
                if t.as_str().contains("\"n\":2") {
                    return Ok(());
                }
            }
        }
        Err("publications never flowed again".to_owned())
    });
}

#[test]
fn api_channels_covers_both_nodes_over_nats() {
    let nats = Nats::start();
    let (a, b) = (node(&nats, "a"), node(&nats, "b"));
    let mut c = connect(&a, "erin");
    c.subscribe("chat:z");
    eventually(Duration::from_secs(10), Duration::from_millis(200), || {
        let r = b.http().api("channels", json!({})).json();
        let seen = r["result"]["channels"] == json!({"chat:z": {"num_clients": 1}});
        seen.then_some(()).ok_or(format!("channels never saw node a: {r}"))
    });
}

#[test]
fn nats_between_nodes_with_presence_in_redis() {
    let nats = Nats::start();
    let redis = RedisServer::start();
    let redis_port = redis.port;
    let start = |name: &str| {
        let mut cfg = base_config();
        merge(
            &mut cfg,
            json!({
                "node": {"name": name},
                "broker": {"enabled": true, "type": "nats",
                           "nats": {"url": format!("nats://127.0.0.1:{}", nats.port)}},
                "presence_manager": {"enabled": true, "type": "redis",
                    "redis": {"address": format!("127.0.0.1:{redis_port}")}},
                "channel": {"namespaces": [{"name": "chat", "allow_subscribe_for_client": true,
                    "presence": true}]}
            }),
        );
        Server::start(cfg)
    };
    let (a, b) = (start("a"), start("b"));
    let mut on_a = connect(&a, "fay");
    on_a.subscribe("chat:p");
    let mut on_b = connect(&b, "gil");
    on_b.subscribe("chat:p");
    // Node b answers the subscribe without waiting for Redis to store gil's presence entry,
    // so a read on node a right after the reply may come before that write.
    eventually(Duration::from_secs(5), Duration::from_millis(50), || {
        let p = a.http().api("presence", json!({"channel": "chat:p"})).json();
        let mut users: Vec<String> = p["result"]["presence"]
            .as_object()
            .unwrap_or_else(|| panic!("{p}"))
            .values()
            .map(|v| v["user"].as_str().unwrap().to_owned())
            .collect();
        users.sort();
        let both = users == ["fay", "gil"];
        both.then_some(()).ok_or(format!("presence from Redis never covered both nodes: {users:?}"))
    });
    publish(&b, "chat:p", json!({"x": 1}));
    assert_eq!(next_pub(&mut on_a, "chat:p")["data"], json!({"x": 1}));
}
