//! HTTP streaming transports: the response head, chunked body framing and per-message framing
//! of http_stream, SSE and their unidirectional variants (spec §1.4–§1.6), and the CORS headers
//! every HTTP transport answers with (§1.2).
//!
//! Owns: bytes only. Reading requests, sessions and the `/emulation` routing live in `server`
//! and `client`.

use std::fmt::Write as _;

use super::websocket::OriginPolicy;
use super::Transport;
use crate::http::Head;

/// The last chunk of a chunked body: the stream is over.
pub const END: &[u8] = b"0\r\n\r\n";

/// Appends one message of a streaming transport: SSE events are `data: <json>\n\n`, JSON
/// streams end each message with `\n`, Protobuf messages are length-delimited already.
pub fn append_message(transport: Transport, protobuf: bool, payload: &[u8], out: &mut Vec<u8>) {
    if transport.sse() {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\n\n");
    } else {
        out.extend_from_slice(payload);
        if !protobuf {
            out.push(b'\n');
        }
    }
}

/// Appends `body` as one chunk of a chunked response (nothing for an empty body: an empty
/// chunk would end the response).
pub fn append_chunk(body: &[u8], out: &mut Vec<u8>) {
    if body.is_empty() {
        return;
    }
    let mut size = String::with_capacity(8);
    let _ = write!(size, "{:x}\r\n", body.len());
    out.extend_from_slice(size.as_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n");
}

/// CORS headers for an HTTP transport request: none unless it has an allowed `Origin`
/// (the middleware never refuses; the browser does).
pub fn cors(head: &Head, origins: &OriginPolicy) -> Vec<(&'static str, String)> {
    let Some(origin) = head.header_str("origin") else { return Vec::new() };
    if !origins.allows(Some(origin)) {
        return Vec::new();
    }
    let mut headers = vec![
        ("Access-Control-Allow-Origin", origin.to_owned()),
        ("Access-Control-Allow-Credentials", "true".to_owned()),
    ];
    if let Some(asked) = head.header_str("access-control-request-headers") {
        headers.push(("Access-Control-Allow-Headers", asked.to_owned()));
    }
    headers
}

/// Extra headers of the answer to a CORS preflight of a POST-only endpoint (status 204).
pub const PREFLIGHT: [(&str, &str); 2] =
    [("Access-Control-Max-Age", "300"), ("Access-Control-Allow-Methods", "POST, OPTIONS")];

/// The `200` head of a streaming response, body chunked; SSE streams start with `\r\n`.
pub fn response_head(
    transport: Transport,
    protobuf: bool,
    extra: &[(&str, &str)],
    cors: &[(&'static str, String)],
) -> Vec<u8> {
    let content_type = if transport.sse() {
        "text/event-stream; charset=utf-8"
    } else if protobuf {
        "application/octet-stream"
    } else {
        "application/json"
    };
    let mut head = String::with_capacity(400);
    head.push_str("HTTP/1.1 200 OK\r\n");
    let _ = write!(head, "Content-Type: {content_type}\r\n");
    head.push_str(
        "Cache-Control: private, no-cache, no-store, must-revalidate, max-age=0\r\n\
         Pragma: no-cache\r\nExpire: 0\r\nX-Accel-Buffering: no\r\nConnection: keep-alive\r\n\
         Transfer-Encoding: chunked\r\n",
    );
    for (k, v) in extra {
        let _ = write!(head, "{k}: {v}\r\n");
    }
    for (k, v) in cors {
        let _ = write!(head, "{k}: {v}\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    if transport.sse() {
        append_chunk(b"\r\n", &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_framed_per_transport() {
        let mut out = Vec::new();
        append_message(Transport::Sse, false, b"{}", &mut out);
        append_message(Transport::UniSse, false, b"{\"a\":1}", &mut out);
        assert_eq!(out, b"data: {}\n\ndata: {\"a\":1}\n\n");
        out.clear();
        append_message(Transport::HttpStream, false, b"{}", &mut out);
        append_message(Transport::UniHttpStream, false, b"{}", &mut out);
        append_message(Transport::HttpStream, true, b"\x01\x08", &mut out);
        assert_eq!(out, b"{}\n{}\n\x01\x08");
    }

    #[test]
    fn chunks_carry_their_hex_size_and_empty_bodies_are_skipped() {
        let mut out = Vec::new();
        append_chunk(&[b'x'; 26], &mut out);
        append_chunk(b"", &mut out);
        let mut expect = b"1a\r\n".to_vec();
        expect.extend_from_slice(&[b'x'; 26]);
        expect.extend_from_slice(b"\r\n");
        assert_eq!(out, expect);
    }

    fn head(headers: &[(&str, &str)]) -> Head {
        let mut raw = String::from("POST /connection/http_stream HTTP/1.1\r\nHost: x\r\n");
        for (k, v) in headers {
            raw.push_str(&format!("{k}: {v}\r\n"));
        }
        raw.push_str("\r\n");
        crate::http::parse_head(raw.as_bytes()).unwrap().unwrap().0
    }

    #[test]
    fn cors_echoes_an_allowed_origin_only() {
        let policy = OriginPolicy::new(&["https://*.example.com".to_owned()]).unwrap();
        let ok = head(&[
            ("Origin", "https://app.example.com"),
            ("Access-Control-Request-Headers", "content-type"),
        ]);
        let h = cors(&ok, &policy);
        assert!(h.contains(&("Access-Control-Allow-Origin", "https://app.example.com".into())));
        assert!(h.contains(&("Access-Control-Allow-Headers", "content-type".into())));
        assert!(h.contains(&("Access-Control-Allow-Credentials", "true".into())));
        assert!(cors(&head(&[("Origin", "https://evil.test")]), &policy).is_empty());
        assert!(cors(&head(&[]), &policy).is_empty(), "no Origin, no CORS headers");
    }

    #[test]
    fn sse_responses_start_with_an_empty_line() {
        let h = response_head(Transport::Sse, false, &[], &[]);
        let text = String::from_utf8(h).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("Content-Type: text/event-stream; charset=utf-8\r\n"));
        assert!(text.contains("Transfer-Encoding: chunked\r\n"));
        assert!(text.ends_with("\r\n\r\n2\r\n\r\n\r\n"));
    }
}
