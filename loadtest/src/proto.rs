//! The coordinator ↔ worker protocol: one JSON object per line. The coordinator writes a
//! [`WorkerSpec`] as the first line of the worker's stdin, then [`Command`]s; the worker answers
//! on stdout with [`Event`]s. A worker exits on `Shutdown`, on stdin EOF, or when its
//! `max_lifetime_s` runs out, whichever comes first.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::adapter::ProtocolSpec;

/// Everything a worker needs to drive its share of the clients.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerSpec {
    /// Worker index (0-based).
    pub worker: usize,
    /// Server address (must be in 127.0.0.0/8).
    pub addr: SocketAddr,
    /// Source address the client sockets bind to (`IP_BIND_ADDRESS_NO_PORT`), if any.
    pub source_ip: Option<Ipv4Addr>,
    /// Global index of this worker's first client.
    pub first_client: usize,
    /// Number of clients this worker drives.
    pub clients: usize,
    /// Wire protocol of the target.
    pub protocol: ProtocolSpec,
    /// Client `i` subscribes to channel `i % channels`.
    pub channels: usize,
    /// Maximum connection attempts in flight.
    pub connect_concurrency: usize,
    /// Bound on one connect+subscribe.
    pub connect_timeout_ms: u64,
    /// Clients with a global index below this are slow consumer candidates (the coordinator
    /// gives them a worker of their own).
    pub slow_below: Option<usize>,
    /// `SO_RCVBUF` for slow consumer candidates (small, so the server sees back-pressure soon).
    pub slow_rcvbuf: Option<usize>,
    /// WebSocket clients use the raw client (`crate::rawws`).
    #[serde(default)]
    pub raw_ws: bool,
    /// TLS to the server, verified against this CA (PEM); implies the raw client.
    #[serde(default)]
    pub tls_ca_pem: Option<String>,
    /// Offer permessage-deflate; implies the raw client.
    #[serde(default)]
    pub ws_compression: bool,
    /// The worker exits by itself after this many seconds.
    pub max_lifetime_s: u64,
}

/// Coordinator → worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Open every client, connect and subscribe; answer with [`Event::Connected`].
    Connect,
    /// Send statistics; clear latency/delivery counters afterwards when `reset`.
    Report {
        /// Clear counters after reporting.
        reset: bool,
    },
    /// Open again the clients whose connections ended (slow consumers the server cut); answer
    /// with [`Event::Connected`] for them.
    Reconnect,
    /// Slow consumer candidates stop reading their sockets; with `resume_after_ms` they read
    /// again by themselves that much later (while publishing goes on), to see how the server
    /// closed them.
    SlowStart {
        /// When to read again, milliseconds after this command (`None`: on `SlowResume`).
        resume_after_ms: Option<u64>,
    },
    /// Slow consumer candidates read again (to observe their close frames).
    SlowResume,
    /// Close everything and exit.
    Shutdown,
}

/// Worker → coordinator.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The spec was accepted; waiting for commands.
    Ready {
        /// Worker index.
        worker: usize,
    },
    /// Connect progress (sent a few times a second while connecting).
    Progress {
        /// Clients finished so far (ok or failed).
        done: usize,
    },
    /// All clients finished connecting (or timed out).
    Connected(ConnectReport),
    /// Answer to [`Command::Report`].
    Report(WorkerReport),
    /// Something worth showing the user.
    Log {
        /// The message.
        msg: String,
    },
}

/// Outcome of the connect phase of one worker.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ConnectReport {
    /// Clients connected and subscribed.
    pub ok: usize,
    /// Clients that failed or timed out.
    pub failed: usize,
    /// Failure reasons and their counts.
    pub errors: BTreeMap<String, u64>,
    /// Milliseconds from the `Connect` command to the last client finishing.
    pub elapsed_ms: u64,
    /// Connect→subscribed latency histogram (µs), V2-serialised and base64-encoded.
    pub latency_hist: String,
}

/// Statistics of one worker since the last reset.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WorkerReport {
    /// Publications received by clients that are not slow consumer candidates.
    pub deliveries: u64,
    /// Publications received by slow consumer candidates.
    pub slow_deliveries: u64,
    /// Publish→receive latency (µs) of non-slow clients, V2-serialised and base64-encoded.
    pub latency_hist: String,
    /// Deliveries per second of the monotonic clock: `(second, count)`.
    pub per_second: Vec<(u64, u64)>,
    /// How connections ended (cumulative, never reset): `"slow:3008"`, `"ok:eof"`, ….
    pub closes: BTreeMap<String, u64>,
    /// Clients currently open.
    pub open: usize,
    /// Frames that could not be understood.
    pub bad_frames: u64,
    /// Bytes the clients read from their TCP sockets (TLS records included; counted by
    /// the raw WebSocket client only, else 0).
    #[serde(default)]
    pub wire_rx_bytes: u64,
}
