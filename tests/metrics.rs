//! Observability end to end: `/metrics` with Centrifugo's names counted exactly across shards,
//! the internal port (`http_server.internal_port`) that carries the API and the operator
//! endpoints, health and readiness, and a real Prometheus server (Debian package) scraping a
//! real node.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::needless_pass_by_value,
    reason = "test harness code: a failure must panic loudly, and helpers take what tests build"
)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{
    base_config, connect_as, eventually, free_port, merge, next_pub, Http, Response, Server,
    API_KEY,
};
use serde_json::{json, Value};

fn get(port: u16, path: &str) -> Response {
    Http::connect(port).raw(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
}

fn publish(port: u16, channel: &str, n: u64) {
    let body = json!({"channel": channel, "data": {"n": n}}).to_string();
    let r = Http::connect(port).post("/api/publish", &[("X-API-Key", API_KEY)], &body);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["result"].is_object(), "{}", String::from_utf8_lossy(&r.body));
}

/// The value of one series (exact name and labels as the text format writes them).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.parse().unwrap())
}

fn scrape(port: u16) -> String {
    let r = get(port, "/metrics");
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    String::from_utf8(r.body).unwrap()
}

/// A node with metrics on and its own internal port; returns that port too.
fn with_internal_port() -> (Server, u16) {
    let internal = free_port();
    let mut cfg = base_config();
    merge(
        &mut cfg,
        json!({"http_server": {"internal_port": internal}, "prometheus": {"enabled": true}}),
    );
    (Server::start(cfg), internal)
}

#[test]
fn counts_are_exact_across_shards() {
    let mut cfg = base_config();
    merge(&mut cfg, json!({"prometheus": {"enabled": true}}));
    let server = Server::start(cfg);
    // Round-robin placement: three connections in a row land on shards 0, 1 and 2.
    let mut clients: Vec<_> = (0..3).map(|i| connect_as(&server, &format!("u{i}"))).collect();
    for c in &mut clients {
        assert!(c.subscribe("chat:metrics")["subscribe"].is_object());
    }
    // Each HTTP connection lands on the next shard too: publishes come in on every shard.
    for n in 0..6 {
        publish(server.port, "chat:metrics", n);
    }
    for c in &mut clients {
        for n in 0..6 {
            assert_eq!(next_pub(c, "chat:metrics")["data"]["n"], n);
        }
    }
    // A refused subscribe is an error reply counted with its method and code.
    let id = clients[0].command(json!({"subscribe": {"channel": "nowhere:x"}}));
    let r = clients[0].next_json();
    assert_eq!((r["id"].clone(), r["error"]["code"].clone()), (json!(id), json!(102)));

    let text = scrape(server.port);
    let expect = [
        ("centrifugo_node_num_clients", 3.0),
        ("centrifugo_node_num_users", 3.0),
        ("centrifugo_node_num_subscriptions", 3.0),
        ("centrifugo_node_num_channels", 1.0),
        ("centrifugo_node_num_nodes", 1.0),
        (
            "centrifugo_transport_messages_sent{channel_namespace=\"\",frame_type=\"push_publication\",transport=\"websocket\"}",
            18.0,
        ),
        (
            "centrifugo_node_messages_sent_count{channel_namespace=\"\",type=\"publication\"}",
            6.0,
        ),
        (
            "centrifugo_api_command_duration_seconds_histogram_count{method=\"publish\",protocol=\"http\"}",
            6.0,
        ),
        (
            "centrifugo_client_connections_accepted{accept_protocol=\"\",client_name=\"unregistered\",client_version=\"unversioned\",transport=\"websocket\"}",
            3.0,
        ),
        (
            "centrifugo_client_num_reply_errors{channel_namespace=\"\",code=\"102\",method=\"subscribe\"}",
            1.0,
        ),
        (
            "centrifugo_client_command_duration_seconds_histogram_count{channel_namespace=\"\",method=\"subscribe\"}",
            4.0,
        ),
        ("centrifugo_node_action_count{action=\"add_client\",channel_namespace=\"\"}", 3.0),
        ("centrifugo_node_action_count{action=\"add_subscription\",channel_namespace=\"\"}", 3.0),
        ("centrifugo_node_action_count{action=\"broker_subscribe\",channel_namespace=\"\"}", 1.0),
        (
            "centrifugo_node_broadcast_duration_seconds_count{channel_namespace=\"\",type=\"publication\"}",
            18.0,
        ),
        ("rotor_shard_connections{shard=\"0\"}", 1.0),
        ("rotor_shard_connections{shard=\"1\"}", 1.0),
        ("rotor_shard_connections{shard=\"2\"}", 1.0),
    ];
    for (series, want) in expect {
        assert_eq!(value(&text, series), Some(want), "{series} in\n{text}");
    }
    // Commands read, per transport: four subscribes (one refused).
    let received = "centrifugo_transport_messages_received{channel_namespace=\"\",frame_type=\"subscribe\",transport=\"websocket\"}";
    assert_eq!(value(&text, received), Some(4.0), "{text}");

    // A client that leaves is no longer counted.
    drop(clients.pop());
    eventually(Duration::from_secs(5), Duration::from_millis(20), || {
        match value(&scrape(server.port), "centrifugo_node_num_clients") {
            Some(2.0) => Ok(()),
            v => Err(format!("num_clients {v:?} after a client left")),
        }
    });
}

