//! End to end: fossil delta subscriptions (spec §11.3) over JSON and Protobuf WebSocket.
//! A client reconstructs every publication from full payloads and patches and must end up with
//! exactly what was published.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::needless_pass_by_value,
    reason = "test harness code: a failure must panic loudly, and helpers take what tests build"
)]

mod common;

use common::*;
use prost::Message as _;
use rotor::protocol::{fossil, pb};
use serde_json::{json, Value};
use tungstenite::Message;

fn config() -> Value {
    let mut c = base_config();
    let ns = c["channel"]["namespaces"].as_array_mut().unwrap();
    ns.push(json!({
        "name": "delta", "allow_subscribe_for_client": true, "allowed_delta_types": ["fossil"],
        "delta_publish": true, "history_size": 100, "history_ttl": "300s", "force_recovery": true
    }));
    ns.push(json!({
        "name": "optin", "allow_subscribe_for_client": true, "allowed_delta_types": ["fossil"]
    }));
    c
}

/// A large document with one field changed per step.
fn doc(step: usize) -> Value {
    let mut fields = serde_json::Map::new();
    for i in 0..60 {
        let v = if i == step % 60 { format!("changed-{step}") } else { format!("value-{i}-ünï") };
        fields.insert(format!("field{i}"), json!(v));
    }
    json!({"step": step, "fields": fields})
}

