//! End-to-end tests of the HTTP stage's limits (`server::admission`, `server::request`): what a
//! connection may cost before it is a client, and that clients already connected keep
//! receiving while those limits are hit. Each test boots the real binary.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::needless_pass_by_value,
    reason = "test harness code: a failure must panic loudly, and helpers take what tests build"
)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// One shard (so every connection shares its limits) with `runtime` merged in.
fn one_shard(runtime: Value) -> Value {
    let mut cfg = base_config();
    merge(&mut cfg, json!({"runtime": {"shards": 1}}));
    merge(&mut cfg, json!({ "runtime": runtime }));
    cfg
}

/// Everything the server sends on `s` until it closes (or 10 s pass).
fn read_until_closed(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// A request that is answered on a fresh connection: its status line and body.
fn ask(port: u16, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    read_until_closed(&mut s)
}

const HEALTH_CLOSE: &str = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

#[test]
fn a_new_connection_that_says_nothing_is_cut_with_408_at_the_head_deadline() {
    let server = Server::start(one_shard(json!({"http_head_timeout": "500ms"})));
    let started = Instant::now();
    let mut silent = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let answer = read_until_closed(&mut silent);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(400) && took < Duration::from_secs(5), "{took:?}");
    assert!(ask(server.port, HEALTH_CLOSE).starts_with("HTTP/1.1 200"));
}

#[test]
fn a_full_http_stage_refuses_with_503_while_clients_and_the_internal_port_carry_on() {
    let internal = free_port();
    let mut cfg = one_shard(json!({"http_stage_connections": 8, "http_head_timeout": "60s"}));
    merge(&mut cfg, json!({"http_server": {"internal_port": internal}}));
    let server = Server::start(cfg);
    wait_for_port(internal, "the internal port");
    let mut healthy = connect_as(&server, "healthy");
    assert!(healthy.subscribe("news")["subscribe"].is_object());
    // Eight connections that never finish their heads fill the stage.
    let held: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
            s.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
            s
        })
        .collect();
    let refused = eventually(Duration::from_secs(10), Duration::from_millis(20), || {
        let answer = ask(server.port, HEALTH_CLOSE);
        answer.starts_with("HTTP/1.1 503").then_some(answer.clone()).ok_or(answer)
    });
    assert!(refused.contains("too many connections in the HTTP stage"), "{refused}");
    // The API on the internal port has room of its own, and the subscriber is served.
    let mut api = Http::connect(internal);
    let r = api.api("publish", json!({"channel": "news", "data": {"n": 1}}));
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(next_pub(&mut healthy, "news")["data"], json!({"n": 1}));
    // Once the stage empties, the public port answers again.
    // (Health moved to the internal port: the public one answers 404 for it.)
    drop(held);
    eventually(Duration::from_secs(10), Duration::from_millis(20), || {
        let answer = ask(server.port, HEALTH_CLOSE);
        answer.starts_with("HTTP/1.1 404").then_some(()).ok_or(answer)
    });
}

#[test]
fn idle_keep_alive_connections_give_their_place_up_when_the_stage_is_crowded() {
    let server = Server::start(one_shard(json!({"http_stage_connections": 8})));
    let health = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    // Two idle connections (a quarter of the stage) are left alone...
    let mut few: Vec<Http> = (0..2).map(|_| server.http()).collect();
    for h in &mut few {
        assert_eq!(h.raw(health).status, 200);
    }
    std::thread::sleep(Duration::from_millis(1500)); // longer than the crowding check period
    for h in &mut few {
        assert_eq!(h.raw(health).status, 200, "an idle connection was closed without crowding");
    }
    // ...but when idle connections fill the stage, enough of them are closed to bring it back
    // under three quarters, and a new connection is served instead of refused.
    let mut idle: Vec<Http> = (0..6).map(|_| server.http()).collect();
    for h in &mut idle {
        assert_eq!(h.raw(health).status, 200);
    }
    eventually(Duration::from_secs(10), Duration::from_millis(50), || {
        let answer = ask(server.port, HEALTH_CLOSE);
        answer.starts_with("HTTP/1.1 200").then_some(()).ok_or(answer)
    });
    let mut closed = 0;
    for h in few.iter_mut().chain(&mut idle) {
        let s = h.stream();
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        if matches!(s.read(&mut [0u8; 64]), Ok(0)) {
            closed += 1;
        }
    }
    assert!((3..8).contains(&closed), "{closed} of 8 idle connections closed");
}

#[test]
fn request_bodies_share_a_budget_past_which_they_get_503() {
    let server = Server::start(one_shard(json!({"http_body_budget": 4096})));
    let mut healthy = connect_as(&server, "healthy");
    assert!(healthy.subscribe("news")["subscribe"].is_object());
    let publish = |pad: usize| {
        json!({"channel": "news", "data": {"pad": "x".repeat(pad)}}).to_string().into_bytes()
    };
    let head = |len: usize| {
        format!(
            "POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\n\
             Content-Length: {len}\r\nConnection: close\r\n\r\n"
        )
    };
    // A 4000-byte body that arrives slowly holds most of the budget while it is read.
    let big = publish(3960);
    let mut slow = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    slow.write_all(head(big.len()).as_bytes()).unwrap();
    slow.write_all(&big[..100]).unwrap();
    let small = publish(200);
    let small_request = |_: ()| {
        let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        s.write_all(head(small.len()).as_bytes()).unwrap();
        s.write_all(&small).unwrap();
        read_until_closed(&mut s)
    };
    let busy = eventually(Duration::from_secs(10), Duration::from_millis(20), || {
        let answer = small_request(());
        answer.starts_with("HTTP/1.1 503").then_some(answer.clone()).ok_or(answer)
    });
    assert!(busy.contains("server busy"), "{busy}");
    // The slow body completes and is published; then the budget is free again.
    slow.write_all(&big[100..]).unwrap();
    let answer = read_until_closed(&mut slow);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let got = loop {
        let p = next_pub(&mut healthy, "news");
        if p["data"]["pad"].as_str().map(str::len) == Some(3960) {
            break p;
        }
    };
    assert!(got["data"].is_object());
    assert!(small_request(()).starts_with("HTTP/1.1 200"));
}

