//! The `metrics` and `process` of a node in the `info` API: every
//! `node.info_metrics_aggregate_interval`, the node's `centrifugo_*` series flattened to
//! `namespace.subsystem.name[.label.value…]` keys (counters and summary sums/counts as the
//! change over the interval, gauges as they are, histograms left out, as upstream does), and
//! the process's CPU use over the interval and its resident memory.
//!
//! Owns: the previous values the deltas are taken from. Must not: gather anything itself (the
//! caller scrapes the shards and hands the families in).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use prometheus::proto::{MetricFamily, MetricType};
use serde::Serialize;

/// A node's aggregated metrics, as `info` and the control channel carry them.
#[derive(Clone, PartialEq, Serialize, prost::Message)]
pub struct NodeMetrics {
    /// Seconds the counters' changes cover.
    #[prost(double, tag = "1")]
    pub interval: f64,
    /// Flattened series.
    #[prost(btree_map = "string, double", tag = "2")]
    pub items: BTreeMap<String, f64>,
}

/// The process's resource use.
#[derive(Clone, PartialEq, Serialize, prost::Message)]
pub struct NodeProcess {
    /// CPU use over the last interval, percent of one core.
    #[prost(double, tag = "1")]
    pub cpu: f64,
    /// Resident memory, bytes.
    #[prost(int64, tag = "2")]
    pub rss: i64,
}

/// What the last aggregation produced (kept on shard 0, read by `info`).
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    /// Flattened series.
    pub metrics: NodeMetrics,
    /// Resource use.
    pub process: Option<NodeProcess>,
}

/// Keeps what the next aggregation subtracts.
#[derive(Debug, Default)]
pub struct Aggregator {
    previous: HashMap<String, f64>,
    cpu: Option<(Instant, f64)>,
}

impl Aggregator {
    /// Flattens `families` (one scrape of this node) into the `info` items; `interval` is
    /// how often this runs.
    pub fn metrics(&mut self, families: &[MetricFamily], interval: Duration) -> NodeMetrics {
        let mut items = BTreeMap::new();
        for f in families.iter().filter(|f| f.name().starts_with("centrifugo")) {
            let base = f.name().splitn(3, '_').collect::<Vec<_>>().join(".");
            for m in f.get_metric() {
                let mut key = base.clone();
                let mut labels: Vec<_> = m.get_label().iter().collect();
                labels.sort_by(|a, b| a.name().cmp(b.name()));
                let suffix: String = labels
                    .iter()
                    .filter(|l| !l.value().is_empty())
                    .map(|l| format!(".{}.{}", l.name(), l.value()))
                    .collect();
                match f.get_field_type() {
                    MetricType::COUNTER => {
                        key.push_str(&suffix);
                        let v = self.delta(&key, m.get_counter().get_value());
                        items.insert(key, v);
                    }
                    MetricType::GAUGE => {
                        key.push_str(&suffix);
                        items.insert(key, m.get_gauge().get_value());
                    }
                    MetricType::SUMMARY => {
                        let s = m.get_summary();
                        for (part, value) in
                            [(".sum", s.sample_sum()), (".count", s.sample_count() as f64)]
                        {
                            let key = format!("{key}{part}{suffix}");
                            let v = self.delta(&key, value);
                            items.insert(key, v);
                        }
                    }
                    _ => {}
                }
            }
        }
        NodeMetrics { interval: interval.as_secs_f64(), items }
    }

    fn delta(&mut self, key: &str, value: f64) -> f64 {
        let before = self.previous.insert(key.to_owned(), value).unwrap_or(0.0);
        // A counter never goes down; a lower value means the series restarted.
        if value >= before {
            value - before
        } else {
            value
        }
    }

    /// CPU since the last call (since the process started, the first time) and RSS, from
    /// `/proc/self/stat`; `None` where that cannot be read.
    pub fn process(&mut self) -> Option<NodeProcess> {
        let (cpu_secs, rss) = read_stat()?;
        let now = Instant::now();
        let cpu = match self.cpu.replace((now, cpu_secs)) {
            Some((at, before)) => {
                let wall = now.duration_since(at).as_secs_f64();
                if wall > 0.0 {
                    (cpu_secs - before) / wall * 100.0
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        Some(NodeProcess { cpu: (cpu * 10.0).round() / 10.0, rss })
    }
}

/// User+system CPU seconds and resident bytes of this process.
fn read_stat() -> Option<(f64, i64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime, stime and rss are fields 14, 15 and 24 of the whole line (11, 12, 21 here).
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    let cpu = (ticks(11)? + ticks(12)?) / CLOCK_TICKS;
    let pages: i64 = fields.get(21)?.parse().ok()?;
    Some((cpu, pages * PAGE_SIZE))
}

/// `sysconf(_SC_CLK_TCK)`: 100 on every Linux architecture Rotor builds for.
const CLOCK_TICKS: f64 = 100.0;
/// Page size of the Linux targets Rotor builds for (x86-64, aarch64 with 4 KiB pages).
const PAGE_SIZE: i64 = 4096;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::render::{families, Scrape};
    use crate::metrics::{BrokerMessage, ShardMetrics, ShardSnapshot};

    #[test]
    fn counters_are_changes_over_the_interval_and_gauges_are_values() {
        let snapshot = |published: u64| {
            let mut m = ShardMetrics::default();
            for _ in 0..published {
                m.broker_sent(BrokerMessage::Publication);
            }
            let mut inflight = [[0; 4]; 6];
            inflight[0][0] = 2;
            Scrape {
                shards: vec![ShardSnapshot { metrics: m, inflight, ..Default::default() }],
                nodes: 1,
                version: "v".into(),
            }
        };
        let mut agg = Aggregator::default();
        let first = agg.metrics(&families(&snapshot(5)), Duration::from_secs(60));
        assert_eq!(first.interval, 60.0);
        assert_eq!(first.items["centrifugo.node.num_clients"], 2.0);
        assert_eq!(first.items["centrifugo.node.messages_sent_count.type.publication"], 5.0);
        let second = agg.metrics(&families(&snapshot(12)), Duration::from_secs(60));
        assert_eq!(second.items["centrifugo.node.messages_sent_count.type.publication"], 7.0);
        assert_eq!(second.items["centrifugo.node.num_clients"], 2.0);
        assert!(!second.items.keys().any(|k| k.contains("_histogram")), "histograms are left out");
        assert!(second
            .items
            .contains_key("centrifugo.client.command_duration_seconds.count.method.connect"));
    }

    #[test]
    fn the_process_reports_its_memory() {
        let p = Aggregator::default().process().expect("/proc/self/stat is readable");
        assert!(p.rss > 1024 * 1024, "{p:?}");
    }
}
