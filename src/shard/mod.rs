//! The shard: one glommio executor on one core and everything it owns, as a composition of
//! parts that each own their state:
//!
//! | part | module | owns |
//! |---|---|---|
//! | connections | `client::conn` (commands: [`Clients`]) | sessions, outbound queues, timers, commands in flight |
//! | hub | `hub` (+ `hub::fanout`) | channel → local subscribers, registration with home shards |
//! | home | `channel::home` | interest sets, presence and user counts of the channels and users homed here |
//! | engine | [`engine`] | the brokers (memory, Redis, NATS) and presence manager of the home channels |
//! | mesh | [`mesh`] | lanes to other shards, spill queues, parked requests, messages to itself |
//! | control | [`survey`], `control` (shard 0) | other nodes heard on the control channel, surveys |
//!
//! [`Shard::receive`] dispatches a message to the part that handles it; a handler borrows only
//! the parts it needs (a client command gets the [`Clients`] view: connections, hub, mesh,
//! flights). Messages a part sends to this same shard wait in the mesh and are handled by
//! [`Shard::settle`] after the current handler returns, in order, exactly as a peer would see
//! them; every public entry point settles before it returns.
//!
//! The shard is one plain struct behind a single `Rc<RefCell<_>>` per executor ([`ShardRef`]) so
//! that the executor's tasks can reach it. Borrows are short and never held across `.await`
//! (clippy's `await_holding_refcell_ref` is an error).
//!
//! Must not: block, await while borrowed, or send a request that makes a home shard wait on a
//! third shard (every cross-shard call is one hop: requester → home → reply).

mod control;
pub mod engine;
pub mod id;
pub mod inbox;
mod links;
pub mod mesh;
pub mod msg;
#[cfg(test)]
mod sim_tests;
pub mod survey;

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use glommio::net::AcceptedTcpStream;

use crate::broker::control::Registry;
use crate::broker::{Effect, Event, Outbox, ReplyTo};
use crate::channel::home::Home;
use crate::client::conn::{ConnKey, Conns, ProxyContext};
use crate::client::flight::Flights;
use crate::client::{Clients, Env, Resume, Step};
use crate::config::Config;
use crate::hub::Hub;
use crate::metrics::{BrokerMessage, FrameType, ShardMetrics, ShardSnapshot, TransportLabel};
use crate::protocol::{codes, Command};
use crate::shard::engine::Engine;
use crate::shard::id::{Lane, RequestId, ShardId};
use crate::shard::mesh::Mesh;
use crate::shard::msg::{Answer, Call, Cast, Frame, ShardCounts, ShardMsg};
use crate::transport::{deflate, Transport};

/// The shard state shared by the tasks of one executor.
pub type ShardRef = Rc<RefCell<Shard>>;

/// Counters the shard keeps for observability, summed from its parts.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Deliveries dropped because a peer lane stayed full.
    pub deliveries_dropped: u64,
    /// Requests refused because a peer lane stayed full.
    pub calls_refused: u64,
    /// Publications handed to local subscribers.
    pub messages_sent: u64,
    /// Clients disconnected for overflowing their queue (3008).
    pub slow_disconnects: u64,
}

/// Everything one shard owns.
pub struct Shard {
    env: Env,
    conns: Conns,
    flights: Flights<Resume>,
    hub: Hub,
    mesh: Mesh,
    home: Home,
    engine: Engine,
    /// What the brokers left to do; drained after every call into them.
    out: Outbox,
    /// Other nodes heard on the control channel (shard 0).
    nodes: Registry,
    /// Surveys of other nodes (shard 0).
    surveys: survey::Surveys,
    metrics: ShardMetrics,
    /// Shard 0: the node's latest `info` metrics (`server::ops::aggregate_info`).
    info_metrics: Option<Box<crate::metrics::info::NodeInfo>>,
    /// Backend proxy calls waiting for this shard's HTTP client task.
    calls: crate::proxy::Calls,
    shutting_down: bool,
    /// Tasks to wake when shutdown starts (accept loops, idle HTTP connections).
    shutdown_wakers: Vec<Waker>,
    /// Bumped on every timer tick; the supervisor's systemd watchdog only pings while every
    /// shard's counter moves (a stuck shard stops the pings).
    heartbeat: Arc<AtomicU64>,
    next_sweep: Instant,
    next_presence_refresh: Instant,
}

