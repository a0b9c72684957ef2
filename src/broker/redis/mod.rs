//! Redis engine: the broker and presence manager of `engine.type: redis`, compatible with
//! Centrifugo's Redis layout (spec §10.1, §10.2) so Rotor and Centrifugo nodes can share one
//! Redis.
//!
//! Owns, per shard: two Redis connections' worth of protocol state, without the sockets. The
//! command link ([`Link`]) holds encoded commands not yet written and, in order, what to do with
//! each reply ([`Then`]); Redis answers in order, so the reply to the oldest outstanding command
//! is always the next frame. The PUB/SUB link ([`PubSub`]) holds the channels this shard is home
//! for and has subscribers of somewhere on the node, and the interest acknowledgements and
//! subscribe calls that must wait until Redis confirms a subscription (a position read before
//! that could miss a publication made in between).
//!
//! The sockets are driven by [`io`]; everything else here is plain data and functions, tested
//! without Redis.
//!
//! Must not: touch connections or deliver anything (the home shard emits what PUB/SUB brings,
//! exactly as it does for the memory engine), or wait: a command on a link that is down fails at
//! once, so a publish is never accepted and then lost.

pub mod io;
mod scripts;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::types::{BorrowedFrame, BytesFrame};

use crate::broker::stream::{new_epoch, HistoryError, HistoryPolicy, HistoryQuery, Position};
use crate::broker::{Event, Gate, Outbox, PublishCall, Reply, ReplyTo, SubscribeCall};
use crate::protocol::{protobuf, ClientInfo, Publication};
use crate::shard::id::ShardId;

pub use scripts::Script;

/// How long an idempotency key's result is kept (spec §6.7).
const IDEMPOTENCY_TTL_SECS: u64 = 300;

/// One Redis server as configured: `redis://[user:password@]host:port[/db]` or `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// Host name or IP.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// ACL user (empty = default user).
    pub user: String,
    /// Password (empty = no AUTH).
    pub password: String,
    /// Database number.
    pub db: u32,
}

impl Address {
    /// Parses an address; user, password and db default to the Redis object's own keys.
    pub fn parse(text: &str, defaults: &crate::config::Redis) -> Result<Address, String> {
        let mut a = Address {
            host: String::new(),
            port: 6379,
            user: defaults.user.clone(),
            password: defaults.password.clone(),
            db: defaults.db,
        };
        let rest = if let Some(rest) = text.strip_prefix("redis://") {
            rest
        } else if text.starts_with("rediss://") {
            return Err("TLS (rediss://) is not supported by rotor yet".to_owned());
        } else if text.contains("://") {
            return Err(format!("{text:?}: only redis:// addresses are supported"));
        } else {
            text
        };
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (Some(auth), rest),
            None => (None, rest),
        };
        if let Some(auth) = auth {
            match auth.split_once(':') {
                Some((user, password)) => {
                    a.user = user.to_owned();
                    a.password = password.to_owned();
                }
                None => a.user = auth.to_owned(),
            }
        }
        let (hostport, db) = match rest.split_once('/') {
            Some((hp, db)) => (hp, Some(db)),
            None => (rest, None),
        };
        if let Some(db) = db.filter(|d| !d.is_empty()) {
            a.db = db.parse().map_err(|_| format!("{text:?}: bad database number {db:?}"))?;
        }
        match hostport.rsplit_once(':') {
            Some((host, port)) => {
                a.host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
                a.port = port.parse().map_err(|_| format!("{text:?}: bad port {port:?}"))?;
            }
            None => a.host = hostport.to_owned(),
        }
        if a.host.is_empty() {
            return Err(format!("{text:?}: no host"));
        }
        Ok(a)
    }
}

/// The engine settings every shard shares.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The Redis servers; channels are spread over several with Centrifugo's jump hash, so
    /// both servers agree on where a channel lives.
    pub addresses: Vec<Address>,
    /// Key prefix (`centrifugo` by default, so both servers can share data).
    pub prefix: String,
    /// Time to connect.
    pub connect_timeout: Duration,
    /// Time to wait for an outstanding reply.
    pub io_timeout: Duration,
    /// `CLIENT SETNAME`.
    pub client_name: String,
    /// Presence entry lifetime without refresh.
    pub presence_ttl: Duration,
    /// Where to ask for the master, when Redis runs under Sentinel.
    pub sentinel: Option<Sentinel>,
    /// Redis Cluster with sharded PUB/SUB (`SSUBSCRIBE`/`SPUBLISH`, Redis ≥ 7): a channel's
    /// messages stay on the master of its slot instead of being broadcast to the whole
    /// cluster. Rotor-only (`engine.redis.sharded_pubsub`): Centrifugo nodes subscribe with
    /// plain `SUBSCRIBE` and would not see these messages.
    pub sharded: bool,
    /// Redis Cluster: slot → index into `addresses` (the masters, found at start). Channel
    /// parts of keys and PUB/SUB channels are then wrapped in a hash tag, `{channel}`, so a
    /// channel's keys share one slot (and one script call).
    pub slots: Option<Arc<Vec<u16>>>,
}

