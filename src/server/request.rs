//! Reading an HTTP/1.1 request on a connection: its head within a deadline, and its body only
//! as far as the route admits one (`admit_body`: the API's size only with the API's key), with
//! what a refused body costs bounded (`discard`, `linger`).
//!
//! Owns: these limits and the read buffers' growth. Must not: route (the caller does, with
//! `api_path` to find the API) or decide anything about a request's content.

use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future::or;
use futures_lite::io::AsyncReadExt;
use glommio::timer::sleep;

use super::admission::{Admission, BodyLease};
use super::conn::{Port, Reply};
use super::ops;
use super::socket::Socket;
use crate::api;
use crate::config::Config;
use crate::http::{self, BodyKind, ChunkedDecoder, Head, HttpError};

/// Largest HTTP API request body.
const API_BODY_MAX_BYTES: usize = 8 * 1024 * 1024;
/// Largest body of any other request (admin UI calls; the rest take none).
const OTHER_BODY_MAX_BYTES: usize = 64 * 1024;
/// Largest body read and dropped after an answer given on the head alone, so the connection
/// stays usable (Go's net/http drops up to 256 KiB too).
pub(super) const DISCARD_MAX_BYTES: usize = 256 * 1024;
/// What a closing connection drains at most, and for how long (`linger`).
const LINGER_MAX_BYTES: usize = 1024 * 1024;
const LINGER_TIME: Duration = Duration::from_secs(1);
/// How often an idle keep-alive connection checks whether its shard's HTTP stage is crowded.
const CROWDED_CHECK: Duration = Duration::from_secs(1);
/// Bytes read at a time from a chunked body.
const CHUNKED_READ: usize = 8192;

/// An API response as HTTP.
pub(super) fn http_reply(response: api::response::Response) -> Reply {
    use api::response::Response;
    match response {
        Response::Json(status, body) => Reply::json(status, body),
        Response::Unauthorized => {
            Reply { status: 401, content_type: "", headers: Vec::new(), body: Vec::new() }
        }
        Response::MethodNotAllowed => {
            let mut r = Reply::json(405, http::json_error_body("method not allowed"));
            r.headers.push(("Allow", "POST".to_string()));
            r
        }
    }
}

/// The API method path of a request the HTTP API serves on this port (`""` for the legacy
/// route), as `route` tries the routes: operator endpoints first.
pub(super) fn api_path<'h>(cfg: &Config, port: Port, head: &'h Head) -> Option<&'h str> {
    if (port.ops() && ops::serves(cfg, &head.path))
        || cfg.http_api.disabled
        || !port.internal(cfg.http_api.external)
    {
        return None;
    }
    let prefix = cfg.http_api.handler_prefix.trim_end_matches('/');
    let rest = head.path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then(|| rest.trim_start_matches('/'))
}

/// Reads and drops the body `head` announces (at most `DISCARD_MAX_BYTES`, checked by the
/// caller), within `timeout` (the head's).
pub(super) async fn discard(
    stream: &mut Socket,
    buf: &mut Vec<u8>,
    head: &Head,
    timeout: Duration,
) -> Result<(), HttpError> {
    let BodyKind::Length(n) = head.body else { return Ok(()) };
    let read = async {
        let mut left = n;
        loop {
            let here = left.min(buf.len());
            buf.drain(..here);
            left -= here;
            if left == 0 {
                return Ok(());
            }
            if read_more(stream, buf, left.min(16 * 1024)).await == 0 {
                return Err(HttpError::BadRequest("body shorter than Content-Length"));
            }
        }
    };
    or(read, async {
        sleep(timeout).await;
        Err(HttpError::Timeout)
    })
    .await
}

/// Before closing a connection whose client may still be sending (a body we did not read),
/// reads and drops what arrives for a moment: closing with unread bytes makes the kernel
/// reset the connection, and the client could lose the answer just written.
pub(super) async fn linger(stream: &mut Socket) {
    let _ = stream.tcp().shutdown(std::net::Shutdown::Write).await;
    let mut scratch = vec![0u8; 16 * 1024];
    let drain = async {
        let mut total = 0;
        while total < LINGER_MAX_BYTES {
            match stream.read(&mut scratch).await {
                Ok(n) if n > 0 => total += n,
                _ => return,
            }
        }
    };
    or(drain, sleep(LINGER_TIME)).await;
}

