//! The `/metrics` answer: every shard's snapshot summed and written in the Prometheus text
//! exposition format under Centrifugo's names, labels and help strings, then Rotor's own
//! per-shard series (`rotor_*`) and the process collector's (`process_*`).
//!
//! The `prometheus` crate writes the format (escaping, ordering, `+Inf` buckets): its families
//! are built here from the summed plain integers at scrape time, so nothing on a shard touches
//! its atomics. Summaries carry `_sum` and `_count` only: quantiles of different shards cannot
//! be added, and dashboards read the `_histogram` companions.

use prometheus::core::Collector;
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram as PbHistogram, LabelPair, Metric, MetricFamily, MetricType,
    Summary,
};
use prometheus::Encoder;

use super::{
    BrokerMessage, ClientLabel, FrameType, Histogram, ShardMetrics, ShardSnapshot, TrafficTable,
    TransportLabel, BROADCAST_BUCKETS, COMMAND_BUCKETS, DEFAULT_BUCKETS, LAG_BUCKETS,
};

/// What a scrape gathered.
#[derive(Debug, Default)]
pub struct Scrape {
    /// One snapshot per shard, in shard order.
    pub shards: Vec<ShardSnapshot>,
    /// Nodes the cluster knows of (this one included).
    pub nodes: u64,
    /// `centrifugo_node_build`'s `version` label.
    pub version: String,
}

/// The body of a `/metrics` answer.
pub fn render(scrape: &Scrape) -> Vec<u8> {
    let mut families = families(scrape);
    let process = prometheus::process_collector::ProcessCollector::for_self();
    families.extend(process.collect());
    let mut out = Vec::with_capacity(16 * 1024);
    // Writing into a Vec cannot fail, and every family is well formed (built above).
    let _ = prometheus::TextEncoder::new().encode(&families, &mut out);
    out
}

/// The node's series (without the process collector's), summed over its shards.
pub fn families(scrape: &Scrape) -> Vec<MetricFamily> {
    let mut total = ShardMetrics::default();
    for s in &scrape.shards {
        total.merge(&s.metrics);
    }
    let mut families = Vec::new();
    node_families(&mut families, scrape, &total);
    client_families(&mut families, scrape, &total);
    transport_families(&mut families, &total);
    api_and_proxy_families(&mut families, &total);
    rotor_families(&mut families, scrape);
    families.retain(|f| !f.get_metric().is_empty());
    families
}

/// The text format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const NS: &str = "";

