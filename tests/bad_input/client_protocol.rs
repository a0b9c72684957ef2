//! Client protocol: broken commands, forbidden requests and broken WebSocket frames.

use serde_json::json;
use tungstenite::Message;

use super::common::*;
use super::{error_reply, raw_frame, Catalogue};

/// Connects an attacker, sends `text` as one frame and expects the close `(code, reason)`.
fn closes(cat: &Catalogue, text: &str, code: u16, reason: &str) {
    let mut c = cat.connected_attacker();
    c.send_text(text);
    assert_eq!(c.expect_close(), (code, reason.to_string()), "after {text:?}");
}

#[test]
fn client_protocol_violations_are_refused_with_their_codes() {
    let mut cat = Catalogue::start();

    cat.case("malformed JSON", |cat| {
        closes(cat, r#"{"id":2,"subscribe":{"channel":"chat:a""#, 3501, "bad request");
    });
    cat.case("command with no known method", |cat| {
        closes(cat, r#"{"id":2,"frobnicate":{"channel":"chat:a"}}"#, 3501, "bad request");
    });
    cat.case("command before connect", |cat| {
        let mut c = cat.attacker();
        c.send_text(r#"{"id":1,"subscribe":{"channel":"chat:a"}}"#);
        assert_eq!(c.expect_close(), (3501, "bad request".to_string()));
    });
    cat.case("command without id", |cat| {
        closes(cat, r#"{"subscribe":{"channel":"chat:a"}}"#, 3501, "bad request");
    });
    cat.case("second connect", |cat| {
        let text = json!({"id": 2, "connect": {"token": super::good_token("attacker")}});
        closes(cat, &text.to_string(), 3501, "bad request");
    });
    cat.case("empty text frame", |cat| closes(cat, "", 3501, "bad request"));
    cat.case("ping command", |cat| closes(cat, r#"{"id":2,"ping":{}}"#, 3501, "bad request"));
    cat.case("pong with no ping outstanding", |cat| closes(cat, "{}", 3501, "bad request"));
    cat.case("send without a message handler", |cat| {
        closes(cat, r#"{"send":{"data":{"x":1}}}"#, 3508, "not available");
    });
    cat.case("empty channel in subscribe", |cat| {
        closes(cat, r#"{"id":2,"subscribe":{"channel":""}}"#, 3501, "bad request");
    });

    cat.case("duplicate subscribe", |cat| {
        let mut c = cat.connected_attacker();
        assert_eq!(c.subscribe("chat:dup"), json!({"id": 2, "subscribe": {}}));
        assert_eq!(c.subscribe("chat:dup"), error_reply(3, 105, "already subscribed"));
    });
    cat.case("unknown namespace", |cat| {
        let mut c = cat.connected_attacker();
        assert_eq!(c.subscribe("nowhere:a"), error_reply(2, 102, "unknown channel"));
    });
    cat.case("non-ASCII channel", |cat| {
        let mut c = cat.connected_attacker();
        assert_eq!(c.subscribe("chat:héllo"), error_reply(2, 107, "bad request"));
    });
    cat.case("channel longer than channel.max_length", |cat| {
        let mut c = cat.connected_attacker();
        let long = format!("chat:{}", "a".repeat(251));
        assert_eq!(long.len(), 256);
        assert_eq!(c.subscribe(&long), error_reply(2, 107, "bad request"));
    });
    cat.case("NUL or another control character inside a channel name", |cat| {
        // Rotor refuses control characters in names (upstream only requires ASCII): they would
        // travel unescaped into logs, Redis keys and NATS subjects.
        let mut c = cat.connected_attacker();
        assert_eq!(c.subscribe("chat:a\u{0}b"), error_reply(2, 107, "bad request"));
        assert_eq!(c.subscribe("chat:a\r\nb"), error_reply(3, 107, "bad request"));
        assert_eq!(c.subscribe("chat:\u{1b}[2J"), error_reply(4, 107, "bad request"));
        let published = api_publish(&cat.server, "chat:a\u{0}b", json!({}));
        assert_eq!(published, json!({"error": {"code": 107, "message": "bad request"}}));
    });
    cat.case("private channel without a subscription token", |cat| {
        let mut c = cat.connected_attacker();
        assert_eq!(c.subscribe("$secret"), error_reply(2, 103, "permission denied"));
    });
    cat.case("publish without permission", |cat| {
        let mut c = cat.connected_attacker();
        assert_eq!(c.subscribe("ro:a"), json!({"id": 2, "subscribe": {}}));
        let id = c.command(json!({"publish": {"channel": "ro:a", "data": {"x": 1}}}));
        assert_eq!(c.next_json(), error_reply(id, 103, "permission denied"));
    });
    cat.case("history where history is off", |cat| {
        let mut c = cat.connected_attacker();
        let id = c.command(json!({"history": {"channel": "chat:a", "limit": 10}}));
        assert_eq!(c.next_json(), error_reply(id, 108, "not available"));
    });
    cat.case("presence where presence is off", |cat| {
        let mut c = cat.connected_attacker();
        let id = c.command(json!({"presence": {"channel": "chat:a"}}));
        assert_eq!(c.next_json(), error_reply(id, 108, "not available"));
    });
    cat.case("RPC with no RPC proxy", |cat| {
        let mut c = cat.connected_attacker();
        let id = c.command(json!({"rpc": {"method": "drop_tables", "data": {}}}));
        assert_eq!(c.next_json(), error_reply(id, 108, "not available"));
    });
    cat.case("one frame carrying 1000 forbidden publishes", |cat| {
        let mut c = cat.connected_attacker();
        let frame: Vec<String> = (2..1002)
            .map(|id| json!({"id": id, "publish": {"channel": "ro:a", "data": {}}}).to_string())
            .collect();
        let frame = frame.join("\n");
        assert!(frame.len() < 65_536, "within the message size limit");
        c.send_text(&frame);
        for id in 2..1002 {
            assert_eq!(c.next_json(), error_reply(id, 103, "permission denied"));
        }
        // The connection still works.
        assert_eq!(c.subscribe("chat:after-batch"), json!({"id": 2, "subscribe": {}}));
    });

    cat.case("frame over websocket.message_size_limit", |cat| {
        let mut c = cat.connected_attacker();
        let data = "x".repeat(70_000);
        c.send_text(&json!({"id": 2, "publish": {"channel": "chat:a", "data": data}}).to_string());
        assert_eq!(c.expect_close(), (1009, "message too big".to_string()));
    });
    cat.case("text frame that is not UTF-8", |cat| {
        let mut c = cat.connected_attacker();
        raw_frame(
            &mut c,
            0x1,
            b"{\"id\":2,\"publish\":{\"channel\":\"chat:a\",\"data\":\"\xff\xfe\"}}",
        );
        assert_eq!(c.expect_close(), (1007, "invalid utf-8".to_string()));
    });
    cat.case("unmasked client frame", |cat| {
        let mut c = cat.connected_attacker();
        let payload = br#"{"id":2,"subscribe":{"channel":"chat:a"}}"#;
        let mut frame = vec![0x81, u8::try_from(payload.len()).unwrap()];
        frame.extend_from_slice(payload);
        std::io::Write::write_all(c.ws.get_mut(), &frame).unwrap();
        assert_eq!(c.expect_close(), (1002, "protocol error".to_string()));
    });
    cat.case("reserved opcode", |cat| {
        let mut c = cat.connected_attacker();
        raw_frame(&mut c, 0x3, b"??");
        assert_eq!(c.expect_close(), (1002, "protocol error".to_string()));
    });
    cat.case("binary frame on a JSON connection", |cat| {
        // Rotor holds JSON connections to text frames (spec §1.3); upstream reads any frame
        // type with the connection's codec, so there this same command would be served.
        let mut c = cat.connected_attacker();
        c.ws.send(Message::binary(&br#"{"id":2,"subscribe":{"channel":"chat:a"}}"#[..])).unwrap();
        assert_eq!(c.expect_close(), (3501, "bad request".to_string()));
    });
    cat.case("garbage on a Protobuf connection", |cat| {
        let mut c = cat.on_shard(Client::connect(
            cat.server.port,
            "/connection/websocket?format=protobuf",
            &[],
        ));
        // A length prefix promising far more bytes than the frame has.
        c.ws.send(Message::binary(vec![0xff, 0xff, 0x03, 0x0a, 0x01])).unwrap();
        assert_eq!(c.expect_close(), (3501, "bad request".to_string()));
    });
    cat.case("text frame on a Protobuf connection", |cat| {
        let mut c = cat.on_shard(Client::connect(
            cat.server.port,
            "/connection/websocket",
            &[("Sec-WebSocket-Protocol", "centrifuge-protobuf")],
        ));
        let text = json!({"id": 1, "connect": {"token": super::good_token("attacker")}});
        c.send_text(&text.to_string());
        assert_eq!(c.expect_close(), (3501, "bad request".to_string()));
    });
}
