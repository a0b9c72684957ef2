//! Results: the per-target [`Metrics`], the whole [`RunResult`] written as JSON, and the
//! Markdown table printed to stdout, with target/baseline ratios for every `--compare`
//! baseline (raw floor, nats, socketio) that ran.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::cli::{RunArgs, Scenario};
use crate::hist::Percentiles;
use crate::target::ServerLog;

/// Slow-consumer specifics (see `crate::slow` for the phases).
#[derive(Clone, Debug, Default, Serialize)]
pub struct SlowMetrics {
    /// Clients that stopped reading.
    pub slow_clients: usize,
    /// How long they stopped reading, seconds.
    pub stall_seconds: f64,
    /// Stall cycles.
    pub cycles: usize,
    /// Healthy clients' latency without stalled readers: every such phase together.
    pub baseline: Percentiles,
    /// Healthy clients' latency while slow ones stalled: every such phase together.
    pub during: Percentiles,
    /// The healthy p99 of each phase without stalled readers, ms, in order.
    pub baseline_p99_ms: Vec<f64>,
    /// The healthy p99 of each phase with stalled readers, ms, in order.
    pub during_p99_ms: Vec<f64>,
    /// p99 change of healthy clients with stalled readers: the median over cycles of each
    /// such phase against the two phases without around it, percent.
    pub p99_change_percent: Option<f64>,
    /// Deliveries to healthy clients during the slow phase.
    pub healthy_deliveries: u64,
    /// What they should have received.
    pub healthy_expected: u64,
    /// Slow clients closed with a 3008 (slow) close frame.
    pub slow_disconnected_3008: u64,
    /// Slow clients whose connection the server ended in any way (close frame, EOF, reset).
    pub slow_disconnected_any: u64,
    /// Slow clients that ended any other way (other close code, EOF, reset).
    pub slow_closed_other: u64,
    /// Healthy clients that lost their connection.
    pub healthy_closed: u64,
    /// Largest server RSS change across a phase with stalled readers, KiB.
    pub rss_growth_kb: Option<i64>,
}

/// How far the healthy clients' p99 may move with slow readers and still count as isolated.
pub const ISOLATION_P99_PERCENT: f64 = 10.0;

impl SlowMetrics {
    /// What happened to the slow and the healthy clients, in words (the table's figures alone
    /// once read "p99 change -100%" when every healthy client had been cut and none had a
    /// latency).
    pub fn verdict(&self, target: &str) -> String {
        let healthy_pct = (self.healthy_expected > 0)
            .then(|| self.healthy_deliveries as f64 * 100.0 / self.healthy_expected as f64);
        let mut slow = format!(
            "{target}: {} slow clients stopped reading for {} s in each of {} cycles; the \
             server cut them {} times, {} with close 3008 (slow)",
            self.slow_clients,
            self.stall_seconds,
            self.cycles,
            self.slow_disconnected_any,
            self.slow_disconnected_3008
        );
        if self.slow_closed_other > 0 {
            slow.push_str(&format!(
                ", {} without it (no close frame or another code)",
                self.slow_closed_other
            ));
        }
        slow.push('.');
        let ms = |p: &Percentiles| p.p99_us as f64 / 1000.0;
        let list = |v: &[f64]| v.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(", ");
        let p99 = match self.p99_change_percent {
            Some(change) => format!(
                "their p99 moved by {change:+.0}% with stalled readers (median over the \
                 cycles of each such phase against the two without around it; phase by phase \
                 {} ms without, {} ms with); pooled, {:.2} ms with against {:.2} ms without",
                list(&self.baseline_p99_ms),
                list(&self.during_p99_ms),
                ms(&self.during),
                ms(&self.baseline)
            ),
            None => "no latency was measured for them in the slow phase".to_owned(),
        };
        let got = healthy_pct.map_or("–".to_owned(), |p| format!("{p:.1}%"));
        let delivered = self.healthy_closed == 0 && healthy_pct.is_some_and(|p| p >= 99.9);
        let within = self.p99_change_percent.is_some_and(|c| c.abs() <= ISOLATION_P99_PERCENT);
        if delivered && within {
            format!(
                "{slow} Healthy clients kept receiving, isolated: none lost its connection, \
                 they got {got} of what was published, and {p99}, within \
                 ±{ISOLATION_P99_PERCENT:.0}%."
            )
        } else if delivered {
            format!(
                "{slow} Healthy clients kept receiving everything ({got}, none lost its \
                 connection) but their tail moved: {p99}, beyond ±{ISOLATION_P99_PERCENT:.0}%."
            )
        } else {
            format!(
                "{slow} Healthy clients were NOT isolated: {} lost their connection and they \
                 received {got} of what was published; {p99}. This load is more than the \
                 machine carries: lower --rate or --payload-bytes.",
                self.healthy_closed
            )
        }
    }
}

