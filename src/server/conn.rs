//! What every client connection task of a shard shares, whatever its transport: the
//! environment of the tasks, the HTTP reply shape, running a frame's commands in order, the
//! writer loop, and the end of a connection.
//!
//! Owns: nothing but the tasks' own locals. Must not: hold a shard borrow across `.await`, or
//! decide anything about the protocol (that is `client`'s, through the shard).

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io;
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_lite::future::{or, poll_once};
use futures_lite::io::{AsyncWriteExt, WriteHalf};
use glommio::timer::sleep;

use super::admission::Admission;
use super::socket::Socket;
use crate::client::conn::ConnKey;
use crate::client::queue::Batch;
use crate::client::Step;
use crate::protocol::{codes, Command, Disconnect};
use crate::shard::id::ShardId;
use crate::shard::ShardRef;
use crate::transport::websocket::OriginPolicy;

/// How long we wait for the client's close frame after sending ours (RFC 6455 §7.1.1).
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Everything a shard's connection tasks need besides the shard state.
pub struct Env {
    /// Compiled `client.allowed_origins`.
    pub origins: OriginPolicy,
    /// Which endpoints the listener that accepted the connection serves.
    pub port: Port,
    /// The listener's TLS, when it serves TLS.
    pub tls: Option<futures_rustls::TlsAcceptor>,
    /// This shard's share of `client.connection_rate_limit`.
    pub rate: Option<RefCell<ConnectionRate>>,
    /// This listener's HTTP-stage caps on this shard.
    pub admission: Rc<Admission>,
}

/// A token bucket for new client connections: `client.connection_rate_limit` per second for
/// the node, as upstream's limiter (burst = one second's worth). Each shard owns an equal
/// share, so admitting a connection touches no other shard; the listeners spread connections
/// evenly (`SO_REUSEPORT` or round-robin), so the shares add up to the node's rate.
pub struct ConnectionRate {
    per_second: f64,
    tokens: f64,
    at: Instant,
}

impl ConnectionRate {
    /// The share of one of `shards` shards of `limit` connections per second (0 = none).
    pub fn share(limit: usize, shards: usize) -> Option<RefCell<ConnectionRate>> {
        (limit > 0).then(|| {
            let per_second = (limit as f64 / shards.max(1) as f64).max(1.0);
            RefCell::new(ConnectionRate { per_second, tokens: per_second, at: Instant::now() })
        })
    }

    /// Takes a token; false when the bucket is empty.
    pub fn admit(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.per_second);
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// The endpoints a listener serves (`http_server.internal_port`, as upstream splits them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// No separate internal port: everything.
    Both,
    /// The main port beside an internal one: client transports, plus the API and admin when
    /// `http_api.external` / `admin.external`.
    Main,
    /// The internal port: API, admin, metrics, health.
    Internal,
}

impl Port {
    /// WebSocket, streams and emulation.
    pub fn clients(self) -> bool {
        self != Port::Internal
    }

    /// An endpoint that lives on the internal port unless `external`.
    pub fn internal(self, external: bool) -> bool {
        match self {
            Port::Both => true,
            Port::Main => external,
            Port::Internal => !external,
        }
    }

    /// Metrics, health, readiness: never on the main port beside an internal one.
    pub fn ops(self) -> bool {
        self != Port::Main
    }
}

/// An HTTP answer produced by a route.
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Content-Type (empty for none).
    pub content_type: &'static str,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Reply {
    /// A JSON reply.
    pub fn json(status: u16, body: Vec<u8>) -> Reply {
        Reply { status, content_type: "application/json", headers: Vec::new(), body }
    }
}

/// The header that names the shard serving a response (tests place clients by it).
pub fn shard_header(id: ShardId) -> [(&'static str, &'static str); 1] {
    // Shard ids are small; the static strings avoid an allocation per response.
    const IDS: [&str; 16] =
        ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15"];
    [("x-rotor-shard", IDS.get(id.index()).copied().unwrap_or("16+"))]
}

/// The reading side of a connection is done (client closed, error, or close handshake over):
/// lets the writer finish what is queued (at most `CLOSE_WAIT`), then forgets the connection.
pub async fn finish_conn(shard: &ShardRef, key: ConnKey, writer_task: glommio::Task<()>) {
    {
        let mut s = shard.borrow_mut();
        if let Some(c) = s.conns().get_mut(key) {
            c.reading_done = true;
            if let Some(w) = c.writer.take() {
                w.wake();
            }
        }
    }
    let _ = or(writer_task, async {
        sleep(CLOSE_WAIT).await;
    })
    .await;
    shard.borrow_mut().with_clients(|c| c.remove_conn(key));
}

