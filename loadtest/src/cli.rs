//! Command-line options. The visible interface is the coordinator (`rotor-loadtest
//! --scenario … --target …`); `worker` and `raw-server` are hidden subcommands the coordinator
//! spawns itself.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

/// Load-test harness for Rotor (and other Centrifugo-style servers).
#[derive(Debug, Parser)]
#[command(name = "rotor-loadtest", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// Internal subcommands.
    #[command(subcommand)]
    pub command: Option<Sub>,
    /// Coordinator options.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Hidden subcommands spawned by the coordinator.
#[derive(Debug, Subcommand)]
pub enum Sub {
    /// Client worker process (JSON lines on stdin/stdout).
    #[command(hide = true)]
    Worker,
    /// The raw fan-out floor server.
    #[command(hide = true)]
    RawServer {
        /// Listen address (loopback only).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Exit after this many seconds.
        #[arg(long, default_value_t = 900)]
        max_seconds: u64,
    },
    /// The application backend of `--connect-proxy` runs.
    #[command(hide = true)]
    ProxyBackend {
        /// Listen address (loopback only).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Exit after this many seconds.
        #[arg(long, default_value_t = 900)]
        max_seconds: u64,
    },
}

/// Which server to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetKind {
    /// Rotor: started from `--rotor-bin`, or the server at `--addr`.
    Rotor,
    /// The raw single-threaded fan-out floor inside this binary.
    Raw,
    /// `nats-server` (started from `--nats-bin`), clients over its WebSocket listener.
    Nats,
    /// The socket.io 4 server in `--peers-dir` (started with `--node-bin`).
    Socketio,
}

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Hold N subscribed connections; RSS and CPU per connection.
    Idle,
    /// One channel, N subscribers, publishes at `--rate`.
    Broadcast,
    /// `--channels` channels, N/C subscribers each, publishes spread over channels.
    FanoutMany,
    /// Open N connections as fast as possible; connect+subscribe per second.
    ConnectStorm,
    /// Broadcast with a fraction of clients that stop reading, against phases without them.
    SlowConsumer,
    /// Hold N subscribed connections (pings on) with publishes at `--rate` over `--channels`
    /// for `--duration` s, sampling server RSS and fds every `--sample-every` s.
    Soak,
}

/// Publication payload content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PayloadKind {
    /// `{"ts":…,"seq":…,"pad":"xxx…"}` of exactly `--payload-bytes`.
    Padded,
    /// A realistic order-list JSON message of up to `--payload-bytes`.
    AppJson,
}

/// Baseline to run back to back with the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compare {
    /// The raw floor server.
    Raw,
    /// nats-server over WebSocket.
    Nats,
    /// The socket.io 4 Node server.
    Socketio,
}

impl Compare {
    /// The target this baseline runs as.
    pub fn kind(self) -> TargetKind {
        match self {
            Compare::Raw => TargetKind::Raw,
            Compare::Nats => TargetKind::Nats,
            Compare::Socketio => TargetKind::Socketio,
        }
    }
}

