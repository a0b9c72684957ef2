//! Servers under test. A [`Target`] is a running server the harness can address, measure (its
//! PID for procfs) and stop. [`Spawned`] covers every server the harness starts itself — Rotor
//! with a generated config, the `raw` floor server, `nats-server` with a generated config
//! (under coreutils `timeout`, so it cannot outlive `--max-runtime` even if the harness is
//! killed; the measured PID is nats-server's own) and the socket.io Node server in
//! `loadtest/peers` — and only ever signals the PID it spawned. [`External`] wraps `--addr` and
//! `--server-pid` for a server somebody else runs.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;

use crate::adapter::{ProtocolSpec, Publisher};
use crate::error::{Context, Error, Result};

/// How long a spawned server may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A server the harness drives.
pub trait Target {
    /// Short name for reports (`rotor`, `raw`, …).
    fn name(&self) -> &str;
    /// Where clients connect and the publisher posts.
    fn addr(&self) -> SocketAddr;
    /// PID to measure, when known.
    fn pid(&self) -> Option<u32>;
    /// Wire protocol clients speak to it.
    fn protocol(&self) -> ProtocolSpec;
    /// A fresh publisher for the coordinator.
    fn publisher(&self) -> Box<dyn Publisher> {
        self.protocol().publisher(self.addr())
    }
    /// Server log lines that look like warnings or errors, seen so far.
    fn warnings(&self) -> ServerLog {
        ServerLog::default()
    }
    /// Stops the server if the harness started it.
    fn stop(&mut self) -> Result<()>;
    /// Every address clients may connect to (several nodes: worker k uses entry k mod n).
    fn addrs(&self) -> Vec<SocketAddr> {
        vec![self.addr()]
    }
    /// Every server process whose CPU and memory count as the server's.
    fn pids(&self) -> Vec<u32> {
        self.pid().into_iter().collect()
    }
    /// A helper process measured separately (the Redis between nodes).
    fn helper_pid(&self) -> Option<u32> {
        None
    }
}

/// Notable server output: a count and the last few lines.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ServerLog {
    /// Lines containing WARN or ERROR.
    pub warn_lines: u64,
    /// The last such lines (at most 20).
    pub last: Vec<String>,
}