/// Everything measured for one target in one run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Metrics {
    /// `rotor`, `raw`, `external`.
    pub target: String,
    /// Clients requested.
    pub connections: usize,
    /// Worker processes.
    pub workers: usize,
    /// Clients connected and subscribed.
    pub connected: usize,
    /// Clients that failed.
    pub connect_failed: usize,
    /// Failure reasons.
    pub connect_errors: BTreeMap<String, u64>,
    /// Wall time to connect everybody.
    pub connect_seconds: Option<f64>,
    /// Completed connect+subscribe per second.
    pub connect_rate: Option<f64>,
    /// Connect→subscribed latency.
    pub connect_latency: Option<Percentiles>,
    /// Server CPU per completed connect (connect-storm).
    pub cpu_us_per_connect: Option<f64>,
    /// Server RSS before clients connected.
    pub rss_before_kb: Option<u64>,
    /// Server RSS with all clients connected.
    pub rss_after_kb: Option<u64>,
    /// (after − before) / connected.
    pub rss_per_conn_kb: Option<f64>,
    /// Host-wide TCP buffer memory growth per connection (both ends on loopback).
    pub tcp_buffers_per_conn_kb: Option<f64>,
    /// Idle hold time.
    pub hold_seconds: Option<f64>,
    /// Server CPU per connection-second while idle.
    pub cpu_us_per_conn_second: Option<f64>,
    /// Publishes accepted in the measured phase.
    pub publishes: Option<u64>,
    /// Publishes that failed.
    pub publish_errors: Option<u64>,
    /// Publish ticks skipped because the publishers fell more than 1 s behind.
    pub publish_skipped: Option<u64>,
    /// Achieved publish rate.
    pub publish_rate: Option<f64>,
    /// HTTP API round trip of a publish.
    pub publish_api_latency: Option<Percentiles>,
    /// Publications received by clients.
    pub deliveries: Option<u64>,
    /// Publications that should have been received.
    pub expected_deliveries: Option<u64>,
    /// Deliveries per second of the publish phase.
    pub deliveries_per_sec: Option<f64>,
    /// Publish→receive latency.
    pub latency: Option<Percentiles>,
    /// Latency CDF: (quantile, µs).
    pub latency_cdf: Vec<(f64, u64)>,
    /// Deliveries per second over the phase: (second, count).
    pub per_second: Vec<(u64, u64)>,
    /// Server CPU over the measured phase (schedstat ns sum).
    pub server_cpu_us: Option<u64>,
    /// The same from utime+stime ticks (cross-check, tick resolution).
    pub server_cpu_us_stat: Option<u64>,
    /// Server CPU per delivered message.
    pub cpu_us_per_delivery: Option<f64>,
    /// Bytes the clients read from their sockets over the phase (raw WebSocket client only;
    /// TLS records and frame headers included).
    pub wire_rx_bytes: Option<u64>,
    /// `wire_rx_bytes` per delivered message.
    pub wire_bytes_per_delivery: Option<f64>,
    /// Server CPU use over the phase, percent of one core.
    pub server_cpu_percent: Option<f64>,
    /// Slow-consumer results.
    pub slow: Option<SlowMetrics>,
    /// Soak results.
    pub soak: Option<crate::soak::SoakMetrics>,
    /// How client connections ended.
    pub closes: BTreeMap<String, u64>,
    /// Frames the clients did not understand.
    pub bad_frames: u64,
    /// Server warnings and errors.
    pub server_log: ServerLog,
    /// CPU of the helper process (the Redis between nodes) over the publish phase.
    pub helper_cpu_us: Option<u64>,
    /// Per-node figures (`--nodes`).
    pub per_node: Vec<NodeFigures>,
}

