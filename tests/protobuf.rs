//! End to end with the Protobuf protocol: the `centrifuge-protobuf` subprotocol, delimited
//! binary frames both ways, publications encoded per protocol, and binary payloads that only a
//! Protobuf client may receive (a JSON subscriber is closed with 3506).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::needless_pass_by_value,
    reason = "test harness code: a failure must panic loudly, and helpers take what tests build"
)]

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::pb_client::{next, pb_client, send};
use common::*;
use rotor::protocol::pb;
use serde_json::json;
use tungstenite::Message;

fn connect_cmd(token: &str) -> pb::Command {
    pb::Command {
        id: 1,
        connect: Some(pb::ConnectRequest { token: token.into(), ..Default::default() }),
        ..Default::default()
    }
}

fn subscribe_cmd(id: u32, channel: &str) -> pb::Command {
    pb::Command {
        id,
        subscribe: Some(pb::SubscribeRequest { channel: channel.into(), ..Default::default() }),
        ..Default::default()
    }
}

#[test]
fn protobuf_client_connects_subscribes_and_receives_json_and_binary_publications() {
    let mut cfg = base_config();
    cfg["channel"]["namespaces"].as_array_mut().unwrap().push(json!({
        "name": "pbh", "allow_subscribe_for_client": true, "allow_history_for_subscriber": true,
        "history_size": 10, "history_ttl": "60s"
    }));
    let server = Server::start(cfg);
    let mut api = server.http();
    let mut c = pb_client(&server);
    send(&mut c, &[connect_cmd(&token("pat")), subscribe_cmd(2, "pbh:pb")]);
    let mut replies = next(&mut c);
    if replies.len() < 2 {
        replies.extend(next(&mut c));
    }
    let connect = replies[0].connect.as_ref().expect("connect result");
    assert_eq!(replies[0].id, 1);
    assert_eq!(connect.client.len(), 36, "{connect:?}");
    assert_eq!((connect.ping, connect.pong), (25, true));
    assert_eq!(replies[1].id, 2);
    assert!(replies[1].subscribe.is_some(), "{:?}", replies[1]);
    // A JSON subscriber of the same channel, to see per-protocol encoding and 3506.
    let mut j = server.ws();
    j.handshake(&token("quincy"));
    j.subscribe("pbh:pb");
    let r = api.api("publish", json!({"channel": "pbh:pb", "data": {"n": 1}}));
    assert_eq!(r.json()["result"]["offset"], 1);
    let pushed = next(&mut c).remove(0).push.expect("push");
    let publ = pushed.r#pub.expect("publication");
    assert_eq!(pushed.channel, "pbh:pb");
    assert_eq!((&publ.data[..], publ.offset), (&b"{\"n\":1}"[..], 1));
    assert_eq!(j.next_json()["push"]["pub"], json!({"data": {"n": 1}, "offset": 1}));
    // Binary data (b64data that is not JSON): the Protobuf client gets the bytes, the JSON
    // subscriber cannot carry them and is closed with 3506.
    let raw = [0u8, 159, 146, 150, 255];
    let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
    let r = api.api("publish", json!({"channel": "pbh:pb", "b64data": b64}));
    assert_eq!(r.json()["result"]["offset"], 2, "{}", r.json());
    let publ = next(&mut c).remove(0).push.unwrap().r#pub.unwrap();
    assert_eq!(&publ.data[..], &raw[..]);
    assert_eq!(j.expect_close(), (3506, "inappropriate protocol".to_owned()));
    // History through Protobuf.
    send(
        &mut c,
        &[pb::Command {
            id: 3,
            history: Some(pb::HistoryRequest {
                channel: "pbh:pb".into(),
                limit: 10,
                ..Default::default()
            }),
            ..Default::default()
        }],
    );
    let reply = next(&mut c).remove(0);
    let h = reply.history.expect("history");
    assert_eq!(h.publications.len(), 2);
    assert_eq!(&h.publications[1].data[..], &raw[..]);
}

#[test]
fn protobuf_client_publish_errors_and_protocol_violations() {
    let server = Server::start(base_config());
    let mut c = pb_client(&server);
    send(&mut c, &[connect_cmd(&token("rui")), subscribe_cmd(2, "chat:pb")]);
    let mut replies = next(&mut c);
    if replies.len() < 2 {
        replies.extend(next(&mut c));
    }
    // A binary client publish reaches the publisher itself (a subscriber) as raw bytes.
    send(
        &mut c,
        &[pb::Command {
            id: 3,
            publish: Some(pb::PublishRequest {
                channel: "chat:pb".into(),
                data: vec![1, 2, 3].into(),
            }),
            ..Default::default()
        }],
    );
    let mut got = next(&mut c);
    if got.len() < 2 {
        got.extend(next(&mut c));
    }
    assert!(got.iter().any(|r| r.id == 3 && r.publish.is_some()), "{got:?}");
    let publ = got.iter().find_map(|r| r.push.as_ref()).and_then(|p| p.r#pub.as_ref()).unwrap();
    assert_eq!(&publ.data[..], &[1, 2, 3]);
    let info = publ.info.as_ref().unwrap();
    assert_eq!(info.user, "rui");
    // Errors travel as Reply.error.
    send(&mut c, &[subscribe_cmd(4, "nope:x")]);
    let err = next(&mut c).remove(0).error.expect("error");
    assert_eq!((err.code, err.message.as_str()), (102, "unknown channel"));
    // A text frame on a Protobuf connection is a protocol violation (3501).
    c.send_text("{\"id\":5,\"presence\":{\"channel\":\"chat:pb\"}}");
    assert_eq!(c.expect_close(), (3501, "bad request".to_owned()));
    // And garbage bytes too.
    let mut d = pb_client(&server);
    d.ws.send(Message::binary(vec![0xff; 12])).unwrap();
    assert_eq!(d.expect_close(), (3501, "bad request".to_owned()));
    std::thread::sleep(Duration::from_millis(10));
}