/// A server process the harness started and owns.
pub struct Spawned {
    name: String,
    child: Option<Child>,
    /// The PID to measure when it is not the child's own (a server run under a wrapper).
    measured: Option<u32>,
    addr: SocketAddr,
    /// Where the publisher posts when not `addr` (Rotor's cleartext internal port in TLS runs).
    api_addr: Option<SocketAddr>,
    protocol: ProtocolSpec,
    log: Arc<Mutex<ServerLog>>,
    _stdin: Option<ChildStdin>,
    _dir: Option<TempDir>,
    /// A process the server depends on (the connect proxy's backend), stopped after it.
    helper: Option<Box<Spawned>>,
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Target for Spawned {
    fn name(&self) -> &str {
        &self.name
    }
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn pid(&self) -> Option<u32> {
        self.measured.or_else(|| self.child.as_ref().map(Child::id))
    }
    fn helper_pid(&self) -> Option<u32> {
        self.helper.as_ref().and_then(|h| h.pid())
    }
    fn protocol(&self) -> ProtocolSpec {
        self.protocol.clone()
    }
    fn publisher(&self) -> Box<dyn Publisher> {
        self.protocol.publisher(self.api_addr.unwrap_or(self.addr))
    }
    fn warnings(&self) -> ServerLog {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
    fn stop(&mut self) -> Result<()> {
        let stopped = match self.child.take() {
            Some(mut child) => stop_child(&mut child, &self.name),
            None => Ok(()),
        };
        if let Some(helper) = self.helper.as_mut() {
            helper.stop()?;
        }
        stopped
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// SIGTERM to our own child's PID, wait, then SIGKILL.
pub fn stop_child(child: &mut Child, name: &str) -> Result<()> {
    if child.try_wait().context(format!("polling {name}"))?.is_some() {
        return Ok(());
    }
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(0));
    let _ = kill(pid, Signal::SIGTERM);
    let until = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < until {
        if child.try_wait().context(format!("polling {name}"))?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().context(format!("killing {name}"))?;
    child.wait().context(format!("reaping {name}"))?;
    Ok(())
}

/// A freshly started child: process, address, log collector, stdin (if kept).
type Started = (Child, SocketAddr, Arc<Mutex<ServerLog>>, Option<ChildStdin>);

/// Spawns `cmd`, waits for a stdout line `<prefix><addr>`, keeps draining both pipes.
fn spawn_and_wait(
    name: &str,
    cmd: Command,
    prefix: &'static str,
    keep_stdin: bool,
) -> Result<Started> {
    spawn_until(name, cmd, keep_stdin, false, |line| {
        let rest = line.trim().strip_prefix(prefix)?;
        Some(
            rest.trim()
                .parse()
                .map_err(|_| Error::Server(format!("{name}: unparsable address in {line:?}"))),
        )
    })
}

/// Spawns `cmd` and waits until `ready` recognises an output line (stdout, and stderr too when
/// `stderr_too`), which yields the server's address; keeps draining both pipes.
fn spawn_until(
    name: &str,
    mut cmd: Command,
    keep_stdin: bool,
    stderr_too: bool,
    mut ready: impl FnMut(&str) -> Option<Result<SocketAddr>>,
) -> Result<Started> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if keep_stdin { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().context(format!("starting {name}"))?;
    let log = Arc::new(Mutex::new(ServerLog::default()));
    let (tx, rx) = mpsc::channel::<String>();
    let tail = Arc::new(Mutex::new(VecDeque::<String>::new()));
    if let Some(out) = child.stdout.take() {
        let (tail, log, tx) = (Arc::clone(&tail), Arc::clone(&log), tx.clone());
        std::thread::spawn(move || drain(out, &tx, &tail, &log));
    }
    if let Some(err) = child.stderr.take() {
        let (tail, log) = (Arc::clone(&tail), Arc::clone(&log));
        let (dummy, _) = mpsc::channel();
        let lines_out = if stderr_too { tx } else { dummy };
        std::thread::spawn(move || drain(err, &lines_out, &tail, &log));
    }
    let stdin = child.stdin.take();
    let until = Instant::now() + START_TIMEOUT;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.max(Duration::from_millis(1))) {
            Ok(line) => match ready(&line) {
                Some(Ok(addr)) => return Ok((child, addr, log, stdin)),
                Some(Err(e)) => {
                    let _ = stop_child(&mut child, name);
                    return Err(e);
                }
                None => {}
            },
            Err(_) => {
                let _ = stop_child(&mut child, name);
                let lines: Vec<String> =
                    tail.lock().map(|t| t.iter().cloned().collect()).unwrap_or_default();
                return Err(Error::Server(format!(
                    "{name} did not print its listening line in {START_TIMEOUT:?}; last output:\n{}",
                    lines.join("\n")
                )));
            }
        }
    }
}

fn drain(
    pipe: impl std::io::Read,
    lines_out: &mpsc::Sender<String>,
    tail: &Mutex<VecDeque<String>>,
    log: &Mutex<ServerLog>,
) {
    for line in BufReader::new(pipe).lines() {
        let Ok(line) = line else { break };
        let line = strip_ansi(&line);
        if let Ok(mut t) = tail.lock() {
            if t.len() >= 40 {
                t.pop_front();
            }
            t.push_back(line.clone());
        }
        // Rotor/tracing spell WARN/ERROR, nats-server [WRN]/[ERR] (and [FTL]).
        if ["WARN", "ERROR", "[WRN]", "[ERR]", "[FTL]"].iter().any(|w| line.contains(w)) {
            if let Ok(mut l) = log.lock() {
                l.warn_lines += 1;
                if l.last.len() >= 20 {
                    l.last.remove(0);
                }
                l.last.push(line.chars().take(300).collect());
            }
        }
        let _ = lines_out.send(line);
    }
}

/// Removes ANSI colour sequences (`ESC [ … letter`) from a log line.
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn strips_colours() {
        assert_eq!(
            super::strip_ansi("\u{1b}[2mT\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m x"),
            "T  WARN x"
        );
    }
}

/// Settings for a Rotor started by the harness.
#[derive(Clone, Debug)]
pub struct RotorOptions {
    /// Binary path.
    pub bin: PathBuf,
    /// `runtime.shards`.
    pub shards: usize,
    /// `client.queue_max_size`.
    pub queue_max_size: usize,
    /// `log.level`.
    pub log_level: String,
    /// How clients connect.
    pub flavor: crate::adapter::Flavor,
    /// Authenticate connects through a connect proxy served by this binary (`self_exe`'s
    /// `proxy-backend`) instead of tokens.
    pub connect_proxy: Option<PathBuf>,
    /// JSON clients subscribe with this many distinct tags filters (`--tags-filters`).
    pub tags_filters: usize,
    /// Publications carry a tag even without filters (`--tag-publications`).
    pub tag_publications: bool,
    /// Serve the client port over TLS with this certificate and key file (`--tls`); the HTTP
    /// API then moves to a cleartext internal port.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// `websocket.compression` (`--ws-compression`).
    pub ws_compression: bool,
}

fn random_token(bytes: usize) -> Result<String> {
    use base64::Engine as _;
    use std::io::Read as _;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("reading /dev/urandom")?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf))
}

