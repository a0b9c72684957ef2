//! An accepted connection's stream: the TCP socket itself, or TLS over it when the listener
//! serves TLS (`http_server.tls`, `http_server.internal_tls`).
//!
//! Owns: the TLS handshake of an accepted socket (bounded in time). Must not: buffer or
//! interpret bytes (the stream is `tls::Socket`). TLS buffers what it encrypts, so writers
//! flush after each batch (`send`).

use std::io;
use std::time::Duration;

use futures_lite::future::or;
use futures_lite::io::{AsyncWrite, AsyncWriteExt};
use futures_rustls::{TlsAcceptor, TlsStream};
use glommio::net::TcpStream;
use glommio::timer::sleep;

pub use crate::tls::Socket;

/// Longest time a client may take to complete its TLS handshake: a slow or stalled handshake
/// holds a socket and a task, so it is bounded as a whole, not per read.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Wraps an accepted socket: as it is, or after a TLS handshake. `None` when the handshake
/// failed or took too long (the socket is closed).
pub async fn accept(tcp: TcpStream, tls: Option<&TlsAcceptor>) -> Option<Socket> {
    let Some(acceptor) = tls else { return Some(Socket::Plain(tcp)) };
    let handshake = async { acceptor.accept(tcp).await.ok() };
    let tls = or(handshake, async {
        sleep(HANDSHAKE_TIMEOUT).await;
        None
    })
    .await?;
    Some(Socket::Tls(Box::new(TlsStream::Server(tls))))
}

/// Writes all of `bytes` and flushes them out of the TLS buffer.
pub async fn send<W: AsyncWrite + Unpin>(stream: &mut W, bytes: &[u8]) -> io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}
