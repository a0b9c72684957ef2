//! A TCP connection's byte stream, cleartext or TLS: what the listeners' connections
//! (`server::socket`, server side) and the broker links (`broker::socket`, client side) read
//! and write.
//!
//! Owns: the choice between the two streams. Must not: buffer or interpret bytes, or make
//! the handshake (its owners do, each with its own deadline). TLS buffers what it encrypts,
//! so writers flush after each batch; on a plain socket the flush is a no-op, and the plain
//! path costs one enum match per read or write.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::io::{AsyncRead, AsyncWrite};
use futures_rustls::TlsStream;
use glommio::net::TcpStream;

/// A connection's stream.
#[derive(Debug)]
pub enum Socket {
    /// Cleartext.
    Plain(TcpStream),
    /// TLS, client or server side; boxed, as the session state is large and only TLS
    /// connections pay for it.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Socket {
    /// The TCP socket under the stream (for its timeouts).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Socket::Plain(s) => s,
            Socket::Tls(s) => s.get_ref().0,
        }
    }
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
