//! Prometheus metrics: what each shard counts, and the scrape that sums the shards.
//!
//! Owns: the counters and histograms of one shard ([`ShardMetrics`]) as plain integers bumped
//! through `&mut` by the shard that owns them, the label dimensions with Centrifugo's names and
//! values (`labels`), and the rendering of the sum of every shard's snapshot in the Prometheus
//! text format under Centrifugo's metric names (`render`).
//!
//! Must not: be read by another shard except as a snapshot answer (`Call::Metrics`), use an
//! atomic or a lock, or cost a delivery more than an indexed add. Nothing here does I/O.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub mod info;
pub mod labels;
pub mod render;
#[cfg(test)]
mod tests;

pub use labels::{ClientLabel, FrameType, TransportLabel};

/// Client command and ping/pong duration buckets (centrifuge's, in seconds).
pub const COMMAND_BUCKETS: [f64; 15] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// API command and proxy duration buckets (Prometheus' default buckets, as upstream uses).
pub const DEFAULT_BUCKETS: [f64; 11] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Fan-out duration buckets (centrifuge's `broadcast_duration_seconds`).
pub const BROADCAST_BUCKETS: [f64; 19] = [
    0.000001, 0.000005, 0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// PUB/SUB lag buckets (centrifuge's `pub_sub_lag_seconds`).
pub const LAG_BUCKETS: [f64; 12] =
    [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0];

/// A histogram with fixed bounds `B`: per-bucket (not cumulative) counts, the count and sum.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram<const N: usize> {
    /// Observations at or below each bound and above the previous one.
    pub buckets: [u64; N],
    /// All observations (including those above the last bound).
    pub count: u64,
    /// Their sum, in seconds.
    pub sum: f64,
}

impl<const N: usize> Default for Histogram<N> {
    fn default() -> Self {
        Histogram { buckets: [0; N], count: 0, sum: 0.0 }
    }
}

impl<const N: usize> Histogram<N> {
    /// Records one observation against `bounds`.
    pub fn observe(&mut self, value: f64, bounds: &[f64; N]) {
        if let Some(i) = bounds.iter().position(|b| value <= *b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += value;
    }

    /// Records a duration, in seconds.
    pub fn observe_duration(&mut self, d: Duration, bounds: &[f64; N]) {
        self.observe(d.as_secs_f64(), bounds);
    }

    /// Adds another shard's histogram.
    pub fn merge(&mut self, other: &Self) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
    }
}

/// Messages and bytes of one transport and frame type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Messages.
    pub count: u64,
    /// Their encoded size (no framing).
    pub bytes: u64,
}

/// Traffic by transport and frame type.
pub type TrafficTable = [[Traffic; FrameType::COUNT]; TransportLabel::COUNT];

/// What the node publishes to or receives from its broker, by Centrifugo's `type` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerMessage {
    /// A publication.
    Publication = 0,
    /// A join event.
    Join = 1,
    /// A leave event.
    Leave = 2,
    /// A node-to-node control message.
    Control = 3,
}

/// One proxy's calls (`type`, `name` labels).
#[derive(Debug, Clone, Default)]
pub struct ProxyCalls {
    /// Durations of finished calls.
    pub duration: Histogram<11>,
    /// Calls that failed (transport error, timeout, bad status or body).
    pub errors: u64,
    /// Calls in flight.
    pub inflight: i64,
}

