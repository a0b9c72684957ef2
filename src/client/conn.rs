//! The connections part of a shard: every connection it accepted, with its protocol state, its
//! outbound queue, its timers and (for emulated transports) its session inbox.
//!
//! Owns: the connection table ([`Conns`]), keyed by [`ConnKey`] (slot + generation, so a stale
//! key never reaches a newer connection in the same slot), the timer heap, the emulation session
//! map, and the process-wide count of connected clients (`client.connection_limit`, the one
//! value shared between shards, an atomic touched once per connect and disconnect).
//!
//! Must not: send to other shards, touch the hub, or perform I/O. What needs those (a
//! disconnect drops subscriptions everywhere) is `Clients`'.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Waker;
use std::time::Instant;

use slab::Slab;

use crate::client::queue::{Batch, Out, Queue};
use crate::client::session::Session;
use crate::metrics::{ClientLabel, FrameType, ShardMetrics};
use crate::protocol::{Command, Disconnect};
use crate::transport::deflate::{self, Compressor};
use crate::transport::{Encoding, Transport};

/// A connection slot on this shard plus a generation, so a stale key never reaches a newer
/// connection that reused the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// Slot in the shard's connection slab.
    pub slot: u32,
    /// Generation of the connection that owned the slot.
    pub generation: u32,
}

/// Where a connection is in its life.
#[derive(Debug)]
pub enum State {
    /// Transport open, waiting for `connect`.
    Connecting,
    /// Authenticated.
    Connected(Session),
}

/// A connection owned by this shard.
#[derive(Debug)]
pub struct Conn {
    /// Slot generation (see [`ConnKey`]).
    pub generation: u32,
    /// How the client is reached.
    pub transport: Transport,
    /// The connection speaks Protobuf (binary frames) instead of JSON.
    pub protobuf: bool,
    /// Protocol state.
    pub state: State,
    /// Frames waiting for the writer.
    pub queue: Queue,
    /// The writer task, parked while the queue is empty.
    pub writer: Option<Waker>,
    /// The reader task, parked until the connection closes, a command in flight completes, or
    /// (emulation) commands arrive.
    pub reader: Option<Waker>,
    /// Set once the server decided to close; the close frame is the last queued item.
    pub closing: Option<Disconnect>,
    /// A ping was sent and its pong has not arrived.
    pub awaiting_pong: bool,
    /// The reader task has finished; the writer stops once the queue is empty.
    pub reading_done: bool,
    /// A command of this connection is in flight: the next one waits (commands of one
    /// connection are handled in order).
    pub busy: bool,
    /// What later proxy calls send besides the command (boxed: most connections have none).
    pub proxy: Option<Box<ProxyContext>>,
    /// The command waiting for its reply and when it started ([`Conns::micros`]), for the
    /// command duration and reply error metrics.
    pub command: Option<(FrameType, u32)>,
    /// When the last ping went out ([`Conns::micros`]), for the ping/pong duration.
    pub ping_sent: u32,
    /// Whether its `connect` named the client app and its version (metric labels).
    pub label: ClientLabel,
    /// permessage-deflate was negotiated: messages go out compressed
    /// (`transport::deflate`).
    pub deflate: bool,
}

/// What a connection keeps for its proxy calls (spec §9.3).
#[derive(Debug, Default)]
pub struct ProxyContext {
    /// Headers of its HTTP request that some proxy forwards (names lower-cased).
    pub transport: Vec<(String, Vec<u8>)>,
    /// Emulated headers from `ConnectRequest.headers` that some proxy forwards.
    pub emulated: Vec<(String, String)>,
    /// `meta` from the connect or refresh proxy: server-side only, never sent to the client.
    pub meta: Option<Box<serde_json::value::RawValue>>,
}

impl Conn {
    /// A fresh connection waiting for `connect`.
    pub fn new(generation: u32, transport: Transport, protobuf: bool) -> Conn {
        Conn {
            generation,
            transport,
            protobuf,
            state: State::Connecting,
            queue: Queue::default(),
            writer: None,
            reader: None,
            closing: None,
            awaiting_pong: false,
            command: None,
            ping_sent: 0,
            label: ClientLabel::default(),
            reading_done: false,
            busy: false,
            proxy: None,
            deflate: false,
        }
    }