fn node_families(out: &mut Vec<MetricFamily>, scrape: &Scrape, total: &ShardMetrics) {
    let mut users: Vec<&str> =
        scrape.shards.iter().flat_map(|s| s.users.iter().map(|u| &**u)).collect();
    users.sort_unstable();
    users.dedup();
    let clients: u64 = scrape.shards.iter().map(ShardSnapshot::clients).sum();
    let subs: u64 = scrape.shards.iter().flat_map(|s| s.subscriptions).sum();
    let channels: u64 = scrape.shards.iter().map(|s| s.channels).sum();
    let gauges = [
        ("centrifugo_node_num_clients", "Number of clients connected.", clients),
        ("centrifugo_node_num_users", "Number of unique users connected.", users.len() as u64),
        ("centrifugo_node_num_subscriptions", "Number of subscriptions.", subs),
        (
            "centrifugo_node_num_channels",
            "Number of channels with one or more subscribers.",
            channels,
        ),
        ("centrifugo_node_num_nodes", "Number of nodes in the cluster.", scrape.nodes),
    ];
    for (name, help, v) in gauges {
        out.push(family(name, help, MetricType::GAUGE, vec![gauge(&[], v as f64)]));
    }
    let build = gauge(&[("version", &scrape.version)], 1.0);
    out.push(family("centrifugo_node_build", "Node build info.", MetricType::GAUGE, vec![build]));
    let kinds = [
        (BrokerMessage::Publication, "publication"),
        (BrokerMessage::Join, "join"),
        (BrokerMessage::Leave, "leave"),
        (BrokerMessage::Control, "control"),
    ];
    for (name, help, counts) in [
        (
            "centrifugo_node_messages_sent_count",
            "Number of messages sent by node to broker.",
            &total.broker_sent,
        ),
        (
            "centrifugo_node_messages_received_count",
            "Number of messages received from broker.",
            &total.broker_received,
        ),
    ] {
        let metrics = kinds
            .iter()
            .map(|(k, label)| {
                counter(&[("channel_namespace", NS), ("type", label)], counts[*k as usize] as f64)
            })
            .collect();
        out.push(family(name, help, MetricType::COUNTER, metrics));
    }
    out.push(family(
        "centrifugo_node_broadcast_duration_seconds",
        "Broadcast duration in seconds",
        MetricType::HISTOGRAM,
        vec![histogram(
            &[("channel_namespace", NS), ("type", "publication")],
            &total.broadcast,
            &BROADCAST_BUCKETS,
        )],
    ));
    let lag = (total.pub_sub_lag.count > 0)
        .then(|| histogram(&[("channel_namespace", NS)], &total.pub_sub_lag, &LAG_BUCKETS));
    out.push(family(
        "centrifugo_node_pub_sub_lag_seconds",
        "Pub sub lag in seconds",
        MetricType::HISTOGRAM,
        lag.into_iter().collect(),
    ));
    out.push(family(
        "centrifugo_node_tags_filter_dropped_publications",
        "Number of publications dropped due to tags filtering.",
        MetricType::COUNTER,
        vec![counter(&[("channel_namespace", NS)], total.tags_filter_dropped as f64)],
    ));
    let mut actions: Vec<_> = total.actions.iter().collect();
    actions.sort();
    out.push(family(
        "centrifugo_node_action_count",
        "Number of various actions called.",
        MetricType::COUNTER,
        actions
            .into_iter()
            .map(|(a, n)| counter(&[("action", a), ("channel_namespace", NS)], *n as f64))
            .collect(),
    ));
    out.push(family(
        "centrifugo_node_client_connection_limit",
        "Number of refused requests due to node client connection limit.",
        MetricType::COUNTER,
        vec![counter(&[], total.connection_limit as f64)],
    ));
}