/// A fresh directory under the system temp dir, removed when the result drops.
pub fn temp_dir(tag: &str) -> Result<TempDir> {
    let dir = std::env::temp_dir().join(format!("rotor-loadtest-{tag}-{}", random_token(6)?));
    std::fs::create_dir_all(&dir).context(format!("creating {}", dir.display()))?;
    Ok(TempDir(dir))
}

/// The config the harness runs Rotor with.
pub fn rotor_config(opts: &RotorOptions, secret: &str, api_key: &str) -> serde_json::Value {
    serde_json::json!({
        "http_server": {"address": "127.0.0.1", "port": 0},
        "log": {"level": opts.log_level},
        "client": {
            "token": {"hmac_secret_key": secret},
            "allowed_origins": [],
            "queue_max_size": opts.queue_max_size,
        },
        "http_api": {"key": api_key},
        "uni_sse": {"enabled": true},
        "channel": {"without_namespace": {"allow_subscribe_for_client": true, "allow_tags_filter": true}},
        "runtime": {"shards": opts.shards, "pin_cpus": false},
        "shutdown": {"timeout": "5s"},
        "websocket": {"compression": opts.ws_compression},
    })
}

/// Starts Rotor with a generated temporary config on an ephemeral loopback port.
pub fn start_rotor(opts: &RotorOptions) -> Result<Spawned> {
    start_rotor_node(opts, &random_token(32)?, &random_token(24)?, serde_json::Value::Null)
}

