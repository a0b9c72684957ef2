//! The bad-input catalogue: hostile or broken input against the real binary, each case asserting
//! the exact answer (reply error code, WebSocket close code, HTTP status and body) and that a
//! healthy subscriber **on the same shard** as the attacker keeps receiving publications.
//!
//! Every server here runs with **one shard** (`runtime.shards: 1`), so every connection (the
//! healthy subscriber, each attacker, the API publisher) is served by the same shard: a case
//! that wedged or crashed that shard would starve the healthy subscriber. Attackers' WebSocket
//! handshakes and HTTP answers carry the `x-rotor-shard` header, and each case checks it names
//! the healthy subscriber's shard. After each case the API publishes a fresh payload to the
//! healthy subscriber's channel and the case passes only once that payload arrives (a bounded
//! read: the harness's 10 s socket timeout, never a sleep).
//!
//! One server per group (one `#[test]` per module), the cases of a group in sequence; a failing
//! case names itself on stderr (`bad input case: ...`).
//!
//! | Group | Case | Expected |
//! |---|---|---|
//! | client protocol | malformed JSON frame | close 3501 `bad request` |
//! | | command with no known method | close 3501 |
//! | | command before connect | close 3501 |
//! | | command without `id` | close 3501 |
//! | | second `connect` | close 3501 |
//! | | empty text frame | close 3501 |
//! | | `ping` command (field 11) | close 3501 |
//! | | pong with no ping outstanding | close 3501 |
//! | | `send` (no message handler) | close 3508 `not available` |
//! | | duplicate subscribe | error 105 `already subscribed` |
//! | | unknown namespace | error 102 `unknown channel` |
//! | | non-ASCII channel | error 107 `bad request` |
//! | | channel over `channel.max_length` (255) | error 107 |
//! | | empty channel in subscribe | close 3501 |
//! | | NUL / CR LF / ESC inside a channel name (client and API) | error 107 |
//! | | private `$` channel without token | error 103 `permission denied` |
//! | | publish without permission | error 103 |
//! | | history where history is off | error 108 `not available` |
//! | | presence where presence is off | error 108 |
//! | | RPC with no RPC proxy | error 108 |
//! | | one frame carrying 1000 forbidden publishes | 1000 × error 103, in order |
//! | | frame over `websocket.message_size_limit` | close 1009 `message too big` |
//! | | text frame that is not UTF-8 | close 1007 `invalid utf-8` |
//! | | unmasked client frame | close 1002 `protocol error` |
//! | | reserved opcode | close 1002 |
//! | | binary frame on a JSON connection | close 3501 |
//! | | garbage on a Protobuf (`?format=protobuf`) connection | close 3501 |
//! | | text frame on a Protobuf connection | close 3501 |
//! | tokens | `alg: none` | close 3500 `invalid token` |
//! | | HS256 signed with another secret | close 3500 |
//! | | `RS256` header, HMAC signature (alg confusion) | close 3500 |
//! | | bad base64 | close 3500 |
//! | | wrong `aud` / wrong `iss` | close 3500 |
//! | | `channel` claim in a connection token | close 3500 |
//! | | no token, anonymous not allowed | close 3501 |
//! | | `exp` in the past / `nbf` in the future | error 109 `token expired` |
//! | | `expire_at` in the past | error 110 `expired` |
//! | | refresh with a forged token | close 3500 |
//! | | subscription token signed with another secret | error 103 |
//! | | expired subscription token | error 109 |
//! | | subscription token for channel A used on B | close 3500 |
//! | | subscription token of another user | close 3500 |
//! | handshake | no `Sec-WebSocket-Key` / key not a 16-byte nonce | 400 |
//! | | `Sec-WebSocket-Version: 12` | 400 + `Sec-WebSocket-Version: 13` |
//! | | upgrade with POST | 405 + `Allow: GET` |
//! | | `Upgrade: h2c` / no `Connection: upgrade` | 400 |
//! | | unknown path | 404 |
//! | | `Origin` not in `client.allowed_origins` | 403 |
//! | HTTP | head over 16 KiB | 431 |
//! | | more than 64 headers | 431 |
//! | | API body over 8 MiB | 413 |
//! | | `Content-Length` not a number / two different ones | 400 |
//! | | `Content-Length` with `Transfer-Encoding` (smuggling) | 400 |
//! | | head not finished within `runtime.http_head_timeout` | 408 |
//! | | chunked body with a bad chunk size | 400 |
//! | | `Transfer-Encoding: gzip` | 501 |
//! | | HTTP/1.1 without `Host` / garbage request line | 400 |
//! | | `GET /api/publish` | 405 + `Allow: POST` |
//! | | no API key / wrong API key | 401, empty body |
//! | API | body not JSON | 400 `{"error":"bad request"}` |
//! | | unknown method path | 404 |
//! | | publish without channel | `{"error":{"code":107,...}}` |
//! | | publish to an unknown namespace | 102 |
//! | | publish with bad `b64data` | 107 |
//! | | publish without data | 107 |
//! | | history where history is off | 108 |
//! | | presence where presence is off | 108 |
//! | | broadcast with no channels | 107 |
//! | | batch with an unknown and a `null` command | per reply 104 and 107, the good one runs |
//! | | transport error mode | HTTP 400 `{"code":107,...}` |
//! | | legacy `/api` with an empty body | 400 |
//!
//! Not covered: the 10 s request-head deadline (408) is a constant with no config key, so it
//! cannot be tested without a 10 s wait.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::needless_pass_by_value,
    reason = "test harness code: a failure must panic loudly, and helpers take what tests build"
)]

