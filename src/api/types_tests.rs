//! Tests of the API wire types: publish and broadcast request decoding (nulls, `b64data`),
//! response encoding in both error modes, the method table, and the legacy `/api` stream, plus
//! property tests that payloads keep their text and no body panics.
//!
//! Must not: execute requests or touch HTTP; what the executor does with a decoded request is
//! tested in `exec.rs` and the end-to-end suites.

use super::*;
use proptest::prelude::*;

fn s(out: Vec<u8>) -> String {
    String::from_utf8(out).unwrap()
}

#[test]
fn publish_request_decodes_every_field() {
    let body = br#"{"channel":"chat:1","data":{"b": 2,
  "a":[1.0]},"skip_history":true,"tags":{"z":"1","a":"2"},"idempotency_key":"k",
  "delta":true,"version":7,"version_epoch":"ve","unknown":{"x":1}}"#;
    let r = PublishRequest::decode(body).unwrap();
    assert_eq!(r.channel, "chat:1");
    assert_eq!(r.data.as_ref().unwrap().as_bytes(), br#"{"b": 2,  "a":[1.0]}"#);
    assert!(r.skip_history);
    assert_eq!(r.tags, vec![("a".into(), "2".into()), ("z".into(), "1".into())]);
    assert_eq!(r.idempotency_key, "k");
    assert!(r.delta);
    assert_eq!(r.version, 7);
    assert_eq!(r.version_epoch, "ve");
    assert_eq!(r.b64data, None);
    assert_eq!(
        r.payload().unwrap(),
        Some(PublishPayload::Json(RawJson::from_value_str(r#"{"b": 2,  "a":[1.0]}"#).unwrap()))
    );
}

#[test]
fn publish_request_nulls_and_missing_fields_are_defaults() {
    let r = PublishRequest::decode(br#"{"channel":"c","data":null,"tags":null,"version":null}"#)
        .unwrap();
    assert_eq!(r, PublishRequest { channel: "c".into(), ..Default::default() });
    assert_eq!(r.payload().unwrap(), None);
    assert!(PublishRequest::decode(b"").is_err());
    assert!(PublishRequest::decode(b"[]").is_err());
    assert!(PublishRequest::decode(br#"{"channel":1}"#).is_err());
    assert!(PublishRequest::decode(br#"{"tags":{"a":1}}"#).is_err());
    assert!(PublishRequest::decode(br#"{"version":-1}"#).is_err());
}

#[test]
fn b64data_wins_and_is_decoded_strictly() {
    // "{"x":1}" in base64; wins over data.
    let r = PublishRequest::decode(br#"{"channel":"c","data":{"y":2},"b64data":"eyJ4IjoxfQ=="}"#)
        .unwrap();
    assert_eq!(
        r.payload().unwrap(),
        Some(PublishPayload::Json(RawJson::from_value_str(r#"{"x":1}"#).unwrap()))
    );
    // Binary bytes stay binary.
    let r = PublishRequest::decode(br#"{"channel":"c","b64data":"AP8="}"#).unwrap();
    assert_eq!(
        r.payload().unwrap(),
        Some(PublishPayload::Binary(Bytes::from_static(&[0x00, 0xff])))
    );
    // Empty b64data falls back to data.
    let r = PublishRequest::decode(br#"{"channel":"c","data":1,"b64data":""}"#).unwrap();
    assert_eq!(r.b64data, None);
    assert_eq!(
        r.payload().unwrap(),
        Some(PublishPayload::Json(RawJson::from_value_str("1").unwrap()))
    );
    // Unpadded, URL alphabet and garbage are 107.
    for bad in ["AP8", "AP-_", "!!!!", "A"] {
        let body = format!(r#"{{"channel":"c","b64data":"{bad}"}}"#);
        let r = PublishRequest::decode(body.as_bytes()).unwrap();
        assert_eq!(r.payload(), Err(API_ERROR_BAD_REQUEST), "{bad}");
    }
    // Go's StdEncoding skips line breaks.
    let r = PublishRequest::decode(br#"{"channel":"c","b64data":"eyJ4Ijo\r\nxfQ=="}"#).unwrap();
    assert!(matches!(r.payload(), Ok(Some(PublishPayload::Json(_)))));
}

#[test]
fn broadcast_request_decodes() {
    let r = BroadcastRequest::decode(
        br#"{"channels":["a","b"],"data":{"t":1},"tags":{"k":"v"},"skip_history":true}"#,
    )
    .unwrap();
    assert_eq!(r.channels, vec!["a".to_string(), "b".to_string()]);
    assert_eq!(r.data.unwrap().as_bytes(), br#"{"t":1}"#);
    assert_eq!(r.tags, vec![("k".into(), "v".into())]);
    assert!(r.skip_history);
    let r = BroadcastRequest::decode(br#"{"data":1}"#).unwrap();
    assert!(r.channels.is_empty());
    assert!(BroadcastRequest::decode(br#"{"channels":"a"}"#).is_err());
}

#[test]
fn publish_and_broadcast_responses() {
    let mut out = Vec::new();
    encode_publish_response(&Ok(PublishResult::default()), &mut out);
    assert_eq!(s(out), r#"{"result":{}}"#);
    let mut out = Vec::new();
    let with_history = PublishResult { offset: 5, epoch: "aBcD".into() };
    encode_publish_response(&Ok(with_history.clone()), &mut out);
    assert_eq!(s(out), r#"{"result":{"offset":5,"epoch":"aBcD"}}"#);
    let mut out = Vec::new();
    encode_publish_response(&Err(API_ERROR_UNKNOWN_CHANNEL), &mut out);
    assert_eq!(s(out), r#"{"error":{"code":102,"message":"unknown channel"}}"#);
    let mut result = Vec::new();
    encode_broadcast_result(
        &[Ok(with_history), Err(API_ERROR_INTERNAL), Ok(PublishResult::default())],
        &mut result,
    );
    let mut out = Vec::new();
    encode_result_response(&result, &mut out);
    assert_eq!(
        s(out),
        r#"{"result":{"responses":[{"result":{"offset":5,"epoch":"aBcD"}},{"error":{"code":100,"message":"internal server error"}},{"result":{}}]}}"#
    );
    let mut out = Vec::new();
    encode_broadcast_result(&[], &mut out);
    assert_eq!(s(out), r#"{"responses":[]}"#);
    let mut out = Vec::new();
    encode_error_response(&API_ERROR_BAD_REQUEST, &mut out);
    assert_eq!(s(out), r#"{"error":{"code":107,"message":"bad request"}}"#);
    let mut out = Vec::new();
    encode_error_object(&API_ERROR_NOT_FOUND, &mut out);
    assert_eq!(s(out), r#"{"code":104,"message":"not found"}"#);
    let mut out = Vec::new();
    encode_result_response(br#"{"num_clients":1,"num_users":1}"#, &mut out);
    assert_eq!(s(out), r#"{"result":{"num_clients":1,"num_users":1}}"#);
}

#[test]
fn transport_error_mode_statuses() {
    let status = |e: ApiError| e.http_status();
    assert_eq!(status(API_ERROR_INTERNAL), 500);
    assert_eq!(status(API_ERROR_UNKNOWN_CHANNEL), 404);
    assert_eq!(status(API_ERROR_NOT_FOUND), 404);
    assert_eq!(status(API_ERROR_BAD_REQUEST), 400);
    assert_eq!(status(API_ERROR_NOT_AVAILABLE), 400);
    assert_eq!(status(API_ERROR_UNRECOVERABLE_POSITION), 416);
    assert_eq!(status(API_ERROR_CONFLICT), 409);
    assert_eq!(status(ApiError { code: 4000, message: "x".into() }), 500);
}

#[test]
fn method_table_paths_names_and_numbers() {
    assert_eq!(ApiMethod::from_path_segment("publish"), Some(ApiMethod::Publish));
    assert_eq!(ApiMethod::from_path_segment("presence_stats"), Some(ApiMethod::PresenceStats));
    assert_eq!(ApiMethod::from_path_segment("batch"), Some(ApiMethod::Batch));
    assert_eq!(ApiMethod::from_path_segment("Publish"), None);
    assert_eq!(ApiMethod::from_path_segment(""), None);
    assert_eq!(ApiMethod::from_legacy_name("PUBLISH"), Some(ApiMethod::Publish));
    assert_eq!(ApiMethod::from_legacy_name("Presence_Stats"), Some(ApiMethod::PresenceStats));
    assert_eq!(ApiMethod::from_legacy_name("batch"), None);
    assert_eq!(ApiMethod::from_legacy_number(0), Some(ApiMethod::Publish));
    assert_eq!(ApiMethod::from_legacy_number(11), Some(ApiMethod::Subscribe));
    assert_eq!(ApiMethod::from_legacy_number(12), Some(ApiMethod::Refresh));
    assert_eq!(ApiMethod::from_legacy_number(13), None);
    assert_eq!(ApiMethod::from_legacy_number(14), Some(ApiMethod::Connections));
    assert_eq!(ApiMethod::from_legacy_number(39), Some(ApiMethod::SharedPollPublish));
    assert_eq!(ApiMethod::from_legacy_number(40), None);
    for (m, name, number) in METHODS {
        assert_eq!(m.name(), *name);
        assert_eq!(m.legacy_number(), *number);
        assert_eq!(ApiMethod::from_path_segment(name), Some(*m));
    }
}

#[test]
fn legacy_stream_parses_names_numbers_and_whitespace() {
    let body = b" {\"id\":1,\"method\":\"publish\",\"params\":{\"channel\":\"a\",\"data\":{}}}\n\n\t{\"method\":\"PRESENCE_STATS\",\"params\":{\"channel\":\"b\"}}{\"id\":3,\"method\":9}\r\n{\"id\":4,\"method\":\"nope\",\"params\":{}}\n{\"id\":5,\"method\":13,\"params\":null}\n{\"id\":6,\"params\":{\"channel\":\"c\"}}\n";
    let cmds = decode_legacy(body).unwrap();
    let summary: Vec<(u32, Option<ApiMethod>, &str)> =
        cmds.iter().map(|c| (c.id, c.method, c.params.get())).collect();
    assert_eq!(
        summary,
        vec![
            (1, Some(ApiMethod::Publish), r#"{"channel":"a","data":{}}"#),
            (0, Some(ApiMethod::PresenceStats), r#"{"channel":"b"}"#),
            (3, Some(ApiMethod::Info), "{}"),
            (4, None, "{}"),
            (5, None, "{}"),
            (6, Some(ApiMethod::Publish), r#"{"channel":"c"}"#),
        ]
    );
    // Params are decodable by the per-method types; bad params fail there (→ reply 107).
    assert_eq!(PublishRequest::decode(cmds[0].params.get().as_bytes()).unwrap().channel, "a");
    let bad = decode_legacy(br#"{"method":"publish","params":{"channel":5}}"#).unwrap();
    assert!(PublishRequest::decode(bad[0].params.get().as_bytes()).is_err());
}

#[test]
fn legacy_stream_rejects_empty_and_malformed_bodies() {
    assert!(matches!(decode_legacy(b""), Err(ApiDecodeError::Empty)));
    assert!(matches!(decode_legacy(b" \n "), Err(ApiDecodeError::Empty)));
    assert!(matches!(decode_legacy(b"{\"method\":0"), Err(ApiDecodeError::Json(_))));
    assert!(matches!(decode_legacy(b"{} x"), Err(ApiDecodeError::NotObject)));
    assert!(matches!(decode_legacy(b"{} {"), Err(ApiDecodeError::Json(_))));
    assert!(matches!(decode_legacy(b"[1]"), Err(ApiDecodeError::NotObject)));
    assert!(matches!(decode_legacy(b"{} [1]"), Err(ApiDecodeError::NotObject)));
    assert!(matches!(decode_legacy(br#"{"id":-1}"#), Err(ApiDecodeError::Json(_))));
}

#[test]
fn legacy_replies_are_newline_joined_with_optional_id() {
    let replies = [
        LegacyReply { id: 1, outcome: Ok(br#"{"offset":1,"epoch":"e"}"#.to_vec()) },
        LegacyReply { id: 0, outcome: Ok(Vec::new()) },
        LegacyReply { id: 3, outcome: Err(API_ERROR_NOT_FOUND) },
        LegacyReply { id: 0, outcome: Err(API_ERROR_BAD_REQUEST) },
    ];
    let mut out = Vec::new();
    encode_legacy_replies(&replies, &mut out);
    assert_eq!(
        s(out),
        [
            r#"{"id":1,"result":{"offset":1,"epoch":"e"}}"#,
            r#"{"result":{}}"#,
            r#"{"id":3,"error":{"code":104,"message":"not found"}}"#,
            r#"{"error":{"code":107,"message":"bad request"}}"#,
        ]
        .join("\n")
    );
}

proptest! {
    #[test]
    fn api_payload_newlines_are_stripped(pretty in prop::bool::ANY, n in any::<i64>(), t in "\\PC{0,12}") {
        let value = serde_json::json!({"n": n, "t": t, "list": [1, {"x": null}]});
        let text = if pretty { serde_json::to_string_pretty(&value).unwrap() } else { value.to_string() };
        let body = format!("{{\"channel\":\"c\",\"data\":{text}}}");
        let r = PublishRequest::decode(body.as_bytes()).unwrap();
        let data = r.data.unwrap();
        prop_assert_eq!(data.as_str(), text.replace('\n', ""));
        let back: serde_json::Value = serde_json::from_slice(data.as_bytes()).unwrap();
        prop_assert_eq!(back, value);
    }

    #[test]
    fn random_bodies_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_legacy(&bytes);
        if let Ok(r) = PublishRequest::decode(&bytes) {
            let _ = r.payload();
        }
        let _ = BroadcastRequest::decode(&bytes);
    }

    #[test]
    fn b64_round_trips(bytes in prop::collection::vec(any::<u8>(), 1..64)) {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let body = format!(r#"{{"channel":"c","b64data":"{b64}"}}"#);
        let got = PublishRequest::decode(body.as_bytes()).unwrap().payload().unwrap().unwrap();
        match got {
            PublishPayload::Binary(b) => prop_assert_eq!(b.as_ref(), bytes.as_slice()),
            PublishPayload::Json(j) => {
                let want: Vec<u8> = bytes.iter().copied().filter(|&b| b != b'\n').collect();
                prop_assert!(serde_json::from_slice::<serde_json::Value>(&bytes).is_ok());
                let trimmed = String::from_utf8(want).unwrap();
                prop_assert_eq!(j.as_str(), trimmed.trim_matches(|c: char| c.is_ascii_whitespace()));
            }
        }
    }
}