/// Resolves `CLOSE_WAIT` after the server decided to close this connection.
pub async fn closed_then_wait(shard: &ShardRef, key: ConnKey) {
    poll_fn(|cx| {
        let mut s = shard.borrow_mut();
        match s.conns().get_mut(key) {
            None => Poll::Ready(()),
            Some(c) if c.closing.is_some() => Poll::Ready(()),
            Some(c) => {
                c.reader = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    })
    .await;
    sleep(CLOSE_WAIT).await;
}

/// Handles the commands of one frame in order, each after the one before has finished (a
/// command in flight resumes on the shard; this task only waits for the connection to be idle
/// again); returns false once the connection stops taking commands.
pub async fn handle_commands(
    shard: &ShardRef,
    key: ConnKey,
    commands: Vec<Command>,
    bytes: usize,
) -> bool {
    // A frame's size is shared among its commands (the decoders do not report each one's).
    let each = bytes / commands.len().max(1);
    for cmd in commands {
        // Bound first: a borrow in the match head would live through the arms' awaits.
        let step = shard.borrow_mut().client_command(key, cmd, each);
        match step {
            Step::Next | Step::KeysPending { .. } => continue,
            Step::Stop => return false,
            Step::Wait => {}
            Step::Fetch { fetch, flight } => {
                fetch.await;
                shard.borrow_mut().keys_fetched(flight);
            }
        }
        if poll_fn(|cx| shard.borrow_mut().poll_idle(key, cx)).await {
            return false;
        }
    }
    true
}

/// Closes a connection from the server side.
pub fn disconnect(shard: &ShardRef, key: ConnKey, d: Disconnect) {
    shard.borrow_mut().with_clients(|c| c.disconnect(key, d));
}

/// Writes a connection's queue to its socket until the connection ends.
///
/// `stall` is the write timeout (`websocket.write_timeout`; `None`: none): a socket that takes
/// no byte for that long belongs to a peer that is gone or stuck, and the connection is
/// aborted without a close frame (3009), as upstream's write deadline does. The exception is a
/// connection the server is already closing (3008 slow above all): its last frames — the rest
/// of the batch a full socket holds up, then the close frame — may wait for the client up to
/// [`CLOSE_WAIT`] more, so a client that stopped reading for a moment and reads again learns
/// why it was cut. The linger is bounded twice: here, and by [`finish_conn`], which drops this
/// task [`CLOSE_WAIT`] after the reader ended. The task only awaits, so a stuck socket never
/// blocks the shard.
pub async fn write_loop(
    shard: ShardRef,
    key: ConnKey,
    mut writer: WriteHalf<Socket>,
    stall: Option<Duration>,
) {
    let mut limit = WriteLimit { stall, linger: None };
    loop {
        let batch = poll_fn(|cx| {
            let mut s = shard.borrow_mut();
            let Some(c) = s.conns().get_mut(key) else { return Poll::Ready(None) };
            if let Some(b) = c.take_batch() {
                return Poll::Ready(Some(b));
            }
            if c.closing.is_some() || c.reading_done {
                return Poll::Ready(None);
            }
            c.writer = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        let Some(batch) = batch else { break };
        let bytes: &[u8] = match &batch {
            Batch::One(b) => b,
            Batch::Many(v) => v,
        };
        if limit.send(&shard, key, &mut writer, bytes).await.is_err() {
            // Write failed or stalled past its limit: the peer is gone or stuck.
            shard.borrow_mut().with_clients(|c| c.abort(key, codes::DISCONNECT_WRITE_ERROR));
            return;
        }
    }
    // Whatever TLS still buffers, under the same limit.
    let _ = limit.send(&shard, key, &mut writer, &[]).await;
}

/// How long a connection's writes may stall (see [`write_loop`]).
struct WriteLimit {
    /// The write timeout.
    stall: Option<Duration>,
    /// Set once a write stalled while the server was closing the connection: until when its
    /// last frames may still leave.
    linger: Option<Instant>,
}

impl WriteLimit {
    /// Writes `bytes` and flushes them. Fails with `TimedOut` when the socket took nothing for
    /// `stall`, unless the connection is closing and its linger has not run out.
    async fn send(
        &mut self,
        shard: &ShardRef,
        key: ConnKey,
        writer: &mut WriteHalf<Socket>,
        bytes: &[u8],
    ) -> io::Result<()> {
        let progress = Cell::new(Instant::now());
        let mut write = pin!(write_counting(writer, bytes, &progress));
        // Nearly every write completes at once: no timer for those.
        if let Some(done) = poll_once(write.as_mut()).await {
            return done;
        }
        let Some(stall) = self.stall else { return write.await };
        let linger = &mut self.linger;
        or(write, async {
            loop {
                let now = Instant::now();
                let mut until = progress.get() + stall;
                if until <= now {
                    match lingering(shard, key, linger, now).filter(|t| *t > now) {
                        Some(t) => until = t,
                        None => return Err(io::Error::from(io::ErrorKind::TimedOut)),
                    }
                }
                sleep(until - now).await;
            }
        })
        .await
    }
}

/// Until when a stalled write of a connection the server is closing may go on; `None` for a
/// connection that is not closing.
fn lingering(
    shard: &ShardRef,
    key: ConnKey,
    linger: &mut Option<Instant>,
    now: Instant,
) -> Option<Instant> {
    if linger.is_none() {
        let closing = shard.borrow_mut().conns().get(key).is_some_and(|c| c.closing.is_some());
        if closing {
            *linger = Some(now + CLOSE_WAIT);
        }
    }
    *linger
}

/// Writes all of `bytes` and flushes them (TLS buffers), noting in `progress` when the socket
/// last took bytes.
async fn write_counting(
    writer: &mut WriteHalf<Socket>,
    bytes: &[u8],
    progress: &Cell<Instant>,
) -> io::Result<()> {
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = writer.write(rest).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        rest = &rest[n..];
        progress.set(Instant::now());
    }
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::ConnectionRate;

    #[test]
    fn a_share_admits_its_burst_then_refills_at_its_rate() {
        // 30 per second over 3 shards: 10 per second here, a burst of 10.
        let cell = ConnectionRate::share(30, 3).unwrap();
        let mut rate = cell.borrow_mut();
        let t0 = Instant::now();
        assert_eq!((0..15).filter(|_| rate.admit(t0)).count(), 10);
        assert!(rate.admit(t0 + Duration::from_millis(100)), "a tenth of a second refills one");
        assert!(!rate.admit(t0 + Duration::from_millis(100)));
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..15).filter(|_| rate.admit(later)).count(), 10, "the burst is capped");
        assert!(ConnectionRate::share(0, 3).is_none());
        // A limit below the shard count still admits one per second on each shard.
        assert!(ConnectionRate::share(1, 4).unwrap().borrow_mut().admit(t0));
    }
}