fn client_families(out: &mut Vec<MetricFamily>, scrape: &Scrape, total: &ShardMetrics) {
    let methods = &FrameType::ALL[..FrameType::COMMANDS];
    let method_labels = |m: &FrameType| [("channel_namespace", NS), ("method", m.as_str())];
    out.push(family(
        "centrifugo_client_command_duration_seconds",
        "DEPRECATED — use command_duration_seconds_histogram. Will be removed in future releases. Client command duration summary.",
        MetricType::SUMMARY,
        methods
            .iter()
            .zip(&total.command_duration)
            .map(|(m, h)| summary(&method_labels(m), h))
            .collect(),
    ));
    out.push(family(
        "centrifugo_client_command_duration_seconds_histogram",
        "Client command duration histogram. Use for histogram_quantile() and OpenTelemetry export.",
        MetricType::HISTOGRAM,
        methods
            .iter()
            .zip(&total.command_duration)
            .map(|(m, h)| histogram(&method_labels(m), h, &COMMAND_BUCKETS))
            .collect(),
    ));
    let mut errors: Vec<_> = total.reply_errors.iter().collect();
    errors.sort_by_key(|((m, c), _)| (*m as usize, *c));
    out.push(family(
        "centrifugo_client_num_reply_errors",
        "Number of errors in replies sent to clients.",
        MetricType::COUNTER,
        errors
            .into_iter()
            .map(|((m, code), n)| {
                let code = code.to_string();
                let labels = [("channel_namespace", NS), ("code", &code), ("method", m.as_str())];
                counter(&labels, *n as f64)
            })
            .collect(),
    ));
    let by_code = |map: &std::collections::HashMap<u32, u64>, ns: bool| {
        let mut v: Vec<_> = map.iter().collect();
        v.sort();
        v.into_iter()
            .map(|(code, n)| {
                let code = code.to_string();
                if ns {
                    counter(&[("channel_namespace", NS), ("code", &code)], *n as f64)
                } else {
                    counter(&[("code", &code)], *n as f64)
                }
            })
            .collect()
    };
    out.push(family(
        "centrifugo_client_num_server_disconnects",
        "Number of server initiated disconnects.",
        MetricType::COUNTER,
        by_code(&total.server_disconnects, false),
    ));
    out.push(family(
        "centrifugo_client_num_server_unsubscribes",
        "Number of server initiated unsubscribes.",
        MetricType::COUNTER,
        by_code(&total.server_unsubscribes, true),
    ));
    let yes = |b: bool| if b { "yes" } else { "no" };
    let mut recover = Vec::new();
    for (r, row) in total.recover.iter().enumerate() {
        for (p, n) in row.iter().enumerate().filter(|(_, n)| **n > 0) {
            let labels = [
                ("channel_namespace", NS),
                ("has_recovered_publications", yes(p == 1)),
                ("recovered", yes(r == 1)),
            ];
            recover.push(counter(&labels, *n as f64));
        }
    }
    out.push(family(
        "centrifugo_client_recover",
        "Count of recover operations with success/fail resolution.",
        MetricType::COUNTER,
        recover,
    ));
    out.push(family(
        "centrifugo_client_ping_pong_duration_seconds",
        "Ping/Pong duration in seconds",
        MetricType::HISTOGRAM,
        TransportLabel::ALL
            .iter()
            .zip(&total.ping_pong)
            .filter(|(_, h)| h.count > 0)
            .map(|(t, h)| histogram(&[("transport", t.as_str())], h, &COMMAND_BUCKETS))
            .collect(),
    ));
    let mut inflight = [[0u64; ClientLabel::COUNT]; TransportLabel::COUNT];
    let mut subs = [0u64; ClientLabel::COUNT];
    for s in &scrape.shards {
        for (row, theirs) in inflight.iter_mut().zip(&s.inflight) {
            for (a, b) in row.iter_mut().zip(theirs) {
                *a += b;
            }
        }
        for (a, b) in subs.iter_mut().zip(s.subscriptions) {
            *a += b;
        }
    }
    let mut accepted = Vec::new();
    let mut live = Vec::new();
    for (t, transport) in TransportLabel::ALL.iter().enumerate() {
        let rows = total.connections_accepted[t].iter().zip(&inflight[t]);
        for (l, (&a, &i)) in rows.enumerate() {
            if a == 0 && i == 0 {
                continue;
            }
            let label = ClientLabel(l as u8);
            let labels = [
                ("accept_protocol", ""),
                ("client_name", label.name()),
                ("client_version", label.version()),
                ("transport", transport.as_str()),
            ];
            accepted.push(counter(&labels, a as f64));
            live.push(gauge(&labels, i as f64));
        }
    }
    out.push(family(
        "centrifugo_client_connections_accepted",
        "Count of accepted transports.",
        MetricType::COUNTER,
        accepted,
    ));
    out.push(family(
        "centrifugo_client_connections_inflight",
        "Number of inflight client connections.",
        MetricType::GAUGE,
        live,
    ));
    // Two labels share a name value ("unregistered" for any named client): sum by name.
    let (unnamed, named) = subs.iter().enumerate().fold((0, 0), |(u, n), (l, v)| {
        if ClientLabel(l as u8).name() == "unnamed" {
            (u + v, n)
        } else {
            (u, n + v)
        }
    });
    let sub_gauges = [("unnamed", unnamed), ("unregistered", named)]
        .into_iter()
        .filter(|(_, v)| *v > 0)
        .map(|(name, v)| gauge(&[("channel_namespace", NS), ("client_name", name)], v as f64))
        .collect();
    out.push(family(
        "centrifugo_client_subscriptions_inflight",
        "Number of inflight client subscriptions.",
        MetricType::GAUGE,
        sub_gauges,
    ));
}

fn transport_families(out: &mut Vec<MetricFamily>, total: &ShardMetrics) {
    let table = |t: &TrafficTable, bytes: bool| -> Vec<Metric> {
        let mut v = Vec::new();
        for (transport, row) in TransportLabel::ALL.iter().zip(t) {
            for (frame, traffic) in FrameType::ALL.iter().zip(row) {
                if traffic.count == 0 {
                    continue;
                }
                let value = if bytes { traffic.bytes } else { traffic.count };
                let labels = [
                    ("channel_namespace", NS),
                    ("frame_type", frame.as_str()),
                    ("transport", transport.as_str()),
                ];
                v.push(counter(&labels, value as f64));
            }
        }
        v
    };
    let size_help = |dir: &str| {
        format!("MaxSize in bytes of messages {dir} client connections over specific transport (uncompressed and does not include framing overhead).")
    };
    out.push(family(
        "centrifugo_transport_messages_sent",
        "Number of messages sent to client connections over specific transport.",
        MetricType::COUNTER,
        table(&total.sent, false),
    ));
    out.push(family(
        "centrifugo_transport_messages_sent_size",
        &size_help("sent to"),
        MetricType::COUNTER,
        table(&total.sent, true),
    ));
    out.push(family(
        "centrifugo_transport_messages_received",
        "Number of messages received from client connections over specific transport.",
        MetricType::COUNTER,
        table(&total.received, false),
    ));
    out.push(family(
        "centrifugo_transport_messages_received_size",
        &size_help("received from"),
        MetricType::COUNTER,
        table(&total.received, true),
    ));
}

