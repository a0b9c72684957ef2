//! The socket of a broker connection (Redis, NATS): a glommio TCP stream, or that stream under
//! a rustls client session when the broker's TLS object (or its address scheme) asks for TLS.
//!
//! Owns: connecting with a time limit, the TLS handshake, and [`ClientTls`], the rustls client
//! config a broker section's TLS object gives, built once when the settings are read and
//! shared by every shard and reconnect. Must not: speak a broker protocol, or fall back to
//! cleartext: a connection that should be TLS and cannot be is an error.
//!
//! The stream is `tls::Socket`, the listeners' too. The TLS stream buffers what is written, so
//! its users flush after every batch (both broker writers do).

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use futures_rustls::rustls::ClientConfig;
use futures_rustls::{TlsConnector, TlsStream};
use glommio::net::TcpStream;

pub use crate::tls::Socket;

/// A broker section's client TLS: the rustls config and the name to verify the server for
/// (`server_name`, else the host dialled).
#[derive(Debug, Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    section: crate::config::Tls,
}

impl ClientTls {
    /// The client TLS of the TLS object at `key` (e.g. `engine.redis.tls`); an error names
    /// the key at fault inside it (`engine.redis.tls.server_ca_pem: …`).
    pub fn new(key: &str, t: &crate::config::Tls) -> Result<ClientTls, String> {
        let config = crate::tls::client_config(t).map_err(|e| format!("{key}.{e}"))?;
        // Checked now so a bad name fails the start, not every connection.
        if !t.server_name.is_empty() {
            crate::tls::server_name(t, "").map_err(|e| format!("{key}.{e}"))?;
        }
        Ok(ClientTls { config: Arc::new(config), section: t.clone() })
    }

    /// Runs the TLS handshake over `tcp`, verifying the server for `host` (or `server_name`).
    pub async fn handshake(&self, tcp: TcpStream, host: &str) -> Result<Socket, String> {
        let name = crate::tls::server_name(&self.section, host).map_err(|e| e.to_string())?;
        let tls = TlsConnector::from(Arc::clone(&self.config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {host}: {e}"))?;
        Ok(Socket::Tls(Box::new(TlsStream::Client(tls))))
    }
}

/// Resolves `host` and connects within `limit`, with Nagle off.
pub async fn connect_tcp(host: &str, port: u16, limit: Duration) -> Result<TcpStream, String> {
    let addr: SocketAddr = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("resolving {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} resolves to nothing"))?;
    let stream = glommio::timer::timeout(limit, async { TcpStream::connect(addr).await })
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Connects to `host:port`, over TLS when `tls` is given (the handshake within `limit` too).
pub async fn connect(
    host: &str,
    port: u16,
    limit: Duration,
    tls: Option<&ClientTls>,
) -> Result<Socket, String> {
    let tcp = connect_tcp(host, port, limit).await?;
    match tls {
        None => Ok(Socket::Plain(tcp)),
        Some(tls) => glommio::timer::timeout(limit, async { Ok(tls.handshake(tcp, host).await) })
            .await
            .map_err(|e| format!("TLS handshake with {host}:{port}: {e}"))?,
    }
}