/// The counters one shard owns. A scrape sums every shard's copy.
#[derive(Debug, Clone, Default)]
pub struct ShardMetrics {
    /// Events handed to this shard's subscribers (one per delivery to the shard).
    pub deliveries: u64,
    /// How long queuing one publication to this shard's subscribers took.
    pub broadcast: Histogram<19>,
    /// Deliveries a subscriber's tags filter dropped (one per subscriber per publication).
    pub tags_filter_dropped: u64,
    /// From publish on some node to this node receiving it from the broker.
    pub pub_sub_lag: Histogram<12>,
    /// Clients disconnected for overflowing their queue (3008).
    pub slow_disconnects: u64,
    /// Messages queued to clients.
    pub sent: TrafficTable,
    /// Commands read from clients.
    pub received: TrafficTable,
    /// Client command durations, by method (`FrameType::command_index`).
    pub command_duration: [Histogram<15>; FrameType::COMMANDS],
    /// Error replies by method and code.
    pub reply_errors: HashMap<(FrameType, u32), u64>,
    /// Server-side disconnects by code.
    pub server_disconnects: HashMap<u32, u64>,
    /// Server-side unsubscribes by code.
    pub server_unsubscribes: HashMap<u32, u64>,
    /// Recoveries: `[recovered][has_recovered_publications]`.
    pub recover: [[u64; 2]; 2],
    /// Time from a server ping to the client's pong, by transport.
    pub ping_pong: [Histogram<15>; TransportLabel::COUNT],
    /// Connections that completed `connect`, by transport and client label.
    pub connections_accepted: [[u64; ClientLabel::COUNT]; TransportLabel::COUNT],
    /// Connections refused by `client.connection_limit`.
    pub connection_limit: u64,
    /// Messages this node handed to its broker, by [`BrokerMessage`].
    pub broker_sent: [u64; 4],
    /// Messages this node received from its broker, by [`BrokerMessage`].
    pub broker_received: [u64; 4],
    /// HTTP API command durations by method.
    pub api_duration: HashMap<&'static str, Histogram<11>>,
    /// HTTP API errors by method and error (a code or a stage such as `unmarshal`).
    pub api_errors: HashMap<(&'static str, String), u64>,
    /// Proxy calls by type and proxy name.
    pub proxy: HashMap<(&'static str, Arc<str>), ProxyCalls>,
    /// Broker connections lost, by broker (`redis`, `nats`).
    pub broker_connection_errors: HashMap<&'static str, u64>,
    /// Node actions by upstream's `action` label (`add_client`, `history`, …).
    pub actions: HashMap<&'static str, u64>,
}

impl ShardMetrics {
    /// A node action happened (`centrifugo_node_action_count`).
    pub fn action(&mut self, action: &'static str) {
        *self.actions.entry(action).or_default() += 1;
    }

    /// A message queued to a client.
    #[inline]
    pub fn sent(&mut self, transport: TransportLabel, frame: FrameType, bytes: usize) {
        let t = &mut self.sent[transport as usize][frame as usize];
        t.count += 1;
        t.bytes += bytes as u64;
    }

    /// A command read from a client.
    pub fn received(&mut self, transport: TransportLabel, frame: FrameType, bytes: usize) {
        let t = &mut self.received[transport as usize][frame as usize];
        t.count += 1;
        t.bytes += bytes as u64;
    }

    /// A client command finished after `took`; `error` is its reply's error code, if any.
    pub fn command_done(&mut self, method: FrameType, took: Duration, error: Option<u32>) {
        if let Some(i) = method.command_index() {
            self.command_duration[i].observe_duration(took, &COMMAND_BUCKETS);
        }
        if let Some(code) = error {
            *self.reply_errors.entry((method, code)).or_default() += 1;
        }
    }

    /// The server closed a connection with `code`.
    pub fn server_disconnect(&mut self, code: u32) {
        *self.server_disconnects.entry(code).or_default() += 1;
    }

    /// The server unsubscribed a client with `code`.
    pub fn server_unsubscribe(&mut self, code: u32) {
        *self.server_unsubscribes.entry(code).or_default() += 1;
    }

    /// A subscription asked to recover.
    pub fn recovered(&mut self, recovered: bool, publications: bool) {
        self.recover[usize::from(recovered)][usize::from(publications)] += 1;
    }

    /// A broker message went out.
    pub fn broker_sent(&mut self, kind: BrokerMessage) {
        self.broker_sent[kind as usize] += 1;
    }

    /// A broker message came in.
    pub fn broker_received(&mut self, kind: BrokerMessage) {
        self.broker_received[kind as usize] += 1;
    }

    /// An HTTP API command finished.
    pub fn api_done(&mut self, method: &'static str, took: Duration, error: Option<String>) {
        self.api_duration.entry(method).or_default().observe_duration(took, &DEFAULT_BUCKETS);
        if let Some(e) = error {
            *self.api_errors.entry((method, e)).or_default() += 1;
        }
    }

    /// The calls of one proxy.
    pub fn proxy(&mut self, kind: &'static str, name: &Arc<str>) -> &mut ProxyCalls {
        self.proxy.entry((kind, Arc::clone(name))).or_default()
    }

    /// Adds another shard's counters.
    pub fn merge(&mut self, other: &ShardMetrics) {
        for (mine, theirs) in [(&mut self.sent, &other.sent), (&mut self.received, &other.received)]
        {
            for (row, other_row) in mine.iter_mut().zip(theirs) {
                for (t, o) in row.iter_mut().zip(other_row) {
                    t.count += o.count;
                    t.bytes += o.bytes;
                }
            }
        }
        for (h, o) in self.command_duration.iter_mut().zip(&other.command_duration) {
            h.merge(o);
        }
        for (h, o) in self.ping_pong.iter_mut().zip(&other.ping_pong) {
            h.merge(o);
        }
        add_map(&mut self.reply_errors, &other.reply_errors);
        add_map(&mut self.server_disconnects, &other.server_disconnects);
        add_map(&mut self.server_unsubscribes, &other.server_unsubscribes);
        add_map(&mut self.api_errors, &other.api_errors);
        add_map(&mut self.broker_connection_errors, &other.broker_connection_errors);
        add_map(&mut self.actions, &other.actions);
        for (r, o) in self.recover.iter_mut().flatten().zip(other.recover.iter().flatten()) {
            *r += o;
        }
        for (r, o) in self
            .connections_accepted
            .iter_mut()
            .flatten()
            .zip(other.connections_accepted.iter().flatten())
        {
            *r += o;
        }
        self.connection_limit += other.connection_limit;
        self.deliveries += other.deliveries;
        self.broadcast.merge(&other.broadcast);
        self.pub_sub_lag.merge(&other.pub_sub_lag);
        self.tags_filter_dropped += other.tags_filter_dropped;
        self.slow_disconnects += other.slow_disconnects;
        for (a, b) in self.broker_sent.iter_mut().zip(other.broker_sent) {
            *a += b;
        }
        for (a, b) in self.broker_received.iter_mut().zip(other.broker_received) {
            *a += b;
        }
        for (m, h) in &other.api_duration {
            self.api_duration.entry(m).or_default().merge(h);
        }
        for (k, p) in &other.proxy {
            let mine = self.proxy.entry(k.clone()).or_default();
            mine.duration.merge(&p.duration);
            mine.errors += p.errors;
            mine.inflight += p.inflight;
        }
    }
}

fn add_map<K: Clone + Eq + std::hash::Hash>(into: &mut HashMap<K, u64>, from: &HashMap<K, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

/// What one shard reports to a scrape: its counters and the gauges read at that moment.
#[derive(Debug, Clone, Default)]
pub struct ShardSnapshot {
    /// The shard's counters.
    pub metrics: ShardMetrics,
    /// Connected clients by transport and client label.
    pub inflight: [[u64; ClientLabel::COUNT]; TransportLabel::COUNT],
    /// Subscriptions of connected clients, by client label.
    pub subscriptions: [u64; ClientLabel::COUNT],
    /// Distinct users connected to this shard.
    pub users: Vec<Arc<str>>,
    /// Channels homed here with subscribers anywhere on the node.
    pub channels: u64,
    /// Bytes waiting in client queues.
    pub queue_bytes: u64,
    /// Cross-shard frames sent to peers, by lane (main, reply).
    pub mesh_sent: [u64; 2],
    /// Frames that waited in a spill queue because a peer lane was full.
    pub mesh_spilled: u64,
    /// Deliveries dropped because a peer lane stayed full.
    pub mesh_dropped: u64,
}

impl ShardSnapshot {
    /// Connected clients.
    pub fn clients(&self) -> u64 {
        self.inflight.iter().flatten().sum()
    }
}