    /// The bytes this connection's messages are encoded as.
    pub fn encoding(&self) -> Encoding {
        Encoding::of(self.transport, self.protobuf)
    }

    /// WebSocket ping frames instead of protocol pings.
    pub fn native_ping(&self) -> bool {
        matches!(self.transport, Transport::WebSocket { native_ping: true })
    }

    /// Takes everything queued as one write (see [`Queue::take_batch`]).
    pub fn take_batch(&mut self) -> Option<Batch> {
        self.queue.take_batch(self.transport, self.protobuf)
    }

    /// The session, once connected.
    pub fn session(&self) -> Option<&Session> {
        match &self.state {
            State::Connected(s) => Some(s),
            State::Connecting => None,
        }
    }

    /// The session, once connected.
    pub fn session_mut(&mut self) -> Option<&mut Session> {
        match &mut self.state {
            State::Connected(s) => Some(s),
            State::Connecting => None,
        }
    }

    fn wake_writer(&mut self) {
        if let Some(w) = self.writer.take() {
            w.wake();
        }
    }

    /// Wakes the reader task (closing, a finished command, commands from `/emulation`).
    pub fn wake_reader(&mut self) {
        if let Some(w) = self.reader.take() {
            w.wake();
        }
    }
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The connection is gone or closing: nothing more goes out.
    Closed,
    /// The protocol cannot carry the message (binary data for JSON): close with 3506.
    Unsupported,
    /// The queue would exceed `client.queue_max_size`: close with 3008 (slow).
    Overflow,
}

/// What a timer entry checks when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerKind {
    /// No `connect` within `client.stale_close_delay` → 3502.
    Stale,
    /// Time to send a ping.
    Ping,
    /// The pong for the last ping is due → 3012 if missing.
    Pong,
    /// The connection's expiry plus `client.expired_close_delay` → 3005 unless refreshed.
    Expire,
    /// A subscription's expiry plus `client.expired_sub_close_delay` → 2501 / 3006.
    SubExpire,
}

/// A connection timer in the heap (earliest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timer {
    /// When it fires.
    pub at: Instant,
    /// Connection it belongs to.
    pub key: ConnKey,
    /// What to check.
    pub kind: TimerKind,
}

impl Ord for Timer {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        other.at.cmp(&self.at)
    }
}

impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

/// An emulated connection's session.
#[derive(Debug)]
struct Emulated {
    /// The random part of its session id.
    session: uuid::Uuid,
    /// Commands received through `/emulation`, not handled yet.
    inbox: Vec<Command>,
}

/// The connections of one shard.
#[derive(Debug, Default)]
pub struct Conns {
    slab: Slab<Conn>,
    next_generation: u32,
    timers: BinaryHeap<Timer>,
    /// Emulation session → connection.
    sessions: HashMap<uuid::Uuid, ConnKey>,
    emulated: HashMap<ConnKey, Emulated>,
    /// Connected clients in the whole process, shared by all shards.
    connected: Arc<AtomicUsize>,
    /// Origin of [`Conns::micros`].
    epoch: Option<Instant>,
    /// Compresses frames for connections with `deflate`, once per distinct frame.
    compressor: Compressor,
    /// Compression of `/connection/websocket` and of `uni_websocket` connections.
    compression: [deflate::Settings; 2],
    /// Connected connections by user, so that an API operation on a user costs O(that user's
    /// connections), not O(the shard's).
    users: HashMap<Arc<str>, Vec<ConnKey>>,
}

impl Conns {
    /// An empty table counting connected clients in `connected` (shared by all shards).
    pub fn new(connected: Arc<AtomicUsize>, compression: [deflate::Settings; 2]) -> Conns {
        Conns { connected, epoch: Some(Instant::now()), compression, ..Conns::default() }
    }

    /// Microseconds since this table was made, wrapping every ~71 minutes: four bytes per
    /// connection time a command or a ping (`wrapping_sub` gives the duration).
    pub fn micros(&self) -> u32 {
        // Truncation is the point: only differences below the wrap are used.
        #[allow(clippy::cast_possible_truncation, reason = "wrapping timestamps")]
        self.epoch.map_or(0, |e| e.elapsed().as_micros() as u32)
    }

