//! Publication filtering by tags (`SubscribeRequest.tf`, namespace `allow_tags_filter`) end to
//! end: refused where not allowed or malformed (107), live delivery of only what a filter
//! passes (subscribers with the same filter on other shards too), and recovery that returns
//! only the passing publications of a complete stream.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::needless_pass_by_value,
    reason = "test harness code: a failure must panic loudly, and helpers take what tests build"
)]

mod common;

use common::{base_config, connect_as, merge, next_pub, Client, Server};
use serde_json::{json, Value};

fn server() -> Server {
    let mut cfg = base_config();
    merge(
        &mut cfg,
        json!({"prometheus": {"enabled": true}, "channel": {"namespaces": [
            {"name": "chat", "allow_subscribe_for_client": true},
            {"name": "tf", "allow_subscribe_for_client": true, "allow_tags_filter": true,
             "history_size": 50, "history_ttl": "300s", "force_recovery": true}
        ]}}),
    );
    Server::start(cfg)
}

fn publish(server: &Server, channel: &str, n: u64, tags: Value) -> Value {
    let r =
        server.http().api("publish", json!({"channel": channel, "data": {"n": n}, "tags": tags}));
    assert_eq!(r.status, 200);
    r.json()
}

fn subscribe(c: &mut Client, body: Value) -> Value {
    let id = c.command(json!({"subscribe": body}));
    let r = c.next_json();
    assert_eq!(r["id"], id, "{r}");
    r
}

fn buy() -> Value {
    json!({"key": "side", "cmp": "eq", "val": "buy"})
}

#[test]
fn a_filter_is_refused_where_not_allowed_or_malformed() {
    let server = server();
    let mut c = connect_as(&server, "u1");
    let r = subscribe(&mut c, json!({"channel": "chat:x", "tf": buy()}));
    assert_eq!(r["error"]["code"], 107, "namespace without allow_tags_filter: {r}");
    for bad in [
        json!({"key": "side", "cmp": "eq"}),
        json!({"key": "side", "cmp": "like", "val": "b"}),
        json!({"op": "not", "nodes": [buy(), buy()]}),
        json!({"op": "and"}),
    ] {
        let r = subscribe(&mut c, json!({"channel": "tf:a", "tf": bad}));
        assert_eq!(r["error"]["code"], 107, "{r}");
    }
    let r = subscribe(&mut c, json!({"channel": "tf:a", "tf": buy()}));
    assert!(r["subscribe"].is_object(), "a valid filter subscribes: {r}");
}

#[test]
fn live_publications_reach_only_subscribers_whose_filter_passes_them() {
    let server = server();
    // Round-robin placement: one client per shard; two share a filter on different shards.
    let mut buyers: Vec<Client> = (0..2).map(|i| connect_as(&server, &format!("b{i}"))).collect();
    let mut everyone = connect_as(&server, "all");
    for b in &mut buyers {
        assert!(subscribe(b, json!({"channel": "tf:live", "tf": buy()}))["subscribe"].is_object());
    }
    let cheap = json!({"op": "and", "nodes": [buy(), {"key": "price", "cmp": "lt", "val": "10"}]});
    let mut cheap_buyer = connect_as(&server, "cheap");
    assert!(subscribe(&mut cheap_buyer, json!({"channel": "tf:live", "tf": cheap}))["subscribe"]
        .is_object());
    assert!(subscribe(&mut everyone, json!({"channel": "tf:live"}))["subscribe"].is_object());

    publish(&server, "tf:live", 1, json!({"side": "buy", "price": "12.5"}));
    publish(&server, "tf:live", 2, json!({"side": "sell", "price": "5"}));
    publish(&server, "tf:live", 3, json!({}));
    publish(&server, "tf:live", 4, json!({"side": "buy", "price": "9.99"}));

    for b in &mut buyers {
        assert_eq!(next_pub(b, "tf:live")["data"]["n"], 1);
        assert_eq!(next_pub(b, "tf:live")["data"]["n"], 4, "2 and 3 are filtered out");
    }
    assert_eq!(next_pub(&mut cheap_buyer, "tf:live")["data"]["n"], 4);
    for n in 1..=4 {
        assert_eq!(next_pub(&mut everyone, "tf:live")["data"]["n"], n);
    }
    // Dropped per subscriber: 2 and 3 for each of the two buyers, 1 to 3 for the cheap one.
    let metrics = server.http().raw(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let text = String::from_utf8(metrics.body).unwrap();
    let dropped = "centrifugo_node_tags_filter_dropped_publications{channel_namespace=\"\"} 7";
    assert!(text.lines().any(|l| l == dropped), "{text}");
}

#[test]
fn recovery_returns_only_what_the_filter_passes() {
    let server = server();
    let mut c = connect_as(&server, "r1");
    let r = subscribe(&mut c, json!({"channel": "tf:rec", "tf": buy(), "recover": true}));
    let epoch = r["subscribe"]["epoch"].as_str().unwrap().to_owned();
    let offset = r["subscribe"]["offset"].as_u64().unwrap_or(0);
    drop(c);
    publish(&server, "tf:rec", 1, json!({"side": "buy"}));
    publish(&server, "tf:rec", 2, json!({"side": "sell"}));
    publish(&server, "tf:rec", 3, json!({"side": "buy"}));

    let mut back = connect_as(&server, "r1");
    let r = subscribe(
        &mut back,
        json!({"channel": "tf:rec", "tf": buy(), "recover": true, "epoch": epoch, "offset": offset}),
    );
    assert_eq!(r["subscribe"]["recovered"], true, "{r}");
    let got: Vec<Value> = r["subscribe"]["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["data"]["n"].clone())
        .collect();
    assert_eq!(got, [json!(1), json!(3)], "{r}");
    let offsets: Vec<Value> = r["subscribe"]["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].clone())
        .collect();
    assert_eq!(offsets, [json!(offset + 1), json!(offset + 3)], "stream offsets kept: {r}");
    publish(&server, "tf:rec", 4, json!({"side": "sell"}));
    publish(&server, "tf:rec", 5, json!({"side": "buy"}));
    assert_eq!(next_pub(&mut back, "tf:rec")["data"]["n"], 5);
}
