//! The application backend of `--connect-proxy` runs (`rotor-loadtest proxy-backend`,
//! hidden): answers every `POST` with a fixed connect-proxy result (`{"result":{"user":…}}`)
//! over keep-alive HTTP/1.1, on one thread, doing as little as it can so that a connect storm
//! measures the server's proxy path rather than the backend. Exits on stdin EOF or after
//! `--max-seconds`.

use std::net::SocketAddr;
use std::rc::Rc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::Result;

/// Largest request the backend reads.
const MAX_REQUEST: usize = 64 * 1024;

/// The connect result every request gets.
const RESULT: &str = r#"{"result":{"user":"bench-user"}}"#;

/// The whole HTTP answer.
fn answer() -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{RESULT}",
        RESULT.len()
    )
    .into_bytes()
}

pub fn main(listen: SocketAddr, max_seconds: u64) -> Result<()> {
    let answer: Rc<[u8]> = answer().into();
    crate::raw_server::serve_loopback("proxy-backend", listen, max_seconds, move |stream| {
        tokio::task::spawn_local(serve(stream, Rc::clone(&answer)));
    })
}

/// Answers the requests of one keep-alive connection until it closes.
async fn serve(mut stream: TcpStream, answer: Rc<[u8]>) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    loop {
        // Answer every complete request in the buffer (pipelined ones too).
        while let Some(len) = complete(&buf) {
            buf.drain(..len);
            if stream.write_all(&answer).await.is_err() {
                return;
            }
        }
        if buf.len() > MAX_REQUEST {
            return;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The length of the first complete request in `buf` (head plus `Content-Length` body).
fn complete(buf: &[u8]) -> Option<usize> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(head) = req.parse(buf).ok()? else { return None };
    let body = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    (buf.len() >= head + body).then_some(head + body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_a_connect_result_and_requests_are_framed_by_content_length() {
        let answer = answer();
        let text = std::str::from_utf8(&answer).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["result"]["user"], "bench-user");
        let req = b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}POST";
        assert_eq!(complete(req), Some(req.len() - 4));
        assert_eq!(complete(b"POST /c HTTP/1.1\r\nContent-Length: 5\r\n\r\n{}"), None);
    }
}