/// Starts one Rotor with the given credentials and extra config keys merged on top.
fn start_rotor_node(
    opts: &RotorOptions,
    secret: &str,
    api_key: &str,
    extra: serde_json::Value,
) -> Result<Spawned> {
    if !opts.bin.exists() {
        return Err(Error::Args(format!(
            "rotor binary {} not found (build it or pass --rotor-bin)",
            opts.bin.display()
        )));
    }
    let dir = temp_dir("rotor")?;
    let path = dir.0.join("config.json");
    let mut f = std::fs::File::create(&path).context(format!("creating {}", path.display()))?;
    let mut config = rotor_config(opts, secret, api_key);
    if let (Some(base), serde_json::Value::Object(extra)) = (config.as_object_mut(), extra) {
        base.extend(extra);
    }
    let api_addr = match &opts.tls {
        Some((cert, key)) => {
            let port = free_port()?;
            config["http_server"]["tls"] = serde_json::json!({
                "enabled": true,
                "cert_pem": cert.display().to_string(),
                "key_pem": key.display().to_string(),
            });
            config["http_server"]["tls_external"] = true.into();
            config["http_server"]["internal_address"] = "127.0.0.1".into();
            config["http_server"]["internal_port"] = port.into();
            Some(SocketAddr::from(([127, 0, 0, 1], port)))
        }
        None => None,
    };
    let helper = match &opts.connect_proxy {
        Some(self_exe) => {
            let backend = start_proxy_backend(self_exe)?;
            config["client"]["proxy"] = serde_json::json!({"connect": {
                "enabled": true,
                "endpoint": format!("http://{}/centrifugo/connect", backend.addr),
                "timeout": "10s",
            }});
            Some(Box::new(backend))
        }
        None => None,
    };
    let text = serde_json::to_string_pretty(&config).context("encoding rotor config")?;
    f.write_all(text.as_bytes()).context("writing rotor config")?;
    drop(f);
    let mut cmd = Command::new(&opts.bin);
    cmd.arg("-c").arg(&path);
    let (child, addr, log, _) = spawn_and_wait("rotor", cmd, "rotor listening on ", false)?;
    Ok(Spawned {
        name: "rotor".into(),
        child: Some(child),
        measured: None,
        addr,
        api_addr,
        protocol: ProtocolSpec::centrifugo(
            opts.flavor,
            // Through the connect proxy clients send no token.
            helper.is_none().then(|| secret.to_owned()),
            api_key.to_owned(),
        )
        .with_tags_filters(opts.tags_filters, opts.tag_publications),
        log,
        _stdin: None,
        _dir: Some(dir),
        helper,
    })
}

/// Starts the connect proxy's backend (this binary's `proxy-backend` subcommand).
fn start_proxy_backend(self_exe: &Path) -> Result<Spawned> {
    let args = ["proxy-backend", "--listen", "127.0.0.1:0"];
    start_own(self_exe, &args, "proxy-backend", "proxy-backend listening on ", "")
}

/// Starts a server this binary provides as a hidden subcommand (`args`); it is up once it
/// prints `ready` and its address. `ws_path` is where clients connect.
fn start_own(
    self_exe: &Path,
    args: &[&str],
    name: &str,
    ready: &'static str,
    ws_path: &str,
) -> Result<Spawned> {
    let mut cmd = Command::new(self_exe);
    cmd.args(args);
    let (child, addr, log, stdin) = spawn_and_wait(name, cmd, ready, true)?;
    Ok(Spawned {
        name: name.into(),
        child: Some(child),
        measured: None,
        addr,
        api_addr: None,
        protocol: ProtocolSpec::CentrifugoJson {
            ws_path: ws_path.into(),
            hmac_secret: None,
            api_key: String::new(),
            tags_filters: 0,
            tagged: false,
        },
        log,
        _stdin: stdin,
        _dir: None,
        helper: None,
    })
}

