//! TLS on the listeners (`http_server.tls`, `tls_external`, `internal_tls`): clients speak
//! WebSocket and the HTTP API over TLS with a CA made by the test; a cleartext client gets
//! nothing; mutual TLS; the internal port's choice; SIGHUP swaps the certificate while open
//! connections keep working; a bad certificate refuses to start, naming the key.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::needless_pass_by_value,
    reason = "test harness code: a failure must panic loudly, and helpers take what tests build"
)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::certs::Pki;
use common::*;
use futures_rustls::pki_types::pem::PemObject;
use futures_rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use futures_rustls::rustls::{self, ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

type Tls = StreamOwned<ClientConnection, TcpStream>;

fn client_config(
    ca: &Path,
    identity: Option<&(std::path::PathBuf, std::path::PathBuf)>,
) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert).unwrap().map(Result::unwrap).collect();
            builder
                .with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(key).unwrap())
                .unwrap()
        }
    }
}

/// A TLS connection to loopback `port` verified against `ca` for "localhost", handshake done.
fn tls_connect(port: u16, config: &ClientConfig) -> std::io::Result<Tls> {
    let tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(Arc::new(config.clone()), name).unwrap();
    let mut stream = StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

/// The certificate the server presented on `stream`.
fn peer_cert(stream: &Tls) -> Vec<u8> {
    stream.conn.peer_certificates().unwrap()[0].to_vec()
}

fn cert_der(path: &Path) -> Vec<u8> {
    CertificateDer::pem_file_iter(path).unwrap().next().unwrap().unwrap().to_vec()
}

fn wss(stream: Tls, port: u16) -> WebSocket<Tls> {
    let req = tungstenite::http::Request::builder()
        .uri(format!("wss://localhost:{port}/connection/websocket"))
        .header("Host", format!("localhost:{port}"))
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", tungstenite::handshake::client::generate_key())
        .body(())
        .unwrap();
    tungstenite::client::client(req, stream).map_err(|e| format!("{e}")).unwrap().0
}

/// One request/response over `stream`; returns the status and the body.
fn https(stream: &mut Tls, method: &str, path: &str, body: &str) -> (u16, String) {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {API_KEY}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed before a full response");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(split) = text.find("\r\n\r\n") {
            let head = &text[..split];
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length:").map(str::to_owned)
                })
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            if buf.len() >= split + 4 + len {
                let status = head[9..12].parse().unwrap();
                return (status, text[split + 4..split + 4 + len].to_owned());
            }
        }
    }
}