fn publish(server: &Server, channel: &str, data: &Value, delta: bool) {
    let r = server.http().api("publish", json!({"channel": channel, "data": data, "delta": delta}));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

/// What an SDK does with a delta subscription's publication: returns the new payload text.
fn apply(held: &[u8], pub_: &Value) -> Vec<u8> {
    let text = pub_["data"].as_str().unwrap_or_else(|| panic!("data is a string: {pub_}"));
    if pub_["delta"] == true {
        fossil::apply(held, text.as_bytes()).expect("patch applies")
    } else {
        text.as_bytes().to_vec()
    }
}

#[test]
fn json_delta_subscribers_rebuild_every_publication() {
    let server = Server::start(config());
    let mut c = server.ws();
    c.handshake(&token("u"));
    let id = c.command(json!({"subscribe": {"channel": "delta:doc", "delta": "fossil"}}));
    let reply = c.next_json();
    assert_eq!(reply["id"], id);
    assert_eq!(reply["subscribe"]["delta"], true, "{reply}");
    let mut held = Vec::new();
    let mut patches = 0;
    for step in 0..30 {
        publish(&server, "delta:doc", &doc(step), false);
        let push = c.next_json();
        let p = &push["push"]["pub"];
        held = apply(&held, p);
        if p["delta"] == true {
            patches += 1;
            assert!(p["data"].as_str().unwrap().len() < doc(step).to_string().len() / 4);
        }
        let got: Value = serde_json::from_slice(&held).unwrap();
        assert_eq!(got, doc(step), "step {step}");
    }
    assert_eq!(patches, 29, "all but the first publication are patches");

    // Recovery: missed publications come back in the subscribe reply as one chain.
    let offset = 30;
    let mut c2 = server.ws();
    c2.handshake(&token("u"));
    c2.command(json!({"subscribe": {"channel": "delta:doc", "delta": "fossil", "recover": true,
        "offset": offset - 5, "epoch": reply["subscribe"]["epoch"]}}));
    let r = c2.next_json();
    assert_eq!(r["subscribe"]["recovered"], true, "{r}");
    let pubs = r["subscribe"]["publications"].as_array().unwrap();
    assert_eq!(pubs.len(), 5);
    let mut held2 = Vec::new();
    for (i, p) in pubs.iter().enumerate() {
        assert_eq!(p["delta"] == true, i > 0, "{p}");
        held2 = apply(&held2, p);
        assert_eq!(serde_json::from_slice::<Value>(&held2).unwrap(), doc(25 + i));
    }
    // After a reply the next live publication is full again, then patches resume.
    publish(&server, "delta:doc", &doc(30), false);
    let p = c2.next_json()["push"]["pub"].clone();
    assert_ne!(p["delta"], true);
    held2 = apply(&held2, &p);
    publish(&server, "delta:doc", &doc(31), false);
    let p = c2.next_json()["push"]["pub"].clone();
    assert_eq!(p["delta"], true);
    held2 = apply(&held2, &p);
    assert_eq!(serde_json::from_slice::<Value>(&held2).unwrap(), doc(31));
}

#[test]
fn plain_subscribers_and_history_see_plain_payloads() {
    let server = Server::start(config());
    let mut plain = server.ws();
    plain.handshake(&token("p"));
    plain.subscribe("delta:doc");
    let mut optin = server.ws();
    optin.handshake(&token("o"));
    optin.command(json!({"subscribe": {"channel": "optin:doc", "delta": "fossil"}}));
    assert_eq!(optin.next_json()["subscribe"]["delta"], true);
    for step in 0..3 {
        publish(&server, "delta:doc", &doc(step), false);
        let p = plain.next_json()["push"]["pub"].clone();
        assert_eq!(p["data"], doc(step), "a plain subscriber gets objects");
        assert_eq!(p.get("delta"), None);
        // Without delta_publish only publishes asking for it are patched.
        publish(&server, "optin:doc", &doc(step), step == 2);
        let p = optin.next_json()["push"]["pub"].clone();
        assert_eq!(p["delta"] == true, step == 2, "step {step}: {p}");
    }
    let h = server.http().api("history", json!({"channel": "delta:doc", "limit": 10}));
    let pubs = h.json()["result"]["publications"].clone();
    assert_eq!(pubs[2]["data"], doc(2), "history is never delta-encoded");
    // A namespace that does not allow deltas answers delta: false, not an error.
    let mut c = server.ws();
    c.handshake(&token("x"));
    c.command(json!({"subscribe": {"channel": "chat:x", "delta": "fossil"}}));
    let r = c.next_json();
    assert!(r.get("error").is_none() && r["subscribe"].get("delta").is_none(), "{r}");
    c.command(json!({"subscribe": {"channel": "chat:y", "delta": "zstd"}}));
    assert_eq!(c.expect_close().0, 3501, "an unknown delta type is a bad request");
}

#[test]
fn protobuf_delta_subscribers_get_byte_patches() {
    let server = Server::start(config());
    let mut c = Client::connect(
        server.port,
        "/connection/websocket",
        &[("Sec-WebSocket-Protocol", "centrifuge-protobuf")],
    );
    let send = |c: &mut Client, cmd: pb::Command| {
        c.ws.send(Message::binary(cmd.encode_length_delimited_to_vec())).unwrap();
    };
    let next = |c: &mut Client| loop {
        if let Message::Binary(b) = c.ws.read().unwrap() {
            let r = pb::Reply::decode_length_delimited(&b[..]).unwrap();
            if r != pb::Reply::default() {
                return r;
            }
        }
    };
    let connect = pb::ConnectRequest { token: token("pb"), ..Default::default() };
    send(&mut c, pb::Command { id: 1, connect: Some(connect), ..Default::default() });
    assert!(next(&mut c).connect.is_some());
    let sub = pb::SubscribeRequest {
        channel: "delta:pb".into(),
        delta: "fossil".into(),
        ..Default::default()
    };
    send(&mut c, pb::Command { id: 2, subscribe: Some(sub), ..Default::default() });
    assert!(next(&mut c).subscribe.expect("subscribe").delta);
    let mut held: Vec<u8> = Vec::new();
    for step in 0..5 {
        publish(&server, "delta:pb", &doc(step), false);
        let p = next(&mut c).push.and_then(|p| p.r#pub).expect("pub");
        assert_eq!(p.delta, step > 0);
        held = if p.delta { fossil::apply(&held, &p.data).unwrap() } else { p.data.to_vec() };
        assert_eq!(serde_json::from_slice::<Value>(&held).unwrap(), doc(step));
    }
}
