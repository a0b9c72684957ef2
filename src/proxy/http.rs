//! The HTTP/1.1 client that proxy calls run on: one per shard, on the shard's glommio
//! executor, with keep-alive pools per endpoint.
//!
//! HTTP framing is hyper's (`client::conn::http1`), which needs only `hyper::rt::Read`/`Write`
//! from the socket and no runtime: [`Io`] adapts any futures-io stream (a glommio `TcpStream`,
//! or futures-rustls over one for `https://`), and each connection's driver future is spawned
//! on the shard's executor. Written here, because no crate adapts hyper to glommio: the
//! adapter copies each read through a small stack buffer (hyper's uninitialised cursor would
//! otherwise need `unsafe`); proxy answers are small, so the copy is noise next to the round
//! trip.
//!
//! Owns: idle connections per endpoint (at most [`IDLE_PER_ENDPOINT`]), the timeout of each
//! call. Must not: touch shard state (answers go back through the caller), or block: host
//! names are resolved on glommio's blocking pool, never on the shard thread.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_lite::io::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::rt::ReadBufCursor;

use crate::proxy::{CallError, Endpoint, Outcome, ProxyId};

/// Idle keep-alive connections kept per endpoint and shard (upstream keeps 255 per host).
pub const IDLE_PER_ENDPOINT: usize = 255;

/// Largest answer body read from a backend.
const MAX_BODY: usize = 16 << 20;

/// A futures-io stream as hyper's runtime traits.
pub struct Io<T>(pub T);

impl<T: AsyncRead + Unpin> hyper::rt::Read for Io<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let mut chunk = [0u8; 8192];
        let room = buf.remaining().min(chunk.len());
        let Some(window) = chunk.get_mut(..room) else { return Poll::Ready(Ok(())) };
        match Pin::new(&mut self.0).poll_read(cx, window) {
            Poll::Ready(Ok(n)) => {
                if let Some(read) = window.get(..n) {
                    buf.put_slice(read);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> hyper::rt::Write for Io<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

/// One shard's HTTP client.
#[derive(Default)]
pub struct Client {
    idle: RefCell<HashMap<ProxyId, Vec<SendRequest<Full<Bytes>>>>>,
}

impl Client {
    /// A client with no connections.
    pub fn new() -> Rc<Client> {
        Rc::new(Client::default())
    }

    /// POSTs `body` to endpoint `id` with `headers`; the outcome once the answer is in or
    /// `deadline` passed.
    pub async fn call(
        &self,
        id: ProxyId,
        ep: &Endpoint,
        headers: Vec<(String, Vec<u8>)>,
        body: Bytes,
        deadline: Instant,
    ) -> Outcome {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(CallError::Timeout);
        }
        let exchange = self.exchange(id, ep, headers, body);
        futures_lite::future::or(exchange, async move {
            glommio::timer::sleep(left).await;
            Err(CallError::Timeout)
        })
        .await
    }

    async fn exchange(
        &self,
        id: ProxyId,
        ep: &Endpoint,
        headers: Vec<(String, Vec<u8>)>,
        body: Bytes,
    ) -> Outcome {
        let mut request = hyper::Request::post(ep.target.path.as_str())
            .header(hyper::header::HOST, ep.target.authority.as_str());
        for (k, v) in headers {
            request = request.header(k.as_str(), v);
        }
        let request = request
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| CallError::Transport(format!("bad request header: {e}")))?;
        let (sender, response) = match self.take_idle(id) {
            Some(mut idle) => match idle.try_send_request(request).await {
                Ok(response) => (idle, response),
                // The backend closed the kept-alive connection before taking the request
                // (its idle timeout): the request was not sent, so one new connection may.
                Err(mut e) => match e.take_message() {
                    Some(request) => {
                        let mut fresh = connect(ep).await?;
                        let response =
                            fresh.send_request(request).await.map_err(|e| request_error(&e))?;
                        (fresh, response)
                    }
                    None => return Err(request_error(&e.into_error())),
                },
            },
            None => {
                let mut fresh = connect(ep).await?;
                let response = fresh.send_request(request).await.map_err(|e| request_error(&e))?;
                (fresh, response)
            }
        };
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| CallError::Transport(format!("error reading HTTP body: {e}")))?
            .to_bytes();
        if !sender.is_closed() {
            self.put_idle(id, sender);
        }
        if status != 200 {
            return Err(CallError::Status(status));
        }
        Ok(body)
    }

    fn take_idle(&self, id: ProxyId) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&id)?;
        while let Some(s) = list.pop() {
            if s.is_ready() {
                return Some(s);
            }
        }
        None
    }

    fn put_idle(&self, id: ProxyId, sender: SendRequest<Full<Bytes>>) {
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(id).or_default();
        if list.len() < IDLE_PER_ENDPOINT {
            list.push(sender);
        }
    }
}

fn request_error(e: &hyper::Error) -> CallError {
    CallError::Transport(format!("HTTP request error: {e}"))
}

/// Opens a connection to `ep` (TLS for `https://`) and spawns its driver on this executor.
async fn connect(ep: &Endpoint) -> Result<SendRequest<Full<Bytes>>, CallError> {
    let addr = resolve(&ep.target.host, ep.target.port).await?;
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| CallError::Transport(format!("connect {addr}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    match &ep.tls {
        None => handshake(Io(tcp)).await,
        Some(config) => {
            let name = futures_rustls::pki_types::ServerName::try_from(ep.server_name.clone())
                .map_err(|e| CallError::Transport(format!("bad TLS server name: {e}")))?;
            let tls = futures_rustls::TlsConnector::from(std::sync::Arc::clone(config))
                .connect(name, tcp)
                .await
                .map_err(|e| CallError::Transport(format!("TLS handshake: {e}")))?;
            handshake(Io(tls)).await
        }
    }
}

async fn handshake<T>(io: Io<T>) -> Result<SendRequest<Full<Bytes>>, CallError>
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let (sender, conn) = http1::handshake(io)
        .await
        .map_err(|e| CallError::Transport(format!("HTTP handshake: {e}")))?;
    glommio::spawn_local(async move {
        // The connection ends when the peer closes it or its last sender is dropped.
        let _ = conn.await;
    })
    .detach();
    Ok(sender)
}

/// The socket address of `host`: IP literals at once, names on the blocking pool.
async fn resolve(host: &str, port: u16) -> Result<SocketAddr, CallError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let name = format!("{host}:{port}");
    let lookup = name.clone();
    let found = glommio::executor()
        .spawn_blocking(move || {
            std::net::ToSocketAddrs::to_socket_addrs(&lookup).map(|mut a| a.next())
        })
        .await;
    match found {
        Ok(Some(addr)) => Ok(addr),
        Ok(None) => Err(CallError::Transport(format!("{name}: no address"))),
        Err(e) => Err(CallError::Transport(format!("resolve {name}: {e}"))),
    }
}