/// Coordinator options.
#[derive(Clone, Debug, Args, Serialize)]
pub struct RunArgs {
    /// Server to load.
    #[arg(long, value_enum, default_value_t = TargetKind::Rotor)]
    pub target: TargetKind,
    /// Scenario.
    #[arg(long, value_enum, default_value_t = Scenario::Broadcast)]
    pub scenario: Scenario,
    /// Client connections in total.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Worker processes (default: ceil(connections / 18000)).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Measured phase length in seconds (idle: hold time; slow-consumer: each phase).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Publishes per second (all channels together).
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Payload size in bytes (JSON object with the send timestamp, padded).
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// What the payload is: `padded` (the timestamp object padded with `x` to
    /// `--payload-bytes`) or `app-json` (an order-list JSON message of up to `--payload-bytes`
    /// that compresses like application data).
    #[arg(long, value_enum, default_value_t = PayloadKind::Padded)]
    pub payload_kind: PayloadKind,
    /// Concurrent publisher connections (each its own thread and keep-alive connection).
    #[arg(long, default_value_t = 4)]
    pub publishers: usize,
    /// Channels for fanout-many.
    #[arg(long, default_value_t = 100)]
    pub channels: usize,
    /// Fraction of slow clients for slow-consumer.
    #[arg(long, default_value_t = 0.01)]
    pub slow_fraction: f64,
    /// Seconds slow clients stop reading at the start of the slow phase before they read
    /// again (at most `--duration`). Rotor keeps the socket of a client it cut up to 5 s for
    /// the close frame, so a client cut during the stall and reading within that sees 3008.
    #[arg(long, default_value_t = 4.0)]
    pub slow_stall: f64,
    /// slow-consumer: how many times the slow clients stall (each cut client is connected
    /// again before the next); phases without and with stalled readers alternate.
    #[arg(long, default_value_t = 3)]
    pub slow_cycles: usize,
    /// Soak: seconds between samples of server RSS, open fds and deliveries.
    #[arg(long, default_value_t = 60.0)]
    pub sample_every: f64,
    /// Rotor authenticates connects through its connect proxy instead of tokens: clients send
    /// no token and a local backend (this binary's `proxy-backend`, reported as the helper
    /// process) answers every connect.
    #[arg(long)]
    pub connect_proxy: bool,
    /// Rotor's JSON clients subscribe with one of this many distinct tags filters, each
    /// passing every publication (publications carry a tag): the cost of filter evaluation
    /// per delivery against 0 (no filters).
    #[arg(long, default_value_t = 0)]
    pub tags_filters: usize,
    /// Publications carry the tag `--tags-filters` filters on, without any filter: the
    /// baseline with the same bytes on the wire.
    #[arg(long)]
    pub tag_publications: bool,
    /// Connection attempts in flight per worker (connect-storm uses --storm-concurrency).
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Connection attempts in flight per worker during connect-storm.
    #[arg(long, default_value_t = 2048)]
    pub storm_concurrency: usize,
    /// Bound on one connect+subscribe, milliseconds.
    #[arg(long, default_value_t = 15_000)]
    pub connect_timeout_ms: u64,
    /// Baselines to run back to back with identical parameters, before the target
    /// (`--compare raw,nats,socketio`; repeatable).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub compare: Vec<Compare>,
    /// Rotor binary to start.
    #[arg(long, default_value = "target/release/rotor")]
    pub rotor_bin: PathBuf,
    /// Rotor `runtime.shards` (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub shards: usize,
    /// Rotor `client.queue_max_size` in bytes.
    #[arg(long, default_value_t = 1_048_576)]
    pub queue_max_size: usize,
    /// Rotor nodes sharing one Redis (`engine.type: redis`; a redis-server is started on a
    /// free loopback port). Workers are spread over the nodes round-robin and publishes go to
    /// the first node, so every other node receives them through Redis. 1 = one node with the
    /// memory engine.
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// redis-server binary for `--nodes` above 1.
    #[arg(long, default_value = "redis-server")]
    pub redis_bin: PathBuf,
    /// nats-server binary (`--target nats`, `--compare nats`); PATH, then /usr/sbin.
    #[arg(long, default_value = "nats-server")]
    pub nats_bin: PathBuf,
    /// Node.js binary for the socket.io server.
    #[arg(long, default_value = "node")]
    pub node_bin: PathBuf,
    /// Folder with `socketio-server.mjs` and its package.json (`npm ci` runs there when
    /// node_modules is missing); default `loadtest/peers`, else the one next to this crate.
    #[arg(long)]
    pub peers_dir: Option<PathBuf>,
    /// Rotor `log.level`.
    #[arg(long, default_value = "warn")]
    pub server_log_level: String,
    /// Attack a running server instead of starting one (loopback only).
    #[arg(long)]
    pub addr: Option<SocketAddr>,
    /// PID of the server at `--addr`, for CPU/RSS measurement.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// HMAC secret of the server at `--addr`.
    #[arg(long)]
    pub hmac_secret: Option<String>,
    /// Rotor clients speak the Protobuf protocol instead of JSON.
    #[arg(long, conflicts_with = "uni_sse")]
    pub protobuf: bool,
    /// Rotor clients use unidirectional SSE (`/connection/uni_sse`, subscribed by the token's
    /// `channels` claim) instead of WebSocket.
    #[arg(long)]
    pub uni_sse: bool,
    /// Rotor serves its client port over TLS (a throwaway CA and server certificate made with
    /// the `openssl` CLI); clients verify against that CA with full handshakes (no resumption)
    /// and speak through the raw WebSocket client. The HTTP API stays cleartext on an
    /// internal port.
    #[arg(long)]
    pub tls: bool,
    /// Rotor runs with `websocket.compression: true`; clients offer permessage-deflate (no
    /// context takeover) and inflate compressed frames (raw WebSocket client).
    #[arg(long)]
    pub ws_compression: bool,
    /// WebSocket clients use the raw client (as `--tls` and `--ws-compression` do) instead of
    /// tungstenite, for a baseline with the same client code.
    #[arg(long)]
    pub raw_ws: bool,
    /// API key of the server at `--addr`.
    #[arg(long, default_value = "")]
    pub api_key: String,
    /// First source address octet: worker k binds to 127.0.0.(base+k); 0 disables binding.
    #[arg(long, default_value_t = 2)]
    pub source_base: u8,
    /// CPUs for the server processes the harness starts (`0-3,8`).
    #[arg(long, value_parser = parse_cpu_list, default_value = "")]
    pub server_cpus: CpuList,
    /// CPUs for the worker processes (`4-7`).
    #[arg(long, value_parser = parse_cpu_list, default_value = "")]
    pub client_cpus: CpuList,
    /// Hard bound on the whole run in seconds (workers and raw server exit by themselves too).
    #[arg(long, default_value_t = 900)]
    pub max_runtime: u64,
    /// Write the JSON result here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write SVG plots (latency CDF, deliveries/s) into this directory.
    #[arg(long)]
    pub plots: Option<PathBuf>,
    /// Exit non-zero unless the numbers are sane (used by scripts/loadtest-smoke.sh).
    #[arg(long)]
    pub assert_sane: bool,
    /// Free-form label stored in the result.
    #[arg(long, default_value = "")]
    pub label: String,
}

