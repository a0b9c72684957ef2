//! HTTP/1.1 request heads and bodies, parsed without I/O.
//!
//! Owns: turning bytes into a [`Head`] (via `httparse`), deciding how the body is framed, decoding
//! chunked bodies, and writing responses. It never touches sockets, the hub or the broker: the
//! connection loop in `server` feeds it bytes and acts on what it returns.
//!
//! Request smuggling defences live here, in one place: a head with both `Content-Length` and
//! `Transfer-Encoding`, several disagreeing `Content-Length`s, a transfer coding other than a lone
//! `chunked`, or obs-fold/garbage bytes is rejected with 400 and the connection is closed, so no two
//! parsers can ever disagree about where a request ends.

#![deny(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "bytes from the network are parsed here: a silent truncation is a bug"
)]

use std::fmt::Write as _;

/// Largest request head we accept (request line plus headers).
pub const HEAD_MAX_BYTES: usize = 16 * 1024;
/// Most headers we parse in one head.
pub const HEADERS_MAX: usize = 64;

/// Why a request could not be accepted. Every variant maps to one status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The head is not valid HTTP/1.x or is ambiguous about framing.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The head is larger than [`HEAD_MAX_BYTES`] or has too many headers.
    #[error("request header fields too large")]
    HeadTooLarge,
    /// The body is larger than the route allows.
    #[error("payload too large")]
    BodyTooLarge,
    /// A transfer coding we do not implement.
    #[error("transfer coding not implemented")]
    NotImplemented,
    /// The request head (or body) did not arrive in time.
    #[error("request timeout")]
    Timeout,
    /// The shard's budget for request bodies being read is spent (`runtime.http_body_budget`).
    #[error("server busy: too many request bodies in flight")]
    Busy,
}

impl HttpError {
    /// HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::BadRequest(_) => 400,
            HttpError::HeadTooLarge => 431,
            HttpError::BodyTooLarge => 413,
            HttpError::NotImplemented => 501,
            HttpError::Timeout => 408,
            HttpError::Busy => 503,
        }
    }
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body (no `Content-Length`, no `Transfer-Encoding`).
    Empty,
    /// Exactly this many bytes follow the head.
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request head, owned so the read buffer can be reused.
#[derive(Debug, Clone)]
pub struct Head {
    /// Request method, e.g. `GET`.
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Raw query string (without `?`), possibly empty.
    pub query: String,
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub minor_version: u8,
    /// Header names lower-cased, values as sent.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body framing.
    pub body: BodyKind,
}

impl Head {
    /// First value of a header (name must be lower case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
    }

    /// First value of a header as UTF-8 text.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Whether a comma-separated header contains `token` (case-insensitive), e.g.
    /// `Connection: keep-alive, Upgrade`.
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers.iter().filter(|(n, _)| n == name).any(|(_, v)| {
            String::from_utf8_lossy(v).split(',').any(|t| t.trim().eq_ignore_ascii_case(token))
        })
    }

    /// Whether the connection stays open after this request.
    pub fn keep_alive(&self) -> bool {
        if self.minor_version == 0 {
            self.header_has_token("connection", "keep-alive")
        } else {
            !self.header_has_token("connection", "close")
        }
    }

    /// Value of a query parameter, percent-decoded.
    pub fn query_param(&self, key: &str) -> Option<String> {
        form_value(&self.query, key)
    }
}

/// The value of `key` in `application/x-www-form-urlencoded` text (a query string or a form
/// body), decoded; the first one when repeated.
pub fn form_value(encoded: &str, key: &str) -> Option<String> {
    encoded.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == key).then(|| percent_decode(v))
    })
}

/// Parses a request head from the start of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed, or the head and its length in bytes.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            if buf.len() > HEAD_MAX_BYTES {
                return Err(HttpError::HeadTooLarge);
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadTooLarge),
        Err(_) => return Err(HttpError::BadRequest("malformed request head")),
    };
    if len > HEAD_MAX_BYTES {
        return Err(HttpError::HeadTooLarge);
    }
    let method = req.method.ok_or(HttpError::BadRequest("missing method"))?.to_string();
    let target = req.path.ok_or(HttpError::BadRequest("missing path"))?;
    let minor_version = req.version.ok_or(HttpError::BadRequest("missing version"))?;
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.to_string(), String::new()),
    };
    if !path.starts_with('/') {
        return Err(HttpError::BadRequest("request target must be an absolute path"));
    }
    let headers: Vec<(String, Vec<u8>)> =
        req.headers.iter().map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec())).collect();
    if minor_version == 1 && !headers.iter().any(|(n, _)| n == "host") {
        return Err(HttpError::BadRequest("missing Host header"));
    }
    let body = body_kind(&headers)?;
    Ok(Some((Head { method, path, query, minor_version, headers, body }, len)))
}

