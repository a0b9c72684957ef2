//! What the listeners are, decided before any shard starts: their addresses, the port a
//! port-0 start reserves, the claim that keeps a second Rotor off our ports, and the TLS each
//! listener serves.
//!
//! Owns: those decisions. Must not: bind the shards' listeners (each shard binds its own).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::net::UnixListener;
use std::sync::Arc;

use super::RunError;
use crate::config::{self, Config};
use crate::tls::ServerTls;

pub(super) fn listen_addr(cfg: &Config) -> Result<SocketAddr, RunError> {
    Ok(SocketAddr::new(
        ip_of("http_server.address", &cfg.http_server.address)?,
        cfg.http_server.port,
    ))
}

fn ip_of(key: &str, address: &str) -> Result<IpAddr, RunError> {
    if address.is_empty() {
        return Ok(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    }
    address.parse().map_err(|_| RunError::Config(format!("{key}: not an IP address: {address:?}")))
}

/// The internal endpoints' own address (`http_server.internal_port`, on `internal_address` or
/// else `address`); `None` when they share the main listener, as upstream does when both
/// name the same address.
pub(super) fn internal_addr(
    cfg: &Config,
    main: SocketAddr,
) -> Result<Option<SocketAddr>, RunError> {
    let s = &cfg.http_server;
    if s.internal_port == 0 {
        return Ok(None);
    }
    let ip = if s.internal_address.is_empty() {
        main.ip()
    } else {
        ip_of("http_server.internal_address", &s.internal_address)?
    };
    let addr = SocketAddr::new(ip, s.internal_port);
    Ok((addr != main).then_some(addr))
}

/// Binds (without listening) a SO_REUSEPORT socket to learn a free port when port 0 is asked for;
/// held until every shard listens so the port cannot be taken in between.
pub(super) fn reserve_port(addr: SocketAddr) -> Result<(socket2::Socket, SocketAddr), RunError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if addr.is_ipv6() { Domain::IPV6 } else { Domain::IPV4 };
    let io = |e: std::io::Error| RunError::Io(format!("reserving a port on {addr}: {e}"));
    let sock = Socket::new(domain, Type::STREAM, Some(Protocol::TCP)).map_err(io)?;
    sock.set_reuse_port(true).map_err(io)?;
    sock.bind(&addr.into()).map_err(io)?;
    let local = sock
        .local_addr()
        .map_err(io)?
        .as_socket()
        .ok_or_else(|| RunError::Io("no socket address".into()))?;
    Ok((sock, local))
}

/// Claims TCP `port` for this process among Rotor processes. The shards share their listening
/// port through `SO_REUSEPORT`, which would also let a second Rotor bind it and silently take
/// half the clients; a Linux abstract Unix socket named after the port is held instead for
/// the process's life, so a second Rotor fails here ("address already in use"). The kernel
/// drops it when the process ends, however it ends. Per network namespace, like the port.
fn claim_port(port: u16) -> Result<UnixListener, RunError> {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("rotor/tcp-port/{port}");
    let claim = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        .and_then(|at| UnixListener::bind_addr(&at));
    claim.map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => RunError::Io(format!(
            "port {port}: address already in use (another rotor listens on it)"
        )),
        _ => RunError::Io(format!("port {port}: cannot claim it: {e}")),
    })
}

/// A listener's TLS, when it serves TLS (one object may serve both listeners).
pub(super) type ListenerTls = Option<Arc<ServerTls>>;

/// The TLS of the main listener and of the internal one, as upstream chooses them: the main
/// port uses `http_server.tls`; the internal port (when it has its own) uses `internal_tls`
/// when enabled, else `tls` unless `tls_external` keeps it cleartext.
pub(super) fn listener_tls(cfg: &Config) -> Result<(ListenerTls, ListenerTls), RunError> {
    let server = &cfg.http_server;
    let build = |key: &str, t: &config::Tls| {
        ServerTls::new(t)
            .map(Arc::new)
            .map_err(|e| RunError::Config(format!("{key}.{}: {}", e.key, e.message)))
    };
    let main = if server.tls.enabled { Some(build("http_server.tls", &server.tls)?) } else { None };
    let internal = if server.internal_tls.enabled {
        Some(build("http_server.internal_tls", &server.internal_tls)?)
    } else if server.tls_external {
        None
    } else {
        main.clone()
    };
    Ok((main, internal))
}

/// Claims the main port and the internal one (`claim_port`), each once; port 0 (ephemeral,
/// never shared) needs no claim.
pub(super) fn claim_ports(
    main: SocketAddr,
    internal: Option<SocketAddr>,
) -> Result<Vec<UnixListener>, RunError> {
    let mut ports: Vec<u16> = [Some(main.port()), internal.map(|i| i.port())]
        .into_iter()
        .flatten()
        .filter(|port| *port != 0)
        .collect();
    ports.dedup();
    ports.into_iter().map(claim_port).collect()
}
