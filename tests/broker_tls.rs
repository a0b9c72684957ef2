//! TLS between Rotor and its brokers: a real `redis-server` serving TLS (Debian builds it with
//! TLS) and a real `nats-server` with a TLS block, both on free loopback ports with a CA and
//! certificate made here by the openssl CLI, started and stopped by PID; two real Rotor nodes
//! on each, checked by what their clients see. A wrong CA never gives a cleartext or
//! unverified connection: publishing fails as it does with the broker down.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::needless_pass_by_value,
    reason = "test harness code: a failure must panic loudly, and helpers take what tests build"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::certs::Pki;
use common::{
    api_publish as publish, base_config, connect_as as connect, eventually, free_port, merge,
    next_pub, wait_for_port, RedisServer, Server,
};
use serde_json::{json, Value};

/// A CA and a server certificate for 127.0.0.1 in a directory removed on drop.
struct Certs {
    dir: PathBuf,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    _pki: Pki,
}

impl Certs {
    fn make(what: &str) -> Certs {
        let pki = Pki::new(what);
        let (cert, key) = pki.server("server");
        Certs { dir: pki.dir.clone(), ca: pki.ca.clone(), cert, key, _pki: pki }
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// A redis-server with its usual cleartext port (for the harness's own checks) and a TLS port
/// that Rotor uses.
fn redis_tls(certs: &Certs) -> (RedisServer, u16) {
    let tls_port = free_port();
    let redis = RedisServer::start_with(|_, dir| {
        let args = [
            "--save",
            "",
            "--dir",
            &path(dir),
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            &path(&certs.cert),
            "--tls-key-file",
            &path(&certs.key),
            "--tls-ca-cert-file",
            &path(&certs.ca),
            "--tls-auth-clients",
            "no",
        ];
        args.map(String::from).to_vec()
    });
    wait_for_port(tls_port, "redis-server's TLS port");
    (redis, tls_port)
}

fn node(name: &str, patch: Value) -> Server {
    let mut cfg = base_config();
    merge(&mut cfg, json!({"node": {"name": name}}));
    merge(&mut cfg, patch);
    Server::start(cfg)
}

/// A subscriber on `b` sees what the API publishes on `a`.
fn publication_crosses(a: &Server, b: &Server) {
    let mut on_b = connect(b, "bob");
    let r = on_b.subscribe("chat:tls");
    assert!(r["subscribe"].is_object(), "{r}");
    // The subscription reaches the broker asynchronously on the other node: publish until
    // one arrives, then the next ones in order.
    let first = eventually(Duration::from_secs(10), Duration::from_millis(100), || {
        let r = publish(a, "chat:tls", json!({"n": 0}));
        r.get("error").is_none().then_some(r.clone()).ok_or(format!("publish failed: {r}"))
    });
    assert!(first.get("error").is_none(), "{first}");
    assert_eq!(next_pub(&mut on_b, "chat:tls")["data"], json!({"n": 0}));
    for n in 1..4 {
        let r = publish(a, "chat:tls", json!({"n": n}));
        assert!(r.get("error").is_none(), "{r}");
        assert_eq!(next_pub(&mut on_b, "chat:tls")["data"], json!({"n": n}));
    }
}

#[test]
fn redis_over_tls_carries_publications_between_nodes() {
    let certs = Certs::make("redis-tls");
    let (redis, tls_port) = redis_tls(&certs);
    // One node by scheme (rediss://), the other by the TLS object; both trust only the CA.
    let a = node(
        "a",
        json!({"engine": {"type": "redis", "redis": {
            "address": format!("rediss://127.0.0.1:{tls_port}"),
            "tls": {"server_ca_pem": path(&certs.ca)}}}}),
    );
    let ca_pem = std::fs::read_to_string(&certs.ca).unwrap();
    let b = node(
        "b",
        json!({"engine": {"type": "redis", "redis": {
            "address": format!("127.0.0.1:{tls_port}"),
            "tls": {"enabled": true, "server_ca_pem": ca_pem}}}}),
    );
    publication_crosses(&a, &b);
    // The scripts were loaded through the TLS port (the cleartext one is the harness's).
    let clients = redis.command(&["CLIENT", "LIST"]);
    let on_tls = clients.lines().filter(|l| l.contains(&format!("laddr=127.0.0.1:{tls_port}")));
    assert!(on_tls.count() >= 4, "both nodes' links use the TLS port: {clients}");
}

#[test]
fn redis_with_a_wrong_ca_is_never_used_and_publishing_fails() {
    let certs = Certs::make("redis-tls");
    let other = Certs::make("redis-other-ca");
    let (redis, tls_port) = redis_tls(&certs);
    let a = node(
        "a",
        json!({"engine": {"type": "redis", "redis": {
            "address": format!("rediss://127.0.0.1:{tls_port}"),
            "tls": {"server_ca_pem": path(&other.ca)}}}}),
    );
    // As with Redis down: the node runs, publishing fails at once (internal error).
    let r = publish(&a, "chat:x", json!({"n": 1}));
    assert_eq!(r["error"]["code"], 100, "{r}");
    // No command ever reached Redis over the failed handshakes, nor in cleartext.
    let stats = redis.command(&["INFO", "commandstats"]);
    assert!(!stats.contains("cmdstat_script"), "{stats}");
    let r = publish(&a, "chat:x", json!({"n": 2}));
    assert_eq!(r["error"]["code"], 100, "{r}");
}

/// `rediss+sentinel://`: the Sentinel is asked over TLS (`sentinel_tls`), and the master it
/// names is reached over TLS too (`tls`).
#[test]
fn a_rediss_sentinel_url_reaches_the_master_over_tls() {
    let certs = Certs::make("sentinel-tls");
    let (master, master_tls) = redis_tls(&certs);
    let tls_args = |port: u16| {
        format!(
            "tls-port {port}\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n\
             tls-auth-clients no\ntls-replication yes\n",
            path(&certs.cert),
            path(&certs.key),
            path(&certs.ca)
        )
    };
    let sentinel_tls = free_port();
    let sentinel = RedisServer::start_with(|port, dir| {
        let conf = dir.join("sentinel.conf");
        let text = format!(
            "port {port}\nbind 127.0.0.1\ndir {}\n{}sentinel monitor main 127.0.0.1 {master_tls} 1\n",
            dir.display(),
            tls_args(sentinel_tls)
        );
        std::fs::write(&conf, text).unwrap();
        vec![conf.display().to_string(), "--sentinel".to_owned()]
    });
    wait_for_port(sentinel_tls, "the Sentinel's TLS port");
    let ca = path(&certs.ca);
    let object = json!({
        "address": format!("rediss+sentinel://127.0.0.1:{sentinel_tls}?sentinel_master_name=main"),
        "tls": {"server_ca_pem": ca}, "sentinel_tls": {"server_ca_pem": ca}
    });
    let a = node("a", json!({"engine": {"type": "redis", "redis": object.clone()}}));
    let b = node("b", json!({"engine": {"type": "redis", "redis": object}}));
    publication_crosses(&a, &b);
    let clients = master.command(&["CLIENT", "LIST"]);
    let laddr = format!("laddr=127.0.0.1:{master_tls}");
    let on_tls = clients.lines().filter(|l| l.contains(&laddr) && !l.contains("name=sentinel"));
    assert!(on_tls.count() >= 4, "both nodes' links use the master's TLS port: {clients}");
    drop(sentinel);
}

/// A `nats-server` with TLS required, owned by one test and stopped by PID on drop.
struct Nats {
    child: Child,
    port: u16,
    _certs: Certs,
}

impl Nats {
    fn start(certs: Certs) -> Nats {
        let port = free_port();
        let conf = certs.dir.join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "listen: \"127.0.0.1:{port}\"\ntls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n}}\n",
                path(&certs.cert),
                path(&certs.key)
            ),
        )
        .unwrap();
        let bin = if Path::new("/usr/sbin/nats-server").exists() {
            "/usr/sbin/nats-server"
        } else {
            "nats-server"
        };
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server must be installed (Debian package nats-server)");
        wait_for_port(port, "nats-server");
        Nats { child, port, _certs: certs }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nats_node(name: &str, url: String, tls: Value) -> Server {
    node(
        name,
        json!({"broker": {"enabled": true, "type": "nats", "nats": {"url": url, "tls": tls}}}),
    )
}

#[test]
fn nats_over_tls_carries_publications_between_nodes() {
    let certs = Certs::make("nats-tls");
    let ca = path(&certs.ca);
    let nats = Nats::start(certs);
    let a = nats_node("a", format!("tls://127.0.0.1:{}", nats.port), json!({"server_ca_pem": ca}));
    let b = nats_node(
        "b",
        format!("nats://127.0.0.1:{}", nats.port),
        json!({"enabled": true, "server_ca_pem": ca}),
    );
    publication_crosses(&a, &b);
}

#[test]
fn nats_tls_with_a_wrong_ca_or_without_tls_never_connects() {
    let certs = Certs::make("nats-tls");
    let other = Certs::make("nats-other-ca");
    let nats = Nats::start(certs);
    let url = format!("nats://127.0.0.1:{}", nats.port);
    let wrong =
        nats_node("a", url.clone(), json!({"enabled": true, "server_ca_pem": path(&other.ca)}));
    let cleartext = nats_node("b", url, json!({}));
    for n in [&wrong, &cleartext] {
        let r = publish(n, "chat:x", json!({"n": 1}));
        assert_eq!(r["error"]["code"], 100, "{r}");
    }
}

/// A TLS object that cannot be used stops the start (and `checkconfig`), naming its key.
#[test]
fn an_unusable_tls_object_stops_the_start_naming_its_key() {
    let dir = Certs::make("tls-keys");
    let not_pem = dir.dir.join("not.pem");
    std::fs::write(&not_pem, "no certificate here").unwrap();
    let cases = [
        (
            json!({"engine": {"type": "redis", "redis": {"address": "rediss://127.0.0.1:1",
                "tls": {"server_ca_pem": path(&not_pem)}}}}),
            "engine.redis.tls.server_ca_pem",
        ),
        (
            json!({"engine": {"type": "redis", "redis": {
                "address": "redis+sentinel://127.0.0.1:1?sentinel_master_name=m",
                "sentinel_tls": {"enabled": true, "cert_pem": path(&dir.cert)}}}}),
            "engine.redis.sentinel_tls.cert_pem",
        ),
        (
            json!({"broker": {"enabled": true, "type": "nats", "nats": {"url": "tls://127.0.0.1:1",
                "tls": {"server_ca_pem": "/nonexistent/ca.pem"}}}}),
            "broker.nats.tls.server_ca_pem",
        ),
    ];
    for (n, (patch, key)) in cases.into_iter().enumerate() {
        let mut cfg = base_config();
        merge(&mut cfg, patch);
        let file = dir.dir.join(format!("config-{n}.json"));
        std::fs::write(&file, cfg.to_string()).unwrap();
        for args in [&["checkconfig", "-c"][..], &["-c"][..]] {
            let child = Command::new(env!("CARGO_BIN_EXE_rotor"))
                .args(args)
                .arg(&file)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            // Killed and reaped however the test ends: a server that did start must not
            // outlive it.
            let mut child = Reaped(child);
            let status = eventually(Duration::from_secs(10), Duration::from_millis(50), || {
                child.0.try_wait().unwrap().ok_or(format!("{args:?} {key}: still running"))
            });
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut stderr)
                .unwrap();
            assert!(!status.success() && stderr.contains(key), "{args:?} {key}: {stderr}");
        }
    }
}

/// A child process killed and reaped on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
