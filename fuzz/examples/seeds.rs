//! Writes the committed seed corpus, `fuzz/corpus/<target>/<name>`: small realistic inputs
//! of every fuzz target, the binary ones made by Rotor's own encoders (protobuf commands and
//! broker messages) and flate2 (compressed WebSocket frames). Run from the fuzz directory:
//! `cargo run --example seeds` (a plain build: it is not fuzzed). Re-running rewrites the
//! same files.

use std::io::Write as _;
use std::path::Path;

use flate2::{write::DeflateEncoder, Compression};
use prost::Message as _;
use rotor::protocol::{pb, protobuf, ClientInfo, Publication, RawJson};

type Seeds = Vec<(&'static str, Vec<u8>)>;

fn text(name: &'static str, s: &str) -> (&'static str, Vec<u8>) {
    (name, s.as_bytes().to_vec())
}

/// The same bytes behind a leading byte the target reads as an option (format, read size).
fn with(first: u8, name: &'static str, s: &[u8]) -> (&'static str, Vec<u8>) {
    let mut out = vec![first];
    out.extend_from_slice(s);
    (name, out)
}

fn json_command() -> Seeds {
    vec![
        text("connect", r#"{"id":1,"connect":{"token":"eyJhbGciOiJIUzI1NiJ9.e30.x","name":"js","version":"5.0.0","subs":{"news":{"recover":true,"offset":3,"epoch":"abc"}}}}"#),
        text("subscribe_recover", r#"{"id":2,"subscribe":{"channel":"chat:room","recover":true,"offset":10,"epoch":"xyz","positioned":true,"recoverable":true,"join_leave":true,"delta":"fossil"}}"#),
        text("publish", r#"{"id":3,"publish":{"channel":"chat:room","data":{"text":"hi \u00e9","n":[1,2.5e3,null,true]}}}"#),
        text("rpc_send", "{\"id\":4,\"rpc\":{\"method\":\"getUser\",\"data\":{\"id\":42}}}\n{\"send\":{\"data\":\"x\"}}\n"),
        text("frame_of_many", "{\"id\":5,\"presence\":{\"channel\":\"a\"}}\n{\"id\":6,\"presence_stats\":{\"channel\":\"a\"}}\n{\"id\":7,\"history\":{\"channel\":\"a\",\"limit\":10,\"since\":{\"offset\":1,\"epoch\":\"e\"},\"reverse\":true}}"),
        text("refresh", r#"{"id":8,"refresh":{"token":"t"}}"#),
        text("sub_refresh_unsub", "{\"id\":9,\"sub_refresh\":{\"channel\":\"a\",\"token\":\"t\"}}\n{\"id\":10,\"unsubscribe\":{\"channel\":\"a\"}}"),
        text("ping", "{}"),
        text("filter", r#"{"id":11,"subscribe":{"channel":"a","tf":{"op":"and","nodes":[{"key":"k","cmp":"eq","val":"v"},{"op":"not","nodes":[{"key":"n","cmp":"in","vals":["1","2"]}]}]}}}"#),
        text("emulation", r#"{"session":"s1","node":"n1","data":"eyJpZCI6MX0="}"#),
        text("blank_line", "{\"id\":1,\"ping\":{}}\n\n{\"id\":2,\"ping\":{}}"),
    ]
}

fn delimited(commands: &[pb::Command]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in commands {
        out.extend(c.encode_length_delimited_to_vec());
    }
    out
}

fn protobuf_command() -> Seeds {
    let connect = pb::Command {
        id: 1,
        connect: Some(pb::ConnectRequest {
            token: "eyJhbGciOiJIUzI1NiJ9.e30.x".into(),
            data: b"{\"a\":1}".to_vec().into(),
            name: "go".into(),
            version: "1.0".into(),
            subs: [(
                "news".to_owned(),
                pb::SubscribeRequest {
                    channel: String::new(),
                    recover: true,
                    offset: 3,
                    epoch: "e".into(),
                    ..Default::default()
                },
            )]
            .into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let subscribe = pb::Command {
        id: 2,
        subscribe: Some(pb::SubscribeRequest {
            channel: "chat:room".into(),
            recover: true,
            offset: 7,
            epoch: "xyz".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let publish = pb::Command {
        id: 3,
        publish: Some(pb::PublishRequest {
            channel: "chat:room".into(),
            data: vec![0, 1, 2, 255].into(),
        }),
        ..Default::default()
    };
    let rpc = pb::Command {
        id: 4,
        rpc: Some(pb::RpcRequest { method: "m".into(), data: b"{}".to_vec().into() }),
        ..Default::default()
    };
    let history = pb::Command {
        id: 5,
        history: Some(pb::HistoryRequest {
            channel: "a".into(),
            limit: 10,
            reverse: true,
            ..Default::default()
        }),
        ..Default::default()
    };
    let ping = pb::Command { id: 6, ping: Some(pb::PingRequest {}), ..Default::default() };
    let bare = pb::Command { id: 7, ..Default::default() };
    vec![
        ("connect", delimited(std::slice::from_ref(&connect))),
        ("subscribe", delimited(std::slice::from_ref(&subscribe))),
        ("publish", delimited(std::slice::from_ref(&publish))),
        ("frame_of_many", delimited(&[connect, subscribe, publish.clone(), rpc, history])),
        ("ping", delimited(&[ping])),
        ("no_request", delimited(&[bare])),
        ("truncated", delimited(&[publish])[..9].to_vec()),
    ]
}

fn http_head() -> Seeds {
    vec![
        text("websocket_upgrade", "GET /connection/websocket?cf_protocol=json HTTP/1.1\r\nHost: localhost:8000\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: centrifuge-protobuf\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\nOrigin: https://app.example.com\r\n\r\n"),
        text("uni_websocket", "GET /connection/uni_websocket?cf_connect=%7B%22token%22%3A%22t%22%7D HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==\r\n\r\n"),
        text("api_publish", "POST /api/publish HTTP/1.1\r\nHost: localhost:8000\r\nX-API-Key: secret\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{\"channel\":\"news\",\"data\":{\"text\":\"hi\"}}"),
        text("api_legacy_apikey", "POST /api HTTP/1.1\r\nHost: x\r\nAuthorization: apikey secret\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n{}"),
        text("api_chunked", "POST /api/broadcast HTTP/1.1\r\nHost: x\r\nX-API-Key: secret\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\n{\"cha\r\n1a\r\nnnels\":[\"a\",\"b\"],\"data\":1}\r\n0\r\nTrailer: x\r\n\r\n"),
        text("api_wrong_method", "GET /api/info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        text("smuggling", "POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        text("sse", "GET /connection/sse?cf_connect=%7B%7D HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"),
        text("http_stream", "POST /connection/http_stream HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"),
        text("emulation", "POST /emulation HTTP/1.1\r\nHost: x\r\nContent-Length: 36\r\n\r\n{\"session\":\"s\",\"node\":\"n\",\"data\":\"\"}"),
        text("admin_tail", "GET /ui/admin/tail?channel=news&token=abc.def HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"),
        text("http10_keepalive", "GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
    ]
}

/// A client frame: FIN, `opcode` (with RSV1 when `rsv1`), masked with `key`.
fn ws_frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8], key: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![u8::from(fin) << 7 | u8::from(rsv1) << 6 | opcode];
    let mask = if key.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => out.push(mask | u8::try_from(n).unwrap_or(125)),
        n @ 126..=0xffff => {
            out.push(mask | 126);
            out.extend_from_slice(&u16::try_from(n).unwrap_or(u16::MAX).to_be_bytes());
        }
        n => {
            out.push(mask | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match key {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A permessage-deflate payload: raw deflate without the final empty block's tail.
fn deflated(payload: &[u8]) -> Vec<u8> {
    let mut e = DeflateEncoder::new(Vec::new(), Compression::default());
    let _ = e.write_all(payload);
    let mut out = e.flush_finish().unwrap_or_default();
    if out.ends_with(&[0, 0, 0xff, 0xff]) {
        out.truncate(out.len() - 4);
    }
    out
}

fn websocket_frames() -> Seeds {
    let key = Some([0x37, 0xfa, 0x21, 0x3d]);
    let json = br#"{"id":1,"connect":{"token":"t"}}"#;
    let mut many = ws_frame(true, false, 1, json, key);
    many.extend(ws_frame(true, false, 9, b"ping", key));
    many.extend(ws_frame(false, false, 1, b"{\"id\":2,", key));
    many.extend(ws_frame(true, false, 0, b"\"ping\":{}}", key));
    many.extend(ws_frame(true, false, 8, &[0x03, 0xe8, b'b', b'y', b'e'], key));
    let compressed = ws_frame(true, true, 1, &deflated(json), key);
    let mut fragmented = ws_frame(false, true, 2, &deflated(&[7u8; 300])[..3], key);
    fragmented.extend(ws_frame(true, false, 0, &deflated(&[7u8; 300])[3..], key));
    let big = ws_frame(true, false, 2, &[0xab; 200], key);
    let bomb = ws_frame(true, true, 2, &deflated(&vec![0u8; 100_000]), key);
    vec![
        with(0, "text", &ws_frame(true, false, 1, json, key)),
        with(0, "many_one_byte_reads", &many),
        with(6, "many_small_limits", &many),
        with(1, "compressed", &compressed),
        with(1, "compressed_fragmented", &fragmented),
        with(3, "inflate_bomb_small_limit", &bomb),
        with(0, "unmasked", &ws_frame(true, false, 1, json, None)),
        with(2, "over_limit", &big),
        with(5, "pong_binary", &[ws_frame(true, false, 10, b"", key), big].concat()),
    ]
}

fn config_load() -> Seeds {
    vec![
        with(0, "minimal_json", br#"{"client":{"token":{"hmac_secret_key":"secret"}},"http_api":{"key":"api-key"}}"#),
        with(0, "namespaces_json", br#"{
  "client": {"allowed_origins": ["https://*.example.com"], "token": {"hmac_secret_key": "s", "user_id_claim": "sub"}, "ping_interval": "25s", "pong_timeout": "8s"},
  "channel": {"namespaces": [{"name": "chat", "presence": true, "join_leave": true, "history_size": 100, "history_ttl": "300s", "force_recovery": true, "allow_subscribe_for_client": true, "channel_regex": "^[a-z]+$"}], "without_namespace": {"allow_publish_for_subscriber": true}},
  "websocket": {"compression": true, "message_size_limit": 65536},
  "admin": {"enabled": true, "password": "p", "secret": "s"},
  "prometheus": {"enabled": true}, "health": {"enabled": true}
}"#),
        with(0, "redis_engine_json", br#"{"engine":{"type":"redis","redis":{"address":["redis://127.0.0.1:6379/0","redis+sentinel://localhost:26379?sentinel_master_name=mymaster"],"prefix":"rotor"}}}"#),
        with(0, "nats_broker_json", br#"{"broker":{"enabled":true,"type":"nats","nats":{"url":"nats://user:pass@127.0.0.1:4222","prefix":"centrifugo"}}}"#),
        with(0, "proxies_json", br#"{"proxies":[{"name":"p","endpoint":"http://127.0.0.1:3000/rpc","timeout":"1s","http_headers":["Authorization"]}],"client":{"proxy":{"connect":{"enabled":true,"endpoint":"http://127.0.0.1:3000/connect"}}},"rpc":{"namespaces":[{"name":"r","proxy_name":"p"}]}}"#),
        with(0, "unknown_and_unsupported", br#"{"clent":{"x":1},"engine":{"type":"redis","redis":{"cluster":{"enabled":true}}},"granular_proxy_mode":true}"#),
        with(1, "yaml", b"client:\n  token:\n    hmac_secret_key: secret\n  allowed_origins:\n    - \"*\"\nchannel:\n  namespaces:\n    - name: news\n      history_size: 10\n      history_ttl: 60s\nhttp_server:\n  port: 8000\n  internal_port: 9000\n"),
        with(1, "yaml_anchor", b"a: &x {presence: true}\nchannel:\n  without_namespace: *x\n"),
        with(2, "toml", b"[client.token]\nhmac_secret_key = \"secret\"\n\n[[channel.namespaces]]\nname = \"chat\"\npresence = true\n\n[runtime]\nshards = 2\nring_depth = 1024\n"),
        with(2, "toml_bad_ring", b"[runtime]\nring_depth = 1000\n"),
    ]
}

/// RESP2 bulk string.
fn bulk(b: &[u8]) -> Vec<u8> {
    let mut out = format!("${}\r\n", b.len()).into_bytes();
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
    out
}

fn array(items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", items.len()).into_bytes();
    for i in items {
        out.extend_from_slice(i);
    }
    out
}

fn publication() -> Publication {
    Publication {
        data: RawJson::from_value_str(r#"{"text":"hi"}"#).expect("valid JSON"),
        info: Some(info()),
        offset: 0,
        tags: vec![("k".into(), "v".into())],
        ..Default::default()
    }
}

fn info() -> ClientInfo {
    ClientInfo {
        user: "42".into(),
        client: "c1".into(),
        conn_info: RawJson::from_value_str(r#"{"name":"a"}"#).ok(),
        chan_info: None,
    }
}

fn resp_reply() -> Seeds {
    let p = protobuf::broker_publication(&publication(), 1_700_000_000_000, false);
    let positioned = [b"__p1:17:abcd__".as_slice(), &p].concat();
    let delta = [format!("__d1:18:abcd:3:{{}}:{}:", p.len()).as_bytes(), &p].concat();
    let join = [b"__j__".as_slice(), &protobuf::encode_client_info(&info())].concat();
    let message =
        |payload: &[u8]| array(&[bulk(b"message"), bulk(b"centrifugo.client.news"), bulk(payload)]);
    let entry = array(&[bulk(b"17-0"), array(&[bulk(b"d"), bulk(&p)])]);
    let slots = array(&[
        array(&[
            b":0\r\n".to_vec(),
            b":8191\r\n".to_vec(),
            array(&[bulk(b"127.0.0.1"), b":7000\r\n".to_vec(), bulk(b"id1")]),
        ]),
        array(&[
            b":8192\r\n".to_vec(),
            b":16383\r\n".to_vec(),
            array(&[bulk(b""), b":7001\r\n".to_vec()]),
        ]),
    ]);
    vec![
        with(0, "subscribe_confirm", &array(&[bulk(b"subscribe"), bulk(b"centrifugo.client.news"), b":1\r\n".to_vec()])),
        with(3, "message_positioned", &message(&positioned)),
        with(255, "message_delta_and_join", &[message(&delta), message(&join)].concat()),
        with(1, "control", &array(&[bulk(b"message"), bulk(b"centrifugo.control"), bulk(b"\x0a\x02hi")])),
        with(7, "history_reply", &array(&[b":17\r\n".to_vec(), bulk(b"abcd"), array(&[entry])])),
        with(0, "publish_reply", &array(&[b":18\r\n".to_vec(), bulk(b"abcd")])),
        with(2, "presence_hgetall", &array(&[bulk(b"c1"), bulk(&protobuf::encode_client_info(&info()))])),
        with(9, "simple_int_nil_error", b"+OK\r\n:42\r\n$-1\r\n*-1\r\n-READONLY You can't write against a read only replica.\r\n"),
        with(4, "cluster_slots", &slots),
        with(0, "resp3_push_unsupported", b">3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nb\r\n"),
    ]
}

fn nats_protocol() -> Seeds {
    let push = protobuf::encode_broker_push_pub("news", &publication(), 1_700_000_000_000);
    let join = protobuf::encode_broker_push_presence("news", &info(), true);
    let msg = |sid: u32, payload: &[u8]| {
        [
            format!("MSG centrifugo.client.news {sid} {}\r\n", payload.len()).as_bytes(),
            payload,
            b"\r\n",
        ]
        .concat()
    };
    let info_line = b"INFO {\"server_id\":\"NABC\",\"version\":\"2.10.7\",\"proto\":1,\"max_payload\":1048576,\"headers\":true,\"tls_available\":true}\r\n";
    vec![
        with(0, "handshake", &[&info_line[..], b"+OK\r\nPONG\r\n"].concat()),
        with(5, "msg_publication", &msg(1, &push)),
        with(
            0,
            "msg_join_and_reply_subject",
            &[
                msg(2, &join),
                format!("MSG a 3 _INBOX.x {}\r\n", join.len()).into_bytes(),
                join.clone(),
                b"\r\n".to_vec(),
            ]
            .concat(),
        ),
        with(1, "ping_pong_ok", b"PING\r\nPONG\r\n+OK\r\nping\r\n"),
        with(0, "err", b"-ERR 'Authorization Violation'\r\n"),
        with(3, "hmsg_refused", b"HMSG centrifugo.client.news 1 12 14\r\nNATS/1.0\r\n\r\nhi\r\n"),
        with(0, "info_tls_required", b"INFO {\"tls_required\":true}\r\n"),
        with(2, "control_msg", b"MSG centrifugo.control 4 3\r\nabc\r\n"),
    ]
}

fn main() -> std::io::Result<()> {
    let all: [(&str, Seeds); 7] = [
        ("json_command", json_command()),
        ("protobuf_command", protobuf_command()),
        ("http_head", http_head()),
        ("websocket_frames", websocket_frames()),
        ("config_load", config_load()),
        ("resp_reply", resp_reply()),
        ("nats_protocol", nats_protocol()),
    ];
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (target, seeds) in all {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        for (name, bytes) in seeds {
            std::fs::write(dir.join(name), bytes)?;
        }
        println!("{target}: written");
    }
    Ok(())
}