/// The compression settings of `/connection/websocket` and `uni_websocket`.
fn compression(cfg: &crate::config::Config) -> [deflate::Settings; 2] {
    let (bidi, uni) = (&cfg.websocket, &cfg.uni_websocket);
    [
        deflate::Settings::new(bidi.compression_level, bidi.compression_min_size),
        deflate::Settings::new(uni.compression_level, uni.compression_min_size),
    ]
}

impl Shard {
    /// Shard `id` of `count`, with no connections. `connected` counts connected clients across
    /// the process; `heartbeat` is the watchdog's view of this shard.
    pub fn new(
        id: ShardId,
        count: usize,
        env: Env,
        connected: Arc<AtomicUsize>,
        heartbeat: Arc<AtomicU64>,
    ) -> Self {
        let now = env.clock.now();
        let first_sweep = now + env.cfg.client.channel_position_check_delay;
        let compression = compression(&env.cfg);
        Shard {
            env,
            conns: Conns::new(connected, compression),
            flights: Flights::default(),
            hub: Hub::default(),
            mesh: Mesh::new(id, count),
            home: Home::default(),
            engine: Engine::default(),
            out: Outbox::default(),
            nodes: Registry::default(),
            surveys: survey::Surveys::default(),
            metrics: ShardMetrics::default(),
            info_metrics: None,
            calls: crate::proxy::Calls::default(),
            shutting_down: false,
            shutdown_wakers: Vec::new(),
            heartbeat,
            next_sweep: first_sweep,
            next_presence_refresh: now,
        }
    }

    /// This shard.
    pub fn id(&self) -> ShardId {
        self.mesh.id()
    }

    /// Shards in the process.
    pub fn count(&self) -> usize {
        self.mesh.count()
    }

    /// The configuration.
    pub fn cfg(&self) -> &Arc<Config> {
        &self.env.cfg
    }

    /// What client commands read (configuration, namespaces, verifiers).
    pub fn env(&self) -> &Env {
        &self.env
    }

    /// The connection table, for what touches one connection only (its queue, its wakers).
    pub fn conns(&mut self) -> &mut Conns {
        &mut self.conns
    }

    /// The mesh part, for boot (joining lanes, starting forwarders).
    pub fn mesh(&mut self) -> &mut Mesh {
        &mut self.mesh
    }

