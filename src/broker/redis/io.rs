//! The sockets of the Redis engine: per shard, one task keeps the command connection and one the
//! PUB/SUB connection alive, reconnecting with capped exponential backoff. A socket is plain
//! TCP or TLS as the address says (`broker::socket`); the code here is the same for both.
//!
//! Each task connects, authenticates, selects the database and (command link) loads the scripts
//! before marking its link up; from then on a writer flushes whatever the shard queued, in one
//! write per wake-up (pipelining), and a reader pairs each reply with the command it answers
//! (Redis answers in order) and hands both to the shard through its inbox ([`Event`]). A
//! connection that breaks, or leaves a command unanswered for `io_timeout`, marks its link down:
//! what was outstanding goes to the shard to fail, and new commands fail at once until the link
//! is back.
//!
//! A task shares only its own link's protocol state with the shard (`Rc<RefCell<Server>>`,
//! borrowed for a few statements, never across an await); it never borrows the shard. Must not:
//! retry a command (a retried publish could be applied twice).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;

use bytes::BytesMut;
use futures_lite::future::or;
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, WriteHalf};
use redis_protocol::resp2::types::BytesFrame;

use super::address::Address;
use super::link::{encode_command, encode_setup, Then};
use super::reply::string_of;
use super::scripts;
use super::settings::{Sentinel, Settings};
use super::Server;
use crate::broker::socket::{self, ClientTls, Socket};
use crate::broker::ReplyTo;
use crate::shard::inbox::Inbox;

/// What a link task hands to its shard.
#[derive(Debug)]
pub enum Event {
    /// The reply to a command, with what it answers.
    Reply(Then, BytesFrame),
    /// A command link broke: these commands got no reply.
    Failed(Vec<Then>),
    /// A frame of server `server`'s PUB/SUB link.
    Message {
        /// Index of the server.
        server: usize,
        /// The frame.
        frame: BytesFrame,
    },
    /// A PUB/SUB link broke: these positioned subscribes held at the gate fail.
    Refused(Vec<ReplyTo>),
}

/// What a link task works with: its server's protocol state, shared with the shard's engine,
/// and the shard's inbox.
#[derive(Debug, Clone)]
pub struct LinkCtx {
    /// The server's links, as the engine sees them.
    pub server: Rc<RefCell<Server>>,
    /// Where replies and PUB/SUB frames go.
    pub inbox: Rc<Inbox<Event>>,
    /// Index of the server in the engine.
    pub index: usize,
    /// This link also listens to the control channels (shard 0, first server).
    pub control: bool,
}

/// Which of the shard's two links a task drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Commands and scripts.
    Commands,
    /// SUBSCRIBE and incoming messages.
    PubSub,
}

/// Keeps one link of a shard connected until shutdown. `server` numbers the shard's engine's
/// servers; `address` is where that server is (or, under Sentinel, the credentials to use with
/// the master the Sentinels name).
pub async fn run(ctx: LinkCtx, settings: Arc<Settings>, role: Role, address: Address) {
    let mut backoff = crate::broker::Backoff::new();
    let mut logged = false;
    loop {
        if ctx.inbox.is_closed() {
            return;
        }
        match connect(&settings, &address, role == Role::Commands).await {
            Ok((stream, shas)) => {
                if logged {
                    tracing::info!(?role, "redis connection restored");
                }
                backoff.reset();
                up(&ctx, &settings, role, shas);
                let why = serve(&ctx, &settings, stream, role).await;
                tracing::warn!(?role, error = %why, "redis connection lost");
                logged = true;
                down(&ctx, role);
            }
            Err(e) => {
                if !logged {
                    tracing::warn!(?role, error = %e, "cannot connect to redis; retrying");
                    logged = true;
                }
            }
        }
        glommio::timer::sleep(backoff.next_delay()).await;
    }
}

/// The link is connected: the command link takes commands (the scripts are loaded); the
/// PUB/SUB link subscribes every channel with interest again (and, on shard 0's first server,
/// the control channels, as Centrifugo does).
fn up(ctx: &LinkCtx, settings: &Settings, role: Role, shas: Vec<String>) {
    let mut server = ctx.server.borrow_mut();
    match role {
        Role::Commands => {
            server.shas = shas;
            server.cmd.up = true;
        }
        Role::PubSub => {
            let extra = if ctx.control && ctx.index == 0 {
                let uid = &crate::node::get().uid;
                vec![settings.keys.control_channel(), settings.keys.node_channel(uid)]
            } else {
                Vec::new()
            };
            server.sub.resubscribe(settings, &extra);
        }
    }
}

