//! HTTP request head parser: what a connection does with the first bytes of a request before
//! any handler runs. `http::parse_head` (httparse plus our framing and smuggling rules), then
//! the decisions taken on the parsed head for a few configurations and each kind of listener
//! port (`server::fuzzing`: the API's body admission and method path, the admin tail and the
//! streaming endpoints), the WebSocket upgrade check and permessage-deflate negotiation, the
//! header and query helpers, and a chunked body read after the head with `ChunkedDecoder`, fed
//! in two reads as `server::request::read_body` does.
//!
//! Checked besides "no panic": a complete head reports a length within the bytes, a body the
//! API admits has room, and a chunked body never decodes past its limit.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use rotor::config::Config;
use rotor::http::{self, BodyKind, ChunkedDecoder, Head};
use rotor::server::{fuzzing, Port};
use rotor::transport::{deflate, websocket};

/// Configurations whose routes differ: defaults; every client transport, the admin and a
/// keyed API under other prefixes; the same with the API and admin on the external port.
static CONFIGS: LazyLock<Vec<Config>> = LazyLock::new(|| {
    let mut all = Config::default();
    all.http_api.key = "secret".to_owned();
    all.http_api.handler_prefix = "/api/".to_owned();
    all.admin.enabled = true;
    all.admin.secret = "admin-secret".to_owned();
    all.admin.handler_prefix = "/ui".to_owned();
    all.uni_websocket.enabled = true;
    all.http_stream.enabled = true;
    all.sse.enabled = true;
    all.uni_sse.enabled = true;
    all.uni_http_stream.enabled = true;
    all.init.enabled = true;
    all.health.enabled = true;
    all.prometheus.enabled = true;
    let mut external = all.clone();
    external.http_api.external = true;
    external.http_api.insecure = true;
    external.admin.external = true;
    external.admin.insecure = true;
    external.admin.handler_prefix = String::new();
    vec![Config::default(), all, external]
});

static ORIGINS: LazyLock<websocket::OriginPolicy> = LazyLock::new(|| {
    websocket::OriginPolicy::new(&["https://*.example.com".to_owned()])
        .unwrap_or_else(|_| websocket::OriginPolicy::any())
});

/// Everything the connection decides on a head (the results are only computed).
fn decide(head: &Head) {
    for cfg in CONFIGS.iter() {
        for port in [Port::Both, Port::Main, Port::Internal] {
            let _ = fuzzing::tail_request(cfg, port, head);
            let _ = fuzzing::stream_endpoint_limit(cfg, head);
            let _ = fuzzing::api_path(cfg, port, head);
            if let Ok(limit) = fuzzing::admit_body(cfg, port, head) {
                assert!(limit > 0);
            }
        }
    }
    for origins in [&websocket::OriginPolicy::any(), &*ORIGINS] {
        if let Ok(up) = websocket::check_upgrade(head, origins) {
            let _ = websocket::switching_protocols(&up, 0);
        }
    }
    let _ = deflate::negotiate(head);
    let _ = head.keep_alive();
    let _ = head.query_param("cf_connect");
    let _ = head.header_has_token("expect", "100-continue");
    let _ = head.header_str("origin");
}

/// Reads a chunked body from `rest` in two reads, as `read_body` does with its buffer.
fn chunked(rest: &[u8], split: usize, limit: usize) {
    let mut decoder = ChunkedDecoder::default();
    let mut buf = rest[..split].to_vec();
    for more in [&rest[split..], &[][..]] {
        match decoder.feed(&buf, limit) {
            Ok(used) => {
                assert!(used <= buf.len());
                buf.drain(..used);
            }
            Err(_) => return,
        }
        if decoder.finished() {
            break;
        }
        buf.extend_from_slice(more);
    }
    let finished = decoder.finished();
    let body = decoder.into_body();
    assert!(body.len() <= limit, "a chunked body decoded past its limit");
    if finished {
        assert!(body.len() <= rest.len());
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(Some((head, used))) = http::parse_head(data) else {
        return;
    };
    assert!(used > 0 && used <= data.len(), "head length {used} outside the input");
    decide(&head);
    let rest = &data[used..];
    if head.body == BodyKind::Chunked {
        let split = rest.first().map_or(0, |&b| usize::from(b) * rest.len() / 256);
        chunked(rest, split, 64 * 1024);
        chunked(rest, split, 16);
    }
});