#[test]
fn the_internal_port_carries_the_api_metrics_and_health_and_the_main_port_only_clients() {
    let (server, internal) = with_internal_port();
    for path in ["/metrics", "/health", "/health/ready"] {
        assert_eq!(get(server.port, path).status, 404, "{path} is internal");
    }
    let r = server.http().api("info", json!({}));
    assert_eq!(r.status, 404, "the API moved to the internal port");
    assert_eq!(get(internal, "/health").body, b"{}");
    assert_eq!(get(internal, "/health/ready").status, 200);
    let mut c = connect_as(&server, "u1");
    assert!(c.subscribe("chat:internal")["subscribe"].is_object());
    publish(internal, "chat:internal", 7);
    assert_eq!(next_pub(&mut c, "chat:internal")["data"]["n"], 7);
    assert_eq!(value(&scrape(internal), "centrifugo_node_num_clients"), Some(1.0));
    let ws = get(internal, "/connection/websocket");
    assert_eq!(ws.status, 404, "no client transport on the internal port");
}

#[test]
fn metrics_are_absent_unless_enabled() {
    let server = Server::start(base_config());
    assert_eq!(get(server.port, "/metrics").status, 404);
}

/// A `prometheus` server (Debian package) on a free loopback port, scraping `target` every
/// second, stopped by PID on drop.
struct Prometheus {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Prometheus {
    fn start(target: u16) -> Prometheus {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("rotor-prometheus-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: rotor\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package `prometheus`) must be installed");
        Prometheus { child, port, dir }
    }