/// Reads a Redis Cluster's masters and slot map from the first seed that answers (blocking;
/// called once at start, before the shards run).
pub fn discover_cluster(settings: &mut Settings, cfg: &crate::config::Redis) -> Result<(), String> {
    let mut last = "no cluster_address".to_owned();
    for seed in &cfg.cluster_address {
        let seed = Address::parse(seed, cfg)?;
        match cluster_slots(&seed, settings.connect_timeout.max(Duration::from_secs(1))) {
            Ok((masters, slots)) => {
                settings.addresses = masters
                    .into_iter()
                    .map(|(host, port)| Address {
                        host: if host.is_empty() { seed.host.clone() } else { host },
                        port,
                        ..seed.clone()
                    })
                    .collect();
                settings.slots = Some(Arc::new(slots));
                return Ok(());
            }
            Err(e) => last = format!("{}:{}: {e}", seed.host, seed.port),
        }
    }
    Err(format!("engine.redis.cluster_address: cannot read the cluster's slots ({last})"))
}

type Topology = (Vec<(String, u16)>, Vec<u16>);

fn cluster_slots(seed: &Address, timeout: Duration) -> Result<Topology, String> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let addr = (seed.host.as_str(), seed.port)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("resolves to nothing")?;
    let mut sock =
        std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let mut out = BytesMut::new();
    let replies = 1 + encode_setup(&mut out, seed, "");
    encode_command(&mut out, &[b"CLUSTER", b"SLOTS"]);
    sock.write_all(&out).map_err(|e| e.to_string())?;
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    while frames.len() < replies {
        match redis_protocol::resp2::decode::decode_bytes_mut(&mut buf) {
            Ok(Some((f, _, _))) => frames.push(f),
            Ok(None) => {
                let n = sock.read(&mut chunk).map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("closed".into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            Err(e) => return Err(format!("{e:?}")),
        }
    }
    let Some(BytesFrame::Array(ranges)) = frames.pop() else {
        return Err("unexpected CLUSTER SLOTS reply (not a cluster?)".into());
    };
    let mut masters: Vec<(String, u16)> = Vec::new();
    let mut slots = vec![u16::MAX; 16384];
    for range in &ranges {
        let BytesFrame::Array(parts) = range else { continue };
        let (Some(start), Some(end), Some(BytesFrame::Array(node))) =
            (parts.first().and_then(u64_of), parts.get(1).and_then(u64_of), parts.get(2))
        else {
            continue;
        };
        let host = node.first().and_then(string_of).unwrap_or_default();
        let Some(port) = node.get(1).and_then(u64_of).and_then(|p| u16::try_from(p).ok()) else {
            continue;
        };
        let index = match masters.iter().position(|m| m.0 == host && m.1 == port) {
            Some(i) => i,
            None => {
                masters.push((host, port));
                masters.len() - 1
            }
        };
        let index = u16::try_from(index).map_err(|_| "too many masters".to_owned())?;
        for slot in start..=end.min(16383) {
            if let Some(s) = usize::try_from(slot).ok().and_then(|s| slots.get_mut(s)) {
                *s = index;
            }
        }
    }
    if masters.is_empty() || slots.contains(&u16::MAX) {
        return Err("the cluster does not cover every slot".into());
    }
    Ok((masters, slots))
}

/// Redis Sentinel settings: the master is looked up at every (re)connect, so a failover is
/// followed by reconnecting.
#[derive(Debug, Clone)]
pub struct Sentinel {
    /// Sentinel addresses, tried in order.
    pub addresses: Vec<Address>,
    /// The monitored master's name.
    pub master_name: String,
    /// `CLIENT SETNAME` on Sentinel connections.
    pub client_name: String,
}

impl Settings {
    /// Settings from `engine.redis` (validated at start).
    pub fn from_config(cfg: &crate::config::Redis) -> Result<Settings, String> {
        let sentinel = if cfg.sentinel_address.is_empty() {
            None
        } else {
            let mut auth = cfg.clone();
            auth.user = cfg.sentinel_user.clone();
            auth.password = cfg.sentinel_password.clone();
            let addresses = cfg
                .sentinel_address
                .iter()
                .map(|a| Address::parse(a, &auth))
                .collect::<Result<Vec<_>, _>>()?;
            Some(Sentinel {
                addresses,
                master_name: cfg.sentinel_master_name.clone(),
                client_name: cfg.sentinel_client_name.clone(),
            })
        };
        // Under Sentinel there is one server, found at connect time; its credentials and
        // database still come from the Redis object.
        let addresses = if sentinel.is_some() {
            vec![Address {
                host: String::new(),
                port: 0,
                user: cfg.user.clone(),
                password: cfg.password.clone(),
                db: cfg.db,
            }]
        } else {
            cfg.address.iter().map(|a| Address::parse(a, cfg)).collect::<Result<Vec<_>, _>>()?
        };
        if addresses.is_empty() {
            return Err("engine.redis.address: no address".to_owned());
        }
        Ok(Settings {
            addresses,
            prefix: cfg.prefix.clone(),
            connect_timeout: cfg.connect_timeout,
            io_timeout: cfg.io_timeout,
            client_name: cfg.client_name.clone(),
            presence_ttl: cfg.presence_ttl,
            sentinel,
            sharded: cfg.sharded_pubsub && !cfg.cluster_address.is_empty(),
            slots: None,
        })
    }

    /// `plain`, or `sharded` in sharded PUB/SUB mode.
    pub fn verb(&self, plain: &'static [u8], sharded: &'static [u8]) -> &'static [u8] {
        if self.sharded {
            sharded
        } else {
            plain
        }
    }

    /// The PUB/SUB channel of a channel.
    pub fn client_channel(&self, channel: &str) -> String {
        format!("{}.client.{}", self.prefix, self.tagged(channel))
    }

    /// The channel as keys carry it: `{channel}` in a cluster.
    fn tagged<'a>(&self, channel: &'a str) -> std::borrow::Cow<'a, str> {
        if self.slots.is_some() {
            format!("{{{channel}}}").into()
        } else {
            channel.into()
        }
    }

    /// The channel named by a PUB/SUB channel name, if it is one of ours.
    fn channel_of<'a>(&self, name: &'a str) -> Option<&'a str> {
        let rest = name.strip_prefix(&self.prefix)?.strip_prefix(".client.")?;
        if self.slots.is_some() {
            rest.strip_prefix('{')?.strip_suffix('}')
        } else {
            Some(rest)
        }
    }

    /// The idempotency result key (also passed, unused, when there is no key: a cluster
    /// wants every key of a script in the channel's slot).
    fn result_key(&self, channel: &str, key: &str) -> String {
        format!("{}.result.{}.{key}", self.prefix, self.tagged(channel))
    }

    /// Index of the server that keeps `channel`.
    pub fn server_of(&self, channel: &str, servers: usize) -> usize {
        match &self.slots {
            Some(slots) => {
                let key = self.key("stream", channel);
                let slot = redis_protocol::redis_keyslot(key.as_bytes());
                usize::from(slots.get(usize::from(slot)).copied().unwrap_or(0))
            }
            None => server_index(channel, servers),
        }
    }

    /// The node-to-node broadcast channel.
    pub fn control_channel(&self) -> String {
        format!("{}.control", self.prefix)
    }

    /// The channel of one node (survey answers).
    pub fn node_channel(&self, uid: &str) -> String {
        format!("{}.node.{uid}", self.prefix)
    }

    fn key(&self, kind: &str, channel: &str) -> String {
        format!("{}.{kind}.{}", self.prefix, self.tagged(channel))
    }
}