#[test]
fn at_the_open_files_limit_accept_backs_off_with_one_log_line_and_recovers() {
    use std::io::{BufRead, BufReader};
    let mut cfg = base_config();
    merge(&mut cfg, json!({"runtime": {"shards": 1}}));
    let path = std::env::temp_dir().join(format!("rotor-emfile-{}.json", std::process::id()));
    std::fs::write(&path, cfg.to_string()).unwrap();
    let script =
        format!("ulimit -n 96 && exec {} -c {}", env!("CARGO_BIN_EXE_rotor"), path.display());
    let mut child = std::process::Command::new("sh")
        .args(["-c", &script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let port = listening_port(&mut child);
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    // Hold more idle connections than the process has files for.
    let held: Vec<_> =
        (0..120).filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok()).collect();
    // The first failure is logged...
    while !rx
        .recv_timeout(Duration::from_secs(10))
        .expect("no failure logged")
        .contains("accept failed")
    {}
    let mut failures = 1;
    // ...and retries within the next second add no line (the server keeps retrying meanwhile).
    let quiet_until = std::time::Instant::now() + Duration::from_secs(1);
    while let Some(left) = quiet_until.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) if l.contains("accept failed") => failures += 1,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    assert_eq!(failures, 1, "one line per backoff window");
    // Once connections close, new clients get in again.
    drop(held);
    eventually(Duration::from_secs(10), Duration::from_millis(50), || {
        let mut c =
            Client::try_connect(port, "/connection/websocket", &[]).map_err(|e| e.to_string())?;
        c.command(json!({"connect": {"token": token("back")}}));
        match c.next_event() {
            Event::Json(v) if v["connect"].is_object() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(path);
}

#[test]
fn a_request_head_trickled_byte_by_byte_is_cut_with_408() {
    let server = Server::start(one_shard(json!({"http_head_timeout": "2s"})));
    let mut slow = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(900))).unwrap();
    let started = std::time::Instant::now();
    slow.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
    let mut answer = Vec::new();
    // One header byte a second, as a slowloris client sends (bounded: 20 bytes).
    for byte in b"X-Slow: aaaaaaaaaaaaaaaaa".iter().take(20) {
        let mut chunk = [0u8; 512];
        match slow.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
        if !answer.is_empty() || slow.write_all(&[*byte]).is_err() {
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(6), "cut after {took:?}");
    // A prompt client is served meanwhile and after.
    let mut http = server.http();
    assert_eq!(http.raw(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").status, 200);
}

#[test]
fn api_requests_without_the_key_are_refused_before_their_body_is_read() {
    let server = Server::start(base_config());
    let ask = |head: &str| {
        let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // Only the head: the 8 MB body it announces never comes.
        s.write_all(head.as_bytes()).unwrap();
        let mut answer = vec![0u8; 1024];
        let n = s.read(&mut answer).unwrap();
        String::from_utf8_lossy(&answer[..n]).into_owned()
    };
    let big = "Content-Length: 8000000\r\n\r\n";
    let no_key = ask(&format!("POST /api/publish HTTP/1.1\r\nHost: x\r\n{big}"));
    assert!(no_key.starts_with("HTTP/1.1 401"), "{no_key}");
    let wrong_key =
        ask(&format!("POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: nope\r\n{big}"));
    assert!(wrong_key.starts_with("HTTP/1.1 401"), "{wrong_key}");
    let get =
        ask(&format!("GET /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\n{big}"));
    assert!(get.starts_with("HTTP/1.1 405"), "{get}");
    // A client that sends a large body right away still reads its answer (no reset).
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("POST /api/publish HTTP/1.1\r\nHost: x\r\n{big}").as_bytes()).unwrap();
    s.write_all(&vec![b'x'; 512 * 1024]).unwrap();
    let mut answer = vec![0u8; 1024];
    let n = s.read(&mut answer).unwrap();
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 401"),
        "{:?}",
        String::from_utf8_lossy(&answer[..n])
    );
    // Anything that is not the API or a client transport takes small bodies only.
    let other = ask(&format!("POST /nowhere HTTP/1.1\r\nHost: x\r\n{big}"));
    assert!(other.starts_with("HTTP/1.1 413"), "{other}");
    // With the key the API takes its body as before, and a keyless request without a body
    // keeps its connection.
    let mut http = server.http();
    assert_eq!(http.post("/api/info", &[], "").status, 401);
    assert_eq!(http.api("publish", json!({"channel": "a", "data": {"x": 1}})).status, 200);
}