    /// The value of an instant query with one result, if it has one.
    fn query(&self, promql: &str) -> Option<f64> {
        let q: String = promql
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        let mut http = Http::from_stream(stream);
        let r = http.raw(
            format!("GET /api/v1/query?query={q} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes(),
        );
        if r.status != 200 {
            return None;
        }
        let body: Value = serde_json::from_slice(&r.body).ok()?;
        let v = body["data"]["result"].as_array()?.first()?["value"][1].as_str()?.to_owned();
        v.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_real_prometheus_scrapes_rotor() {
    let (server, internal) = with_internal_port();
    let prometheus = Prometheus::start(internal);
    let mut clients: Vec<_> = (0..3).map(|i| connect_as(&server, &format!("p{i}"))).collect();
    for c in &mut clients {
        assert!(c.subscribe("chat:prom")["subscribe"].is_object());
    }
    for n in 0..5 {
        publish(internal, "chat:prom", n);
    }
    for c in &mut clients {
        for n in 0..5 {
            assert_eq!(next_pub(c, "chat:prom")["data"]["n"], n);
        }
    }
    let wanted = [
        ("centrifugo_node_num_clients", 3.0),
        ("centrifugo_api_command_duration_seconds_histogram_count{method=\"publish\"}", 5.0),
        ("sum(centrifugo_transport_messages_sent{frame_type=\"push_publication\"})", 15.0),
        ("sum(centrifugo_node_messages_sent_count{type=\"publication\"})", 5.0),
    ];
    // Prometheus scrapes every second and needs a moment to start: poll its API.
    for (promql, want) in wanted {
        eventually(Duration::from_secs(60), Duration::from_millis(250), || {
            match prometheus.query(promql) {
                Some(got) if got == want => Ok(()),
                got => Err(format!("{promql}: Prometheus has {got:?}, want {want}")),
            }
        });
    }
}

#[test]
fn info_carries_aggregated_metrics_and_process_use() {
    let mut cfg = base_config();
    merge(&mut cfg, json!({"node": {"info_metrics_aggregate_interval": "1s"}}));
    let server = Server::start(cfg);
    let _client = connect_as(&server, "u1");
    let node = eventually(Duration::from_secs(10), Duration::from_millis(100), || {
        let info = server.http().api("info", json!({})).json();
        let node = info["result"]["nodes"][0].clone();
        match node["metrics"]["items"]["centrifugo.node.num_clients"].as_f64() {
            Some(1.0) => Ok(node),
            _ => Err(format!("no aggregated client count yet: {node}")),
        }
    });
    assert_eq!(node["metrics"]["interval"], 1.0, "{node}");
    assert!(node["process"]["rss"].as_i64().unwrap() > 1 << 20, "{node}");
    assert!(node["process"]["cpu"].as_f64().unwrap() >= 0.0, "{node}");
    let keys: Vec<&String> = node["metrics"]["items"].as_object().unwrap().keys().collect();
    assert!(keys.iter().all(|k| k.starts_with("centrifugo.")), "{keys:?}");
}

#[test]
fn log_file_gets_json_lines_and_an_abnormal_disconnect_is_logged_once() {
    let path = std::env::temp_dir().join(format!(
        "rotor-log-{}-{}.jsonl",
        std::process::id(),
        free_port()
    ));
    let mut cfg = base_config();
    merge(&mut cfg, json!({"log": {"file": path.display().to_string()}}));
    let server = Server::start(cfg);
    let mut c = server.ws();
    let reply = c.handshake(&common::token("logged-user"));
    let client = reply["connect"]["client"].as_str().unwrap().to_owned();
    // A command without an id is a protocol violation: 3501.
    c.send_text(r#"{"subscribe":{"channel":"chat:x"}}"#);
    assert_eq!(c.expect_close().0, 3501);
    let line = eventually(Duration::from_secs(5), Duration::from_millis(20), || {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let closes: Vec<&Value> = lines
            .iter()
            .filter(|l| l["fields"]["message"] == "closing client connection")
            .collect();
        match closes.as_slice() {
            [one] => Ok((*one).clone()),
            other => Err(format!("{} close lines in {text}", other.len())),
        }
    });
    let _ = std::fs::remove_file(&path);
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["fields"]["client"], client.as_str(), "{line}");
    assert_eq!(line["fields"]["user"], "logged-user", "{line}");
    assert_eq!(line["fields"]["code"], 3501, "{line}");
    assert_eq!(line["fields"]["reason"], "bad request", "{line}");
}

#[test]
fn a_node_measures_the_pub_sub_lag_of_what_another_node_published() {
    let redis = common::RedisServer::start();
    let node = || {
        let mut cfg = base_config();
        merge(
            &mut cfg,
            json!({
                "prometheus": {"enabled": true},
                "engine": {"type": "redis", "redis": {"address": format!("redis://127.0.0.1:{}", redis.port)}}
            }),
        );
        Server::start(cfg)
    };
    let (a, b) = (node(), node());
    let mut on_b = connect_as(&b, "lagging");
    assert!(on_b.subscribe("chat:lag")["subscribe"].is_object());
    for n in 0..3 {
        publish(a.port, "chat:lag", n);
    }
    for n in 0..3 {
        assert_eq!(next_pub(&mut on_b, "chat:lag")["data"]["n"], n);
    }
    let text = scrape(b.port);
    let count = "centrifugo_node_pub_sub_lag_seconds_count{channel_namespace=\"\"}";
    assert_eq!(value(&text, count), Some(3.0), "{text}");
    let under_a_second =
        "centrifugo_node_pub_sub_lag_seconds_bucket{channel_namespace=\"\",le=\"1\"}";
    assert_eq!(value(&text, under_a_second), Some(3.0), "loopback lag is far below 1 s: {text}");
}

#[test]
fn readiness_fails_while_the_broker_is_away_and_while_draining() {
    let mut redis = common::RedisServer::start();
    let mut cfg = base_config();
    merge(
        &mut cfg,
        json!({
            "shutdown": {"timeout": "10s"},
            "engine": {"type": "redis", "redis": {"address": format!("redis://127.0.0.1:{}", redis.port)}}
        }),
    );
    let mut server = Server::start(cfg);
    assert_eq!(get(server.port, "/health/ready").status, 200);
    redis.kill();
    let why = eventually(Duration::from_secs(10), Duration::from_millis(50), || {
        let r = get(server.port, "/health/ready");
        match r.status {
            503 => Ok(r.json()),
            s => Err(format!("still {s} with Redis gone")),
        }
    });
    assert_eq!(why["error"], "broker unavailable");
    assert_eq!(get(server.port, "/health").status, 200, "liveness does not depend on Redis");

    // Draining: a client that never answers the close keeps the drain going, and meanwhile a
    // readiness check fails (the node stops accepting, or answers 503 to one already read).
    let _silent = server.ws();
    let pid = server.pid().to_string();
    let _ = std::process::Command::new("kill").args(["-TERM", &pid]).status();
    eventually(Duration::from_secs(5), Duration::from_millis(20), || {
        match ready_status(server.port) {
            Some(200) => Err("still ready after SIGTERM".to_owned()),
            _ => Ok(()),
        }
    });
    assert!(server.terminate().success());
}

/// `/health/ready`'s status, `None` when no answer comes (refused or closed).
fn ready_status(port: u16) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /health/ready HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

#[test]
fn an_insecure_admin_needs_no_session() {
    let mut cfg = base_config();
    merge(&mut cfg, json!({"admin": {"enabled": true, "insecure": true}}));
    let server = Server::start(cfg);
    let r = server.http().post("/admin/api", &[], r#"{"method":"info","params":{}}"#);
    assert_eq!(r.status, 200);
    assert!(r.json()["result"]["nodes"].is_array(), "{}", String::from_utf8_lossy(&r.body));
    let init = get(server.port, "/admin/init").json();
    assert_eq!(init, json!({"authenticated": true, "edition": "oss", "insecure": true}));
}