fn api_and_proxy_families(out: &mut Vec<MetricFamily>, total: &ShardMetrics) {
    let mut api: Vec<_> = total.api_duration.iter().collect();
    api.sort_by_key(|(m, _)| **m);
    let labels = |m: &'static str| [("method", m), ("protocol", "http")];
    out.push(family(
        "centrifugo_api_command_duration_seconds",
        "DEPRECATED — use centrifugo_api_command_duration_seconds_histogram. Will be removed in Centrifugo v7. Duration of API per command.",
        MetricType::SUMMARY,
        api.iter().map(|(m, h)| summary(&labels(m), h)).collect(),
    ));
    out.push(family(
        "centrifugo_api_command_duration_seconds_histogram",
        "Histogram of duration of API per command.",
        MetricType::HISTOGRAM,
        api.iter().map(|(m, h)| histogram(&labels(m), h, &DEFAULT_BUCKETS)).collect(),
    ));
    let mut errors: Vec<_> = total.api_errors.iter().collect();
    errors.sort();
    out.push(family(
        "centrifugo_api_command_errors_total",
        "Total errors in API commands.",
        MetricType::COUNTER,
        errors
            .into_iter()
            .map(|((m, e), n)| {
                counter(&[("error", e.as_str()), ("method", m), ("protocol", "http")], *n as f64)
            })
            .collect(),
    ));
    let mut proxies: Vec<_> = total.proxy.iter().collect();
    proxies.sort_by(|a, b| a.0.cmp(b.0));
    let with = |f: &ProxyMetric| -> Vec<Metric> {
        proxies
            .iter()
            .map(|((kind, name), p)| f(&[("name", name), ("protocol", "http"), ("type", kind)], p))
            .collect()
    };
    out.push(family(
        "centrifugo_proxy_duration_seconds",
        "DEPRECATED — use centrifugo_proxy_duration_seconds_histogram. Will be removed in Centrifugo v7. Duration of proxy call.",
        MetricType::SUMMARY,
        with(&|l, p| summary(l, &p.duration)),
    ));
    out.push(family(
        "centrifugo_proxy_duration_seconds_histogram",
        "Histogram of duration of proxy call.",
        MetricType::HISTOGRAM,
        with(&|l, p| histogram(l, &p.duration, &DEFAULT_BUCKETS)),
    ));
    out.push(family(
        "centrifugo_proxy_errors",
        "Proxy call error count.",
        MetricType::COUNTER,
        with(&|l, p| counter(l, p.errors as f64)),
    ));
    out.push(family(
        "centrifugo_proxy_inflight_requests",
        "Number of inflight proxy requests.",
        MetricType::GAUGE,
        with(&|l, p| gauge(l, p.inflight as f64)),
    ));
    let mut lost: Vec<_> = total.broker_connection_errors.iter().collect();
    lost.sort();
    let redis: Vec<Metric> = lost
        .iter()
        .filter(|(b, _)| **b == "redis")
        .map(|(_, n)| counter(&[("broker_name", ""), ("error", "connection")], **n as f64))
        .collect();
    out.push(family(
        "centrifugo_broker_redis_pub_sub_errors",
        "Number of times there was an error in Redis PUB/SUB connection.",
        MetricType::COUNTER,
        redis,
    ));
    out.push(family(
        "rotor_broker_connections_lost_total",
        "Broker connections (command and PUB/SUB links of every shard) that broke, by broker.",
        MetricType::COUNTER,
        lost.iter().map(|(b, n)| counter(&[("broker", b)], **n as f64)).collect(),
    ));
}