/// What to do with the reply to one command.
#[derive(Debug)]
pub enum Then {
    /// Nothing (presence upkeep, join/leave, node announcements).
    Ignore,
    /// Turn the reply into an answer for a parked request.
    Answer(ReplyTo, Parse),
}

/// How a reply becomes a [`Reply`].
#[derive(Debug)]
pub enum Parse {
    /// A publish (history script, idempotent script or PUBLISH).
    Published,
    /// A positioned subscribe: the history script's top, and the recovery read if asked.
    Subscribed(Option<HistoryQuery>),
    /// A history read.
    History(HistoryQuery),
    /// The stream top for the position check (HGET of the meta's offset).
    Top,
    /// Presence entries (HGETALL).
    Presence,
    /// Any success.
    Done,
}

/// Why a command got no usable reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisError {
    /// The link is down or broke before the reply came.
    #[error("redis unavailable")]
    Unavailable,
    /// Redis answered with an error.
    #[error("redis error: {0}")]
    Server(String),
    /// The reply does not have the expected shape.
    #[error("unexpected redis reply: {0}")]
    Shape(&'static str),
}

/// Appends one command as a RESP array of bulk strings.
pub fn encode_command(out: &mut BytesMut, args: &[&[u8]]) {
    let parts: Vec<BorrowedFrame<'_>> = args.iter().map(|a| BorrowedFrame::BulkString(a)).collect();
    // Encoding into a growable buffer only fails on a size overflow, impossible here.
    let _ = redis_protocol::resp2::encode::extend_encode_borrowed(
        out,
        &BorrowedFrame::Array(&parts),
        false,
    );
}

/// Appends the commands that open a connection as `auth` asks (AUTH, SELECT, CLIENT SETNAME);
/// returns how many replies they produce.
pub fn encode_setup(out: &mut BytesMut, auth: &Address, client_name: &str) -> usize {
    let mut n = 0;
    if !auth.password.is_empty() {
        if auth.user.is_empty() {
            encode_command(out, &[b"AUTH", auth.password.as_bytes()]);
        } else {
            encode_command(out, &[b"AUTH", auth.user.as_bytes(), auth.password.as_bytes()]);
        }
        n += 1;
    }
    if auth.db != 0 {
        encode_command(out, &[b"SELECT", auth.db.to_string().as_bytes()]);
        n += 1;
    }
    if !client_name.is_empty() {
        encode_command(out, &[b"CLIENT", b"SETNAME", client_name.as_bytes()]);
        n += 1;
    }
    n
}

/// A command connection's protocol state.
#[derive(Debug, Default)]
pub struct Link {
    /// Encoded commands not yet written.
    pub out: BytesMut,
    /// One entry per command sent or queued, oldest first.
    pub waiting: VecDeque<Then>,
    /// Connected and handshaken.
    pub up: bool,
    /// The writer task waiting for commands.
    pub waker: Option<Waker>,
    /// Since when the oldest outstanding command has waited without any reply coming (`None`
    /// when nothing is outstanding): a link silent for `io_timeout` with work pending is broken.
    pub stalled_since: Option<std::time::Instant>,
}

impl Link {
    /// Queues a command; `Err` gives `then` back when the link is down.
    pub fn push(&mut self, args: &[&[u8]], then: Then) -> Result<(), Then> {
        if !self.up {
            return Err(then);
        }
        encode_command(&mut self.out, args);
        if self.waiting.is_empty() {
            self.stalled_since = Some(std::time::Instant::now());
        }
        self.waiting.push_back(then);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
        Ok(())
    }

    /// The reply to the oldest outstanding command.
    pub fn pop(&mut self) -> Option<Then> {
        let then = self.waiting.pop_front()?;
        self.stalled_since = (!self.waiting.is_empty()).then(std::time::Instant::now);
        Some(then)
    }

    /// Whether commands have waited `limit` without a single reply.
    pub fn stalled(&self, limit: Duration) -> bool {
        self.stalled_since.is_some_and(|t| t.elapsed() >= limit)
    }

