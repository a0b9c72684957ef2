//! Slow consumers end to end: a client whose queue overflows `client.queue_max_size` is cut
//! with 3008 while the others keep receiving, the close frame reaches it if it reads again
//! within the close linger even when that is longer than `websocket.write_timeout`, and a
//! client that never reads again is dropped (socket closed) within a bound.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::needless_pass_by_value,
    reason = "test harness code: a failure must panic loudly, and helpers take what tests build"
)]

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// A WebSocket client whose socket has a 4 KB receive buffer, so a server writing to it while
/// it does not read fills the kernel buffers, then its queue, quickly.
fn small_window_client(server: &Server, user: &str, channel: &str) -> Client {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", server.port).parse().unwrap();
    sock.connect(&addr.into()).unwrap();
    let stream: TcpStream = sock.into();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut c = Client::over(stream, server.port, "/connection/websocket", &[]).unwrap();
    c.handshake(&token(user));
    c.subscribe(channel);
    c
}

/// The value of one `/metrics` series (exact name and labels), 0 when absent.
fn metric(server: &Server, series: &str) -> f64 {
    let r = Http::connect(server.port).raw(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    assert_eq!(r.status, 200);
    String::from_utf8(r.body)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.parse().unwrap())
}

/// Clients the server closed with 3008.
const CUT_SLOW: &str = "centrifugo_client_num_server_disconnects{code=\"3008\"}";

/// Open file descriptors of a process.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

#[test]
fn slow_reader_is_disconnected_with_3008_while_others_keep_receiving() {
    let mut cfg = base_config();
    merge(
        &mut cfg,
        json!({"client": {"queue_max_size": 262144}, "websocket": {"write_timeout": "20s"}}),
    );
    let server = Server::start(cfg);
    // The slow client's socket has a tiny receive buffer so the server's queue fills quickly.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", server.port).parse().unwrap();
    sock.connect(&addr.into()).unwrap();
    let stream: TcpStream = sock.into();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut slow = Client::over(stream, server.port, "/connection/websocket", &[]).unwrap();
    slow.handshake(&token("slow"));
    slow.subscribe("chat:flood");
    let mut fast = server.ws();
    fast.handshake(&token("fast"));
    fast.subscribe("chat:flood");
    let payload = "x".repeat(32 * 1024);
    let total = 400;
    let reader = std::thread::spawn(move || {
        for n in 0..total {
            let push = fast.next_json();
            assert_eq!(
                push["push"]["pub"]["data"]["n"], n,
                "fast client got every publication in order"
            );
        }
        fast
    });
    let mut api = server.http();
    for n in 0..total {
        let r =
            api.api("publish", json!({"channel": "chat:flood", "data": {"n": n, "p": payload}}));
        assert_eq!(r.status, 200);
    }
    let mut fast = reader.join().unwrap();
    let started = Instant::now();
    let (code, reason) = slow.expect_close();
    assert_eq!((code, reason.as_str()), (3008, "slow"));
    assert!(started.elapsed() < Duration::from_secs(15));
    // The fast client is still served.
    api.api("publish", json!({"channel": "chat:flood", "data": {"after": true}}));
    assert_eq!(fast.next_json()["push"]["pub"]["data"], json!({"after": true}));
}

#[test]
fn a_slow_reader_that_reads_again_after_the_write_timeout_gets_3008_and_one_that_never_does_is_dropped(
) {
    let mut cfg = base_config();
    // A short write timeout, so reading again after 3 of them shows the close frame outlives
    // it: a closing connection lingers (up to 5 s) for its last frames.
    merge(
        &mut cfg,
        json!({
            "client": {"queue_max_size": 131072},
            "websocket": {"write_timeout": "300ms"},
            "prometheus": {"enabled": true}
        }),
    );
    let server = Server::start(cfg);
    let mut api = server.http();
    api.api("publish", json!({"channel": "chat:warm", "data": {}}));
    let pid = server.pid();
    let fds_before = fds(pid);
    let mut again = small_window_client(&server, "again", "chat:flood");
    let never = small_window_client(&server, "never", "chat:flood");
    // Neither reads now. Publish until the server has cut both (bounded in count and time).
    let payload = "x".repeat(32 * 1024);
    let started = Instant::now();
    let mut cut = 0.0;
    for n in 0..3000 {
        let r =
            api.api("publish", json!({"channel": "chat:flood", "data": {"n": n, "p": payload}}));
        assert_eq!(r.status, 200);
        if n % 10 == 9 {
            cut = metric(&server, CUT_SLOW);
            if cut >= 2.0 || started.elapsed() > Duration::from_secs(30) {
                break;
            }
        }
    }
    let write_errors = metric(&server, "centrifugo_client_num_server_disconnects{code=\"3009\"}");
    assert_eq!((cut, write_errors), (2.0, 0.0), "both slow readers cut for their queue");
    // Three write timeouts pass with their sockets full (waiting is the scenario here, not a
    // synchronisation: nothing else can tell how long a client stayed away).
    std::thread::sleep(Duration::from_millis(900));
    let (code, reason) = again.expect_close();
    assert_eq!((code, reason.as_str()), (3008, "slow"));
    assert!(started.elapsed() < Duration::from_secs(40));
    // The one that never reads is forgotten, socket closed, within the linger and close wait.
    let cut_at = Instant::now();
    drop(again);
    eventually(Duration::from_secs(15), Duration::from_millis(100), || {
        let now = fds(pid);
        (now <= fds_before).then_some(()).ok_or(format!("{now} fds open, {fds_before} before"))
    });
    assert!(cut_at.elapsed() < Duration::from_secs(12));
    assert_eq!(metric(&server, "centrifugo_node_num_clients"), 0.0);
    drop(never);
}
