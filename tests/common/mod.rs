//! Test harness: boots the real `rotor` binary on an ephemeral loopback port and talks to it with
//! a blocking tungstenite WebSocket client and raw HTTP/1.1.
#![allow(dead_code, reason = "each test crate uses a different subset of the helpers")]

pub mod certs;
pub mod pb_client;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

pub const SECRET: &str = "test-secret-key-for-rotor-tests";
pub const API_KEY: &str = "test-api-key";

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A rotor process owned by one test; stopped by PID on drop.
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    config: PathBuf,
}

/// A base config: 3 shards, round-robin placement, HMAC token, API key, one open namespace.
pub fn base_config() -> Value {
    json!({
        "http_server": {"address": "127.0.0.1", "port": 0},
        "runtime": {"shards": 3, "placement": "round_robin"},
        "client": {"token": {"hmac_secret_key": SECRET}},
        "http_api": {"key": API_KEY},
        "health": {"enabled": true},
        "channel": {
            "without_namespace": {"allow_subscribe_for_client": true},
            "namespaces": [
                {"name": "chat", "allow_subscribe_for_client": true, "allow_publish_for_subscriber": true},
                {"name": "ro", "allow_subscribe_for_client": true},
                {"name": "hist", "allow_subscribe_for_client": true, "history_size": 10, "history_ttl": "60s"}
            ]
        }
    })
}

/// Merges `patch` into `base` (objects recursively).
pub fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p,
    }
}

impl Server {
    pub fn start(config: Value) -> Server {
        Self::start_with_env(config, &[])
    }

    /// Starts rotor with extra environment variables.
    pub fn start_with_env(config: Value, env: &[(&str, &str)]) -> Server {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("rotor-test-{}-{n}.json", std::process::id()));
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_rotor"))
            .arg("-c")
            .arg(&path)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn rotor");
        let port = listening_port(&mut child);
        Server { child: Some(child), port, config: path }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("rotor did not exit after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn ws(&self) -> Client {
        Client::connect(self.port, "/connection/websocket", &[])
    }

    pub fn http(&self) -> Http {
        Http::connect(self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.config);
    }
}

/// The port a rotor child (its stdout piped) reports in its "rotor listening on" line. Its
/// stdout keeps being drained afterwards, so the server never blocks on a full pipe.
pub fn listening_port(child: &mut Child) -> u16 {
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("rotor listening on ") {
                let _ = tx.send(addr.to_string());
                break;
            }
        }
        for _ in lines {}
    });
    let addr = rx.recv_timeout(Duration::from_secs(20)).expect("rotor did not report listening");
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// Runs rotor on `config` expecting it to refuse to start: its exit and output.
pub fn run_refused(config: &Value) -> std::process::Output {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let path = std::env::temp_dir().join(format!("rotor-refused-{}-{n}.json", std::process::id()));
    std::fs::write(&path, config.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rotor")).arg("-c").arg(&path).output().unwrap();
    let _ = std::fs::remove_file(&path);
    out
}

/// A connection token for `user` (expires in an hour).
pub fn token(user: &str) -> String {
    token_with(json!({"sub": user, "exp": now() + 3600}))
}

pub fn token_with(claims: Value) -> String {
    rotor::auth::encode_hs256(SECRET, &claims).unwrap()
}

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// How a WebSocket conversation ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    Json(Value),
    Closed(u16, String),
}

/// A blocking WebSocket client speaking the JSON protocol.
pub struct Client {
    pub ws: WebSocket<TcpStream>,
    pub shard: String,
    pending: std::collections::VecDeque<Value>,
    next_id: u32,
}

impl Client {
    pub fn connect(port: u16, path: &str, headers: &[(&str, &str)]) -> Client {
        Self::try_connect(port, path, headers).expect("websocket handshake")
    }

    pub fn try_connect(
        port: u16,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client, tungstenite::Error> {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Self::over(stream, port, path, headers)
    }

    pub fn over(
        stream: TcpStream,
        port: u16,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client, tungstenite::Error> {
        let mut req = tungstenite::http::Request::builder()
            .uri(format!("ws://127.0.0.1:{port}{path}"))
            .header("Host", format!("127.0.0.1:{port}"))
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", tungstenite::handshake::client::generate_key());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let (ws, resp) =
            tungstenite::client::client(req.body(()).unwrap(), stream).map_err(|e| match e {
                tungstenite::HandshakeError::Failure(e) => e,
                tungstenite::HandshakeError::Interrupted(_) => tungstenite::Error::ConnectionClosed,
            })?;
        let shard = resp
            .headers()
            .get("x-rotor-shard")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        Ok(Client { ws, shard, pending: Default::default(), next_id: 1 })
    }

    pub fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).unwrap();
    }

