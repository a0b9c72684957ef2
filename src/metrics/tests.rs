use std::sync::Arc;
use std::time::Duration;

use super::render::{render, Scrape};
use super::*;

fn text(scrape: &Scrape) -> String {
    String::from_utf8(render(scrape)).expect("the text format is UTF-8")
}

#[test]
fn histograms_put_each_observation_in_one_bucket_and_render_cumulative_counts() {
    let mut h = Histogram::<15>::default();
    h.observe(0.0002, &COMMAND_BUCKETS);
    h.observe(0.0002, &COMMAND_BUCKETS);
    h.observe(3.0, &COMMAND_BUCKETS);
    h.observe(60.0, &COMMAND_BUCKETS);
    assert_eq!(h.buckets[1], 2, "0.0002 falls in (0.0001, 0.00025]");
    assert_eq!(h.buckets[13], 1, "3 falls in (2.5, 5]");
    assert_eq!(h.count, 4, "an observation past the last bound still counts");
    let mut a = ShardMetrics::default();
    a.command_duration[FrameType::Publish as usize] = h;
    let out = text(&Scrape {
        shards: vec![ShardSnapshot { metrics: a, ..Default::default() }],
        ..Default::default()
    });
    let series = |le: &str| {
        format!("centrifugo_client_command_duration_seconds_histogram_bucket{{channel_namespace=\"\",method=\"publish\",le=\"{le}\"}}")
    };
    assert!(out.contains(&format!("{} 0\n", series("0.0001"))), "{out}");
    assert!(out.contains(&format!("{} 2\n", series("0.00025"))), "{out}");
    assert!(out.contains(&format!("{} 3\n", series("10"))), "{out}");
    assert!(out.contains(&format!("{} 4\n", series("+Inf"))), "{out}");
}

#[test]
fn a_scrape_sums_every_shard_and_counts_a_user_on_two_shards_once() {
    let shard = |transport: TransportLabel, user: &str, publications: u64| {
        let mut m = ShardMetrics::default();
        for _ in 0..publications {
            m.sent(transport, FrameType::PushPublication, 10);
        }
        m.connections_accepted[transport as usize][ClientLabel::new("js", "").0 as usize] += 1;
        m.broker_sent(BrokerMessage::Publication);
        m.server_disconnect(3008);
        m.api_done("publish", Duration::from_millis(2), None);
        m.api_done("publish", Duration::from_millis(2), Some("107".into()));
        let mut inflight = [[0; ClientLabel::COUNT]; TransportLabel::COUNT];
        inflight[transport as usize][1] = 1;
        ShardSnapshot {
            metrics: m,
            inflight,
            users: vec![Arc::from(user)],
            subscriptions: [0, 2, 0, 0],
            ..Default::default()
        }
    };
    let scrape = Scrape {
        shards: vec![
            shard(TransportLabel::WebSocket, "alice", 3),
            shard(TransportLabel::WebSocket, "alice", 4),
            shard(TransportLabel::Sse, "bob", 5),
        ],
        nodes: 1,
        version: "0.1.0 OSS".into(),
    };
    let out = text(&scrape);
    for line in [
        "centrifugo_node_num_clients 3",
        "centrifugo_node_num_users 2",
        "centrifugo_node_num_subscriptions 6",
        "centrifugo_node_build{version=\"0.1.0 OSS\"} 1",
        "centrifugo_node_messages_sent_count{channel_namespace=\"\",type=\"publication\"} 3",
        "centrifugo_node_messages_sent_count{channel_namespace=\"\",type=\"join\"} 0",
        "centrifugo_transport_messages_sent{channel_namespace=\"\",frame_type=\"push_publication\",transport=\"websocket\"} 7",
        "centrifugo_transport_messages_sent_size{channel_namespace=\"\",frame_type=\"push_publication\",transport=\"sse\"} 50",
        "centrifugo_client_connections_accepted{accept_protocol=\"\",client_name=\"unregistered\",client_version=\"unversioned\",transport=\"websocket\"} 2",
        "centrifugo_client_connections_inflight{accept_protocol=\"\",client_name=\"unregistered\",client_version=\"unversioned\",transport=\"sse\"} 1",
        "centrifugo_client_num_server_disconnects{code=\"3008\"} 3",
        "centrifugo_api_command_duration_seconds_histogram_count{method=\"publish\",protocol=\"http\"} 6",
        "centrifugo_api_command_errors_total{error=\"107\",method=\"publish\",protocol=\"http\"} 3",
        "rotor_shard_connections{shard=\"2\"} 1",
    ] {
        assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
    }
    assert!(out.contains("# TYPE centrifugo_client_command_duration_seconds summary"));
    assert!(out.contains("process_resident_memory_bytes"), "the process collector runs");
}