    /// The link broke: everything outstanding fails.
    pub fn down(&mut self) -> Vec<Then> {
        self.stalled_since = None;
        self.up = false;
        self.out.clear();
        self.waiting.drain(..).collect()
    }
}

/// One channel in the PUB/SUB link.
#[derive(Debug, Default)]
pub struct SubEntry {
    /// The channel has interest; a SUBSCRIBE was (or will be) sent.
    pub wanted: bool,
    /// SUBSCRIBE commands sent and not yet confirmed.
    pub inflight: u32,
    /// Interest acknowledgements to send once confirmed: (shard, generation).
    pub acks: Vec<(ShardId, u64)>,
    /// Subscribe calls to serve once confirmed.
    pub deferred: Vec<(ReplyTo, SubscribeCall)>,
}

impl SubEntry {
    /// Redis delivers this channel's messages to us.
    pub fn active(&self) -> bool {
        self.wanted && self.inflight == 0
    }
}

/// A PUB/SUB connection's protocol state.
#[derive(Debug, Default)]
pub struct PubSub {
    /// Encoded SUBSCRIBE/UNSUBSCRIBE commands not yet written.
    pub out: BytesMut,
    /// Connected and handshaken.
    pub up: bool,
    /// The writer task waiting for commands.
    pub waker: Option<Waker>,
    /// Channels (plain names) wanted or with unconfirmed commands.
    pub channels: HashMap<Arc<str>, SubEntry>,
}

