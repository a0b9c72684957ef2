//! Model-based property test of publication delivery across shards.
//!
//! Three shards run in one thread with no lanes joined: every cross-shard message lands in the
//! sender's spill queue for that peer and lane, and the test delivers queued messages in a
//! random order that keeps each (sender, receiver, lane) queue FIFO, exactly what the real
//! meshes guarantee and nothing more. Connections are plain `Conn`s whose queued frames the
//! test reads back. Random steps publish, subscribe (fresh or recovering from the last position
//! the client saw), unsubscribe, disconnect, and drop deliveries (a lane over its cap).
//!
//! The model: the stream of each channel is the sequence of publish calls ordered by their home
//! shard, so offsets are 1, 2, 3, …; a subscriber must see each offset at most once and in
//! increasing order; after a successful recovery it must see every offset from its recovery
//! point on, with no gap, unless the server told it (unsubscribe 2500 or disconnect 3010).

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

use proptest::prelude::*;
use serde_json::{json, Value};

use super::msg::{Call, Frame};
use super::{PendingAnswer, Shard, ShardRef};
use crate::broker::stream::HistoryPolicy;
use crate::broker::PublishCall;
use crate::client::conn::ConnKey;
use crate::client::queue::Batch;
use crate::client::session::Session;
use crate::client::Step;
use crate::protocol::{json as pjson, Publication, RawJson};
use crate::shard::id::Lane;
use crate::shard::id::ShardId;

const SHARDS: usize = 3;
const LANES: [Lane; 2] = [Lane::Main, Lane::Reply];
const CHANNELS: [&str; 2] = ["room:a", "room:b"];

fn shards() -> Vec<ShardRef> {
    let mut cfg = crate::config::Config::default();
    cfg.client.token.hmac_secret_key = "k".into();
    cfg.client.insecure = true;
    let room = crate::config::Namespace {
        name: "room".into(),
        options: crate::config::ChannelOptions {
            history_size: 1000,
            history_ttl: std::time::Duration::from_secs(3600),
            force_recovery: true,
            allow_subscribe_for_client: true,
            ..Default::default()
        },
    };
    cfg.channel.namespaces.push(room);
    let v = Arc::new(crate::auth::TokenVerifier::for_connections(&cfg.client).unwrap());
    let ns = Arc::new(crate::channel::Namespaces::new(&cfg.channel).unwrap());
    let cfg = Arc::new(cfg);
    (0..SHARDS)
        .map(|i| {
            let env = crate::client::Env::new(
                Arc::clone(&cfg),
                Arc::clone(&ns),
                (Arc::clone(&v), Arc::clone(&v)),
                Arc::default(),
            );
            let s = Shard::new(ShardId(i as u16), SHARDS, env, Arc::default(), Arc::default());
            Rc::new(RefCell::new(s))
        })
        .collect()
}

/// One step of the random schedule.
#[derive(Debug, Clone)]
enum Op {
    /// API publish to channel `ch` entering on shard `shard`.
    Publish { shard: usize, ch: usize },
    /// Client `client` (re)subscribes to its channel, recovering when it saw a position.
    Subscribe { client: usize },
    /// Client `client` unsubscribes.
    Unsubscribe { client: usize },
    /// Client `client`'s connection dies (a new one is made on the next subscribe).
    Drop { client: usize },
    /// Deliver the head of a random non-empty lane.
    Step { pick: usize },
    /// Lose the head of a random lane if it is a delivery (a lane over its cap).
    Lose { pick: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..SHARDS, 0..CHANNELS.len()).prop_map(|(shard, ch)| Op::Publish { shard, ch }),
        2 => (0..4usize).prop_map(|client| Op::Subscribe { client }),
        1 => (0..4usize).prop_map(|client| Op::Unsubscribe { client }),
        1 => (0..4usize).prop_map(|client| Op::Drop { client }),
        8 => any::<usize>().prop_map(|pick| Op::Step { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Lose { pick }),
    ]
}

/// What one simulated client knows.
#[derive(Default)]
struct Client {
    /// Its live connection: shard and key.
    conn: Option<(usize, ConnKey)>,
    /// A subscribe is waiting for its answer (command id).
    subscribing: Option<u32>,
    subscribed: bool,
    /// Last offset seen and the epoch, for recovery.
    position: Option<(u64, String)>,
    /// Offsets must continue from here without a gap (after a successful recovery or a fresh
    /// positioned subscribe); `None` while not subscribed.
    expect_next: Option<u64>,
    next_id: u32,
}