fn rotor_families(out: &mut Vec<MetricFamily>, scrape: &Scrape) {
    type Read = fn(&ShardSnapshot) -> u64;
    let per_shard: [(&str, &str, MetricType, Read); 6] = [
        (
            "rotor_shard_connections",
            "Connected clients owned by each shard.",
            MetricType::GAUGE,
            |s| s.clients(),
        ),
        (
            "rotor_shard_queue_bytes",
            "Bytes waiting in the client queues of each shard.",
            MetricType::GAUGE,
            |s| s.queue_bytes,
        ),
        (
            "rotor_mesh_spilled_total",
            "Cross-shard frames that waited in a spill queue because a peer lane was full.",
            MetricType::COUNTER,
            |s| s.mesh_spilled,
        ),
        (
            "rotor_mesh_deliveries_dropped_total",
            "Deliveries dropped because a peer lane stayed full (subscribers recover by offset).",
            MetricType::COUNTER,
            |s| s.mesh_dropped,
        ),
        (
            "rotor_slow_consumer_disconnects_total",
            "Clients disconnected for overflowing their queue (3008).",
            MetricType::COUNTER,
            |s| s.metrics.slow_disconnects,
        ),
        (
            "rotor_shard_channels",
            "Channels homed on each shard with subscribers on the node.",
            MetricType::GAUGE,
            |s| s.channels,
        ),
    ];
    for (name, help, kind, read) in per_shard {
        let metrics = scrape
            .shards
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let shard = i.to_string();
                let v = read(s) as f64;
                if kind == MetricType::COUNTER {
                    counter(&[("shard", &shard)], v)
                } else {
                    gauge(&[("shard", &shard)], v)
                }
            })
            .collect();
        out.push(family(name, help, kind, metrics));
    }
    let mut mesh = Vec::new();
    for (i, s) in scrape.shards.iter().enumerate() {
        let shard = i.to_string();
        for (lane, n) in ["main", "reply"].iter().zip(s.mesh_sent) {
            mesh.push(counter(&[("lane", lane), ("shard", &shard)], n as f64));
        }
    }
    out.push(family(
        "rotor_mesh_messages_sent_total",
        "Messages each shard sent to the other shards, by lane.",
        MetricType::COUNTER,
        mesh,
    ));
}

/// Builds one proxy series from its labels and calls.
type ProxyMetric = dyn Fn(&[(&str, &str)], &super::ProxyCalls) -> Metric;

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_owned());
    f.set_help(help.to_owned());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

fn labelled(labels: &[(&str, &str)]) -> Metric {
    let mut m = Metric::default();
    let pairs: Vec<LabelPair> = labels
        .iter()
        .map(|(k, v)| {
            let mut p = LabelPair::default();
            p.set_name((*k).to_owned());
            p.set_value((*v).to_owned());
            p
        })
        .collect();
    m.set_label(pairs);
    m
}

fn counter(labels: &[(&str, &str)], value: f64) -> Metric {
    let mut m = labelled(labels);
    let mut c = Counter::default();
    c.set_value(value);
    m.set_counter(c);
    m
}

fn gauge(labels: &[(&str, &str)], value: f64) -> Metric {
    let mut m = labelled(labels);
    let mut g = Gauge::default();
    g.set_value(value);
    m.set_gauge(g);
    m
}

fn summary<const N: usize>(labels: &[(&str, &str)], h: &Histogram<N>) -> Metric {
    let mut m = labelled(labels);
    let mut s = Summary::default();
    s.set_sample_count(h.count);
    s.set_sample_sum(h.sum);
    m.set_summary(s);
    m
}

fn histogram<const N: usize>(
    labels: &[(&str, &str)],
    h: &Histogram<N>,
    bounds: &[f64; N],
) -> Metric {
    let mut m = labelled(labels);
    let mut p = PbHistogram::default();
    p.set_sample_count(h.count);
    p.set_sample_sum(h.sum);
    let mut cumulative = 0;
    let buckets: Vec<Bucket> = bounds
        .iter()
        .zip(h.buckets)
        .map(|(bound, n)| {
            cumulative += n;
            let mut b = Bucket::default();
            b.set_upper_bound(*bound);
            b.set_cumulative_count(cumulative);
            b
        })
        .collect();
    p.set_bucket(buckets);
    m.set_histogram(p);
    m
}