/// Several Rotor nodes sharing one redis-server, all started (and stopped by PID) here.
pub struct Cluster {
    nodes: Vec<Spawned>,
    redis: Option<Child>,
    _dir: TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Starts a redis-server on a free loopback port and `n` Rotor nodes with the Redis engine.
pub fn start_cluster(opts: &RotorOptions, n: usize, redis_bin: &Path) -> Result<Cluster> {
    let dir = temp_dir("redis")?;
    let port = free_port()?;
    let redis = Command::new(find_binary(redis_bin)?)
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(&dir.0)
        .args(["--maxclients", "10000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting redis-server")?;
    let mut cluster = Cluster { nodes: Vec::new(), redis: Some(redis), _dir: dir };
    let deadline = std::time::Instant::now() + START_TIMEOUT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if std::time::Instant::now() > deadline {
            return Err(Error::Server("redis-server did not start".into()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (secret, api_key) = (random_token(32)?, random_token(24)?);
    for k in 0..n {
        let extra = serde_json::json!({
            "node": {"name": format!("node{k}")},
            "engine": {"type": "redis", "redis": {"address": format!("redis://127.0.0.1:{port}")}},
        });
        cluster.nodes.push(start_rotor_node(opts, &secret, &api_key, extra)?);
    }
    Ok(cluster)
}

impl Target for Cluster {
    fn name(&self) -> &str {
        "rotor"
    }
    fn addr(&self) -> SocketAddr {
        self.nodes[0].addr()
    }
    fn pid(&self) -> Option<u32> {
        self.nodes[0].pid()
    }
    fn protocol(&self) -> ProtocolSpec {
        self.nodes[0].protocol()
    }
    fn publisher(&self) -> Box<dyn Publisher> {
        self.nodes[0].publisher()
    }
    fn warnings(&self) -> ServerLog {
        let mut all = ServerLog::default();
        for n in &self.nodes {
            let w = n.warnings();
            all.warn_lines += w.warn_lines;
            all.last.extend(w.last);
        }
        all
    }
    fn stop(&mut self) -> Result<()> {
        for n in &mut self.nodes {
            n.stop()?;
        }
        if let Some(mut r) = self.redis.take() {
            stop_child(&mut r, "redis-server")?;
        }
        Ok(())
    }
    fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.addr()).collect()
    }
    fn pids(&self) -> Vec<u32> {
        self.nodes.iter().filter_map(|n| n.pid()).collect()
    }
    fn helper_pid(&self) -> Option<u32> {
        self.redis.as_ref().map(Child::id)
    }
}

/// Starts the raw floor server (this binary's `raw-server` subcommand).
pub fn start_raw(self_exe: &Path, max_seconds: u64) -> Result<Spawned> {
    let max = max_seconds.to_string();
    let args = ["raw-server", "--listen", "127.0.0.1:0", "--max-seconds", &max];
    start_own(self_exe, &args, "raw", "raw-server listening on ", "/connection/websocket")
}

/// A loopback port that was free a moment ago (bound to port 0, then released).
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr().context("local address")?.port())
}

/// `name` as given when it contains a `/`; otherwise the first match on PATH, then in
/// /usr/sbin and /usr/local/sbin (Debian installs nats-server in /usr/sbin).
fn find_binary(name: &Path) -> Result<PathBuf> {
    if name.components().count() > 1 {
        return if name.exists() {
            Ok(name.to_owned())
        } else {
            Err(Error::Args(format!("{} not found", name.display())))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::Args(format!("{} not found on PATH or in /usr/sbin", name.display())))
}

/// The PID of a child of `parent` (found through /proc/*/stat), waiting up to `wait`.
fn child_pid(parent: u32, wait: Duration) -> Option<u32> {
    let until = Instant::now() + wait;
    loop {
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for e in entries.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                    continue;
                };
                let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
                // Fields after the parenthesised command: state, ppid, …
                let ppid = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    .and_then(|p| p.parse::<u32>().ok());
                if ppid == Some(parent) {
                    return Some(pid);
                }
            }
        }
        if Instant::now() >= until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The nats-server config the harness generates: client port and WebSocket listener on
/// loopback, everything else at the server's defaults (max_pending 64 MiB, write deadline,
/// ping interval 2 min, max_connections 64K).
pub fn nats_config(client_port: u16, ws_port: u16) -> String {
    format!(
        "# generated by rotor-loadtest\n\
         listen: \"127.0.0.1:{client_port}\"\n\
         websocket {{\n  host: 127.0.0.1\n  port: {ws_port}\n  no_tls: true\n}}\n"
    )
}

/// Starts nats-server with a generated config on free loopback ports. It runs under
/// `timeout` so it ends after `max_seconds` even if the harness dies; the measured PID is
/// nats-server's own, the stop signal goes to `timeout` (which passes it on).
pub fn start_nats(bin: &Path, max_seconds: u64) -> Result<Spawned> {
    let bin = find_binary(bin)?;
    let dir = temp_dir("nats")?;
    let path = dir.0.join("nats.conf");
    let client_port = free_port()?;
    let ws_port = loop {
        let p = free_port()?;
        if p != client_port {
            break p;
        }
    };
    std::fs::write(&path, nats_config(client_port, ws_port))
        .context(format!("writing {}", path.display()))?;
    let mut cmd = Command::new("timeout");
    cmd.args(["--kill-after=10", &max_seconds.max(1).to_string()]).arg(&bin).arg("-c").arg(&path);
    let ws_addr = SocketAddr::from(([127, 0, 0, 1], ws_port));
    let (mut child, addr, log, _) = spawn_until("nats", cmd, false, true, |line| {
        if line.contains("[FTL]") {
            return Some(Err(Error::Server(format!("nats-server: {line}"))));
        }
        line.contains("Server is ready").then_some(Ok(ws_addr))
    })?;
    let Some(measured) = child_pid(child.id(), Duration::from_secs(2)) else {
        let _ = stop_child(&mut child, "nats");
        return Err(Error::Server("nats-server PID not found under timeout".into()));
    };
    Ok(Spawned {
        name: "nats".into(),
        child: Some(child),
        measured: Some(measured),
        addr,
        api_addr: None,
        protocol: ProtocolSpec::NatsWs {
            publish_addr: SocketAddr::from(([127, 0, 0, 1], client_port)),
        },
        log,
        _stdin: None,
        _dir: Some(dir),
        helper: None,
    })
}

/// Runs `npm ci` in `dir` when its node_modules is missing (bounded to 5 minutes).
pub fn ensure_node_modules(dir: &Path) -> Result<()> {
    if dir.join("node_modules").is_dir() {
        return Ok(());
    }
    eprintln!("running npm ci in {}", dir.display());
    let mut child = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("starting npm ci")?;
    let until = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some(status) = child.try_wait().context("waiting for npm ci")? {
            return if status.success() {
                Ok(())
            } else {
                Err(Error::Server(format!("npm ci in {} failed: {status}", dir.display())))
            };
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Timeout("npm ci".into()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The peers folder: `given`, else `loadtest/peers` under the working directory, else the one
/// next to this crate's sources.
pub fn peers_dir(given: Option<&Path>) -> PathBuf {
    if let Some(d) = given {
        return d.to_owned();
    }
    let local = PathBuf::from("loadtest/peers");
    if local.join("socketio-server.mjs").is_file() {
        return local;
    }
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/peers"))
}

/// Starts the socket.io 4 server (`node socketio-server.mjs 0 <max_seconds>`) on a free
/// loopback port; it exits by itself on stdin EOF or after `max_seconds`.
pub fn start_socketio(node: &Path, dir: &Path, max_seconds: u64) -> Result<Spawned> {
    let script = std::fs::canonicalize(dir.join("socketio-server.mjs")).map_err(|e| {
        Error::Args(format!(
            "socketio-server.mjs not found in {} ({e}); pass --peers-dir",
            dir.display()
        ))
    })?;
    ensure_node_modules(dir)?;
    let mut cmd = Command::new(node);
    cmd.arg(&script).arg("0").arg(max_seconds.to_string()).current_dir(dir);
    let (child, addr, log, stdin) = spawn_until("socketio", cmd, true, false, |line| {
        let port = line.trim().strip_prefix("listening ")?;
        Some(
            port.parse::<u16>()
                .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
                .map_err(|_| Error::Server(format!("socketio: bad listening line {line:?}"))),
        )
    })?;
    Ok(Spawned {
        name: "socketio".into(),
        child: Some(child),
        measured: None,
        addr,
        api_addr: None,
        protocol: ProtocolSpec::SocketIo,
        log,
        _stdin: stdin,
        _dir: None,
        helper: None,
    })
}

/// A server started by someone else (`--addr`).
pub struct External {
    /// Address.
    pub addr: SocketAddr,
    /// PID for measurement (`--server-pid`).
    pub pid: Option<u32>,
    /// Its protocol (secret and API key from the command line).
    pub protocol: ProtocolSpec,
}

impl Target for External {
    fn name(&self) -> &str {
        "external"
    }
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn pid(&self) -> Option<u32> {
        self.pid
    }
    fn protocol(&self) -> ProtocolSpec {
        self.protocol.clone()
    }
    fn stop(&mut self) -> Result<()> {
        Ok(())
    }
}