/// What the clients of one node saw (`--nodes`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct NodeFigures {
    /// Node index (node 0 takes the publishes).
    pub node: usize,
    /// Its PID.
    pub pid: u32,
    /// Its clients still open at the end.
    pub clients: usize,
    /// Deliveries per second to its clients.
    pub deliveries_per_sec: f64,
    /// Publish → receive latency of its clients.
    pub latency: Percentiles,
}

impl Metrics {
    /// Empty metrics for `target`.
    pub fn new(target: &str, args: &RunArgs) -> Self {
        Self {
            target: target.to_owned(),
            connections: args.connections,
            workers: args.worker_count(),
            ..Self::default()
        }
    }
}

/// The JSON result file.
#[derive(Debug, Serialize)]
pub struct RunResult {
    /// Free-form label.
    pub label: String,
    /// Scenario.
    pub scenario: Scenario,
    /// The exact options.
    pub args: RunArgs,
    /// The command line.
    pub command: String,
    /// Online CPUs of the host.
    pub host_cpus: usize,
    /// One entry per target (raw first when compared).
    pub runs: Vec<Metrics>,
    /// Figure name → target / raw.
    pub ratios_vs_raw: BTreeMap<String, f64>,
    /// Baseline name → figure name → target / baseline (every baseline that ran).
    pub ratios: BTreeMap<String, BTreeMap<String, f64>>,
}