/// The link broke. Every outstanding command fails (the caller sees a temporary error; a
/// publish whose reply was lost may have been applied, exactly as with Centrifugo). On the
/// PUB/SUB link, positioned subscribes held at the gate fail (their clients retry); plain
/// subscribers keep waiting for the subscription to be confirmed after the reconnect.
fn down(ctx: &LinkCtx, role: Role) {
    let event = {
        let mut server = ctx.server.borrow_mut();
        match role {
            Role::Commands => Event::Failed(server.cmd.down()),
            Role::PubSub => {
                Event::Refused(server.sub.down().into_iter().map(|(to, _)| to).collect())
            }
        }
    };
    ctx.inbox.push(event);
}

/// Connects and runs the handshake; returns the stream and (command link) the script SHAs.
/// Under Sentinel the master is looked up first and confirmed with `ROLE`.
async fn connect(
    settings: &Settings,
    a: &Address,
    load_scripts: bool,
) -> Result<(Socket, Vec<String>), String> {
    let (host, port) = match &settings.sentinel {
        Some(s) => master_of(s, settings).await?,
        None => (a.host.clone(), a.port),
    };
    let mut commands: Vec<Vec<&[u8]>> = Vec::new();
    if settings.sentinel.is_some() {
        commands.push(vec![b"ROLE"]);
    }
    if load_scripts {
        for src in scripts::SOURCES {
            commands.push(vec![b"SCRIPT", b"LOAD", src.as_bytes()]);
        }
    }
    let tls = settings.tls_of(a);
    let (stream, replies) =
        open(settings, (&host, port, tls), a, &settings.client_name, &commands).await?;
    let mut replies = replies.into_iter();
    if settings.sentinel.is_some() {
        let role = match replies.next() {
            Some(BytesFrame::Array(parts)) => parts.first().and_then(string_of),
            _ => None,
        };
        if role.as_deref() != Some("master") {
            return Err(format!("{host}:{port} is not a master (failover in progress?)"));
        }
    }
    let shas = replies
        .map(|f| match f {
            BytesFrame::Error(e) => Err(format!("SCRIPT LOAD: {e}")),
            f => string_of(&f).ok_or_else(|| "SCRIPT LOAD: unexpected reply".to_owned()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((stream, shas))
}

/// Asks the Sentinels, in order, where the master is.
async fn master_of(sentinel: &Sentinel, settings: &Settings) -> Result<(String, u16), String> {
    let mut last = String::from("no sentinel address");
    for a in &sentinel.addresses {
        let ask: Vec<&[u8]> =
            vec![b"SENTINEL", b"get-master-addr-by-name", sentinel.master_name.as_bytes()];
        let tls = sentinel.tls.as_ref().filter(|_| a.tls);
        match open(settings, (&a.host, a.port, tls), a, &sentinel.client_name, &[ask]).await {
            Ok((_, replies)) => match replies.first() {
                Some(BytesFrame::Array(parts)) if parts.len() == 2 => {
                    let host = string_of(&parts[0]);
                    let port = string_of(&parts[1]).and_then(|p| p.parse().ok());
                    if let (Some(host), Some(port)) = (host, port) {
                        return Ok((host, port));
                    }
                    last = "sentinel: malformed master address".to_owned();
                }
                _ => {
                    last = format!(
                        "sentinel {}:{} does not know {:?}",
                        a.host, a.port, sentinel.master_name
                    );
                }
            },
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Opens a connection to `host:port` (over TLS when given): AUTH, SELECT and CLIENT SETNAME
/// as `auth` and `client_name` ask, then `commands`, all pipelined. Fails on a setup error;
/// returns the replies to `commands`. Also what cluster discovery (`topology`) reads
/// `CLUSTER SLOTS` with.
pub(super) async fn open(
    settings: &Settings,
    (host, port, tls): (&str, u16, Option<&ClientTls>),
    auth: &Address,
    client_name: &str,
    commands: &[Vec<&[u8]>],
) -> Result<(Socket, Vec<BytesFrame>), String> {
    let mut stream = socket::connect(host, port, settings.connect_timeout, tls).await?;
    let addr = format!("{host}:{port}");
    let mut out = BytesMut::new();
    let setup = encode_setup(&mut out, auth, client_name);
    for c in commands {
        encode_command(&mut out, c);
    }
    let handshake = async {
        if !out.is_empty() {
            stream.write_all(&out).await.map_err(|e| e.to_string())?;
            stream.flush().await.map_err(|e| e.to_string())?;
        }
        let mut frames = Frames::new(&mut stream);
        let mut replies = Vec::with_capacity(commands.len());
        for i in 0..setup + commands.len() {
            match frames.next().await? {
                BytesFrame::Error(e) if i < setup => return Err(format!("{addr}: {e}")),
                f if i >= setup => replies.push(f),
                _ => {}
            }
        }
        Ok(replies)
    };
    let replies = glommio::timer::timeout(settings.io_timeout, async { Ok(handshake.await) })
        .await
        .map_err(|e| format!("handshake with {addr}: {e}"))??;
    Ok((stream, replies))
}

/// Frames read from one socket. Cancellation-safe: the reader races a timer, so a read that
/// is dropped half-way must leave `buf` holding only bytes that really arrived.
struct Frames<R> {
    half: R,
    buf: BytesMut,
    scratch: Box<[u8]>,
}

impl<R: AsyncRead + Unpin> Frames<R> {
    fn new(half: R) -> Self {
        Frames { half, buf: BytesMut::with_capacity(64 << 10), scratch: vec![0; 64 << 10].into() }
    }

    async fn next(&mut self) -> Result<BytesFrame, String> {
        loop {
            match redis_protocol::resp2::decode::decode_bytes_mut(&mut self.buf) {
                Ok(Some((frame, _, _))) => return Ok(frame),
                Ok(None) => {}
                Err(e) => return Err(format!("bad reply from redis: {e:?}")),
            }
            let n = self.half.read(&mut self.scratch).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed by redis".to_owned());
            }
            self.buf.extend_from_slice(&self.scratch[..n]);
        }
    }
}

/// Runs a connected link until it breaks; returns why.
async fn serve(ctx: &LinkCtx, settings: &Settings, stream: Socket, role: Role) -> String {
    let (reader, writer) = futures_lite::io::split(stream);
    let mut frames = Frames::new(reader);
    let read = async {
        loop {
            // Checked a few times per `io_timeout`, so a stall is noticed within 1.25 of it.
            let next = or(async { Some(frames.next().await) }, async {
                glommio::timer::sleep(settings.io_timeout / 4).await;
                None
            })
            .await;
            let frame = match next {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => return e,
                None => {
                    // Quiet is fine unless commands wait for their replies that long.
                    let stalled = ctx.server.borrow().cmd.stalled(settings.io_timeout);
                    if role == Role::Commands && stalled {
                        return format!("no reply within {:?}", settings.io_timeout);
                    }
                    continue;
                }
            };
            // A master demoted by a failover answers writes with READONLY: find the new one.
            let demoted = matches!(&frame, BytesFrame::Error(e)
                if e.starts_with("READONLY") || e.starts_with("MASTERDOWN"));
            if let BytesFrame::Error(e) = &frame {
                if e.starts_with("MOVED") || e.starts_with("ASK") {
                    tracing::error!(
                        error = %e,
                        "the Redis Cluster moved a slot; rotor reads the topology at start only: restart it"
                    );
                }
            }
            match role {
                Role::Commands => {
                    let Some(then) = ctx.server.borrow_mut().cmd.pop() else {
                        return "a reply nobody waited for".to_owned();
                    };
                    match then {
                        Then::Ignore => {
                            if let BytesFrame::Error(e) = &frame {
                                tracing::warn!(error = %e, "redis command failed");
                            }
                        }
                        then => ctx.inbox.push(Event::Reply(then, frame)),
                    }
                    if demoted {
                        return "redis is no longer a writable master".to_owned();
                    }
                }
                Role::PubSub => ctx.inbox.push(Event::Message { server: ctx.index, frame }),
            }
        }
    };
    or(read, write_loop(ctx, writer, role)).await
}

/// Writes whatever the shard queued on this link, once per wake-up.
async fn write_loop(ctx: &LinkCtx, mut writer: WriteHalf<Socket>, role: Role) -> String {
    loop {
        let batch = std::future::poll_fn(|cx| {
            let mut server = ctx.server.borrow_mut();
            let r = &mut *server;
            if ctx.inbox.is_closed() {
                return Poll::Ready(None);
            }
            let (out, waker) = match role {
                Role::Commands => (&mut r.cmd.out, &mut r.cmd.waker),
                Role::PubSub => (&mut r.sub.out, &mut r.sub.waker),
            };
            if out.is_empty() {
                *waker = Some(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(Some(out.split().freeze()))
            }
        })
        .await;
        let Some(batch) = batch else { return "shutting down".to_owned() };
        if let Err(e) = writer.write_all(&batch).await {
            return e.to_string();
        }
        if let Err(e) = writer.flush().await {
            return e.to_string();
        }
    }
}
