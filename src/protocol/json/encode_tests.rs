//! Tests of the encoding half: replies and pushes against the spec's examples, the "always"
//! fields, escaping of names, exact numbers, and the string-escaping round trip.
//!
//! Must not: depend on the decoder except where a test reads back what was written.

use super::*;
use crate::protocol::codes::*;
use crate::protocol::{
    ClientInfo, ConnectResult, HistoryResult, PresenceResult, PresenceStatsResult, Publication,
    PushBody, RawJson, RefreshResult, ReplyBody, RpcResult, SubRefreshResult, SubscribePush,
    SubscribeResult,
};
use proptest::prelude::*;

fn raw(s: &str) -> RawJson {
    RawJson::from_value_str(s).unwrap()
}

fn reply(id: u32, body: &ReplyBody) -> String {
    let mut out = Vec::new();
    encode_reply(id, body, &mut out);
    String::from_utf8(out).unwrap()
}

// ---- encoding: spec examples -------------------------------------------------------------

#[test]
fn connect_reply_matches_spec_example() {
    let r = ConnectResult {
        client: "9a1e".into(),
        version: "6.9.1 OSS".into(),
        expires: true,
        ttl: 3599,
        ping: 25,
        pong: true,
        ..Default::default()
    };
    assert_eq!(
        reply(1, &ReplyBody::Connect(r)),
        r#"{"id":1,"connect":{"client":"9a1e","version":"6.9.1 OSS","expires":true,"ttl":3599,"ping":25,"pong":true}}"#
    );
    let full = ConnectResult {
        client: "c".into(),
        data: Some(raw(r#"{"d":1}"#)),
        subs: vec![("s".into(), SubscribeResult { recoverable: true, ..Default::default() })],
        session: "ss".into(),
        node: "n".into(),
        time: 1700000000000,
        ..Default::default()
    };
    assert_eq!(
        reply(1, &ReplyBody::Connect(full.clone())),
        r#"{"id":1,"connect":{"client":"c","data":{"d":1},"subs":{"s":{"recoverable":true}},"session":"ss","node":"n","time":1700000000000}}"#
    );
    // Connect push (unidirectional): Connect message field order, bare framing.
    let mut out = Vec::new();
    let push = ConnectResult { expires: true, ttl: 5, ping: 25, ..full };
    encode_push("", &PushBody::Connect(push), PushFraming::Bare, &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"connect":{"client":"c","data":{"d":1},"subs":{"s":{"recoverable":true}},"expires":true,"ttl":5,"ping":25,"session":"ss","node":"n","time":1700000000000}}"#
    );
}

#[test]
fn subscribe_replies_match_spec_examples() {
    assert_eq!(
        reply(2, &ReplyBody::Subscribe(SubscribeResult::default())),
        r#"{"id":2,"subscribe":{}}"#
    );
    let first = SubscribeResult {
        recoverable: true,
        epoch: "aBcDeFgH".into(),
        offset: 12,
        positioned: true,
        ..Default::default()
    };
    assert_eq!(
        reply(2, &ReplyBody::Subscribe(first.clone())),
        r#"{"id":2,"subscribe":{"recoverable":true,"epoch":"aBcDeFgH","offset":12,"positioned":true}}"#
    );
    let recovered = SubscribeResult {
        publications: vec![Publication {
            data: raw(r#"{"n":1}"#),
            offset: 14,
            ..Default::default()
        }],
        recovered: true,
        offset: 13,
        was_recovering: true,
        ..first
    };
    assert_eq!(
        reply(2, &ReplyBody::Subscribe(recovered)),
        r#"{"id":2,"subscribe":{"recoverable":true,"epoch":"aBcDeFgH","publications":[{"data":{"n":1},"offset":14}],"recovered":true,"offset":13,"positioned":true,"was_recovering":true}}"#
    );
    let all = SubscribeResult {
        expires: true,
        ttl: 10,
        data: Some(raw("[]")),
        delta: true,
        ..Default::default()
    };
    assert_eq!(
        reply(9, &ReplyBody::Subscribe(all)),
        r#"{"id":9,"subscribe":{"expires":true,"ttl":10,"data":[],"delta":true}}"#
    );
}

#[test]
fn empty_and_error_replies() {
    assert_eq!(reply(3, &ReplyBody::Publish), r#"{"id":3,"publish":{}}"#);
    assert_eq!(reply(4, &ReplyBody::Unsubscribe), r#"{"id":4,"unsubscribe":{}}"#);
    assert_eq!(reply(5, &ReplyBody::Ping), r#"{"id":5,"ping":{}}"#);
    assert_eq!(
        reply(2, &ReplyBody::Error(ERROR_PERMISSION_DENIED)),
        r#"{"id":2,"error":{"code":103,"message":"permission denied"}}"#
    );
    assert_eq!(
        reply(2, &ReplyBody::Error(ERROR_INTERNAL)),
        r#"{"id":2,"error":{"code":100,"message":"internal server error","temporary":true}}"#
    );
    assert_eq!(
        reply(7, &ReplyBody::Rpc(RpcResult { data: Some(raw(r#"{"r":1}"#)) })),
        r#"{"id":7,"rpc":{"data":{"r":1}}}"#
    );
    assert_eq!(reply(7, &ReplyBody::Rpc(RpcResult::default())), r#"{"id":7,"rpc":{}}"#);
    assert_eq!(
        reply(
            8,
            &ReplyBody::Refresh(RefreshResult { expires: true, ttl: 60, ..Default::default() })
        ),
        r#"{"id":8,"refresh":{"expires":true,"ttl":60}}"#
    );
    assert_eq!(
        reply(9, &ReplyBody::SubRefresh(SubRefreshResult { expires: true, ttl: 30 })),
        r#"{"id":9,"sub_refresh":{"expires":true,"ttl":30}}"#
    );
    assert_eq!(PING, b"{}");
}

#[test]
fn always_present_fields_are_written_when_zero() {
    assert_eq!(
        reply(5, &ReplyBody::History(HistoryResult::default())),
        r#"{"id":5,"history":{"publications":[],"epoch":"","offset":0}}"#
    );
    assert_eq!(
        reply(6, &ReplyBody::Presence(PresenceResult::default())),
        r#"{"id":6,"presence":{"presence":{}}}"#
    );
    assert_eq!(
        reply(6, &ReplyBody::PresenceStats(PresenceStatsResult::default())),
        r#"{"id":6,"presence_stats":{"num_clients":0,"num_users":0}}"#
    );
    let presence = PresenceResult {
        presence: vec![(
            "c1".into(),
            ClientInfo { conn_info: Some(raw(r#"{"n":"x"}"#)), ..Default::default() },
        )],
    };
    assert_eq!(
        reply(6, &ReplyBody::Presence(presence)),
        r#"{"id":6,"presence":{"presence":{"c1":{"user":"","client":"","conn_info":{"n":"x"}}}}}"#
    );
    let history = HistoryResult {
        publications: vec![Publication { data: raw("1"), offset: 2, ..Default::default() }],
        epoch: "e".into(),
        offset: 2,
    };
    assert_eq!(
        reply(5, &ReplyBody::History(history)),
        r#"{"id":5,"history":{"publications":[{"data":1,"offset":2}],"epoch":"e","offset":2}}"#
    );
}

#[test]
fn publication_push_matches_spec_example() {
    let p = Publication {
        data: raw(r#"{"text":"hi"}"#),
        info: Some(ClientInfo { user: "42".into(), client: "9a1e".into(), ..Default::default() }),
        offset: 13,
        ..Default::default()
    };
    let mut out = Vec::new();
    encode_publication_push("chat:1", &p, &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"push":{"channel":"chat:1","pub":{"data":{"text":"hi"},"info":{"user":"42","client":"9a1e"},"offset":13}}}"#
    );
    // Generic encoder agrees; the bare form is the unidirectional one.
    let mut a = Vec::new();
    encode_push("chat:1", &PushBody::Publication(p.clone()), PushFraming::Reply, &mut a);
    let mut b = Vec::new();
    encode_publication_push("chat:1", &p, &mut b);
    assert_eq!(a, b);
    let bare = Publication { data: raw(r#"{"text":"hi"}"#), offset: 5, ..Default::default() };
    let mut out = Vec::new();
    encode_push("chat:1", &PushBody::Publication(bare), PushFraming::Bare, &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"channel":"chat:1","pub":{"data":{"text":"hi"},"offset":5}}"#
    );
    let tagged = Publication {
        data: raw("true"),
        info: Some(ClientInfo {
            user: "u".into(),
            client: "c".into(),
            conn_info: Some(raw("1")),
            chan_info: Some(raw("2")),
        }),
        tags: vec![("a".into(), "1".into()), ("b\"".into(), "2".into())],
        delta: true,
        ..Default::default()
    };
    let mut out = Vec::new();
    encode_publication_push("c", &tagged, &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"push":{"channel":"c","pub":{"data":true,"info":{"user":"u","client":"c","conn_info":1,"chan_info":2},"tags":{"a":"1","b\"":"2"},"delta":true}}}"#
    );
}

#[test]
fn other_pushes() {
    let info = ClientInfo { user: "42".into(), client: "c1".into(), ..Default::default() };
    let mut out = Vec::new();
    encode_join_push("chat:1", &info, &mut out);
    out.push(b'\n');
    encode_leave_push("chat:1", &info, &mut out);
    out.push(b'\n');
    encode_unsubscribe_push(
        "chat:1",
        UNSUBSCRIBE_SERVER.code,
        &UNSUBSCRIBE_SERVER.reason,
        &mut out,
    );
    out.push(b'\n');
    encode_disconnect_push(&DISCONNECT_SHUTDOWN, &mut out);
    out.push(b'\n');
    encode_push("", &PushBody::Refresh { expires: true, ttl: 9 }, PushFraming::Reply, &mut out);
    out.push(b'\n');
    let sub = SubscribePush {
        recoverable: true,
        epoch: "e".into(),
        offset: 3,
        positioned: true,
        data: Some(raw("{}")),
    };
    encode_push("s", &PushBody::Subscribe(sub), PushFraming::Reply, &mut out);
    out.push(b'\n');
    encode_push("m", &PushBody::Message(raw("[1]")), PushFraming::Bare, &mut out);
    let want = [
        r#"{"push":{"channel":"chat:1","join":{"info":{"user":"42","client":"c1"}}}}"#,
        r#"{"push":{"channel":"chat:1","leave":{"info":{"user":"42","client":"c1"}}}}"#,
        r#"{"push":{"channel":"chat:1","unsubscribe":{"code":2000,"reason":"server unsubscribe"}}}"#,
        r#"{"push":{"disconnect":{"code":3001,"reason":"shutdown"}}}"#,
        r#"{"push":{"refresh":{"expires":true,"ttl":9}}}"#,
        r#"{"push":{"channel":"s","subscribe":{"recoverable":true,"epoch":"e","offset":3,"positioned":true,"data":{}}}}"#,
        r#"{"channel":"m","message":{"data":[1]}}"#,
    ]
    .join("\n");
    assert_eq!(String::from_utf8(out).unwrap(), want);
}

#[test]
fn channel_names_are_escaped() {
    let channel = "a\"b\\c\n\u{1}\u{1f}é😀/";
    let mut out = Vec::new();
    encode_publication_push(
        channel,
        &Publication { data: raw("1"), ..Default::default() },
        &mut out,
    );
    let text = String::from_utf8(out.clone()).unwrap();
    assert_eq!(
        text,
        "{\"push\":{\"channel\":\"a\\\"b\\\\c\\n\\u0001\\u001fé😀/\",\"pub\":{\"data\":1}}}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["push"]["channel"], channel);
}

#[test]
fn large_and_negative_numbers_are_written_exactly() {
    let r = ConnectResult { time: -5, ..Default::default() };
    assert_eq!(
        reply(u32::MAX, &ReplyBody::Connect(r)),
        r#"{"id":4294967295,"connect":{"time":-5}}"#
    );
    let h = HistoryResult { offset: u64::MAX, ..Default::default() };
    assert_eq!(
        reply(1, &ReplyBody::History(h)),
        r#"{"id":1,"history":{"publications":[],"epoch":"","offset":18446744073709551615}}"#
    );
}

// ---- property tests ----------------------------------------------------------------------

proptest! {
    #[test]
    fn escaped_strings_round_trip(s in "\\PC*|[\\x00-\\x1f\"\\\\]*") {
        let mut out = Vec::new();
        write_json_string(&mut out, &s);
        let back: String = serde_json::from_slice(&out).unwrap();
        prop_assert_eq!(back, s);
        prop_assert!(!out.contains(&b'\n'));
    }
}
