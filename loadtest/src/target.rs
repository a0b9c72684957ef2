//! Servers under test. A [`Target`] is a running server the harness can address, measure (its
//! PID for procfs) and stop. [`Spawned`] covers every server the harness starts itself — Rotor
//! with a generated config, the `raw` floor server, and later `nats-server` or a socket.io Node
//! server — and only ever signals the PID it spawned. [`External`] wraps `--addr` and
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
    addr: SocketAddr,
    protocol: ProtocolSpec,
    log: Arc<Mutex<ServerLog>>,
    _stdin: Option<ChildStdin>,
    _dir: Option<TempDir>,
}

/// A directory removed on drop.
struct TempDir(PathBuf);

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
        self.child.as_ref().map(Child::id)
    }
    fn protocol(&self) -> ProtocolSpec {
        self.protocol.clone()
    }
    fn warnings(&self) -> ServerLog {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
    fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        stop_child(&mut child, &self.name)
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
    mut cmd: Command,
    prefix: &'static str,
    keep_stdin: bool,
) -> Result<Started> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if keep_stdin { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().context(format!("starting {name}"))?;
    let log = Arc::new(Mutex::new(ServerLog::default()));
    let (tx, rx) = mpsc::channel::<String>();
    let tail = Arc::new(Mutex::new(VecDeque::<String>::new()));
    if let Some(out) = child.stdout.take() {
        let (tail, log) = (Arc::clone(&tail), Arc::clone(&log));
        std::thread::spawn(move || drain(out, &tx, &tail, &log));
    }
    if let Some(err) = child.stderr.take() {
        let (tail, log) = (Arc::clone(&tail), Arc::clone(&log));
        let (dummy, _) = mpsc::channel();
        std::thread::spawn(move || drain(err, &dummy, &tail, &log));
    }
    let stdin = child.stdin.take();
    let until = Instant::now() + START_TIMEOUT;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.max(Duration::from_millis(1))) {
            Ok(line) => {
                if let Some(rest) = line.trim().strip_prefix(prefix) {
                    let addr: SocketAddr = rest.trim().parse().map_err(|_| {
                        Error::Server(format!("{name}: unparsable address in {line:?}"))
                    })?;
                    return Ok((child, addr, log, stdin));
                }
            }
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
        if line.contains("WARN") || line.contains("ERROR") {
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

fn temp_dir(tag: &str) -> Result<TempDir> {
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
        "channel": {"without_namespace": {"allow_subscribe_for_client": true}},
        "runtime": {"shards": opts.shards, "pin_cpus": false},
        "shutdown": {"timeout": "5s"},
    })
}

/// Starts Rotor with a generated temporary config on an ephemeral loopback port.
pub fn start_rotor(opts: &RotorOptions) -> Result<Spawned> {
    if !opts.bin.exists() {
        return Err(Error::Args(format!(
            "rotor binary {} not found (build it or pass --rotor-bin)",
            opts.bin.display()
        )));
    }
    let secret = random_token(32)?;
    let api_key = random_token(24)?;
    let dir = temp_dir("rotor")?;
    let path = dir.0.join("config.json");
    let mut f = std::fs::File::create(&path).context(format!("creating {}", path.display()))?;
    let text = serde_json::to_string_pretty(&rotor_config(opts, &secret, &api_key))
        .context("encoding rotor config")?;
    f.write_all(text.as_bytes()).context("writing rotor config")?;
    drop(f);
    let mut cmd = Command::new(&opts.bin);
    cmd.arg("-c").arg(&path);
    let (child, addr, log, _) = spawn_and_wait("rotor", cmd, "rotor listening on ", false)?;
    Ok(Spawned {
        name: "rotor".into(),
        child: Some(child),
        addr,
        protocol: ProtocolSpec::CentrifugoJson {
            ws_path: "/connection/websocket".into(),
            hmac_secret: Some(secret),
            api_key,
        },
        log,
        _stdin: None,
        _dir: Some(dir),
    })
}

/// Starts the raw floor server (this binary's `raw-server` subcommand).
pub fn start_raw(self_exe: &Path, max_seconds: u64) -> Result<Spawned> {
    let mut cmd = Command::new(self_exe);
    cmd.args(["raw-server", "--listen", "127.0.0.1:0", "--max-seconds"])
        .arg(max_seconds.to_string());
    let (child, addr, log, stdin) = spawn_and_wait("raw", cmd, "raw-server listening on ", true)?;
    Ok(Spawned {
        name: "raw".into(),
        child: Some(child),
        addr,
        protocol: ProtocolSpec::CentrifugoJson {
            ws_path: "/connection/websocket".into(),
            hmac_secret: None,
            api_key: String::new(),
        },
        log,
        _stdin: stdin,
        _dir: None,
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
