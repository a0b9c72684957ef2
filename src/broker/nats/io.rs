//! The socket of the NATS broker: per shard, one task keeps one connection alive (capped
//! exponential backoff), runs the `INFO`/`CONNECT`/`PING`/`PONG` handshake, then writes what
//! the shard queued and hands every operation read to the shard.
//!
//! Must not: hold the shard borrowed across an await, or resend a publish after a failure.

use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use futures_lite::future::or;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::{parse, Op, Settings};
use crate::shard::ShardRef;

/// Keeps the shard's NATS connection up until shutdown.
pub async fn run(shard: ShardRef, settings: Arc<Settings>) {
    let mut backoff = crate::broker::Backoff::new();
    let mut logged = false;
    loop {
        if shard.borrow().shutting_down() {
            return;
        }
        match connect(&settings).await {
            Ok((stream, buf)) => {
                if logged {
                    tracing::info!("nats connection restored");
                }
                backoff.reset();
                shard.borrow_mut().nats_up();
                let why = serve(&shard, &settings, stream, buf).await;
                tracing::warn!(error = %why, "nats connection lost");
                logged = true;
                shard.borrow_mut().nats_down();
            }
            Err(e) => {
                if !logged {
                    tracing::warn!(error = %e, "cannot connect to nats; retrying");
                    logged = true;
                }
            }
        }
        glommio::timer::sleep(backoff.next_delay()).await;
    }
}

async fn read_op(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<Op, String> {
    loop {
        if let Some(op) = parse(buf).map_err(|e| e.to_string())? {
            return Ok(op);
        }
        let len = buf.len();
        buf.resize(len + (16 << 10), 0);
        let n = stream.read(&mut buf[len..]).await.map_err(|e| e.to_string())?;
        buf.truncate(len + n);
        if n == 0 {
            return Err("closed by the server".to_owned());
        }
    }
}

/// Connects and handshakes; returns the stream and any bytes read past the handshake.
async fn connect(s: &Settings) -> Result<(TcpStream, BytesMut), String> {
    let addr = (s.host.as_str(), s.port)
        .to_socket_addrs()
        .map_err(|e| format!("resolving {}: {e}", s.host))?
        .next()
        .ok_or_else(|| format!("{} resolves to nothing", s.host))?;
    let mut stream =
        glommio::timer::timeout(s.dial_timeout, async { TcpStream::connect(addr).await })
            .await
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let handshake = async {
        let mut buf = BytesMut::with_capacity(16 << 10);
        loop {
            if read_op(&mut stream, &mut buf).await? == Op::Info {
                break;
            }
        }
        let mut connect = serde_json::json!({
            "verbose": false, "pedantic": false, "lang": "rust", "protocol": 1,
            "version": crate::client::SERVER_VERSION, "name": format!("rotor {}", crate::node::get().name),
        });
        if !s.user.is_empty() {
            connect["user"] = s.user.clone().into();
            connect["pass"] = s.password.clone().into();
        }
        let hello = format!("CONNECT {connect}\r\nPING\r\n");
        stream.write_all(hello.as_bytes()).await.map_err(|e| e.to_string())?;
        loop {
            match read_op(&mut stream, &mut buf).await? {
                Op::Pong => return Ok(buf),
                Op::Err(e) => return Err(format!("handshake: {e}")),
                _ => {}
            }
        }
    };
    let buf = glommio::timer::timeout(s.dial_timeout.max(Duration::from_secs(1)) * 2, async {
        Ok(handshake.await)
    })
    .await
    .map_err(|e| format!("handshake: {e}"))??;
    Ok((stream, buf))
}

/// Runs a connected link until it breaks; returns why.
async fn serve(shard: &ShardRef, s: &Settings, stream: TcpStream, mut buf: BytesMut) -> String {
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let read = async {
        loop {
            loop {
                match parse(&mut buf) {
                    Ok(Some(Op::Err(e))) => return format!("server error: {e}"),
                    Ok(Some(op)) => shard.borrow_mut().nats_op(op),
                    Ok(None) => break,
                    Err(e) => return e.to_string(),
                }
            }
            let len = buf.len();
            buf.resize(len + (64 << 10), 0);
            match reader.read(&mut buf[len..]).await {
                Ok(0) => return "closed by the server".to_owned(),
                Ok(n) => buf.truncate(len + n),
                Err(e) => return e.to_string(),
            }
        }
    };
    let write = async {
        loop {
            let batch = std::future::poll_fn(|cx| {
                let mut s = shard.borrow_mut();
                let Some(n) = s.engine().nats_mut() else { return Poll::Ready(None) };
                if n.out.is_empty() {
                    n.waker = Some(cx.waker().clone());
                    Poll::Pending
                } else {
                    Poll::Ready(Some(n.out.split().freeze()))
                }
            })
            .await;
            let Some(batch) = batch else { return "broker gone".to_owned() };
            let written = glommio::timer::timeout(s.write_timeout, async {
                Ok(match writer.write_all(&batch).await {
                    Ok(()) => writer.flush().await,
                    Err(e) => Err(e),
                })
            })
            .await;
            match written {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return e.to_string(),
                Err(_) => return format!("a write took longer than {:?}", s.write_timeout),
            }
        }
    };
    or(read, write).await
}