/// One row of the table: name, unit, value per run.
type Figure = (&'static str, Option<f64>);

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// The headline figures of a scenario for one run.
pub fn figures(scenario: Scenario, m: &Metrics) -> Vec<Figure> {
    let mut f: Vec<Figure> = vec![
        ("connected", Some(m.connected as f64)),
        ("connect failures", Some(m.connect_failed as f64)),
    ];
    let lat = |p: Option<Percentiles>| -> Vec<Figure> {
        vec![
            ("latency p50 (ms)", p.map(|p| ms(p.p50_us))),
            ("latency p90 (ms)", p.map(|p| ms(p.p90_us))),
            ("latency p99 (ms)", p.map(|p| ms(p.p99_us))),
            ("latency p99.9 (ms)", p.map(|p| ms(p.p999_us))),
        ]
    };
    match scenario {
        Scenario::Idle => {
            f.push(("time to connect all (s)", m.connect_seconds));
            f.push(("server RSS per conn (KB)", m.rss_per_conn_kb));
            f.push(("kernel TCP buffers per conn (KB, both ends)", m.tcp_buffers_per_conn_kb));
            f.push(("server CPU per conn-second (µs)", m.cpu_us_per_conn_second));
        }
        Scenario::ConnectStorm => {
            f.push(("connect+subscribe per second", m.connect_rate));
            f.push(("time to connect all (s)", m.connect_seconds));
            f.push(("connect→subscribed p50 (ms)", m.connect_latency.map(|p| ms(p.p50_us))));
            f.push(("connect→subscribed p99 (ms)", m.connect_latency.map(|p| ms(p.p99_us))));
            f.push(("server CPU per connect (µs)", m.cpu_us_per_connect));
            f.push(("server RSS per conn (KB)", m.rss_per_conn_kb));
        }
        Scenario::Soak => {
            let ends = m.soak.as_ref().and_then(|s| s.ends());
            let mib = |kb: u64| kb as f64 / 1024.0;
            f.push(("server RSS per conn (KB)", m.rss_per_conn_kb));
            f.push(("steady state from (s)", ends.map(|(a, _)| a.t_s)));
            f.push(("server RSS at steady start (MiB)", ends.map(|(a, _)| mib(a.rss_kb))));
            f.push(("server RSS at end (MiB)", ends.map(|(_, b)| mib(b.rss_kb))));
            f.push(("RSS growth (%)", m.soak.as_ref().and_then(|s| s.rss_growth_percent)));
            f.push(("server fds at steady start", ends.map(|(a, _)| a.fds as f64)));
            f.push(("server fds at end", ends.map(|(_, b)| b.fds as f64)));
            f.push(("fd growth (%)", m.soak.as_ref().and_then(|s| s.fd_growth_percent)));
            f.push(("publishes/s achieved", m.publish_rate));
            f.push(("deliveries/s", m.deliveries_per_sec));
            f.push((
                "delivered / expected (%)",
                match (m.deliveries, m.expected_deliveries) {
                    (Some(d), Some(e)) if e > 0 => Some(d as f64 * 100.0 / e as f64),
                    _ => None,
                },
            ));
            f.extend(lat(m.latency));
            f.push(("server CPU (% of one core)", m.server_cpu_percent));
        }
        Scenario::Broadcast | Scenario::FanoutMany | Scenario::SlowConsumer => {
            f.push(("server RSS per conn (KB)", m.rss_per_conn_kb));
            f.push(("publishes/s achieved", m.publish_rate));
            f.push(("publish API p50 (ms)", m.publish_api_latency.map(|p| ms(p.p50_us))));
            f.push(("deliveries/s", m.deliveries_per_sec));
            f.push((
                "delivered / expected (%)",
                match (m.deliveries, m.expected_deliveries) {
                    (Some(d), Some(e)) if e > 0 => Some(d as f64 * 100.0 / e as f64),
                    _ => None,
                },
            ));
            f.extend(lat(m.latency));
            f.push(("server CPU per delivery (µs)", m.cpu_us_per_delivery));
            f.push((
                "deliveries per server CPU-second",
                m.cpu_us_per_delivery.filter(|c| *c > 0.0).map(|c| 1e6 / c),
            ));
            f.push(("server CPU (% of one core)", m.server_cpu_percent));
            if m.wire_bytes_per_delivery.is_some() {
                f.push(("wire bytes per delivery (client side)", m.wire_bytes_per_delivery));
            }
            if m.helper_cpu_us.is_some() {
                let phase_s = m.publish_rate.zip(m.publishes).map(|(r, n)| n as f64 / r.max(1e-9));
                f.push((
                    "redis-server CPU (% of one core)",
                    m.helper_cpu_us.zip(phase_s).map(|(c, s)| c as f64 / 1e4 / s.max(1e-6)),
                ));
                f.push((
                    "redis-server CPU per publish (µs)",
                    m.helper_cpu_us.zip(m.publishes).map(|(c, n)| c as f64 / n.max(1) as f64),
                ));
            }
            if let Some(s) = &m.slow {
                f.push(("slow clients", Some(s.slow_clients as f64)));
                f.push(("healthy p99 without slow readers (ms)", Some(ms(s.baseline.p99_us))));
                f.push(("healthy p99 with slow clients (ms)", Some(ms(s.during.p99_us))));
                f.push(("healthy p99 change, median of paired phases (%)", s.p99_change_percent));
                f.push((
                    "healthy delivered / expected in slow phase (%)",
                    (s.healthy_expected > 0)
                        .then(|| s.healthy_deliveries as f64 * 100.0 / s.healthy_expected as f64),
                ));
                f.push((
                    "slow clients disconnected by the server",
                    Some(s.slow_disconnected_any as f64),
                ));
                f.push((
                    "… of them with a 3008 close frame",
                    Some(s.slow_disconnected_3008 as f64),
                ));
                f.push(("healthy clients closed", Some(s.healthy_closed as f64)));
            }
        }
    }
    f
}

/// Figures for which a target/raw ratio is meaningful.
const RATIO_FIGURES: &[&str] = &[
    "server RSS per conn (KB)",
    "server CPU per conn-second (µs)",
    "server CPU per delivery (µs)",
    "deliveries per server CPU-second",
    "server CPU per connect (µs)",
    "latency p50 (ms)",
    "latency p99 (ms)",
    "latency p99.9 (ms)",
    "deliveries/s",
    "connect+subscribe per second",
    "wire bytes per delivery (client side)",
];

impl RunResult {
    /// Assembles the result and the ratios (last run = target / each earlier run).
    pub fn new(args: &RunArgs, runs: Vec<Metrics>) -> Self {
        let mut ratios = BTreeMap::new();
        if let Some((tgt, baselines)) = runs.split_last() {
            let ft = figures(args.scenario, tgt);
            for base in baselines.iter().filter(|b| b.target != tgt.target) {
                let fb = figures(args.scenario, base);
                let mut r = BTreeMap::new();
                for (name, t) in &ft {
                    let b = fb.iter().find(|(n, _)| n == name).and_then(|(_, v)| *v);
                    if let (Some(t), Some(b)) = (t, b) {
                        if RATIO_FIGURES.contains(name) && b != 0.0 {
                            r.insert((*name).to_owned(), t / b);
                        }
                    }
                }
                ratios.insert(base.target.clone(), r);
            }
        }
        Self {
            label: args.label.clone(),
            scenario: args.scenario,
            args: args.clone(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            host_cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            runs,
            ratios_vs_raw: ratios.get("raw").cloned().unwrap_or_default(),
            ratios,
        }
    }

    /// Sanity checks of every run: empty when the numbers look plausible.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for m in &self.runs {
            let mut bad = |what: String| out.push(format!("{}: {what}", m.target));
            if m.connected == 0 || m.connected < m.connections {
                bad(format!("only {}/{} clients connected", m.connected, m.connections));
            }
            match self.scenario {
                Scenario::Idle => {
                    if !m.rss_per_conn_kb.is_some_and(|v| v > 0.0) {
                        bad(format!("RSS per connection {:?} is not > 0", m.rss_per_conn_kb));
                    }
                }
                Scenario::ConnectStorm => {
                    if !m.connect_rate.is_some_and(|v| v > 0.0) {
                        bad(format!("connect rate {:?} is not > 0", m.connect_rate));
                    }
                }
                Scenario::Soak => {
                    if m.deliveries.unwrap_or(0) == 0 {
                        bad(format!("deliveries {:?} not > 0", m.deliveries));
                    }
                    if m.soak.as_ref().is_none_or(|s| s.samples.len() < 2) {
                        bad("fewer than two soak samples".into());
                    }
                }
                Scenario::Broadcast | Scenario::FanoutMany | Scenario::SlowConsumer => {
                    if m.deliveries.unwrap_or(0) == 0 {
                        bad(format!("deliveries {:?} not > 0", m.deliveries));
                    }
                    let p50 = m.latency.map_or(0, |p| p.p50_us);
                    if p50 == 0 || p50 >= 1_000_000 {
                        bad(format!("latency p50 {p50} µs not in (0, 1 s)"));
                    }
                    if m.server_cpu_us.is_some() && !m.cpu_us_per_delivery.is_some_and(|v| v > 0.0)
                    {
                        bad("server CPU per delivery is not > 0".into());
                    }
                    for n in m.per_node.iter().filter(|n| n.deliveries_per_sec <= 0.0) {
                        bad(format!("the clients of node {} received nothing", n.node));
                    }
                    if let Some(s) = &m.slow {
                        if s.healthy_deliveries == 0 {
                            bad("healthy clients got nothing in the slow phase".into());
                        }
                    }
                }
            }
        }
        out
    }

    /// The Markdown table.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "### {:?}: {} connections, {} worker(s), rate {}/s, payload {} B, duration {} s\n\n",
            self.scenario,
            self.args.connections,
            self.args.worker_count(),
            self.args.rate,
            self.args.payload_bytes,
            self.args.duration
        );
        let target = self.runs.last().map_or("target", |m| m.target.as_str());
        // Ratio columns in run order (raw first when it ran).
        let bases: Vec<&str> = self
            .runs
            .iter()
            .map(|m| m.target.as_str())
            .filter(|b| self.ratios.contains_key(*b))
            .collect();
        out.push_str("| metric |");
        for r in &self.runs {
            out.push_str(&format!(" {} |", r.target));
        }
        for b in &bases {
            out.push_str(&format!(" {target} / {b} |"));
        }
        out.push_str("\n|---|");
        for _ in 0..self.runs.len() + bases.len() {
            out.push_str("---:|");
        }
        out.push('\n');
        let all: Vec<Vec<Figure>> = self.runs.iter().map(|m| figures(self.scenario, m)).collect();
        let rows = all.iter().map(Vec::len).max().unwrap_or(0);
        for i in 0..rows {
            let Some(name) = all.iter().find_map(|f| f.get(i).map(|x| x.0)) else { continue };
            out.push_str(&format!("| {name} |"));
            for f in &all {
                match f.get(i).and_then(|x| x.1) {
                    Some(v) => out.push_str(&format!(" {} |", fmt(v))),
                    None => out.push_str(" – |"),
                }
            }
            for b in &bases {
                match self.ratios.get(*b).and_then(|r| r.get(name)) {
                    Some(r) => out.push_str(&format!(" {r:.2}× |")),
                    None => out.push_str(" |"),
                }
            }
            out.push('\n');
        }
        for r in &self.runs {
            if let Some(slow) = &r.slow {
                out.push_str(&format!("\n{}\n", slow.verdict(&r.target)));
            }
            if let Some(soak) = &r.soak {
                out.push_str(&soak.markdown(&r.target));
            }
        }
        for r in self.runs.iter().filter(|r| !r.per_node.is_empty()) {
            out.push_str(&format!(
                "\n{} per node (node 0 takes the publishes):\n\n| node | clients | deliveries/s | latency p50 (ms) | p99 (ms) |\n|---:|---:|---:|---:|---:|\n",
                r.target
            ));
            for n in &r.per_node {
                out.push_str(&format!(
                    "| {} | {} | {} | {} | {} |\n",
                    n.node,
                    n.clients,
                    fmt(n.deliveries_per_sec),
                    fmt(n.latency.p50_us as f64 / 1000.0),
                    fmt(n.latency.p99_us as f64 / 1000.0)
                ));
            }
        }
        for r in &self.runs {
            if !r.connect_errors.is_empty() {
                out.push_str(&format!("\n{} connect errors: {:?}\n", r.target, r.connect_errors));
            }
            if r.server_log.warn_lines > 0 {
                out.push_str(&format!(
                    "\n{} logged {} warning/error lines; last: {:?}\n",
                    r.target,
                    r.server_log.warn_lines,
                    r.server_log.last.last()
                ));
            }
            let unusual: BTreeMap<_, _> =
                r.closes.iter().filter(|(k, _)| !k.ends_with("worker-exit")).collect();
            if !unusual.is_empty() {
                out.push_str(&format!("\n{} connection ends: {:?}\n", r.target, unusual));
            }
        }
        out
    }
}