    /// Stores a new connection and returns its key.
    pub fn insert(&mut self, transport: Transport, protobuf: bool) -> ConnKey {
        self.next_generation = self.next_generation.wrapping_add(1);
        let generation = self.next_generation;
        let slot = self.slab.insert(Conn::new(generation, transport, protobuf));
        ConnKey { slot: u32::try_from(slot).unwrap_or(u32::MAX), generation }
    }

    /// The live connection behind a key, if it still exists.
    pub fn get_mut(&mut self, key: ConnKey) -> Option<&mut Conn> {
        let slot = usize::try_from(key.slot).ok()?;
        self.slab.get_mut(slot).filter(|c| c.generation == key.generation)
    }

    /// The live connection behind a key, if it still exists.
    pub fn get(&self, key: ConnKey) -> Option<&Conn> {
        let slot = usize::try_from(key.slot).ok()?;
        self.slab.get(slot).filter(|c| c.generation == key.generation)
    }

    /// Forgets a connection (its session's count and emulation session with it).
    pub fn remove(&mut self, key: ConnKey) -> Option<Conn> {
        self.get(key)?;
        if let Some(e) = self.emulated.remove(&key) {
            self.sessions.remove(&e.session);
        }
        let conn = self.slab.remove(usize::try_from(key.slot).ok()?);
        if let State::Connected(session) = &conn.state {
            self.connected.fetch_sub(1, Ordering::Relaxed);
            if let Some(keys) = self.users.get_mut(&session.user) {
                keys.retain(|k| *k != key);
                if keys.is_empty() {
                    self.users.remove(&session.user);
                }
            }
        }
        Some(conn)
    }

    /// Makes a connection connected with `session`, indexed under its user; false when the
    /// connection is gone.
    pub fn set_connected(&mut self, key: ConnKey, session: Session) -> bool {
        let Some(conn) = self.get_mut(key) else { return false };
        let user = Arc::clone(&session.user);
        conn.state = State::Connected(session);
        self.users.entry(user).or_default().push(key);
        true
    }

    /// Keys of the connected connections of `user` on this shard.
    pub fn of_user(&self, user: &str) -> &[ConnKey] {
        self.users.get(user).map_or(&[], Vec::as_slice)
    }

    /// Users with a connected connection on this shard.
    pub fn users(&self) -> impl Iterator<Item = &Arc<str>> {
        self.users.keys()
    }

    /// Every connection with its key.
    pub fn iter(&self) -> impl Iterator<Item = (ConnKey, &Conn)> {
        self.slab.iter().map(|(slot, c)| {
            let slot = u32::try_from(slot).unwrap_or(u32::MAX);
            (ConnKey { slot, generation: c.generation }, c)
        })
    }

    /// Keys of every connection.
    pub fn keys(&self) -> Vec<ConnKey> {
        self.iter().map(|(k, _)| k).collect()
    }