    /// Sends a command with a fresh id and returns the id.
    pub fn command(&mut self, body: Value) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        let mut cmd = json!({"id": id});
        merge(&mut cmd, body);
        self.send_text(&cmd.to_string());
        id
    }

    /// Next protocol message or the close frame.
    pub fn next_event(&mut self) -> Event {
        if let Some(v) = self.pending.pop_front() {
            return Event::Json(v);
        }
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    for line in t.as_str().split('\n').filter(|l| !l.is_empty()) {
                        self.pending.push_back(
                            serde_json::from_str(line).expect("server sent invalid JSON"),
                        );
                    }
                    if let Some(v) = self.pending.pop_front() {
                        return Event::Json(v);
                    }
                }
                Ok(Message::Close(Some(f))) => {
                    return Event::Closed(u16::from(f.code), f.reason.to_string())
                }
                Ok(Message::Close(None)) => return Event::Closed(1005, String::new()),
                Ok(_) => {}
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return Event::Closed(1006, String::new())
                }
                Err(e) => panic!("websocket read failed: {e}"),
            }
        }
    }

    /// Next message that is not a server ping (`{}`); panics on close.
    pub fn next_json(&mut self) -> Value {
        loop {
            match self.next_event() {
                Event::Json(v) if v == json!({}) => {
                    self.send_text("{}");
                }
                Event::Json(v) => return v,
                Event::Closed(code, reason) => panic!("closed {code} {reason}"),
            }
        }
    }

    /// Reads until the close frame and returns its code and reason.
    pub fn expect_close(&mut self) -> (u16, String) {
        loop {
            if let Event::Closed(code, reason) = self.next_event() {
                return (code, reason);
            }
        }
    }

    /// Connects with a token and returns the connect result.
    pub fn handshake(&mut self, token: &str) -> Value {
        let id = self.command(json!({"connect": {"token": token, "name": "test"}}));
        let reply = self.next_json();
        assert_eq!(reply["id"], id, "{reply}");
        reply
    }

    pub fn subscribe(&mut self, channel: &str) -> Value {
        let id = self.command(json!({"subscribe": {"channel": channel, "flag": 1}}));
        let reply = self.next_json();
        assert_eq!(reply["id"], id, "{reply}");
        reply
    }

    /// Asserts nothing but pings arrives within `wait`.
    pub fn expect_silence(&mut self, wait: Duration) {
        self.ws.get_ref().set_read_timeout(Some(wait)).unwrap();
        match self.ws.read() {
            Err(tungstenite::Error::Io(e))
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Ok(Message::Text(t)) if t.as_str() == "{}" => {}
            other => panic!("expected silence, got {other:?}"),
        }
        self.ws.get_ref().set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }

    pub fn close_code(code: CloseCode) -> u16 {
        u16::from(code)
    }
}

/// A keep-alive HTTP/1.1 client on one TCP connection (so it stays on one shard).
pub struct Http {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// An HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body {:?}: {e}", String::from_utf8_lossy(&self.body)))
    }
}

impl Http {
    pub fn connect(port: u16) -> Http {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        Self::from_stream(stream)
    }

    /// Over a connection the caller made (to a server that may not listen yet).
    pub fn from_stream(stream: TcpStream) -> Http {
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Http { stream, buf: Vec::new() }
    }

    /// The connection itself (to watch it being closed).
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    pub fn raw(&mut self, bytes: &[u8]) -> Response {
        self.stream.write_all(bytes).unwrap();
        self.read_response()
    }

    pub fn post(&mut self, path: &str, headers: &[(&str, &str)], body: &str) -> Response {
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        self.raw(req.as_bytes())
    }

    /// POST with the test API key.
    pub fn api(&mut self, method: &str, body: Value) -> Response {
        self.post(&format!("/api/{method}"), &[("X-API-Key", API_KEY)], &body.to_string())
    }