fn next_json(ws: &mut WebSocket<Tls>) -> Value {
    loop {
        match ws.read().unwrap() {
            Message::Text(t) => {
                if t.as_str() == "{}" {
                    ws.send(Message::text("{}")).unwrap();
                    continue;
                }
                return serde_json::from_str(t.lines().next().unwrap()).unwrap();
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

fn tls_config(cert: &Path, key: &Path) -> Value {
    json!({"enabled": true, "cert_pem": cert, "key_pem": key})
}

fn connect_and_subscribe(ws: &mut WebSocket<Tls>, channel: &str) {
    let connect = json!({"id": 1, "connect": {"token": token("alice")}});
    ws.send(Message::text(connect.to_string())).unwrap();
    assert!(next_json(ws)["connect"]["client"].is_string());
    ws.send(Message::text(json!({"id": 2, "subscribe": {"channel": channel}}).to_string()))
        .unwrap();
    let reply = next_json(ws);
    assert_eq!(reply["id"], 2, "{reply}");
    assert!(reply.get("error").is_none(), "{reply}");
}

fn publication(ws: &mut WebSocket<Tls>) -> Value {
    let push = next_json(ws);
    push["push"]["pub"]["data"].clone()
}

#[test]
fn clients_speak_websocket_and_the_api_over_tls_and_cleartext_gets_nothing() {
    let pki = Pki::new("wss");
    let (cert, key) = pki.server("rotor");
    let mut cfg = base_config();
    merge(&mut cfg, json!({"http_server": {"tls": tls_config(&cert, &key)}}));
    let server = Server::start(cfg);
    let config = client_config(&pki.ca, None);

    let tls = tls_connect(server.port, &config).unwrap();
    assert_eq!(peer_cert(&tls), cert_der(&cert));
    let mut ws = wss(tls, server.port);
    connect_and_subscribe(&mut ws, "news");

    let mut api = tls_connect(server.port, &config).unwrap();
    let body = json!({"channel": "news", "data": {"n": 1}}).to_string();
    let (status, reply) = https(&mut api, "POST", "/api/publish", &body);
    assert_eq!(status, 200, "{reply}");
    assert_eq!(publication(&mut ws), json!({"n": 1}));
    // Keep-alive over TLS: a second request on the same connection.
    let body = json!({"channel": "news", "data": {"n": 2}}).to_string();
    assert_eq!(https(&mut api, "POST", "/api/publish", &body).0, 200);
    assert_eq!(publication(&mut ws), json!({"n": 2}));

    // A cleartext request on the TLS port is never answered in cleartext.
    let mut plain = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    plain.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(!got.starts_with(b"HTTP/"), "cleartext answer on a TLS port: {got:?}");

    // A client that does not trust the CA fails the handshake.
    let other = Pki::new("wss-other");
    assert!(tls_connect(server.port, &client_config(&other.ca, None)).is_err());
}

#[test]
fn client_ca_pem_requires_a_client_certificate() {
    let pki = Pki::new("mtls");
    let (cert, key) = pki.server("rotor");
    let identity = pki.client("backend");
    let mut tls = tls_config(&cert, &key);
    tls["client_ca_pem"] = json!(pki.ca);
    let mut cfg = base_config();
    merge(&mut cfg, json!({"http_server": {"tls": tls}}));
    let server = Server::start(cfg);

    // TLS 1.3 reports a refused client certificate only with the first read.
    let anonymous = tls_connect(server.port, &client_config(&pki.ca, None)).and_then(|mut s| {
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")?;
        let mut b = [0u8; 16];
        s.read(&mut b)
    });
    assert!(anonymous.is_err(), "a client without a certificate was served: {anonymous:?}");

    let mut with_cert = tls_connect(server.port, &client_config(&pki.ca, Some(&identity))).unwrap();
    let (status, body) = https(&mut with_cert, "GET", "/health", "");
    assert_eq!((status, body.as_str()), (200, "{}"));
}

#[test]
fn the_internal_port_uses_internal_tls_else_tls_unless_tls_external() {
    let pki = Pki::new("internal");
    let (cert, key) = pki.server("main");
    let (icert, ikey) = pki.server("internal");
    let config = client_config(&pki.ca, None);
    let health = |stream: &mut Tls| https(stream, "GET", "/health", "").0;

    // Same TLS on both ports.
    let internal = free_port();
    let mut cfg = base_config();
    let tls = tls_config(&cert, &key);
    merge(&mut cfg, json!({"http_server": {"internal_port": internal, "tls": tls}}));
    let server = Server::start(cfg);
    let mut s = tls_connect(internal, &config).unwrap();
    assert_eq!(peer_cert(&s), cert_der(&cert));
    assert_eq!(health(&mut s), 200);
    drop(server);

    // tls_external: the internal port is cleartext.
    let internal = free_port();
    let mut cfg = base_config();
    let tls = tls_config(&cert, &key);
    let server_cfg = json!({"internal_port": internal, "tls": tls, "tls_external": true});
    merge(&mut cfg, json!({"http_server": server_cfg}));
    let server = Server::start(cfg);
    let mut plain = Http::connect(internal);
    assert_eq!(plain.raw(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").status, 200);
    assert_eq!(peer_cert(&tls_connect(server.port, &config).unwrap()), cert_der(&cert));
    drop(server);

    // internal_tls: a certificate of its own, even with tls_external.
    let internal = free_port();
    let mut cfg = base_config();
    let server_cfg = json!({
        "internal_port": internal,
        "tls": tls_config(&cert, &key),
        "tls_external": true,
        "internal_tls": tls_config(&icert, &ikey),
    });
    merge(&mut cfg, json!({"http_server": server_cfg}));
    let _server = Server::start(cfg);
    let mut s = tls_connect(internal, &config).unwrap();
    assert_eq!(peer_cert(&s), cert_der(&icert));
    assert_eq!(health(&mut s), 200);
}

#[test]
fn sighup_presents_a_new_certificate_and_keeps_open_connections() {
    let pki = Pki::new("reload");
    let (old_cert, old_key) = pki.server("before");
    let (new_cert, new_key) = pki.server("after");
    let live_cert = pki.dir.join("live.pem");
    let live_key = pki.dir.join("live.key");
    std::fs::copy(&old_cert, &live_cert).unwrap();
    std::fs::copy(&old_key, &live_key).unwrap();
    let mut cfg = base_config();
    merge(&mut cfg, json!({"http_server": {"tls": tls_config(&live_cert, &live_key)}}));
    let server = Server::start(cfg);
    let config = client_config(&pki.ca, None);

    let tls = tls_connect(server.port, &config).unwrap();
    assert_eq!(peer_cert(&tls), cert_der(&old_cert));
    let mut ws = wss(tls, server.port);
    connect_and_subscribe(&mut ws, "news");

    std::fs::copy(&new_cert, &live_cert).unwrap();
    std::fs::copy(&new_key, &live_key).unwrap();
    let hup = Command::new("kill").arg("-HUP").arg(server.pid().to_string()).status().unwrap();
    assert!(hup.success());
    eventually(Duration::from_secs(10), Duration::from_millis(20), || {
        let presented = peer_cert(&tls_connect(server.port, &config).unwrap());
        (presented == cert_der(&new_cert))
            .then_some(())
            .ok_or_else(|| "still the old certificate".to_owned())
    });

    // The connection opened before the reload still gets publications.
    let mut api = tls_connect(server.port, &config).unwrap();
    let body = json!({"channel": "news", "data": {"after": "reload"}}).to_string();
    assert_eq!(https(&mut api, "POST", "/api/publish", &body).0, 200);
    assert_eq!(publication(&mut ws), json!({"after": "reload"}));
}

#[test]
fn a_certificate_that_does_not_load_refuses_to_start_naming_the_key() {
    let pki = Pki::new("bad");
    let (cert, key) = pki.server("rotor");
    let cases = [
        (
            json!({"enabled": true, "cert_pem": "/nonexistent/cert.pem", "key_pem": key}),
            "http_server.tls.cert_pem",
        ),
        (json!({"enabled": true, "cert_pem": cert}), "http_server.tls.key_pem"),
        (json!({"enabled": true, "cert_pem": cert, "key_pem": cert}), "http_server.tls.key_pem"),
    ];
    for (tls, key) in cases {
        let mut cfg = base_config();
        merge(&mut cfg, json!({"http_server": {"tls": tls}}));
        let out = run_refused(&cfg);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "started with {tls}");
        assert!(stderr.contains(key), "{key} not named: {stderr}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"));
    }
}