#[path = "../common/mod.rs"]
mod common;

mod api;
mod client_protocol;
mod handshake;
mod http;
mod tokens;

use std::io::Write;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};

use common::*;

/// The audience and issuer every server of the catalogue requires.
pub const AUD: &str = "rotor-tests";
pub const ISS: &str = "rotor-tests-issuer";
/// The only origin browsers may connect from.
pub const GOOD_ORIGIN: &str = "https://good.example";
/// The healthy subscriber's channel.
const HEALTHY: &str = "chat:healthy";

/// One shard; `chat` allows subscribe, publish by subscribers, and history and presence
/// queries although both features are off (so those queries fail with 108, not 103); `ro`
/// allows subscribe only; tokens must carry `AUD` and `ISS`; a request head must arrive within
/// 1 s.
pub fn config() -> Value {
    let mut cfg = base_config();
    merge(
        &mut cfg,
        json!({
            "runtime": {"shards": 1, "http_head_timeout": "1s"},
            "client": {
                "allowed_origins": [GOOD_ORIGIN],
                "token": {"audience": AUD, "issuer": ISS}
            },
            "channel": {
                "without_namespace": {"allow_subscribe_for_client": true},
                "namespaces": [
                    {
                        "name": "chat",
                        "allow_subscribe_for_client": true,
                        "allow_publish_for_subscriber": true,
                        "allow_history_for_client": true,
                        "allow_presence_for_client": true
                    },
                    {"name": "ro", "allow_subscribe_for_client": true}
                ]
            }
        }),
    );
    cfg
}

/// A valid connection token for `user` on the catalogue's servers.
pub fn good_token(user: &str) -> String {
    token_with(json!({"sub": user, "exp": now() + 3600, "aud": AUD, "iss": ISS}))
}

/// A JWT with any header, signed (HMAC-SHA256 over `header.claims`) with `secret`, or
/// unsigned (empty signature) when `secret` is `None`.
pub fn forge(header: Value, claims: Value, secret: Option<&str>) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = secret.map_or_else(String::new, |s| {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(s.as_bytes()).unwrap();
        mac.update(signing_input.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    });
    format!("{signing_input}.{signature}")
}

/// A server with a healthy subscriber on its only shard.
pub struct Catalogue {
    pub server: Server,
    healthy: Client,
    /// Publications sent to the healthy subscriber so far.
    sent: u32,
}

impl Catalogue {
    pub fn start() -> Catalogue {
        let server = Server::start(config());
        let mut healthy = server.ws();
        let reply = healthy.handshake(&good_token("healthy"));
        assert!(reply["connect"]["client"].is_string(), "{reply}");
        assert_eq!(healthy.subscribe(HEALTHY), json!({"id": 2, "subscribe": {}}));
        let mut cat = Catalogue { server, healthy, sent: 0 };
        cat.assert_healthy("start");
        cat
    }

    /// Runs one case, then checks the healthy subscriber still receives.
    pub fn case(&mut self, name: &str, run: impl FnOnce(&Catalogue)) {
        eprintln!("bad input case: {name}");
        run(self);
        self.assert_healthy(name);
    }

    /// Publishes a fresh payload through the API and waits (bounded) for the healthy
    /// subscriber to receive exactly it.
    fn assert_healthy(&mut self, after: &str) {
        self.sent += 1;
        let data = json!({"after": after, "n": self.sent});
        assert_eq!(api_publish(&self.server, HEALTHY, data.clone()), json!({"result": {}}));
        let publication = next_pub(&mut self.healthy, HEALTHY);
        assert_eq!(publication["data"], data, "healthy subscriber after case {after:?}");
    }

    /// The shard the healthy subscriber is on (`"0"`).
    pub fn shard(&self) -> &str {
        &self.healthy.shard
    }

    /// A WebSocket attacker, checked to be on the healthy subscriber's shard.
    pub fn attacker(&self) -> Client {
        self.on_shard(self.server.ws())
    }

    /// A connected attacker (valid token).
    pub fn connected_attacker(&self) -> Client {
        let mut c = self.attacker();
        let reply = c.handshake(&good_token("attacker"));
        assert!(reply["connect"]["client"].is_string(), "{reply}");
        c
    }

    /// Checks `c` landed on the healthy subscriber's shard.
    pub fn on_shard(&self, c: Client) -> Client {
        assert_eq!(c.shard, self.shard(), "attacker on the healthy subscriber's shard");
        c
    }

    /// Checks an HTTP answer came from the healthy subscriber's shard.
    pub fn same_shard(&self, r: &Response) {
        assert_eq!(r.header("x-rotor-shard"), Some(self.shard()), "{r:?}");
    }

    /// Sends raw bytes on a fresh TCP connection and reads one HTTP response.
    pub fn raw_http(&self, bytes: &[u8]) -> Response {
        let r = self.server.http().raw(bytes);
        self.same_shard(&r);
        r
    }
}

/// Writes one final, masked (with a zero key, so the payload goes as is) client frame
/// straight to the socket, bypassing tungstenite's checks.
pub fn raw_frame(c: &mut Client, opcode: u8, payload: &[u8]) {
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n @ 0..=125 => frame.push(0x80 | u8::try_from(n).unwrap()),
        n => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&u16::try_from(n).unwrap().to_be_bytes());
        }
    }
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(payload);
    c.ws.get_mut().write_all(&frame).unwrap();
}

/// `{"id":N,"error":{"code":C,"message":M}}`.
pub fn error_reply(id: u32, code: u32, message: &str) -> Value {
    json!({"id": id, "error": {"code": code, "message": message}})
}