impl RunArgs {
    /// WebSocket clients use the raw client.
    pub fn raw_client(&self) -> bool {
        self.tls || self.ws_compression || self.raw_ws
    }

    /// Workers to use.
    pub fn worker_count(&self) -> usize {
        // Every node gets at least one worker of its own.
        self.workers.unwrap_or_else(|| self.connections.div_ceil(18_000)).max(self.nodes).max(1)
    }
}

/// A list of CPU numbers (empty = no affinity change).
#[derive(Clone, Debug, Default, Serialize)]
pub struct CpuList(pub Vec<usize>);

/// Parses `0-3,8,10-11` (empty string = empty list).
pub fn parse_cpu_list(text: &str) -> Result<CpuList, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let num = |s: &str| s.trim().parse::<usize>().map_err(|_| format!("bad CPU number {s:?}"));
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b || b >= 1024 {
                    return Err(format!("bad CPU range {part:?}"));
                }
                out.extend(a..=b);
            }
            None => out.push(num(part)?),
        }
    }
    Ok(CpuList(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-2,5").unwrap().0, vec![0, 1, 2, 5]);
        assert!(parse_cpu_list("").unwrap().0.is_empty());
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("x").is_err());
    }

    #[test]
    fn compare_lists() {
        let cli =
            Cli::parse_from(["rotor-loadtest", "--compare", "raw,nats", "--compare", "socketio"]);
        assert_eq!(cli.run.compare, vec![Compare::Raw, Compare::Nats, Compare::Socketio]);
        let cli = Cli::parse_from(["rotor-loadtest", "--target", "nats"]);
        assert!(cli.run.compare.is_empty());
        assert_eq!(cli.run.target, TargetKind::Nats);
    }

    #[test]
    fn default_workers() {
        let cli = Cli::parse_from(["rotor-loadtest", "--connections", "100000"]);
        assert_eq!(cli.run.worker_count(), 6);
    }
}