    /// Number of connections (connected or not).
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// Whether there are no connections.
    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// Counts a connection as connected unless `limit` (0 = none) is reached in the process.
    pub fn count_connected(&mut self, limit: usize) -> bool {
        let before = self.connected.fetch_add(1, Ordering::Relaxed);
        if limit > 0 && before >= limit {
            self.connected.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Queues a frame chosen by the connection's encoding (`make(encoding)`; `None`: the
    /// protocol cannot carry it) and wakes the writer, unless the connection is closing or the
    /// frame would take the queue past `max` bytes. A queued frame is counted in `metrics` as
    /// `frame` on the connection's transport (`None`: a WebSocket control frame, not counted).
    pub fn enqueue_as(
        &mut self,
        key: ConnKey,
        max: usize,
        (metrics, frame): (&mut ShardMetrics, Option<FrameType>),
        make: impl FnOnce(Encoding) -> Option<Out>,
    ) -> Result<(), Refused> {
        let conn = self.get(key).filter(|c| c.closing.is_none()).ok_or(Refused::Closed)?;
        let mut out = make(conn.encoding()).ok_or(Refused::Unsupported)?;
        if conn.deflate {
            let settings = self.compression[usize::from(conn.transport.unidirectional())];
            if let Out::Data { frame, header } = &out {
                let compressed = self.compressor.compress(frame, usize::from(*header), settings);
                if let Some((frame, header)) = compressed {
                    out = Out::Data { frame, header };
                }
            }
        }
        let conn = self.get_mut(key).ok_or(Refused::Closed)?;
        if conn.queue.bytes() + out.len() > max {
            return Err(Refused::Overflow);
        }
        if let Some(frame) = frame {
            metrics.sent(conn.transport.into(), frame, out.len());
        }
        conn.queue.push(out);
        conn.wake_writer();
        Ok(())
    }

    /// Queues the last frames of a connection the server closes (the queue is dropped first:
    /// a closing client gets nothing it had not read) and wakes both its tasks.
    pub fn close(
        &mut self,
        key: ConnKey,
        d: Disconnect,
        last: impl FnOnce(&Conn, &Disconnect) -> Vec<Out>,
    ) {
        let Some(conn) = self.get_mut(key).filter(|c| c.closing.is_none()) else { return };
        conn.queue.clear();
        for out in last(conn, &d) {
            conn.queue.push(out);
        }
        conn.closing = Some(d);
        conn.wake_writer();
        conn.wake_reader();
    }

    /// Marks a connection whose socket failed: no close frame can be sent, both tasks stop.
    pub fn abort(&mut self, key: ConnKey, d: Disconnect) {
        let Some(conn) = self.get_mut(key) else { return };
        conn.closing.get_or_insert(d);
        conn.queue.clear();
        conn.wake_reader();
    }

    /// Arms a timer.
    pub fn add_timer(&mut self, timer: Timer) {
        self.timers.push(timer);
    }

    /// The earliest timer due at `now`, removed from the heap; else when the next is due.
    pub fn due_timer(&mut self, now: Instant) -> Result<Timer, Option<Instant>> {
        match self.timers.peek() {
            Some(t) if t.at <= now => self.timers.pop().ok_or(None),
            Some(t) => Err(Some(t.at)),
            None => Err(None),
        }
    }

    /// Registers an emulated connection's session.
    pub fn open_session(&mut self, key: ConnKey) -> uuid::Uuid {
        let session = uuid::Uuid::new_v4();
        self.sessions.insert(session, key);
        self.emulated.insert(key, Emulated { session, inbox: Vec::new() });
        session
    }

    /// The connection of an emulation session.
    pub fn session_conn(&self, session: uuid::Uuid) -> Option<ConnKey> {
        self.sessions.get(&session).copied()
    }

    /// Hands commands to an emulated connection's task.
    pub fn deliver_commands(&mut self, key: ConnKey, commands: Vec<Command>) {
        let Some(e) = self.emulated.get_mut(&key) else { return };
        e.inbox.extend(commands);
        if let Some(c) = self.get_mut(key) {
            c.wake_reader();
        }
    }

    /// Takes an emulated connection's waiting commands (empty when none).
    pub fn take_inbox(&mut self, key: ConnKey) -> Vec<Command> {
        self.emulated.get_mut(&key).map(|e| std::mem::take(&mut e.inbox)).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timers_pop_earliest_first() {
        let now = Instant::now();
        let key = ConnKey { slot: 0, generation: 0 };
        let mut conns = Conns::default();
        for s in [3u64, 1, 2] {
            let at = now + Duration::from_secs(s);
            conns.add_timer(Timer { at, key, kind: TimerKind::Ping });
        }
        let later = now + Duration::from_secs(10);
        let order: Vec<u64> = std::iter::from_fn(|| conns.due_timer(later).ok())
            .map(|t| (t.at - now).as_secs())
            .collect();
        assert_eq!(order, vec![1, 2, 3]);
    }

    #[test]
    fn a_stale_key_never_reaches_a_newer_connection_in_its_slot() {
        let mut conns = Conns::default();
        let ws = Transport::WebSocket { native_ping: false };
        let old = conns.insert(ws, false);
        conns.remove(old);
        let new = conns.insert(ws, false);
        assert_eq!(old.slot, new.slot);
        assert!(conns.get(old).is_none() && conns.get(new).is_some());
    }
}