/// How large a body this request may send, decided on the head before any of it is read:
/// the API's limit only for a request the API would take (POST with the key), a small one
/// for the rest; an API request it would refuse is answered now, its body never read.
pub(super) fn admit_body(cfg: &Config, port: Port, head: &Head) -> Result<usize, Reply> {
    if api_path(cfg, port, head).is_none() {
        return Ok(OTHER_BODY_MAX_BYTES);
    }
    match api::handle_head(cfg, head) {
        Some(refused) => Err(http_reply(refused)),
        None => Ok(API_BODY_MAX_BYTES),
    }
}

/// Reads more bytes straight into `buf`'s spare room (no scratch array in the future: every
/// connection task would carry it for its whole life). Returns 0 at EOF or on error.
pub(super) async fn read_more(stream: &mut Socket, buf: &mut Vec<u8>, room: usize) -> usize {
    let len = buf.len();
    buf.resize(len + room, 0);
    let n = stream.read(&mut buf[len..]).await.unwrap_or(0);
    buf.truncate(len + n);
    n
}

/// Reads a request head. Between requests a connection may idle (`HTTP_IDLE`, the socket's
/// read timeout); once a request's first byte is in, its whole head must follow within
/// `timeout` (`runtime.http_head_timeout`), so a head trickled a byte at a time cannot hold
/// the connection. A new connection's first head (`first`) is timed from the accept: a client
/// that connects says what it wants at once. An idle keep-alive connection gives its place up
/// (returns `Ok(None)`) when the shard's HTTP stage is crowded, so idle connections cannot keep
/// new clients out.
pub(super) async fn read_head(
    stream: &mut Socket,
    buf: &mut Vec<u8>,
    timeout: Duration,
    first: bool,
    admission: &Admission,
) -> Result<Option<Head>, HttpError> {
    let mut deadline = (first || !buf.is_empty()).then(|| Instant::now() + timeout);
    loop {
        if !buf.is_empty() {
            if let Some((head, used)) = http::parse_head(buf)? {
                buf.drain(..used);
                return Ok(Some(head));
            }
        }
        let read = match deadline {
            None => {
                let crowded = async {
                    while !admission.crowded() {
                        sleep(CROWDED_CHECK).await;
                    }
                    0
                };
                or(read_more(stream, buf, 2048), crowded).await
            }
            Some(at) => {
                let timer = async {
                    sleep(at.saturating_duration_since(Instant::now())).await;
                    None
                };
                or(async { Some(read_more(stream, buf, 2048).await) }, timer)
                    .await
                    .ok_or(HttpError::Timeout)?
            }
        };
        if read == 0 {
            return Ok(None);
        }
        deadline.get_or_insert_with(|| Instant::now() + timeout);
    }
}

/// Reads the body `head` announces, up to `limit` bytes, holding a lease on the shard's body
/// budget for as long as the body lives (the caller keeps the lease until it has answered).
pub(super) async fn read_body(
    stream: &mut Socket,
    buf: &mut Vec<u8>,
    head: &Head,
    limit: usize,
    admission: &Rc<Admission>,
) -> Result<(Vec<u8>, Option<BodyLease>), HttpError> {
    match head.body {
        BodyKind::Empty => Ok((Vec::new(), None)),
        BodyKind::Length(n) => {
            if n > limit {
                return Err(HttpError::BodyTooLarge);
            }
            let lease = admission.lease(n).ok_or(HttpError::Busy)?;
            while buf.len() < n {
                let room = (n - buf.len()).min(64 * 1024);
                if read_more(stream, buf, room).await == 0 {
                    return Err(HttpError::BadRequest("body shorter than Content-Length"));
                }
            }
            Ok((buf.drain(..n).collect(), Some(lease)))
        }
        BodyKind::Chunked => {
            let mut lease = admission.lease(0).ok_or(HttpError::Busy)?;
            let mut dec = ChunkedDecoder::default();
            loop {
                let used = dec.feed(buf, limit)?;
                buf.drain(..used);
                if dec.finished() {
                    return Ok((dec.into_body(), Some(lease)));
                }
                // What the body holds, plus the read about to land in `buf`.
                if !lease.grow_to(dec.body_len() + buf.len() + CHUNKED_READ) {
                    return Err(HttpError::Busy);
                }
                if read_more(stream, buf, CHUNKED_READ).await == 0 {
                    return Err(HttpError::BadRequest("truncated chunked body"));
                }
            }
        }
    }
}