    fn clients(&mut self) -> Clients<'_> {
        Clients {
            env: &self.env,
            conns: &mut self.conns,
            hub: &mut self.hub,
            mesh: &mut self.mesh,
            flights: &mut self.flights,
            metrics: &mut self.metrics,
            calls: &mut self.calls,
            keys_retry: false,
        }
    }

    /// Runs `f` with the connections part (anything that may close a connection or message
    /// another shard), then settles.
    pub fn with_clients<R>(&mut self, f: impl FnOnce(&mut Clients<'_>) -> R) -> R {
        let r = f(&mut self.clients());
        self.settle();
        r
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        let mesh = self.mesh.stats();
        Stats {
            deliveries_dropped: mesh.deliveries_dropped,
            calls_refused: mesh.calls_refused,
            messages_sent: self.metrics.deliveries,
            slow_disconnects: self.metrics.slow_disconnects,
        }
    }

    // ---- messages ------------------------------------------------------------------------

    /// Handles a frame from a peer's lane. Accepted sockets are returned to the caller, which
    /// owns spawning connection tasks.
    pub fn receive(&mut self, frame: Frame) -> Option<AcceptedTcpStream> {
        debug_assert_eq!(frame.to, self.id(), "a frame reached the wrong shard");
        let accepted = self.handle(frame.msg);
        self.settle();
        accepted
    }

    /// Handles the messages this shard sent to itself (and the requests that failed before
    /// reaching their target), until none is left.
    pub fn settle(&mut self) {
        while let Some(msg) = self.mesh.take_local() {
            // Only a peer hands over sockets.
            let _ = self.handle(msg);
        }
    }

    /// A message whose destination shard stopped reading (only during shutdown).
    pub fn undeliverable(&mut self, msg: ShardMsg) {
        self.mesh.undeliverable(msg);
        self.settle();
    }

    fn handle(&mut self, msg: ShardMsg) -> Option<AcceptedTcpStream> {
        match msg {
            ShardMsg::Call { origin, req, call } => {
                // A position travels behind the deliveries already sent to the asking shard
                // (same lane, FIFO): every publication up to the offset it reports has arrived
                // first, so a subscriber's merge drops them instead of doubling them, and a
                // position check that finds the shard behind has found a lost delivery.
                let lane = if matches!(*call, Call::Subscribe(_) | Call::ReadPosition { .. }) {
                    Lane::Main
                } else {
                    Lane::Reply
                };
                self.serve(*call, ReplyTo { origin, req, lane });
            }
            ShardMsg::Answer { req, answer } => {
                if let Some((token, index, answer)) = self.mesh.answered(req, *answer) {
                    self.clients().answered(token, index, answer);
                }
            }
            ShardMsg::Cast(cast) => self.cast(*cast),
            ShardMsg::Interest { channel, shard, subscribed, ack } => {
                let had = self.home.has_interest(&channel);
                let ack_now = self.home.interest(
                    &mut self.engine,
                    &channel,
                    shard,
                    subscribed,
                    ack,
                    &mut self.out,
                );
                match (had, self.home.has_interest(&channel)) {
                    (false, true) => self.metrics.action("broker_subscribe"),
                    (true, false) => self.metrics.action("broker_unsubscribe"),
                    _ => {}
                }
                if let Some(generation) = ack.filter(|_| subscribed && ack_now) {
                    let msg = ShardMsg::InterestAcked { channel, generation };
                    self.mesh.send(Lane::Reply, shard, msg);
                }
                self.flush_effects();
            }
            ShardMsg::InterestAcked { channel, generation } => {
                let mut clients = self.clients();
                for token in clients.hub.acknowledged(&channel, generation) {
                    clients.land(token);
                }
            }
            ShardMsg::Deliver { channel, event } => self.clients().deliver(&channel, &event),
            ShardMsg::Accepted(stream) => return Some(stream),
        }
        None
    }

    /// Counts the node action a request is, under upstream's `action` label.
    fn count_action(&mut self, call: &Call) {
        let action = match call {
            Call::Subscribe(sub) => {
                if sub.presence {
                    self.metrics.action("add_presence");
                }
                match &sub.position {
                    Some((_, Some(_))) if sub.positioned() => "history_recover",
                    Some(_) if sub.positioned() => "history_stream_top",
                    _ => return,
                }
            }
            Call::ReadHistory { .. } => "history",
            Call::RemoveHistory { .. } => "history_remove",
            Call::ReadPresence { .. } => "presence",
            Call::ReadPosition { .. } => "history_stream_top",
            Call::Survey { .. } => "survey",
            _ => return,
        };
        self.metrics.action(action);
    }

    /// Runs a request addressed to this shard and answers it (now, or once a broker replied).
    fn serve(&mut self, call: Call, to: ReplyTo) {
        self.count_action(&call);
        let now = self.env.clock.unix_ms();
        let answer = match call {
            Call::Publish(p) => {
                self.metrics.broker_sent(BrokerMessage::Publication);
                return self.at_home(|h, e, o| h.publish(e, p, to, now, o));
            }
            Call::Subscribe(sub) => {
                if sub.join {
                    self.metrics.broker_sent(BrokerMessage::Join);
                }
                return self.at_home(|h, e, o| h.subscribe(e, sub, to, now, o));
            }
            Call::ReadHistory { channel, policy, query } => {
                return self.at_home(|h, e, o| h.history(e, &channel, policy, query, to, now, o));
            }
            Call::RemoveHistory { channel } => {
                return self.at_home(|_, e, o| e.broker().remove_history(&channel, to, o));
            }
            Call::ReadPresence { channel } => {
                return self.at_home(|h, e, o| h.presence(e, &channel, to, now, o));
            }
            Call::ReadPosition { channel } => {
                return self.at_home(|_, e, o| e.broker().top(&channel, to, o));
            }
            Call::CountChannels { pattern } => Answer::Channels(
                self.hub
                    .counts()
                    .filter(|(c, _)| pattern.as_ref().is_none_or(|p| p.is_match(c.as_ref())))
                    .map(|(c, n)| (Arc::clone(c), u32::try_from(n).unwrap_or(u32::MAX)))
                    .collect(),
            ),
            Call::CountClients => Answer::Counts(Box::new(self.counts())),
            Call::Metrics => Answer::Metrics(Box::new(self.snapshot())),
            Call::InfoMetrics => Answer::InfoMetrics(self.info_metrics.clone()),
            Call::ListNodes => Answer::Nodes(self.nodes.alive(self.env.clock.now())),
            Call::Survey { op, data, to_node } => {
                match self.start_survey(op, data, to_node.as_deref(), to) {
                    Some(answer) => answer,
                    None => return,
                }
            }
            Call::ApplyToConns(op) => {
                self.clients().conns_op(*op);
                Answer::Done
            }
            Call::AdmitUser { user, limit } => Answer::Admitted(self.home.admit_user(user, limit)),
        };
        let msg = ShardMsg::Answer { req: to.req, answer: Box::new(answer) };
        self.mesh.send(to.lane, to.origin, msg);
    }

    fn cast(&mut self, cast: Cast) {
        match cast {
            Cast::Unsubscribed { channel, client, leave } => {
                if leave.is_some() {
                    self.metrics.broker_sent(BrokerMessage::Leave);
                }
                if self.home.in_presence(&channel, &client) {
                    self.metrics.action("remove_presence");
                }
                self.at_home(|h, e, o| h.unsubscribed(e, &channel, &client, leave, o));
            }
            Cast::UserGone { user } => self.home.user_gone(&user),
            Cast::ApplyToConns(op) => self.clients().conns_op(*op),
            Cast::Emulate { session, data, quoted } => {
                self.clients().emulate(session, &data, quoted);
            }
        }
    }

    /// Runs `f` on the home part with the engine, then does what the brokers left to do.
    fn at_home(&mut self, f: impl FnOnce(&mut Home, &mut Engine, &mut Outbox)) {
        f(&mut self.home, &mut self.engine, &mut self.out);
        self.flush_effects();
    }

    /// Does what the brokers left in the outbox, in order: answers go to their requesters,
    /// events to every shard with subscribers, released acknowledgements to their shards, held
    /// subscribes on through the home part, control messages to the control plane.
    fn flush_effects(&mut self) {
        while let Some(effect) = self.out.pop() {
            match effect {
                Effect::Answer(to, reply) => {
                    let answer = Box::new(Answer::Channel(reply));
                    self.mesh.send(to.lane, to.origin, ShardMsg::Answer { req: to.req, answer });
                }
                Effect::Emit(channel, event) => self.emit(&channel, &event),
                Effect::Ack(shard, generation, channel) => {
                    let msg = ShardMsg::InterestAcked { channel, generation };
                    self.mesh.send(Lane::Reply, shard, msg);
                }
                Effect::Resume(to, sub) => {
                    let now = self.env.clock.unix_ms();
                    self.home.subscribe_open(&mut self.engine, sub, to, now, &mut self.out);
                }
                Effect::Control(data) => self.control_message(&data),
            }
        }
    }

    /// Hands an event to every shard with subscribers of a channel homed here.
    fn emit(&mut self, channel: &Arc<str>, event: &Event) {
        if let Event::Pub(p) = event {
            if p.time > 0 {
                let now = i64::try_from(self.env.clock.unix_ms()).unwrap_or(i64::MAX);
                let lag = now.abs_diff(p.time) as f64 / 1000.0;
                self.metrics.pub_sub_lag.observe(lag, &crate::metrics::LAG_BUCKETS);
            }
        }
        self.metrics.broker_received(match event {
            Event::Pub(_) => BrokerMessage::Publication,
            Event::Join(_) => BrokerMessage::Join,
            Event::Leave(_) => BrokerMessage::Leave,
        });
        let Some(targets) = self.home.interested(channel) else { return };
        for shard in targets.iter() {
            let msg = ShardMsg::Deliver { channel: Arc::clone(channel), event: event.clone() };
            self.mesh.send(Lane::Main, shard, msg);
        }
    }

    /// This shard's metrics with the gauges read now.
    fn snapshot(&self) -> ShardSnapshot {
        ShardSnapshot { metrics: self.metrics.clone(), ..self.gauges() }
    }

    /// The gauges of a snapshot (one walk over the connections), without the counters.
    fn gauges(&self) -> ShardSnapshot {
        let mesh = self.mesh.stats();
        let mut s = ShardSnapshot {
            channels: self.home.channels_with_interest(),
            mesh_sent: mesh.sent,
            mesh_spilled: mesh.spilled,
            mesh_dropped: mesh.deliveries_dropped,
            ..ShardSnapshot::default()
        };
        for (_, c) in self.conns.iter() {
            s.queue_bytes += c.queue.bytes() as u64;
            if let Some(session) = c.session() {
                let label = c.label.0 as usize;
                s.inflight[TransportLabel::from(c.transport) as usize][label] += 1;
                s.subscriptions[label] += session.subs.len() as u64;
            }
        }
        s.users = self.conns.users().cloned().collect();
        s.users.sort_unstable();
        s
    }

    /// This shard's share of API `info`.
    fn counts(&self) -> ShardCounts {
        let g = self.gauges();
        ShardCounts {
            clients: g.clients(),
            subs: g.subscriptions.iter().sum(),
            channels: g.channels,
            users: g.users,
        }
    }

    // ---- requests of API tasks -----------------------------------------------------------

    /// Sends a request to shard `to` for an async task, which awaits it with [`PendingAnswer`].
    pub fn call(&mut self, to: ShardId, call: Call) -> RequestId {
        let req = self.mesh.call_for_task(to, call);
        self.settle();
        req
    }

    /// Sends a request to the home shard of `channel` for an async task.
    pub fn call_home(&mut self, channel: &str, call: Call) -> RequestId {
        self.call(self.mesh.home_of(channel), call)
    }

    /// Sends the same request to every shard; the answers come back in shard order.
    pub fn call_all(&mut self, make: impl Fn() -> Call) -> Vec<RequestId> {
        let shards: Vec<ShardId> = self.mesh.all().collect();
        shards.into_iter().map(|s| self.call(s, make())).collect()
    }

    // ---- connection tasks ----------------------------------------------------------------

    /// Registers a new connection (its stale timer starts now); `forwarded`: the headers of
    /// its HTTP request that proxies forward.
    pub fn open_conn(
        &mut self,
        transport: Transport,
        protobuf: bool,
        forwarded: Vec<(String, Vec<u8>)>,
    ) -> ConnKey {
        let key = self.conns.insert(transport, protobuf);
        if !forwarded.is_empty() {
            if let Some(c) = self.conns.get_mut(key) {
                c.proxy = Some(Box::new(ProxyContext {
                    transport: forwarded,
                    ..ProxyContext::default()
                }));
            }
        }
        let now = self.env.clock.now();
        self.clients().start_timers(key, now);
        key
    }

    /// Handles one decoded command from a connection.
    pub fn client_command(&mut self, key: ConnKey, cmd: Command, bytes: usize) -> Step {
        if let Some(c) = self.conns.get(key) {
            let frame = FrameType::of_request(&cmd.request);
            self.metrics.received(c.transport.into(), frame, bytes);
        }
        self.with_clients(|c| c.command(key, cmd))
    }

    /// A key fetch a command waited for ended: the command runs again.
    pub fn keys_fetched(&mut self, flight: u64) {
        self.with_clients(|c| c.land(flight));
    }

    /// The next backend proxy call for this shard's HTTP client task to start.
    pub fn poll_proxy_call(&mut self, cx: &mut Context<'_>) -> Poll<crate::proxy::Job> {
        self.calls.poll_next(cx)
    }

    /// A backend proxy call ended: the command waiting for it resumes.
    pub fn proxy_answered(&mut self, token: u64, outcome: crate::proxy::Outcome) {
        self.calls.done();
        self.with_clients(|c| c.answered(token, 0, Answer::Proxy(outcome)));
    }

    /// The backend proxies (the server layer reads which request headers to keep).
    pub fn proxies(&self) -> &Arc<crate::proxy::Proxies> {
        &self.env.proxies
    }

    /// Whether a connection may take its next command: `Ready(false)` when it is idle,
    /// `Ready(true)` when it is closing (or gone) and takes no more.
    pub fn poll_idle(&mut self, key: ConnKey, cx: &mut Context<'_>) -> Poll<bool> {
        match self.conns.get_mut(key) {
            None => Poll::Ready(true),
            Some(c) if c.closing.is_some() => Poll::Ready(true),
            Some(c) if !c.busy => Poll::Ready(false),
            Some(c) => {
                c.reader = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    // ---- timers and shutdown -------------------------------------------------------------

    /// One tick of the timer task: fires due connection timers and does the periodic upkeep;
    /// returns when the next timer is due.
    pub fn tick(&mut self) -> Option<Instant> {
        let now = self.env.clock.now();
        self.heartbeat.fetch_add(1, Ordering::Relaxed);
        self.sweep(now);
        let next = self.clients().run_timers(now);
        self.settle();
        next
    }

    /// Periodic upkeep: refreshes this node's presence entries in Redis every
    /// `client.presence_update_interval`; at most once per `client.channel_position_check_delay`
    /// (at least a second) checks the positions of local subscribers' channels and sweeps the
    /// memory broker's streams.
    fn sweep(&mut self, now: Instant) {
        let now_ms = self.env.clock.unix_ms();
        if self.engine.presence_in_redis() && now >= self.next_presence_refresh {
            self.next_presence_refresh = now + self.env.cfg.client.presence_update_interval;
            self.engine.refresh_presence(self.home.presence_entries(), now_ms);
        }
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + self.sweep_every();
        self.clients().check_positions();
        let home = &self.home;
        self.engine.memory().sweep(now_ms, |ch| home.has_interest(ch));
    }

    fn sweep_every(&self) -> Duration {
        self.env.cfg.client.channel_position_check_delay.max(Duration::from_secs(1))
    }

    /// Starts shutdown: tasks waiting for it wake, and every client is closed with 3001.
    pub fn begin_shutdown(&mut self) {
        self.shutting_down = true;
        self.engine.close_links();
        for w in self.shutdown_wakers.drain(..) {
            w.wake();
        }
        let keys = self.conns.keys();
        self.with_clients(|c| {
            for key in keys {
                c.disconnect(key, codes::DISCONNECT_SHUTDOWN);
            }
        });
    }

    /// Whether shutdown has begun.
    pub fn shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// This shard's counters (the HTTP API and proxy tasks count here).
    pub fn metrics(&mut self) -> &mut ShardMetrics {
        &mut self.metrics
    }

    /// Keeps the node's latest aggregated `info` metrics (shard 0).
    pub fn set_info_metrics(&mut self, info: crate::metrics::info::NodeInfo) {
        self.info_metrics = Some(Box::new(info));
    }

    /// Every broker and presence link of this shard is up.
    pub fn links_up(&self) -> bool {
        self.engine.links_up()
    }

    /// Resolves once shutdown has begun (the accept loops and idle HTTP connections wait).
    pub fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.shutting_down {
            return Poll::Ready(());
        }
        // The accept loops poll this on every accept; keep one waker per task.
        if !self.shutdown_wakers.iter().any(|w| w.will_wake(cx.waker())) {
            self.shutdown_wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// Future of a parked request's answer, for an async task. Dropping it frees the slot.
pub struct PendingAnswer {
    shard: ShardRef,
    req: RequestId,
    done: bool,
}

impl PendingAnswer {
    /// Waits for the answer to `req`.
    pub fn new(shard: ShardRef, req: RequestId) -> Self {
        PendingAnswer { shard, req, done: false }
    }
}

impl Future for PendingAnswer {
    /// `None` when the request was lost (only on shutdown, or a peer's lane stayed full).
    type Output = Option<Answer>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let req = self.req;
        let polled = self.shard.borrow_mut().mesh.poll_answer(req, cx);
        if polled.is_ready() {
            self.done = true;
        }
        polled
    }
}

impl Drop for PendingAnswer {
    fn drop(&mut self) {
        if !self.done {
            if let Ok(mut shard) = self.shard.try_borrow_mut() {
                shard.mesh.forget(self.req);
            }
        }
    }
}

/// Resolves when shutdown has begun on this shard.
pub fn shutdown_signal(shard: &ShardRef) -> impl Future<Output = ()> + '_ {
    std::future::poll_fn(move |cx| shard.borrow_mut().poll_shutdown(cx))
}