    pub fn read_response(&mut self) -> Response {
        let mut chunk = [0u8; 8192];
        let head_end = loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let n = self.stream.read(&mut chunk).expect("read response");
            assert!(n > 0, "connection closed before a response");
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(self.buf[..head_end].to_vec()).unwrap();
        let mut lines = head.split("\r\n");
        let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l.split_once(':').unwrap();
                (k.trim().to_string(), v.trim().to_string())
            })
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().unwrap());
        while self.buf.len() < head_end + len {
            let n = self.stream.read(&mut chunk).unwrap();
            assert!(n > 0);
            self.buf.extend_from_slice(&chunk[..n]);
        }
        let body = self.buf[head_end..head_end + len].to_vec();
        self.buf.drain(..head_end + len);
        Response { status, headers, body }
    }
}

/// A channel name in namespace `ns` (or none) whose home shard is `home` among `shards`.
pub fn channel_homed_at(prefix: &str, home: u16, shards: usize) -> String {
    (0..10_000)
        .map(|i| format!("{prefix}{i}"))
        .find(|c| rotor::shard::id::home_of(c, shards).0 == home)
        .unwrap()
}

/// A free loopback port (for servers a test starts itself).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A WebSocket client connected as `user`.
pub fn connect_as(server: &Server, user: &str) -> Client {
    let mut c = server.ws();
    let reply = c.handshake(&token(user));
    assert!(reply["connect"]["client"].is_string(), "{reply}");
    c
}

/// API `publish` of `data` to `channel`; the JSON answer (error or result).
pub fn api_publish(server: &Server, channel: &str, data: Value) -> Value {
    let r = server.http().api("publish", json!({"channel": channel, "data": data}));
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    r.json()
}

/// The next publication pushed to `c` for `channel`, skipping other messages.
pub fn next_pub(c: &mut Client, channel: &str) -> Value {
    loop {
        let m = c.next_json();
        if m["push"]["channel"] == channel && m["push"]["pub"].is_object() {
            return m["push"]["pub"].clone();
        }
    }
}

/// A `redis-server` (Debian package) owned by one test on a free loopback port, stopped by PID
/// on drop.
pub struct RedisServer {
    child: Option<Child>,
    /// Its loopback port.
    pub port: u16,
    dir: PathBuf,
    /// Everything but the address (persistence, `--replicaof`, a Sentinel's config).
    args: Vec<String>,
}

impl RedisServer {
    /// A server that keeps an append-only file, so a restart loses nothing.
    pub fn start() -> RedisServer {
        Self::start_with(|_, dir| {
            let dir = dir.display().to_string();
            ["--save", "", "--appendonly", "yes", "--appendfsync", "always", "--dir", &dir]
                .map(String::from)
                .to_vec()
        })
    }

    /// Starts one with arguments made from its port and directory.
    pub fn start_with(args: impl FnOnce(u16, &PathBuf) -> Vec<String>) -> RedisServer {
        let dir = std::env::temp_dir().join(format!(
            "rotor-redis-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let args = args(port, &dir);
        let mut r = RedisServer { child: None, port, dir, args };
        r.spawn();
        r
    }

    /// Starts (or restarts) the process and waits until it answers PING.
    pub fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(&self.args)
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server must be installed (Debian package redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                if s.write_all(b"PING\r\n").is_ok() {
                    let mut buf = [0u8; 7];
                    if s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n" {
                        return;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    /// Kills the server (SIGKILL: no goodbye to clients), keeping its append-only file.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs one command and returns the raw RESP reply.
    pub fn command(&self, args: &[&str]) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let mut buf = vec![0u8; 64 << 10];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Retries `check` every `every` until it gives `Ok`; once `within` has passed, fails with the
/// reason from its last try.
pub fn eventually<T>(
    within: Duration,
    every: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        match check() {
            Ok(v) => return v,
            Err(why) => assert!(Instant::now() < deadline, "{why}"),
        }
        std::thread::sleep(every);
    }
}

/// Waits until something listens on loopback `port`.
pub fn wait_for_port(port: u16, what: &str) {
    eventually(Duration::from_secs(10), Duration::from_millis(20), || {
        TcpStream::connect(("127.0.0.1", port))
            .map(drop)
            .map_err(|_| format!("{what} did not start"))
    });
}