fn body_kind(headers: &[(String, Vec<u8>)]) -> Result<BodyKind, HttpError> {
    let mut length: Option<usize> = None;
    for (_, v) in headers.iter().filter(|(n, _)| n == "content-length") {
        let text =
            std::str::from_utf8(v).map_err(|_| HttpError::BadRequest("bad Content-Length"))?;
        // A list like "5, 5" is legal only when all members agree; we accept a single value only.
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(HttpError::BadRequest("bad Content-Length"));
        }
        let n: usize = text.parse().map_err(|_| HttpError::BadRequest("bad Content-Length"))?;
        if length.is_some_and(|prev| prev != n) {
            return Err(HttpError::BadRequest("conflicting Content-Length headers"));
        }
        length = Some(n);
    }
    let codings: Vec<&Vec<u8>> =
        headers.iter().filter(|(n, _)| n == "transfer-encoding").map(|(_, v)| v).collect();
    if codings.is_empty() {
        return Ok(length.map_or(BodyKind::Empty, BodyKind::Length));
    }
    if length.is_some() {
        return Err(HttpError::BadRequest("both Content-Length and Transfer-Encoding"));
    }
    if codings.len() == 1 && codings[0].trim_ascii().eq_ignore_ascii_case(b"chunked") {
        return Ok(BodyKind::Chunked);
    }
    if codings.iter().any(|c| String::from_utf8_lossy(c).to_ascii_lowercase().contains("chunked")) {
        // e.g. "gzip, chunked" or duplicated headers: ambiguous framing.
        return Err(HttpError::BadRequest("unsupported Transfer-Encoding"));
    }
    Err(HttpError::NotImplemented)
}

/// Longest chunk-size line (size plus extensions) or trailer line we wait for.
pub const CHUNK_LINE_MAX_BYTES: usize = 4096;
/// Most trailer bytes after the last chunk.
pub const TRAILERS_MAX_BYTES: usize = 8192;

/// Incremental decoder for `Transfer-Encoding: chunked` bodies. Everything it buffers is bounded:
/// decoded data by the caller's limit, size and trailer lines by the constants above.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
    body: Vec<u8>,
    trailer_bytes: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Data(usize),
    DataEnd,
    Trailer,
    Done,
}

impl ChunkedDecoder {
    /// Consumes bytes from `input`; returns how many were used. Call [`Self::finished`] after.
    pub fn feed(&mut self, input: &[u8], limit: usize) -> Result<usize, HttpError> {
        let mut pos = 0;
        while pos < input.len() {
            match self.state {
                ChunkState::Size => {
                    let Some(end) = find_crlf(&input[pos..]) else {
                        return line_pending(input.len() - pos, pos);
                    };
                    let line = &input[pos..pos + end];
                    let size_text = line.split(|&b| b == b';').next().unwrap_or_default();
                    let size_text = std::str::from_utf8(size_text)
                        .map_err(|_| HttpError::BadRequest("bad chunk size"))?;
                    if size_text.is_empty() || size_text.len() > 8 {
                        return Err(HttpError::BadRequest("bad chunk size"));
                    }
                    let size = usize::from_str_radix(size_text, 16)
                        .map_err(|_| HttpError::BadRequest("bad chunk size"))?;
                    pos += end + 2;
                    if self.body.len() + size > limit {
                        return Err(HttpError::BodyTooLarge);
                    }
                    self.state =
                        if size == 0 { ChunkState::Trailer } else { ChunkState::Data(size) };
                }
                ChunkState::Data(left) => {
                    let take = left.min(input.len() - pos);
                    self.body.extend_from_slice(&input[pos..pos + take]);
                    pos += take;
                    self.state = if take == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - take)
                    };
                }
                ChunkState::DataEnd => {
                    if input.len() - pos < 2 {
                        return Ok(pos);
                    }
                    if &input[pos..pos + 2] != b"\r\n" {
                        return Err(HttpError::BadRequest("chunk not terminated by CRLF"));
                    }
                    pos += 2;
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailer => {
                    let Some(end) = find_crlf(&input[pos..]) else {
                        return line_pending(input.len() - pos, pos);
                    };
                    self.trailer_bytes += end + 2;
                    if self.trailer_bytes > TRAILERS_MAX_BYTES {
                        return Err(HttpError::HeadTooLarge);
                    }
                    pos += end + 2;
                    if end == 0 {
                        self.state = ChunkState::Done;
                        return Ok(pos);
                    }
                }
                ChunkState::Done => return Ok(pos),
            }
        }
        Ok(pos)
    }

    /// Whether the terminating chunk and trailers were read.
    pub fn finished(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// The decoded body.
    /// Body bytes decoded so far.
    pub fn body_len(&self) -> usize {
        self.body.len()
    }

    pub fn into_body(self) -> Vec<u8> {
        self.body
    }
}