impl PubSub {
    fn send(&mut self, verb: &[u8], name: &str) {
        encode_command(&mut self.out, &[verb, name.as_bytes()]);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// The channel gained interest: subscribe unless already wanted. Returns whether Redis
    /// already delivers it (acks and calls can proceed at once).
    pub fn want(&mut self, settings: &Settings, channel: &Arc<str>) -> bool {
        let up = self.up;
        let e = self.channels.entry(Arc::clone(channel)).or_default();
        if e.wanted {
            return e.active() && up;
        }
        e.wanted = true;
        if up {
            e.inflight += 1;
            let name = settings.client_channel(channel);
            self.send(settings.verb(b"SUBSCRIBE", b"SSUBSCRIBE"), &name);
        }
        false
    }

    /// The channel lost its last interest.
    pub fn unwant(&mut self, settings: &Settings, channel: &str) {
        let Some(e) = self.channels.get_mut(channel) else { return };
        e.wanted = false;
        if e.inflight == 0 {
            self.channels.remove(channel);
        }
        if self.up {
            let name = settings.client_channel(channel);
            self.send(settings.verb(b"UNSUBSCRIBE", b"SUNSUBSCRIBE"), &name);
        }
    }

    /// Redis confirmed a SUBSCRIBE: returns the held work when the channel became active.
    pub fn confirmed(&mut self, channel: &str) -> Option<SubEntry> {
        let e = self.channels.get_mut(channel)?;
        e.inflight = e.inflight.saturating_sub(1);
        if !e.wanted {
            if e.inflight == 0 {
                self.channels.remove(channel);
            }
            return None;
        }
        if e.inflight > 0 {
            return None;
        }
        Some(SubEntry {
            wanted: true,
            inflight: 0,
            acks: std::mem::take(&mut e.acks),
            deferred: std::mem::take(&mut e.deferred),
        })
    }

    /// The connection is (again) up: subscribe every wanted channel plus `extra` (control).
    pub fn resubscribe(&mut self, settings: &Settings, extra: &[String]) {
        self.up = true;
        self.channels.retain(|_, e| e.wanted);
        let mut names: Vec<String> = Vec::new();
        for (channel, e) in &mut self.channels {
            e.inflight = 1;
            names.push(settings.client_channel(channel));
        }
        if !extra.is_empty() {
            let mut args: Vec<&[u8]> = vec![b"SUBSCRIBE"];
            args.extend(extra.iter().map(|n| n.as_bytes()));
            encode_command(&mut self.out, &args);
        }
        if settings.sharded {
            // One SSUBSCRIBE per channel: a command may only name channels of one slot.
            for name in &names {
                encode_command(&mut self.out, &[b"SSUBSCRIBE", name.as_bytes()]);
            }
        } else {
            for chunk in names.chunks(512) {
                let mut args: Vec<&[u8]> = vec![b"SUBSCRIBE"];
                args.extend(chunk.iter().map(|n| n.as_bytes()));
                encode_command(&mut self.out, &args);
            }
        }
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// The connection broke: held subscribe calls are returned to be failed (positioned
    /// subscribers retry). Held acknowledgements stay, and so do wanted channels: they are
    /// subscribed again on reconnect and the acknowledgements go out once Redis confirms, so a
    /// subscribe reply still promises every publication after it.
    pub fn down(&mut self) -> Vec<(ReplyTo, SubscribeCall)> {
        self.up = false;
        self.out.clear();
        let mut calls = Vec::new();
        for e in self.channels.values_mut() {
            e.inflight = 0;
            calls.append(&mut e.deferred);
        }
        self.channels.retain(|_, e| e.wanted);
        calls
    }
}

/// One Redis server as a shard sees it: both links and the loaded script SHAs.
#[derive(Debug, Default)]
pub struct Server {
    /// Commands.
    pub cmd: Link,
    /// PUB/SUB.
    pub sub: PubSub,
    /// SHA1 of each script, in [`Script`] order, loaded at connect.
    pub shas: Vec<String>,
}

impl Server {
    fn eval(
        &mut self,
        script: Script,
        keys: &[&str],
        args: &[&[u8]],
        then: Then,
    ) -> Result<(), Then> {
        let Some(sha) = self.shas.get(script as usize) else { return Err(then) };
        let n = keys.len().to_string();
        let mut all: Vec<&[u8]> = vec![b"EVALSHA", sha.as_bytes(), n.as_bytes()];
        all.extend(keys.iter().map(|k| k.as_bytes()));
        all.extend_from_slice(args);
        self.cmd.push(&all, then)
    }
}

/// The per-shard engine: settings and one [`Server`] per configured address.
#[derive(Debug)]
pub struct Redis {
    /// Shared settings.
    pub settings: Arc<Settings>,
    /// Redis is the broker (publications, history, PUB/SUB, control channel).
    pub broker: bool,
    /// Redis keeps presence.
    pub presence: bool,
    /// In `settings.addresses` order; the first also carries the control channel.
    pub servers: Vec<Server>,
}

/// Jump consistent hash (Lamping & Veach) of the channel's 64-bit FNV-1a: the index of the
/// Redis server that keeps a channel, the same one Centrifugo picks.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss,
    reason = "the jump hash is defined in float arithmetic; its result is below `servers`"
)]
pub fn server_index(channel: &str, servers: usize) -> usize {
    let mut key = channel.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let (mut b, mut j) = (-1_i64, 0_i64);
    while j < servers as i64 {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1_i64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    usize::try_from(b).unwrap_or(0)
}

/// A message that arrived on the PUB/SUB link.
#[derive(Debug)]
pub enum Incoming {
    /// An event of a channel.
    Event(Arc<str>, Event),
    /// A SUBSCRIBE confirmation.
    Subscribed(Arc<str>),
    /// A control-channel message (node announcements).
    Control(Bytes),
    /// Nothing to act on.
    Other,
}

impl Redis {
    /// A shard's engine before its links connect.
    pub fn new(settings: Arc<Settings>, broker: bool, presence: bool) -> Redis {
        let servers = settings.addresses.iter().map(|_| Server::default()).collect();
        Redis { settings, broker, presence, servers }
    }

    /// The server that keeps `channel`.
    pub fn server(&mut self, channel: &str) -> &mut Server {
        let i = self.settings.server_of(channel, self.servers.len()).min(self.servers.len() - 1);
        &mut self.servers[i]
    }

    /// Every link of every server is up (PUB/SUB only when Redis is the broker).
    pub fn up(&self) -> bool {
        self.servers.iter().all(|s| s.cmd.up && (s.sub.up || !self.broker))
    }

    /// Publishes: with history through the history script (which also publishes), otherwise a
    /// plain PUBLISH, or the idempotency script when a key is given.
    #[allow(
        clippy::too_many_arguments,
        reason = "a publish request's parts, as the script takes them"
    )]
    pub fn publish(
        &mut self,
        channel: &str,
        publication: &Publication,
        history: HistoryPolicy,
        idempotency_key: Option<&str>,
        version: Option<&(u64, String)>,
        now_ms: u64,
        then: Then,
    ) -> Result<(), Then> {
        let s = Arc::clone(&self.settings);
        let delta_flag = !history.enabled() && publication.delta_eligible;
        let time = i64::try_from(now_ms).unwrap_or(i64::MAX);
        let payload = protobuf::broker_publication(publication, time, delta_flag);
        let pubsub = s.client_channel(channel);
        let result_key = s.result_key(channel, idempotency_key.unwrap_or(""));
        let result_ttl = if idempotency_key.is_some() {
            IDEMPOTENCY_TTL_SECS.to_string()
        } else {
            String::new()
        };
        if history.enabled() {
            let stream = s.key("stream", channel);
            let meta = s.key("stream.meta", channel);
            let size = history.size.to_string();
            let ttl = secs(history.ttl).max(1).to_string();
            let meta_ttl = secs(history.meta_ttl).to_string();
            let epoch = new_epoch();
            let (v, ve) =
                version.map_or(("0".to_owned(), ""), |(v, e)| (v.to_string(), e.as_str()));
            let delta = if publication.delta_eligible { "1" } else { "0" };
            return self.server(channel).eval(
                Script::PublishHistory,
                &[&stream, &meta, &result_key],
                &[
                    &payload,
                    size.as_bytes(),
                    ttl.as_bytes(),
                    pubsub.as_bytes(),
                    meta_ttl.as_bytes(),
                    epoch.as_bytes(),
                    s.verb(b"publish", b"spublish"),
                    result_ttl.as_bytes(),
                    delta.as_bytes(),
                    v.as_bytes(),
                    ve.as_bytes(),
                ],
                then,
            );
        }
        match idempotency_key {
            Some(_) => self.server(channel).eval(
                Script::PublishIdempotent,
                &[&result_key],
                &[
                    &payload,
                    pubsub.as_bytes(),
                    s.verb(b"publish", b"spublish"),
                    result_ttl.as_bytes(),
                ],
                then,
            ),
            None => {
                let verb = s.verb(b"PUBLISH", b"SPUBLISH");
                self.server(channel).cmd.push(&[verb, pubsub.as_bytes(), &payload], then)
            }
        }
    }

    /// Publishes a join or leave event to every node.
    pub fn publish_presence_event(&mut self, channel: &str, info: &ClientInfo, join: bool) {
        let mut payload = if join { b"__j__".to_vec() } else { b"__l__".to_vec() };
        payload.extend_from_slice(&protobuf::encode_client_info(info));
        let pubsub = self.settings.client_channel(channel);
        let verb = self.settings.verb(b"PUBLISH", b"SPUBLISH");
        let _ = self.server(channel).cmd.push(&[verb, pubsub.as_bytes(), &payload], Then::Ignore);
    }

    /// Reads the stream position and, when `query` asks for publications, a page of history.
    pub fn history(
        &mut self,
        channel: &str,
        policy: HistoryPolicy,
        query: Option<&HistoryQuery>,
        then: Then,
    ) -> Result<(), Then> {
        let s = Arc::clone(&self.settings);
        let stream = s.key("stream", channel);
        let meta = s.key("stream.meta", channel);
        let (mut include, mut from, mut limit, mut reverse) = ("0", 0u64, 0usize, false);
        if let Some(q) = query {
            include = if q.limit == Some(0) { "0" } else { "1" };
            limit = q.limit.unwrap_or(0);
            reverse = q.reverse;
            if let Some(since) = &q.since {
                if q.reverse {
                    from = since.offset.saturating_sub(1);
                    if from == 0 {
                        include = "0";
                    }
                } else {
                    from = since.offset + 1;
                }
            }
        }
        let from = from.to_string();
        let limit = limit.to_string();
        let meta_ttl = secs(policy.meta_ttl).to_string();
        let epoch = new_epoch();
        self.server(channel).eval(
            Script::History,
            &[&stream, &meta],
            &[
                include.as_bytes(),
                from.as_bytes(),
                limit.as_bytes(),
                if reverse { b"1" } else { b"0" },
                meta_ttl.as_bytes(),
                epoch.as_bytes(),
            ],
            then,
        )
    }

    /// The stream's top offset, without creating the meta when it is gone.
    pub fn top(&mut self, channel: &str, then: Then) -> Result<(), Then> {
        let meta = self.settings.key("stream.meta", channel);
        self.server(channel).cmd.push(&[b"HGET", meta.as_bytes(), b"s"], then)
    }

    /// Drops a channel's stored publications (the meta, and so the position, stays).
    pub fn remove_history(&mut self, channel: &str, then: Then) -> Result<(), Then> {
        let stream = self.settings.key("stream", channel);
        self.server(channel).cmd.push(&[b"DEL", stream.as_bytes()], then)
    }

    /// Adds or refreshes a presence entry.
    pub fn presence_add(&mut self, channel: &str, info: &ClientInfo, now_ms: u64) {
        let s = Arc::clone(&self.settings);
        let ttl = secs(s.presence_ttl).max(1);
        let expire_at = (now_ms / 1000 + ttl).to_string();
        let ttl = ttl.to_string();
        let value = protobuf::encode_client_info(info);
        let _ = self.server(channel).eval(
            Script::PresenceAdd,
            &[&s.key("presence.expire", channel), &s.key("presence.data", channel)],
            &[ttl.as_bytes(), expire_at.as_bytes(), info.client.as_bytes(), &value],
            Then::Ignore,
        );
    }

    /// Removes a presence entry.
    pub fn presence_remove(&mut self, channel: &str, client: &str) {
        let s = Arc::clone(&self.settings);
        let _ = self.server(channel).eval(
            Script::PresenceRemove,
            &[&s.key("presence.expire", channel), &s.key("presence.data", channel)],
            &[client.as_bytes()],
            Then::Ignore,
        );
    }

    /// Reads a channel's live presence entries.
    pub fn presence(&mut self, channel: &str, now_ms: u64, then: Then) -> Result<(), Then> {
        let s = Arc::clone(&self.settings);
        let now = (now_ms / 1000).to_string();
        self.server(channel).eval(
            Script::PresenceGet,
            &[&s.key("presence.expire", channel), &s.key("presence.data", channel)],
            &[now.as_bytes()],
            then,
        )
    }

    /// Publishes a control message to every node.
    pub fn publish_control(&mut self, data: &[u8]) {
        let name = self.settings.control_channel();
        let _ = self.servers[0].cmd.push(&[b"PUBLISH", name.as_bytes(), data], Then::Ignore);
    }

    /// Publishes a control message to one node.
    pub fn publish_to_node(&mut self, uid: &str, data: &[u8]) {
        let name = self.settings.node_channel(uid);
        let _ = self.servers[0].cmd.push(&[b"PUBLISH", name.as_bytes(), data], Then::Ignore);
    }

    /// Classifies a frame from the PUB/SUB link.
    pub fn incoming(&self, frame: BytesFrame) -> Incoming {
        let BytesFrame::Array(parts) = frame else { return Incoming::Other };
        let mut parts = parts.into_iter();
        let (Some(kind), Some(name)) = (parts.next(), parts.next()) else {
            return Incoming::Other;
        };
        let (Some(kind), Some(name)) = (bytes_of(&kind), bytes_of(&name)) else {
            return Incoming::Other;
        };
        let Ok(name) = std::str::from_utf8(&name) else { return Incoming::Other };
        match &kind[..] {
            b"subscribe" | b"ssubscribe" => match self.settings.channel_of(name) {
                Some(channel) => Incoming::Subscribed(Arc::from(channel)),
                None => Incoming::Other,
            },
            b"message" | b"smessage" => {
                let Some(payload) = parts.next().as_ref().and_then(bytes_of) else {
                    return Incoming::Other;
                };
                if name == self.settings.control_channel()
                    || name == self.settings.node_channel(&crate::node::get().uid)
                {
                    return Incoming::Control(payload);
                }
                let Some(channel) = self.settings.channel_of(name) else {
                    return Incoming::Other;
                };
                match parse_message(&payload) {
                    Some(event) => Incoming::Event(Arc::from(channel), event),
                    None => {
                        tracing::warn!(channel, "undecodable message on a Redis channel");
                        Incoming::Other
                    }
                }
            }
            _ => Incoming::Other,
        }
    }
}

