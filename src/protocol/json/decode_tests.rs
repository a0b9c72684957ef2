//! Tests of the decoding half: every command kind, the tolerance rules (nulls, unknown fields,
//! spec order), malformed frames, zero-copy slicing, [`FrameDecoder`] splits, and property
//! tests that payloads pass through byte-identical and no input panics.
//!
//! Must not: test output formats beyond the round trip of a decoded payload (that belongs to
//! `encode_tests.rs`).

use super::*;
use crate::protocol::{
    ChannelRequest, Command, ConnectRequest, HistoryRequest, Publication, PublishRequest, RawJson,
    RefreshRequest, Request, RpcRequest, SendRequest, StreamPosition, SubRefreshRequest,
    SubscribeRequest,
};
use bytes::Bytes;
use proptest::prelude::*;

fn one(frame: &str) -> Command {
    let mut cmds = decode_frame(frame.as_bytes()).unwrap();
    assert_eq!(cmds.len(), 1, "{frame}");
    cmds.remove(0)
}

fn raw(s: &str) -> RawJson {
    RawJson::from_value_str(s).unwrap()
}

// ---- decoding: every command kind -------------------------------------------------------

#[test]
fn connect_decodes_every_field_and_keeps_map_order() {
    let c = one(concat!(
        r#"{"id":1,"connect":{"token":"T","data":{"z":1, "a":[1.50]},"name":"js","#,
        r#""version":"5.7.1","headers":{"b":"2","a":"1"},"flag":3,"dict":"d","#,
        r#""subs":{"s2":{"recover":true,"offset":7,"epoch":"e"},"s1":{}}}}"#
    ));
    assert_eq!(c.id, 1);
    let Request::Connect(r) = c.request else { panic!("not connect") };
    assert_eq!(r.token, "T");
    assert_eq!(r.data.unwrap().as_bytes(), br#"{"z":1, "a":[1.50]}"#);
    assert_eq!(r.name, "js");
    assert_eq!(r.version, "5.7.1");
    assert_eq!(r.headers, vec![("b".into(), "2".into()), ("a".into(), "1".into())]);
    assert_eq!(r.subs.len(), 2);
    assert_eq!(r.subs[0].0, "s2");
    assert!(r.subs[0].1.recover);
    assert_eq!(r.subs[0].1.offset, 7);
    assert_eq!(r.subs[0].1.epoch, "e");
    assert_eq!(r.subs[1], ("s1".to_string(), SubscribeRequest::default()));
}

#[test]
fn subscribe_decodes_every_field_including_ext() {
    let c = one(concat!(
        r#"{"id":2,"subscribe":{"channel":"chat:1","token":"t","recover":true,"epoch":"ep","#,
        r#""offset":18446744073709551615,"data":"x","positioned":true,"recoverable":true,"#,
        r#""join_leave":true,"delta":"fossil","flag":3,"type":4,"tf":{"op":"and","nodes":[]},"#,
        r#""phase":1,"cursor":"c","limit":5,"asc":true}}"#
    ));
    let want = SubscribeRequest {
        channel: "chat:1".into(),
        token: "t".into(),
        recover: true,
        epoch: "ep".into(),
        offset: u64::MAX,
        data: Some(raw(r#""x""#)),
        positioned: true,
        recoverable: true,
        join_leave: true,
        delta: "fossil".into(),
        flag: 3,
        type_: 4,
        tf: Some(crate::protocol::pb::FilterNode { op: "and".into(), ..Default::default() }),
    };
    assert_eq!(c, Command { id: 2, request: Request::Subscribe(want) });
    let c = one(r#"{"id":2,"subscribe":{"channel":"a","flag":1,"tf":null}}"#);
    let Request::Subscribe(s) = c.request else { panic!() };
    assert!(s.tf.is_none());
    assert_eq!(s.flag, 1);
    assert_eq!(s.type_, 0);
}

#[test]
fn channel_only_commands_decode() {
    let ch = |c: &str| ChannelRequest { channel: c.into() };
    assert_eq!(
        one(r#"{"id":3,"unsubscribe":{"channel":"a"}}"#).request,
        Request::Unsubscribe(ch("a"))
    );
    assert_eq!(one(r#"{"id":4,"presence":{"channel":"b"}}"#).request, Request::Presence(ch("b")));
    assert_eq!(
        one(r#"{"id":5,"presence_stats":{"channel":"c"}}"#).request,
        Request::PresenceStats(ch("c"))
    );
}

#[test]
fn publish_history_rpc_send_refresh_sub_refresh_decode() {
    assert_eq!(
        one(r#"{"id":3,"publish":{"channel":"chat:1","data":{"text":"yo"}}}"#).request,
        Request::Publish(PublishRequest {
            channel: "chat:1".into(),
            data: raw(r#"{"text":"yo"}"#),
            type_: 0
        })
    );
    // Missing data → empty payload, left to the caller to reject.
    let Request::Publish(p) = one(r#"{"id":3,"publish":{"channel":"c"}}"#).request else {
        panic!()
    };
    assert!(p.data.is_empty());
    assert_eq!(
        one(r#"{"id":6,"history":{"channel":"h","limit":-1,"since":{"offset":3,"epoch":"e"},"reverse":true}}"#)
            .request,
        Request::History(HistoryRequest {
            channel: "h".into(),
            limit: -1,
            since: Some(StreamPosition { offset: 3, epoch: "e".into() }),
            reverse: true
        })
    );
    assert_eq!(
        one(r#"{"id":7,"rpc":{"method":"m","data":[1,2]}}"#).request,
        Request::Rpc(RpcRequest { data: Some(raw("[1,2]")), method: "m".into() })
    );
    assert_eq!(
        one(r#"{"send":{"data":{"x":true}}}"#),
        Command { id: 0, request: Request::Send(SendRequest { data: Some(raw(r#"{"x":true}"#)) }) }
    );
    assert_eq!(
        one(r#"{"id":8,"refresh":{"token":"new"}}"#).request,
        Request::Refresh(RefreshRequest { token: "new".into() })
    );
    assert_eq!(
        one(r#"{"id":9,"sub_refresh":{"channel":"c","token":"st","type":1}}"#).request,
        Request::SubRefresh(SubRefreshRequest { channel: "c".into(), token: "st".into() })
    );
}

#[test]
fn pong_ping_and_missing_request_rules() {
    assert_eq!(one("{}"), Command { id: 0, request: Request::Pong });
    assert_eq!(one(r#"{"id":0}"#).request, Request::Pong);
    // id 0 without send is a pong whatever else is set (§2.3).
    assert_eq!(one(r#"{"subscribe":{"channel":"a"}}"#).request, Request::Pong);
    assert_eq!(one(r#"{"ping":{}}"#).request, Request::Pong);
    assert_eq!(one(r#"{"id":4,"ping":{}}"#), Command { id: 4, request: Request::Ping });
    assert!(matches!(decode_frame(br#"{"id":5}"#), Err(DecodeError::NoRequest { id: 5 })));
    assert!(matches!(
        decode_frame(br#"{"id":5,"unknown":{}}"#),
        Err(DecodeError::NoRequest { id: 5 })
    ));
}

#[test]
fn first_non_null_field_in_spec_order_wins() {
    // Object key order does not matter; §2.3 order does.
    let c = one(r#"{"id":1,"publish":{"channel":"p"},"subscribe":{"channel":"s"}}"#);
    assert!(matches!(c.request, Request::Subscribe(ref s) if s.channel == "s"));
    let c = one(r#"{"id":1,"subscribe":null,"publish":{"channel":"p"}}"#);
    assert!(matches!(c.request, Request::Publish(ref p) if p.channel == "p"));
    let c = one(r#"{"id":1,"send":{},"rpc":{"method":"m"}}"#);
    assert!(matches!(c.request, Request::Rpc(_)));
    let c = one(r#"{"id":1,"ping":{},"sub_refresh":{"channel":"c"}}"#);
    assert!(matches!(c.request, Request::SubRefresh(_)));
}

#[test]
fn unknown_fields_and_nulls_are_tolerated() {
    let c = one(concat!(
        r#"{"id":2,"method":9,"params":{},"subscribe":{"channel":"a","token":null,"#,
        r#""offset":null,"future":{"x":[1]}},"extra":"y"}"#
    ));
    assert_eq!(
        c.request,
        Request::Subscribe(SubscribeRequest { channel: "a".into(), ..Default::default() })
    );
    assert_eq!(one(r#"{"id":null}"#).request, Request::Pong);
    // A `null` payload is the absent payload.
    let Request::Publish(p) = one(r#"{"id":1,"publish":{"channel":"c","data":null}}"#).request
    else {
        panic!()
    };
    assert!(p.data.is_empty());
}

#[test]
fn frames_with_several_commands_and_trailing_newline() {
    let frame = b"{\"id\":1,\"presence\":{\"channel\":\"a\"}}\n{}\n{\"id\":2,\"unsubscribe\":{\"channel\":\"b\"}}\n";
    let cmds = decode_frame(frame).unwrap();
    assert_eq!(cmds.len(), 3);
    assert_eq!(cmds[1].request, Request::Pong);
    assert_eq!(cmds[2].id, 2);
}

#[test]
fn malformed_frames_are_errors() {
    assert!(matches!(decode_frame(b""), Err(DecodeError::EmptyFrame)));
    assert!(matches!(decode_frame(b"\n"), Err(DecodeError::BlankLine { index: 0 })));
    assert!(matches!(decode_frame(b"{}\n\n{}"), Err(DecodeError::BlankLine { index: 1 })));
    assert!(matches!(decode_frame(b"{}\n\n"), Err(DecodeError::BlankLine { index: 1 })));
    for bad in [
        &b"{"[..],
        b"[]",
        b"[1,null,null,null,null,null,null,null,null,null,null,null,null]",
        b"5",
        b"null",
        b"{\"id\":-1,\"presence\":{}}",
        b"{\"id\":4294967296,\"presence\":{}}",
        b"{\"id\":\"1\"}",
        b"{\"id\":1,\"subscribe\":{\"offset\":-1}}",
        b"{\"id\":1,\"subscribe\":{\"channel\":5}}",
        b"{\"id\":1,\"connect\":{\"subs\":[1]}}",
        b"{} {}",
        b"{\"id\":1,\"publish\":{\"data\":\"\xff\"}}",
    ] {
        assert!(decode_frame(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn commands_iterator_yields_good_commands_before_the_bad_one() {
    let frame = b"{\"id\":1,\"presence\":{\"channel\":\"a\"}}\n{not json\n{}";
    let got: Vec<_> = commands(frame).collect();
    assert_eq!(got.len(), 2);
    assert!(got[0].is_ok());
    assert!(matches!(got[1], Err(DecodeError::Json { index: 1, .. })));
}

#[test]
fn zero_copy_decode_slices_the_frame() {
    let frame = Bytes::from_static(br#"{"id":3,"publish":{"channel":"c","data":{"k":"v"}}}"#);
    let cmds = decode_frame_bytes(&frame).unwrap();
    let Request::Publish(p) = &cmds[0].request else { panic!() };
    assert_eq!(p.data.as_bytes(), br#"{"k":"v"}"#);
    let start = frame.as_ptr() as usize;
    let at = p.data.as_bytes().as_ptr() as usize;
    assert!(at >= start && at < start + frame.len(), "payload was copied");
}

#[test]
fn raw_json_strips_newlines_and_validates() {
    assert_eq!(raw("{\n\"a\" :\n 1\n}").as_bytes(), b"{\"a\" : 1}");
    assert_eq!(raw("  [1, 2]  ").as_bytes(), b"[1, 2]");
    assert!(RawJson::from_value_str("{").is_err());
    assert!(RawJson::from_value_str("1 2").is_err());
    assert!(RawJson::parse(b"").is_err());
    assert_eq!(RawJson::json_string("{\"a\":1}\n").as_bytes(), br#""{\"a\":1}\n""#);
}

#[test]
fn bare_connect_request_and_emulation_envelope_decode() {
    let r = decode_connect_request(
        br#"{"token":"t","subs":{"a":{"recover":true,"offset":3,"epoch":"e"}},"data":{"k":1}}"#,
    )
    .unwrap();
    assert_eq!(r.token, "t");
    assert_eq!(r.subs[0].0, "a");
    assert_eq!(r.subs[0].1.offset, 3);
    assert_eq!(r.data.unwrap().as_bytes(), br#"{"k":1}"#);
    assert_eq!(decode_connect_request(b"").unwrap(), ConnectRequest::default());
    assert_eq!(decode_connect_request(b" {} ").unwrap(), ConnectRequest::default());
    assert!(decode_connect_request(b"[]").is_err());
    assert!(decode_connect_request(b"{").is_err());

    let e = decode_emulation_request(
        br#"{"session":"s","node":"n","data":"{\"id\":2,\"subscribe\":{\"channel\":\"c\"}}\n{}"}"#,
    )
    .unwrap();
    assert_eq!((e.session.as_str(), e.node.as_str()), ("s", "n"));
    let cmds = decode_frame(e.data.as_bytes()).unwrap();
    assert_eq!(cmds.len(), 2);
    assert!(matches!(cmds[0].request, Request::Subscribe(ref s) if s.channel == "c"));
    assert!(decode_emulation_request(br#"{"data":{}}"#).is_err());
}

// ---- FrameDecoder ------------------------------------------------------------------------

#[test]
fn frame_decoder_handles_split_commands_and_final_line() {
    let mut d = FrameDecoder::new(1024);
    assert!(d.push(br#"{"id":1,"presence":{"cha"#).unwrap().is_empty());
    let got = d.push(b"nnel\":\"a\"}}\n{\"id\":2,").unwrap();
    assert_eq!(got.len(), 1);
    assert!(d.push(br#""presence":{"channel":"b"}}"#).unwrap().is_empty());
    let last = d.finish().unwrap();
    assert_eq!(last[0].id, 2);
    assert!(matches!(FrameDecoder::new(8).finish(), Err(DecodeError::EmptyFrame)));
}

#[test]
fn frame_decoder_bounds_the_buffered_line() {
    let mut d = FrameDecoder::new(16);
    assert!(matches!(d.push(&[b' '; 17]), Err(DecodeError::LineTooLong { max_bytes: 16 })));
    let mut d = FrameDecoder::new(4);
    assert!(matches!(d.push(b"{\"id\":0}\n"), Err(DecodeError::LineTooLong { .. })));
}

// ---- property tests ----------------------------------------------------------------------

/// JSON text with arbitrary formatting: numbers in many spellings, escapes, whitespace
/// (optionally including `\n`) between tokens.
fn json_text(newlines: bool) -> impl Strategy<Value = String> {
    let ws = if newlines {
        prop::sample::select(vec!["", " ", "\t", "\r", "\n", " \n "])
    } else {
        prop::sample::select(vec!["", " ", "\t", "\r", "  "])
    };
    let leaf = prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        Just("false".to_string()),
        (-1_000_000i64..1_000_000, 0u32..1000, prop::bool::ANY).prop_map(|(i, f, e)| if e {
            format!("{i}.{f}e+{}", f % 30)
        } else {
            format!("{i}.{f:03}")
        }),
        any::<u64>().prop_map(|n| n.to_string()),
        "[a-zA-Z0-9 é😀]{0,8}".prop_map(|s| format!("\"{s}\\n\\u00e9\\\"\"")),
    ];
    leaf.prop_recursive(4, 32, 6, move |inner| {
        let ws = ws.clone();
        prop_oneof![
            prop::collection::vec((inner.clone(), ws.clone()), 0..5).prop_map(|items| {
                let body: Vec<String> =
                    items.into_iter().map(|(v, w)| format!("{w}{v}{w}")).collect();
                format!("[{}]", body.join(","))
            }),
            prop::collection::vec(("[a-z\"\\\\]{0,4}", inner, ws), 0..5).prop_map(|items| {
                let body: Vec<String> = items
                    .into_iter()
                    .map(|(k, v, w)| {
                        let k = k.replace('\\', "\\\\").replace('"', "\\\"");
                        format!("{w}\"{k}\"{w}:{w}{v}{w}")
                    })
                    .collect();
                format!("{{{}}}", body.join(","))
            }),
        ]
    })
}

fn command_text() -> impl Strategy<Value = String> {
    let channel = "[a-z:\"é\\\\]{1,6}".prop_map(|c| {
        let mut s = Vec::new();
        write_json_string(&mut s, &c);
        String::from_utf8(s).unwrap()
    });
    (1u32..1000, channel, json_text(false), 0usize..6).prop_map(|(id, ch, data, kind)| match kind {
        0 => format!(r#"{{"id":{id},"publish":{{"channel":{ch},"data":{data}}}}}"#),
        1 => format!(r#"{{"id":{id},"subscribe":{{"channel":{ch},"data":{data},"offset":{id},"flag":1}}}}"#),
        2 => "{}".to_string(),
        3 => format!(r#"{{"id":{id},"rpc":{{"method":{ch},"data":{data}}}}}"#),
        4 => format!(r#"{{"id":{id},"connect":{{"token":"t","data":{data},"subs":{{{ch}:{{"recover":true}}}}}}}}"#),
        _ => format!(r#"{{"id":{id},"history":{{"channel":{ch},"limit":10,"since":{{"offset":1,"epoch":"x"}}}}}}"#),
    })
}

proptest! {
#[test]
fn payloads_pass_through_byte_identical(
    data in json_text(false).prop_filter("null payload means absent", |d| d != "null"),
) {
    let frame = format!(r#"{{"id":1,"publish":{{"channel":"c","data":{data}}}}}"#);
    let cmds = decode_frame(frame.as_bytes()).unwrap();
    let Request::Publish(p) = &cmds[0].request else { panic!("not publish") };
    prop_assert_eq!(p.data.as_str(), data.as_str());
    // And it is re-emitted unchanged.
    let mut out = Vec::new();
    encode_publication_push("c", &Publication { data: p.data.clone(), ..Default::default() }, &mut out);
    prop_assert_eq!(out, format!(r#"{{"push":{{"channel":"c","pub":{{"data":{data}}}}}}}"#).into_bytes());
}

#[test]
fn payload_newlines_are_stripped_and_nothing_else(data in json_text(true)) {
    let parsed = RawJson::from_value_str(&data).unwrap();
    let want: String = data.chars().filter(|&c| c != '\n').collect();
    prop_assert_eq!(parsed.as_str(), want.trim_matches(|c: char| c.is_ascii_whitespace()));
    prop_assert!(!parsed.as_bytes().contains(&b'\n'));
}

#[test]
fn any_split_of_a_frame_yields_the_same_commands(
    cmds in prop::collection::vec(command_text(), 1..6),
    trailing in prop::bool::ANY,
    cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
) {
    let mut frame = cmds.join("\n");
    if trailing {
        frame.push('\n');
    }
    let whole = decode_frame(frame.as_bytes()).unwrap();
    prop_assert_eq!(whole.len(), cmds.len());
    let mut points: Vec<usize> = cuts.iter().map(|i| i.index(frame.len() + 1)).collect();
    points.sort_unstable();
    let mut d = FrameDecoder::new(1 << 20);
    let mut got = Vec::new();
    let mut prev = 0;
    for p in points.into_iter().chain(std::iter::once(frame.len())) {
        got.extend(d.push(&frame.as_bytes()[prev..p]).unwrap());
        prev = p;
    }
    got.extend(d.finish().unwrap());
    prop_assert_eq!(got, whole);
}

#[test]
fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
    let _ = decode_frame(&bytes);
    let _ = commands(&bytes).count();
    let mut d = FrameDecoder::new(64);
    let _ = d.push(&bytes);
    let _ = d.finish();
}

#[test]
fn mutated_commands_never_panic(cmd in command_text(), at in any::<prop::sample::Index>(), b in any::<u8>()) {
    let mut bytes = cmd.into_bytes();
    let i = at.index(bytes.len());
    bytes[i] = b;
    let _ = decode_frame(&bytes);
}
}