struct Sim {
    shards: Vec<ShardRef>,
    clients: Vec<Client>,
    /// API publishes waiting for their answer (dropped when answered).
    publishes: Vec<Pin<Box<PendingAnswer>>>,
}

fn lanes(sim: &Sim) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    for (from, s) in sim.shards.iter().enumerate() {
        let mut s = s.borrow_mut();
        for (lane, l) in LANES.into_iter().enumerate() {
            for to in 0..SHARDS {
                if !s.mesh().spill_of(l, to).borrow().is_empty() {
                    out.push((from, lane, to));
                }
            }
        }
    }
    out
}

impl Sim {
    fn new() -> Sim {
        Sim {
            shards: shards(),
            clients: (0..4).map(|_| Client::default()).collect(),
            publishes: Vec::new(),
        }
    }

    fn channel(client: usize) -> &'static str {
        CHANNELS[client % CHANNELS.len()]
    }

    fn new_conn(&mut self, client: usize) -> (usize, ConnKey) {
        let shard = (client + self.clients[client].next_id as usize) % SHARDS;
        let mut s = self.shards[shard].borrow_mut();
        let key = s.open_conn(
            crate::transport::Transport::WebSocket { native_ping: false },
            false,
            Vec::new(),
        );
        {
            let session = Session {
                client: uuid::Uuid::from_u128(client as u128),
                user: Arc::from("u"),
                conn_info: None,
                subs: Vec::new(),
                expire_at: None,
                counted: false,
                token_channels: 0,
                server_refresh: false,
                refreshing: false,
            };
            s.conns().set_connected(key, session);
        }
        (shard, key)
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Publish { shard, ch } => {
                let call = Call::Publish(PublishCall {
                    channel: Arc::from(CHANNELS[ch]),
                    publication: Publication {
                        data: RawJson::from_value_str("{}").unwrap(),
                        ..Publication::default()
                    },
                    history: HistoryPolicy {
                        size: 1000,
                        ttl: std::time::Duration::from_secs(3600),
                        meta_ttl: std::time::Duration::ZERO,
                    },
                    idempotency_key: None,
                    version: None,
                });
                let req = self.shards[shard].borrow_mut().call_home(CHANNELS[ch], call);
                let fut = PendingAnswer::new(Rc::clone(&self.shards[shard]), req);
                self.publishes.push(Box::pin(fut));
            }
            Op::Subscribe { client } => {
                let c = &mut self.clients[client];
                if c.subscribing.is_some() || c.subscribed {
                    return Ok(());
                }
                let (shard, key) = match c.conn {
                    Some(conn) => conn,
                    None => {
                        let conn = self.new_conn(client);
                        self.clients[client].conn = Some(conn);
                        conn
                    }
                };
                let c = &mut self.clients[client];
                c.next_id += 1;
                let id = c.next_id;
                let mut sub = json!({"channel": Self::channel(client)});
                if let Some((offset, epoch)) = &c.position {
                    sub = json!({"channel": Self::channel(client), "recover": true,
                                 "offset": offset, "epoch": epoch});
                }
                let frame = json!({"id": id, "subscribe": sub}).to_string();
                let cmd = pjson::decode_frame(frame.as_bytes()).unwrap().remove(0);
                let step = self.shards[shard].borrow_mut().client_command(key, cmd, 0);
                match step {
                    Step::Wait => self.clients[client].subscribing = Some(id),
                    other => prop_assert!(false, "positioned subscribe must ask home: {other:?}"),
                }
            }
            Op::Unsubscribe { client } => {
                let c = &mut self.clients[client];
                // The reader handles a connection's commands one at a time: nothing else is
                // sent while its subscribe waits.
                if c.subscribing.is_some() {
                    return Ok(());
                }
                let Some((shard, key)) = c.conn else { return Ok(()) };
                c.next_id += 1;
                let frame =
                    json!({"id": c.next_id, "unsubscribe": {"channel": Self::channel(client)}})
                        .to_string();
                let cmd = pjson::decode_frame(frame.as_bytes()).unwrap().remove(0);
                self.shards[shard].borrow_mut().client_command(key, cmd, 0);
                self.read(client)?;
                let c = &mut self.clients[client];
                c.subscribed = false;
                c.expect_next = None;
                // The pending subscribe (if any) is answered later and must be ignored.
            }
            Op::Drop { client } => {
                self.read(client)?;
                let c = &mut self.clients[client];
                let Some((shard, key)) = c.conn.take() else { return Ok(()) };
                c.subscribed = false;
                c.subscribing = None;
                c.expect_next = None;
                self.shards[shard].borrow_mut().with_clients(|c| c.remove_conn(key));
            }
            Op::Step { pick } => {
                let ls = lanes(self);
                if let Some(&(from, lane, to)) = ls.get(pick % ls.len().max(1)) {
                    if let Some(frame) = self.pop(from, lane, to) {
                        self.deliver(to, frame);
                    }
                }
                self.poll()?;
            }
            Op::Lose { pick } => {
                let ls = lanes(self);
                if let Some(&(from, lane, to)) = ls.get(pick % ls.len().max(1)) {
                    let spill = self.shards[from].borrow_mut().mesh().spill_of(LANES[lane], to);
                    let mut q = spill.borrow_mut();
                    if q.front_is_delivery() {
                        q.pop();
                    }
                }
            }
        }
        Ok(())
    }

    fn pop(&mut self, from: usize, lane: usize, to: usize) -> Option<Frame> {
        let spill = self.shards[from].borrow_mut().mesh().spill_of(LANES[lane], to);
        let frame = spill.borrow_mut().pop();
        frame
    }

    fn deliver(&mut self, to: usize, frame: Frame) {
        if std::env::var_os("SIM_TRACE").is_some() {
            eprintln!("deliver to {to}: {frame:?}");
        }
        let accepted = self.shards[to].borrow_mut().receive(frame);
        assert!(accepted.is_none());
    }

    /// Polls parked requests; resumes the answered ones; reads every client's frames.
    fn poll(&mut self) -> Result<(), TestCaseError> {
        let waker = futures_lite::future::block_on(std::future::poll_fn(|cx| {
            Poll::Ready(cx.waker().clone())
        }));
        let mut cx = Context::from_waker(&waker);
        self.publishes.retain_mut(|f| f.as_mut().poll(&mut cx).is_pending());
        for client in 0..self.clients.len() {
            self.read(client)?;
        }
        Ok(())
    }

    /// Reads a client's queued frames and checks them against the model.
    fn read(&mut self, client: usize) -> Result<(), TestCaseError> {
        let Some((shard, key)) = self.clients[client].conn else { return Ok(()) };
        let mut messages: Vec<Value> = Vec::new();
        let mut closed = None;
        let busy;
        {
            let mut s = self.shards[shard].borrow_mut();
            let Some(conn) = s.conns().get_mut(key) else { return Ok(()) };
            busy = conn.busy;
            if let Some(batch) = conn.take_batch() {
                let bytes: Vec<u8> = match batch {
                    Batch::One(b) => b.to_vec(),
                    Batch::Many(v) => v,
                };
                for (opcode, payload) in frames(&bytes) {
                    if opcode == 8 {
                        closed = Some(u16::from_be_bytes([payload[0], payload[1]]));
                    } else {
                        for line in payload.split(|b| *b == b'\n') {
                            messages.push(serde_json::from_slice(line).unwrap());
                        }
                    }
                }
            }
        }
        let channel = Self::channel(client);
        if std::env::var_os("SIM_TRACE").is_some() && !messages.is_empty() {
            eprintln!("client {client} on {shard}: {messages:?}");
        }
        for m in messages {
            let c = &mut self.clients[client];
            if let Some(id) = m.get("id").and_then(Value::as_u64) {
                if Some(id as u32) != c.subscribing {
                    continue; // unsubscribe replies, or an abandoned subscribe
                }
                c.subscribing = None;
                prop_assert!(!busy, "a subscribe whose reply is out has finished");
                let r = &m["subscribe"];
                prop_assert!(r.is_object(), "subscribe failed: {m}");
                let epoch = r["epoch"].as_str().unwrap_or_default().to_owned();
                let offset = r["offset"].as_u64().unwrap_or(0);
                let pubs: Vec<u64> = r["publications"]
                    .as_array()
                    .map(|a| a.iter().map(|p| p["offset"].as_u64().unwrap()).collect())
                    .unwrap_or_default();
                if r["was_recovering"] == true && r["recovered"] == true {
                    let (from, _) = c.position.clone().unwrap();
                    prop_assert_eq!(offset, from, "recovered reply echoes the client's offset");
                    for (i, o) in pubs.iter().enumerate() {
                        prop_assert_eq!(*o, from + 1 + i as u64, "recovered pubs contiguous");
                    }
                    let last = pubs.last().copied().unwrap_or(from);
                    c.expect_next = Some(last + 1);
                    c.position = Some((last, epoch));
                } else {
                    // Fresh (or unrecovered): positioned at the top.
                    prop_assert!(pubs.is_empty());
                    c.expect_next = Some(offset + 1);
                    c.position = Some((offset, epoch));
                }
                c.subscribed = true;
            } else if let Some(p) = m["push"].get("pub") {
                prop_assert_eq!(m["push"]["channel"].as_str(), Some(channel));
                prop_assert!(c.subscribed, "publication before the subscribe reply: {m}");
                let o = p["offset"].as_u64().unwrap();
                let want = c.expect_next.unwrap();
                prop_assert_eq!(o, want, "exactly once, in order, no silent gap");
                c.expect_next = Some(o + 1);
                if let Some(pos) = &mut c.position {
                    pos.0 = o;
                }
            } else if let Some(u) = m["push"].get("unsubscribe") {
                prop_assert_eq!(u["code"].as_u64(), Some(2500), "{}", m);
                c.subscribed = false;
                c.expect_next = None;
            }
        }
        if let Some(code) = closed {
            prop_assert_eq!(code, 3010, "only insufficient state closes here");
            let c = &mut self.clients[client];
            c.conn = None;
            c.subscribed = false;
            c.subscribing = None;
            c.expect_next = None;
            self.shards[shard].borrow_mut().with_clients(|c| c.remove_conn(key));
        }
        Ok(())
    }

    /// Delivers everything still queued, runs every shard's periodic position check (a lost
    /// last delivery is noticed there), delivers again, then checks that every still subscribed
    /// client is at the top of its channel.
    fn drain_and_check(&mut self) -> Result<(), TestCaseError> {
        self.drain()?;
        for shard in &self.shards {
            shard.borrow_mut().with_clients(|c| {
                c.check_positions();
            });
        }
        self.drain()?;
        for (client, c) in self.clients.iter().enumerate() {
            if !c.subscribed {
                continue;
            }
            let ch = Self::channel(client);
            let home = crate::shard::id::home_of(ch, SHARDS).index();
            let top = self.shards[home]
                .borrow_mut()
                .engine()
                .memory()
                .position(ch)
                .map_or(0, |p| p.offset);
            prop_assert_eq!(c.expect_next, Some(top + 1), "client {} missed the end", client);
        }
        Ok(())
    }

    fn drain(&mut self) -> Result<(), TestCaseError> {
        for _ in 0..100_000 {
            let ls = lanes(self);
            let Some(&(from, lane, to)) = ls.first() else { break };
            if let Some(frame) = self.pop(from, lane, to) {
                self.deliver(to, frame);
            }
            self.poll()?;
        }
        self.poll()
    }
}

/// Splits unmasked server frames into (opcode, payload).
fn frames(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while b.len() >= 2 {
        let opcode = b[0] & 0x0f;
        let (len, head) = match b[1] & 0x7f {
            126 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
            127 => (u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize, 10),
            n => (usize::from(n), 2),
        };
        out.push((opcode, b[head..head + len].to_vec()));
        b = &b[head + len..];
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    #[test]
    fn publications_are_delivered_once_in_order_and_recovery_is_exact(
        ops in proptest::collection::vec(op(), 1..250)
    ) {
        let mut sim = Sim::new();
        for op in &ops {
            if std::env::var_os("SIM_TRACE").is_some() {
                eprintln!("== {op:?}");
            }
            sim.apply(op)?;
        }
        sim.drain_and_check()?;
    }
}
