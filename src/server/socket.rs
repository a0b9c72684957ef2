//! An accepted connection's byte stream: the TCP socket itself, or TLS over it when the
//! listener serves TLS (`http_server.tls`, `http_server.internal_tls`).
//!
//! Owns: the TLS handshake of an accepted socket (bounded in time) and the choice between
//! the two streams. Must not: buffer or interpret bytes; callers see one `AsyncRead +
//! AsyncWrite` either way. TLS buffers what it encrypts, so writers flush after each batch
//! (`send`); on a plain socket the flush is a no-op.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::future::or;
use futures_lite::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use futures_rustls::server::TlsStream;
use futures_rustls::TlsAcceptor;
use glommio::net::TcpStream;
use glommio::timer::sleep;

/// Longest time a client may take to complete its TLS handshake: a slow or stalled handshake
/// holds a socket and a task, so it is bounded as a whole, not per read.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection's stream.
pub enum Socket {
    /// Cleartext.
    Plain(TcpStream),
    /// TLS; boxed, as the TLS state is large and only TLS connections pay for it.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Socket {
    /// Wraps an accepted socket: as it is, or after a TLS handshake. `None` when the
    /// handshake failed or took too long (the socket is closed).
    pub async fn accept(tcp: TcpStream, tls: Option<&TlsAcceptor>) -> Option<Socket> {
        let Some(acceptor) = tls else { return Some(Socket::Plain(tcp)) };
        let handshake = async { acceptor.accept(tcp).await.ok() };
        let tls = or(handshake, async {
            sleep(HANDSHAKE_TIMEOUT).await;
            None
        })
        .await?;
        Some(Socket::Tls(Box::new(tls)))
    }

    /// The TCP socket under the stream (for its timeouts).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Socket::Plain(s) => s,
            Socket::Tls(s) => s.get_ref().0,
        }
    }
}

/// Writes all of `bytes` and flushes them out of the TLS buffer.
pub async fn send<W: AsyncWrite + Unpin>(stream: &mut W, bytes: &[u8]) -> io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_flush(cx),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_close(cx),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}
