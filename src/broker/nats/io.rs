//! The socket of the NATS broker: per shard, one task keeps one connection alive (capped
//! exponential backoff), runs the `INFO`/`CONNECT`/`PING`/`PONG` handshake, then writes what
//! the shard queued and hands every operation read to the shard.
//!
//! The task shares only the NATS protocol state with the shard's engine; what its reads bring
//! for channels (events, control messages, confirmed subscriptions) goes through the shard's
//! inbox. Must not: resend a publish after a failure, or go on in cleartext when TLS is
//! configured or the server requires it.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use futures_lite::future::or;
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::{parse, Incoming, Nats, Op, Settings};
use crate::broker::socket::{self, Socket};
use crate::broker::Event;
use crate::shard::inbox::Inbox;

/// What the link task hands to its shard.
#[derive(Debug)]
pub enum Input {
    /// An event of a channel, from its subject.
    Event(Arc<str>, Event),
    /// A control message.
    Control(bytes::Bytes),
    /// Subscriptions confirmed by a `PONG`: the acknowledgements and calls they release.
    Confirmed(super::Released),
    /// The connection broke (it is being made again).
    Lost,
}

/// What the link task works with: the shard's NATS state (shared with its engine, borrowed for
/// a few statements, never across an await) and the shard's inbox.
#[derive(Debug, Clone)]
pub struct LinkCtx {
    /// The connection's protocol state.
    pub nats: Rc<RefCell<Nats>>,
    /// Where events, control messages and acknowledgements go.
    pub inbox: Rc<Inbox<Input>>,
}

/// Keeps the shard's NATS connection up until shutdown.
pub async fn run(ctx: LinkCtx, settings: Arc<Settings>) {
    let mut backoff = crate::broker::Backoff::new();
    let mut logged = false;
    loop {
        if ctx.inbox.is_closed() {
            return;
        }
        match connect(&settings).await {
            Ok((stream, buf)) => {
                if logged {
                    tracing::info!("nats connection restored");
                }
                backoff.reset();
                ctx.nats.borrow_mut().resubscribe();
                let why = serve(&ctx, &settings, stream, buf).await;
                tracing::warn!(error = %why, "nats connection lost");
                logged = true;
                // Waiting subscribers keep waiting for the subscription to be confirmed after
                // the reconnect.
                ctx.nats.borrow_mut().down();
                ctx.inbox.push(Input::Lost);
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

async fn read_op<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut BytesMut) -> Result<Op, String> {
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

/// Connects and handshakes; returns the stream and any bytes read past the handshake. The
/// server's `INFO` comes in cleartext; with TLS the session starts right after it, before
/// `CONNECT` (the default NATS flow; a server in `handshake_first` mode is not supported).
async fn connect(s: &Settings) -> Result<(Socket, BytesMut), String> {
    let mut tcp = socket::connect_tcp(&s.host, s.port, s.dial_timeout).await?;
    let handshake = async {
        let mut buf = BytesMut::with_capacity(16 << 10);
        let (tls_required, tls_available) = loop {
            if let Op::Info { tls_required, tls_available } = read_op(&mut tcp, &mut buf).await? {
                break (tls_required, tls_available);
            }
        };
        let mut stream = match &s.tls {
            Some(tls) if tls_available => {
                if !buf.is_empty() {
                    return Err("the server sent more than INFO before the TLS handshake".into());
                }
                tls.handshake(tcp, &s.host).await?
            }
            Some(_) => return Err("the server does not offer TLS".to_owned()),
            None if tls_required => {
                return Err("the server requires TLS (use a tls:// URL or broker.nats.tls)".into())
            }
            None => Socket::Plain(tcp),
        };
        let mut connect = serde_json::json!({
            "verbose": false, "pedantic": false, "lang": "rust", "protocol": 1,
            "version": crate::client::SERVER_VERSION, "name": format!("rotor {}", crate::node::get().name),
            "tls_required": s.tls.is_some(),
        });
        if !s.user.is_empty() {
            connect["user"] = s.user.clone().into();
            connect["pass"] = s.password.clone().into();
        }
        let hello = format!("CONNECT {connect}\r\nPING\r\n");
        stream.write_all(hello.as_bytes()).await.map_err(|e| e.to_string())?;
        stream.flush().await.map_err(|e| e.to_string())?;
        loop {
            match read_op(&mut stream, &mut buf).await? {
                Op::Pong => return Ok((stream, buf)),
                Op::Err(e) => return Err(format!("handshake: {e}")),
                _ => {}
            }
        }
    };
    glommio::timer::timeout(s.dial_timeout.max(Duration::from_secs(1)) * 2, async {
        Ok(handshake.await)
    })
    .await
    .map_err(|e| format!("handshake: {e}"))?
}

/// Runs a connected link until it breaks; returns why.
async fn serve(ctx: &LinkCtx, s: &Settings, stream: Socket, mut buf: BytesMut) -> String {
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let read = async {
        loop {
            loop {
                match parse(&mut buf) {
                    Ok(Some(Op::Err(e))) => return format!("server error: {e}"),
                    Ok(Some(op)) => operation(ctx, op),
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
                let mut n = ctx.nats.borrow_mut();
                if ctx.inbox.is_closed() {
                    return Poll::Ready(None);
                }
                if n.out.is_empty() {
                    n.waker = Some(cx.waker().clone());
                    Poll::Pending
                } else {
                    Poll::Ready(Some(n.out.split().freeze()))
                }
            })
            .await;
            let Some(batch) = batch else { return "shutting down".to_owned() };
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

/// One operation from the server: what concerns the connection is done here, in order; what
/// concerns channels goes to the shard.
fn operation(ctx: &LinkCtx, op: Op) {
    let mut n = ctx.nats.borrow_mut();
    let input = match op {
        Op::Msg { sid, payload } => match n.message(sid, payload) {
            Incoming::Event(channel, event) => Input::Event(channel, event),
            Incoming::Control(data) => Input::Control(data),
            Incoming::Other => return,
        },
        Op::Ping => return n.ping(),
        Op::Pong => Input::Confirmed(n.pong()),
        Op::Info { .. } | Op::Ok | Op::Err(_) => return,
    };
    drop(n);
    ctx.inbox.push(input);
}