fn secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn bytes_of(f: &BytesFrame) -> Option<Bytes> {
    match f {
        BytesFrame::BulkString(b) | BytesFrame::SimpleString(b) => Some(b.clone()),
        _ => None,
    }
}

fn u64_of(f: &BytesFrame) -> Option<u64> {
    match f {
        BytesFrame::Integer(i) => u64::try_from(*i).ok(),
        BytesFrame::BulkString(b) | BytesFrame::SimpleString(b) => {
            std::str::from_utf8(b).ok()?.parse().ok()
        }
        BytesFrame::Null => Some(0),
        _ => None,
    }
}

fn string_of(f: &BytesFrame) -> Option<String> {
    bytes_of(f).and_then(|b| String::from_utf8(b.to_vec()).ok())
}

/// Decodes a PUB/SUB payload on `P.client.<channel>` (spec §10.1).
pub fn parse_message(payload: &[u8]) -> Option<Event> {
    if let Some(rest) = payload.strip_prefix(b"__j__") {
        return protobuf::decode_client_info(rest).ok().map(|i| Event::Join(Arc::new(i)));
    }
    if let Some(rest) = payload.strip_prefix(b"__l__") {
        return protobuf::decode_client_info(rest).ok().map(|i| Event::Leave(Arc::new(i)));
    }
    if let Some(rest) = payload.strip_prefix(b"__p1:") {
        // offset:epoch__<publication>
        let colon = rest.iter().position(|&b| b == b':')?;
        let offset: u64 = std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()?;
        let after = &rest[colon + 1..];
        let end = after.windows(2).position(|w| w == b"__")?;
        let mut p = protobuf::decode_broker_publication(&after[end + 2..]).ok()?;
        p.offset = offset;
        return Some(Event::Pub(Arc::new(p)));
    }
    if let Some(rest) = payload.strip_prefix(b"__d1:") {
        // offset:epoch:len(prev):prev:len(cur):cur
        let (offset, rest) = split_field(rest)?;
        let offset: u64 = std::str::from_utf8(offset).ok()?.parse().ok()?;
        let (_epoch, rest) = split_field(rest)?;
        let (prev_len, rest) = split_field(rest)?;
        let prev_len: usize = std::str::from_utf8(prev_len).ok()?.parse().ok()?;
        let rest = rest.get(prev_len + 1..)?;
        let (cur_len, rest) = split_field(rest)?;
        let cur_len: usize = std::str::from_utf8(cur_len).ok()?.parse().ok()?;
        let mut p = protobuf::decode_broker_publication(rest.get(..cur_len)?).ok()?;
        p.offset = offset;
        p.delta_eligible = true;
        return Some(Event::Pub(Arc::new(p)));
    }
    protobuf::decode_broker_publication(payload).ok().map(|p| Event::Pub(Arc::new(p)))
}