fn fmt(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1000.0 || (v.fract() == 0.0 && v.abs() < 1e15) {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else if v.abs() >= 0.1 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_format() {
        assert_eq!(fmt(12345.6), "12346");
        assert_eq!(fmt(12.34), "12.3");
        assert_eq!(fmt(1.234), "1.23");
        assert_eq!(fmt(0.01234), "0.0123");
    }

    fn percentiles(count: u64, p99_us: u64) -> Percentiles {
        Percentiles { count, p99_us, ..Percentiles::default() }
    }

    #[test]
    fn the_slow_consumer_verdict_says_whether_healthy_clients_were_isolated() {
        let isolated = SlowMetrics {
            slow_clients: 20,
            stall_seconds: 4.0,
            cycles: 1,
            baseline: percentiles(1000, 1200),
            during: percentiles(1000, 1300),
            p99_change_percent: Some(8.3),
            healthy_deliveries: 99_000,
            healthy_expected: 99_000,
            slow_disconnected_3008: 20,
            slow_disconnected_any: 20,
            ..SlowMetrics::default()
        };
        let text = isolated.verdict("rotor");
        assert!(text.contains("kept receiving, isolated") && text.contains("+8%"), "{text}");
        assert!(text.contains("cut them 20 times, 20 with close 3008"), "{text}");
        // Everything delivered, but the tail moved more than the bound.
        let slowed = SlowMetrics { p99_change_percent: Some(46.0), ..isolated.clone() };
        let text = slowed.verdict("rotor");
        assert!(text.contains("tail moved") && text.contains("+46%"), "{text}");
        // Every healthy client cut: no latency to compare, said in words.
        let cut = SlowMetrics {
            during: percentiles(0, 0),
            p99_change_percent: None,
            healthy_deliveries: 0,
            healthy_closed: 1980,
            slow_disconnected_3008: 0,
            slow_closed_other: 20,
            ..isolated
        };
        let text = cut.verdict("rotor");
        assert!(text.contains("NOT isolated: 1980 lost their connection"), "{text}");
        assert!(text.contains("no latency was measured") && !text.contains("-100%"), "{text}");
        assert!(text.contains("20 without it"), "{text}");
    }
}