/// An incomplete size or trailer line: wait for more bytes unless it is already too long.
fn line_pending(buffered: usize, consumed: usize) -> Result<usize, HttpError> {
    if buffered > CHUNK_LINE_MAX_BYTES {
        return Err(HttpError::BadRequest("chunk line too long"));
    }
    Ok(consumed)
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// Decodes `%XX` escapes and `+` (as space) in a query component; invalid escapes stay literal.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reason phrase for the statuses we send.
pub fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        426 => "Upgrade Required",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// Serialises a complete response with a body.
pub fn response(
    status: u16,
    content_type: &str,
    extra: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
) -> Vec<u8> {
    let mut head = String::with_capacity(160);
    let _ = write!(head, "HTTP/1.1 {} {}\r\n", status, reason(status));
    if !content_type.is_empty() {
        let _ = write!(head, "Content-Type: {content_type}\r\n");
    }
    for (k, v) in extra {
        let _ = write!(head, "{k}: {v}\r\n");
    }
    let _ = write!(head, "Content-Length: {}\r\n", body.len());
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// A JSON error body `{"error":"<message>"}` for transport-level HTTP errors.
pub fn json_error_body(message: &str) -> Vec<u8> {
    let mut out = b"{\"error\":".to_vec();
    // serde_json string escaping cannot fail for a &str.
    out.extend_from_slice(serde_json::to_string(message).unwrap_or_default().as_bytes());
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Option<(Head, usize)>, HttpError> {
        parse_head(s.as_bytes())
    }

    #[test]
    fn parses_head_with_query_and_lowercases_headers() {
        let (h, len) = parse("POST /api/publish?api_key=a%20b HTTP/1.1\r\nHost: x\r\nX-API-Key: k\r\nContent-Length: 3\r\n\r\nabc")
            .unwrap()
            .unwrap();
        assert_eq!(h.method, "POST");
        assert_eq!(h.path, "/api/publish");
        assert_eq!(h.query_param("api_key").as_deref(), Some("a b"));
        assert_eq!(h.header_str("x-api-key"), Some("k"));
        assert_eq!(h.body, BodyKind::Length(3));
        assert_eq!(len, "POST /api/publish?api_key=a%20b HTTP/1.1\r\nHost: x\r\nX-API-Key: k\r\nContent-Length: 3\r\n\r\n".len());
        assert!(h.keep_alive());
    }

    #[test]
    fn partial_head_needs_more_bytes() {
        assert!(parse("GET / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
    }

    #[test]
    fn smuggling_shapes_are_rejected() {
        let cases = [
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\n folded: yes\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET http://evil/ HTTP/1.1\r\nHost: x\r\n\r\n",
            "GARBAGE\r\n\r\n",
        ];
        for c in cases {
            let err = parse(c).expect_err(c);
            assert_eq!(err.status(), 400, "{c}");
        }
        let err =
            parse("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n").unwrap_err();
        assert_eq!(err.status(), 501);
    }

    #[test]
    fn oversized_head_is_431() {
        let big = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n", "a".repeat(HEAD_MAX_BYTES));
        assert_eq!(parse(&big).unwrap_err(), HttpError::HeadTooLarge);
    }

    #[test]
    fn keep_alive_rules() {
        let (h, _) = parse("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive());
        let (h, _) =
            parse("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive());
    }

    #[test]
    fn chunked_body_decodes_when_split_anywhere() {
        let wire = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nTrailer: x\r\n\r\n";
        for split in 0..wire.len() {
            let mut d = ChunkedDecoder::default();
            let mut buf = wire[..split].to_vec();
            let used = d.feed(&buf, 1024).unwrap();
            buf.drain(..used);
            buf.extend_from_slice(&wire[split..]);
            let used = d.feed(&buf, 1024).unwrap();
            assert_eq!(used, buf.len(), "split at {split}");
            assert!(d.finished());
            assert_eq!(d.into_body(), b"Wikipedia");
        }
    }

    #[test]
    fn chunk_lines_and_trailers_are_bounded() {
        let mut d = ChunkedDecoder::default();
        let endless_size_line = format!("1;{}", "x".repeat(CHUNK_LINE_MAX_BYTES));
        assert_eq!(d.feed(endless_size_line.as_bytes(), 1024).unwrap_err().status(), 400);
        let mut d = ChunkedDecoder::default();
        let trailers = format!("0\r\n{}", "X-T: v\r\n".repeat(TRAILERS_MAX_BYTES / 8 + 1));
        assert_eq!(d.feed(trailers.as_bytes(), 1024).unwrap_err(), HttpError::HeadTooLarge);
    }

    #[test]
    fn chunked_body_limit_and_garbage() {
        let mut d = ChunkedDecoder::default();
        assert_eq!(d.feed(b"10\r\n", 8).unwrap_err(), HttpError::BodyTooLarge);
        let mut d = ChunkedDecoder::default();
        assert_eq!(d.feed(b"zz\r\n", 8).unwrap_err().status(), 400);
        let mut d = ChunkedDecoder::default();
        assert_eq!(d.feed(b"1\r\nab\r\n", 8).unwrap_err().status(), 400);
    }

    #[test]
    fn response_serialises() {
        let r = response(404, "application/json", &[("x-rotor-shard", "1")], b"{}", false);
        let text = String::from_utf8(r).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(text.contains("x-rotor-shard: 1\r\n"));
        assert!(text.contains("Content-Length: 2\r\nConnection: close\r\n\r\n{}"));
    }

    #[test]
    fn percent_decoding_keeps_bad_escapes() {
        assert_eq!(percent_decode("a%2Fb+c%zz%"), "a/b c%zz%");
    }
}