fn split_field(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = b.iter().position(|&c| c == b':')?;
    Some((&b[..i], &b[i + 1..]))
}

/// Turns a command reply into the answer its caller waits for.
pub fn answer(parse: Parse, reply: Result<BytesFrame, RedisError>) -> Reply {
    match parse_answer(parse, reply) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "redis command failed");
            Reply::Failed
        }
    }
}

fn parse_answer(parse: Parse, reply: Result<BytesFrame, RedisError>) -> Result<Reply, RedisError> {
    let reply = reply?;
    if let BytesFrame::Error(e) = &reply {
        return Err(RedisError::Server(e.to_string()));
    }
    Ok(match parse {
        Parse::Done => Reply::Done,
        Parse::Published => match &reply {
            // PUBLISH, or the idempotency script's first publish: no position.
            BytesFrame::Integer(_) => Reply::Published(None),
            BytesFrame::Array(a) if a.len() >= 2 => {
                let offset = u64_of(&a[0]).ok_or(RedisError::Shape("offset"))?;
                let epoch = string_of(&a[1]).ok_or(RedisError::Shape("epoch"))?;
                // A repeated idempotency key of a publish without history has no position.
                if epoch.is_empty() {
                    Reply::Published(None)
                } else {
                    Reply::Published(Some(Position { offset, epoch }))
                }
            }
            _ => return Err(RedisError::Shape("publish reply")),
        },
        Parse::Top => match &reply {
            BytesFrame::Null => Reply::Position(None),
            other => Reply::Position(Some(u64_of(other).ok_or(RedisError::Shape("offset"))?)),
        },
        Parse::Subscribed(query) => {
            let (read, top) = stream_reply(&reply, query.as_ref())?;
            Reply::Subscribed { top: Some(top), read }
        }
        Parse::History(query) => {
            let (read, top) = stream_reply(&reply, Some(&query))?;
            Reply::History(read.map(|pubs| (pubs, top)))
        }
        Parse::Presence => {
            let BytesFrame::Array(items) = reply else {
                return Err(RedisError::Shape("presence reply"));
            };
            let mut out = Vec::with_capacity(items.len() / 2);
            for pair in items.chunks(2) {
                let Some(value) = pair.get(1).and_then(bytes_of) else { continue };
                if let Ok(info) = protobuf::decode_client_info(&value) {
                    out.push(Arc::new(info));
                }
            }
            Reply::Presence(out)
        }
    })
}

type Read = Result<Vec<Arc<Publication>>, HistoryError>;

/// Reads the history script's `{top, epoch, entries?}`.
fn stream_reply(
    reply: &BytesFrame,
    query: Option<&HistoryQuery>,
) -> Result<(Read, Position), RedisError> {
    let BytesFrame::Array(a) = reply else { return Err(RedisError::Shape("history reply")) };
    let offset = a.first().and_then(u64_of).ok_or(RedisError::Shape("top offset"))?;
    let epoch = a.get(1).and_then(string_of).ok_or(RedisError::Shape("epoch"))?;
    let top = Position { offset, epoch };
    if let Some(since) = query.and_then(|q| q.since.as_ref()) {
        if !since.epoch.is_empty() && since.epoch != top.epoch {
            return Ok((Err(HistoryError::UnrecoverablePosition), top));
        }
    }
    let mut pubs = Vec::new();
    if let Some(BytesFrame::Array(entries)) = a.get(2) {
        pubs.reserve(entries.len());
        for entry in entries {
            pubs.push(Arc::new(stream_entry(entry)?));
        }
    }
    Ok((Ok(pubs), top))
}

/// One stream entry `[id, [field, value, …]]` → publication with the offset from the id.
fn stream_entry(entry: &BytesFrame) -> Result<Publication, RedisError> {
    let BytesFrame::Array(parts) = entry else { return Err(RedisError::Shape("stream entry")) };
    let id = parts.first().and_then(string_of).ok_or(RedisError::Shape("entry id"))?;
    let offset: u64 =
        id.split('-').next().and_then(|o| o.parse().ok()).ok_or(RedisError::Shape("entry id"))?;
    let Some(BytesFrame::Array(fields)) = parts.get(1) else {
        return Err(RedisError::Shape("entry fields"));
    };
    let data = fields
        .chunks(2)
        .find(|kv| bytes_of(&kv[0]).is_some_and(|k| &k[..] == b"d"))
        .and_then(|kv| kv.get(1).and_then(bytes_of))
        .ok_or(RedisError::Shape("entry without d"))?;
    let mut p =
        protobuf::decode_broker_publication(&data).map_err(|_| RedisError::Shape("publication"))?;
    p.offset = offset;
    Ok(p)
}

#[cfg(test)]
mod tests;

impl crate::broker::Broker for Redis {
    fn publish(&mut self, p: PublishCall, to: ReplyTo, now_ms: u64, out: &mut Outbox) {
        let then = Then::Answer(to, Parse::Published);
        let key = p.idempotency_key.as_deref();
        let version = p.version.as_ref();
        let sent =
            Redis::publish(self, &p.channel, &p.publication, p.history, key, version, now_ms, then);
        if sent.is_err() {
            out.answer(to, Reply::Failed);
        }
    }

    fn publish_presence_event(
        &mut self,
        channel: &Arc<str>,
        info: Arc<ClientInfo>,
        join: bool,
        _: &mut Outbox,
    ) {
        Redis::publish_presence_event(self, channel, &info, join);
    }

    fn history(
        &mut self,
        channel: &Arc<str>,
        policy: HistoryPolicy,
        query: HistoryQuery,
        to: ReplyTo,
        _: u64,
        out: &mut Outbox,
    ) {
        let then = Then::Answer(to, Parse::History(query.clone()));
        if Redis::history(self, channel, policy, Some(&query), then).is_err() {
            out.answer(to, Reply::Failed);
        }
    }

    fn remove_history(&mut self, channel: &str, to: ReplyTo, out: &mut Outbox) {
        if Redis::remove_history(self, channel, Then::Answer(to, Parse::Done)).is_err() {
            out.answer(to, Reply::Failed);
        }
    }

    fn top(&mut self, channel: &str, to: ReplyTo, out: &mut Outbox) {
        if Redis::top(self, channel, Then::Answer(to, Parse::Top)).is_err() {
            out.answer(to, Reply::Failed);
        }
    }

    fn gate(&mut self, sub: SubscribeCall, to: ReplyTo) -> Gate {
        let pubsub = &mut self.server(&sub.channel).sub;
        if !pubsub.up {
            return Gate::Refused;
        }
        match pubsub.channels.get_mut(&sub.channel) {
            Some(e) if !e.active() => {
                e.deferred.push((to, sub));
                Gate::Held
            }
            Some(_) => Gate::Open(sub),
            // Interest always precedes the call on the lane; a channel without it lost its
            // last subscriber meanwhile and the answer no longer matters.
            None => Gate::Refused,
        }
    }

    fn read_position(
        &mut self,
        channel: &Arc<str>,
        policy: HistoryPolicy,
        query: Option<HistoryQuery>,
        to: ReplyTo,
        _: u64,
        out: &mut Outbox,
    ) {
        let then = Then::Answer(to, Parse::Subscribed(query.clone()));
        if Redis::history(self, channel, policy, query.as_ref(), then).is_err() {
            out.answer(to, Reply::Failed);
        }
    }

    fn want(&mut self, channel: &Arc<str>, ack: Option<(ShardId, u64)>) -> bool {
        let settings = Arc::clone(&self.settings);
        let pubsub = &mut self.server(channel).sub;
        if pubsub.want(&settings, channel) {
            return true;
        }
        if let (Some(ack), Some(e)) = (ack, pubsub.channels.get_mut(channel)) {
            e.acks.push(ack);
        }
        false
    }

    fn unwant(&mut self, channel: &str) {
        let settings = Arc::clone(&self.settings);
        self.server(channel).sub.unwant(&settings, channel);
    }

    fn publish_control(&mut self, data: &[u8]) {
        Redis::publish_control(self, data);
    }

    fn publish_to_node(&mut self, uid: &str, data: &[u8]) {
        Redis::publish_to_node(self, uid, data);
    }

    fn connects_nodes(&self) -> bool {
        true
    }
}
