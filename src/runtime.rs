//! Boot and shutdown: one pinned glommio executor per shard, the cross-shard meshes, listeners
//! (their addresses, port claims and TLS: `listeners`), the control plane from the supervisor
//! thread, and signals.
//!
//! Owns: threads and their lifecycle. The supervisor (the main thread) never touches shard state;
//! it talks to shards only through bounded crossbeam control channels, each paired with a waker
//! so an idle shard sleeps in io_uring instead of polling.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::os::unix::net::UnixListener;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender};
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};

use crate::auth::TokenVerifier;
use crate::broker::{nats, redis};
use crate::channel::Namespaces;
use crate::config::{self, Config};
use crate::server::admission::Admission;
use crate::server::{self, ConnectionRate, Env, Port};
use crate::shard::id::Lane;
use crate::shard::id::{ShardId, SHARDS_MAX};
use crate::shard::inbox::Inbox;
use crate::shard::mesh;
use crate::shard::msg::Frame;
use crate::shard::{Shard, ShardRef};
use crate::systemd;
use crate::tls::ServerTls;

mod listeners;
use crate::transport::websocket::OriginPolicy;
use listeners::{claim_ports, internal_addr, listen_addr, listener_tls, reserve_port};

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Configuration rejected at start.
    #[error("{0}")]
    Config(String),
    /// Binding or creating executors failed.
    #[error("{0}")]
    Io(String),
}

/// Messages from the supervisor to a shard.
#[derive(Debug, Clone, Copy)]
pub enum Control {
    /// Stop accepting, disconnect clients with 3001, drain, exit.
    Shutdown,
}

/// What a shard reports back while starting.
enum Boot {
    Listening,
    Failed(ShardId, String),
}

/// Supervisor → shard control channel with a waker so the shard's control task can sleep.
#[derive(Clone)]
struct ControlTx {
    tx: Sender<Control>,
    waker: Arc<Mutex<Option<Waker>>>,
}

struct ControlRx {
    rx: Receiver<Control>,
    waker: Arc<Mutex<Option<Waker>>>,
}

fn control_channel() -> (ControlTx, ControlRx) {
    let (tx, rx) = bounded(8);
    let waker = Arc::new(Mutex::new(None));
    (ControlTx { tx, waker: Arc::clone(&waker) }, ControlRx { rx, waker })
}

impl ControlTx {
    fn send(&self, c: Control) {
        let _ = self.tx.try_send(c);
        if let Some(w) = self.waker.lock().ok().and_then(|mut g| g.take()) {
            w.wake();
        }
    }
}

impl ControlRx {
    async fn recv(&self) -> Option<Control> {
        std::future::poll_fn(|cx| {
            match self.rx.try_recv() {
                Ok(c) => return Poll::Ready(Some(c)),
                Err(crossbeam_channel::TryRecvError::Disconnected) => return Poll::Ready(None),
                Err(crossbeam_channel::TryRecvError::Empty) => {}
            }
            if let Ok(mut g) = self.waker.lock() {
                *g = Some(cx.waker().clone());
            }
            // Re-check after registering so a send between the two steps is not missed.
            match self.rx.try_recv() {
                Ok(c) => Poll::Ready(Some(c)),
                Err(crossbeam_channel::TryRecvError::Disconnected) => Poll::Ready(None),
                Err(crossbeam_channel::TryRecvError::Empty) => Poll::Pending,
            }
        })
        .await
    }
}

/// Number of shards to run for this configuration.
pub fn shard_count(cfg: &Config) -> usize {
    let n = if cfg.runtime.shards == 0 {
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
    } else {
        cfg.runtime.shards
    };
    n.clamp(1, SHARDS_MAX)
}

/// A running server: its address and how to stop it.
pub struct Running {
    /// Address every shard listens on.
    pub addr: SocketAddr,
    /// The internal endpoints' address, when they have their own.
    pub internal: Option<SocketAddr>,
    /// One heartbeat counter per shard (bumped on every timer tick).
    pub heartbeats: Vec<Arc<std::sync::atomic::AtomicU64>>,
    /// The listeners' TLS (main, then internal when it has its own), for `reload_tls`.
    tls: Vec<(&'static str, Arc<ServerTls>)>,
    /// The ports this process claimed (`claim_port`), held while it runs.
    _claims: Vec<UnixListener>,
    controls: Vec<ControlTx>,
    handles: Vec<glommio::ExecutorJoinHandle<()>>,
}

impl Running {
    /// Reads every listener's certificate and key again (SIGHUP); a listener whose new pair
    /// does not load keeps the old one. Open connections are not touched.
    pub fn reload_tls(&self) {
        for (key, tls) in &self.tls {
            match tls.reload() {
                Ok(()) => tracing::info!(key, "TLS certificate reloaded"),
                Err(e) => tracing::error!(key, error = %e, "TLS certificate not reloaded"),
            }
        }
    }

    /// Asks every shard to shut down and waits for them.
    pub fn shutdown(self) {
        for c in &self.controls {
            c.send(Control::Shutdown);
        }
        self.wait();
    }

    /// Waits until every shard has exited.
    pub fn wait(self) {
        for h in self.handles {
            if let Err(e) = h.join() {
                tracing::error!(error = %e, "shard exited with an error");
            }
        }
    }

    /// Starts shutdown without waiting.
    pub fn request_shutdown(&self) {
        for c in &self.controls {
            c.send(Control::Shutdown);
        }
    }
}

/// Starts all shards and returns once every one of them listens.
pub fn start(cfg: Config) -> Result<Running, RunError> {
    config::validate(&cfg).map_err(|e| RunError::Config(e.to_string()))?;
    let namespaces =
        Arc::new(Namespaces::new(&cfg.channel).map_err(|e| RunError::Config(e.to_string()))?);
    let verifier = Arc::new(
        TokenVerifier::for_connections(&cfg.client).map_err(|e| RunError::Config(e.to_string()))?,
    );
    // Without a separate `client.subscription_token` section both token kinds use the same keys;
    // one verifier then also means one JWKS cache and one fetch per key set. (Insecure mode
    // ignores expiry of connection tokens only, so it keeps two.)
    let sub_verifier = if cfg.client.subscription_token.enabled || cfg.client.insecure {
        Arc::new(
            TokenVerifier::for_subscriptions(&cfg.client)
                .map_err(|e| RunError::Config(e.to_string()))?,
        )
    } else {
        Arc::clone(&verifier)
    };
    let origins = OriginPolicy::new(&cfg.client.allowed_origins)
        .map_err(|e| RunError::Config(e.to_string()))?;
    let engines = cfg.engines().map_err(|e| RunError::Config(e.to_string()))?;
    let proxies = Arc::new(
        crate::proxy::Proxies::from_config(&cfg).map_err(|e| RunError::Config(e.to_string()))?,
    );
    let redis = match engines.redis {
        Some((path, section)) => {
            // A cluster's masters and slots are read by each shard as it starts (start_redis).
            let settings =
                redis::Settings::from_section(path, section).map_err(RunError::Config)?;
            let roles = (engines.broker == config::BrokerKind::Redis, engines.redis_presence);
            Some((Arc::new(settings), roles))
        }
        None => None,
    };
    let nats = match engines.broker {
        config::BrokerKind::Nats => {
            Some(Arc::new(nats::Settings::from_config(&cfg.broker.nats).map_err(RunError::Config)?))
        }
        _ => None,
    };
    let (main_tls, internal_tls) = listener_tls(&cfg)?;
    let count = shard_count(&cfg);
    let round_robin = cfg.runtime.placement == config::Placement::RoundRobin;
    let mut addr = listen_addr(&cfg)?;
    let reservation = if addr.port() == 0 && !round_robin {
        let (sock, local) = reserve_port(addr)?;
        addr = local;
        Some(sock)
    } else {
        None
    };
    // Shards announce the node (Redis engine) as soon as they run, so its identity is fixed
    // first; with round-robin placement and port 0 the bound port is not known yet.
    crate::node::init(&cfg.node.name, addr.port());
    let internal = internal_addr(&cfg, addr)?;
    let claims = claim_ports(addr, internal)?;
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let pin = cfg.runtime.pin_cpus && count <= cpus;
    let cfg = Arc::new(cfg);
    let main_mesh = MeshBuilder::<Frame, _>::full(count, cfg.runtime.lane_capacity.max(1));
    let reply_mesh = MeshBuilder::<Frame, _>::full(count, cfg.runtime.lane_capacity.max(1));
    let (boot_tx, boot_rx) = bounded::<Boot>(count);
    // Round-robin placement: shard 0 binds first and tells the others nothing (they get sockets
    // through the mesh); the bound address is reported through this channel.
    let (addr_tx, addr_rx) = bounded::<SocketAddr>(1);
    let mut controls = Vec::with_capacity(count);
    let mut handles = Vec::with_capacity(count);
    let heartbeats: Vec<Arc<std::sync::atomic::AtomicU64>> =
        (0..count).map(|_| Arc::default()).collect();
    // Connected clients of the whole process, for `client.connection_limit`.
    let connections: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
    for (i, beat) in heartbeats.iter().enumerate() {
        let (ctl_tx, ctl_rx) = control_channel();
        controls.push(ctl_tx);
        let placement = if pin { Placement::Fixed(i % cpus) } else { Placement::Unbound };
        let (cfg, namespaces, origins, proxies) =
            (Arc::clone(&cfg), Arc::clone(&namespaces), origins.clone(), Arc::clone(&proxies));
        let verifiers = (Arc::clone(&verifier), Arc::clone(&sub_verifier));
        let (heartbeat, connections) = (Arc::clone(beat), Arc::clone(&connections));
        let (redis, nats) = (redis.clone(), nats.clone());
        let (main_tls, internal_tls) =
            (main_tls.as_ref().map(|t| t.acceptor()), internal_tls.as_ref().map(|t| t.acceptor()));
        let (main_mesh, reply_mesh, boot_tx, addr_tx) =
            (main_mesh.clone(), reply_mesh.clone(), boot_tx.clone(), addr_tx.clone());
        let id = ShardId(i as u16);
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("rotor-shard-{i}"))
            .io_memory(1 << 20)
            .ring_depth(cfg.runtime.ring_depth)
            .spin_before_park(cfg.runtime.spin_before_park)
            .spawn(move || async move {
                let commands = crate::client::Env::new(cfg.clone(), namespaces, verifiers, proxies);
                let state = Shard::new(id, count, commands, connections, heartbeat);
                let shard: ShardRef = Rc::new(RefCell::new(state));
                let port = if internal.is_some() { Port::Main } else { Port::Both };
                let rate = ConnectionRate::share(cfg.client.connection_rate_limit, count);
                let env = Rc::new(Env {
                    origins: origins.clone(),
                    port,
                    tls: main_tls,
                    rate,
                    admission: Admission::new(&cfg),
                });
                let ready = join_meshes(&shard, &env, main_mesh, reply_mesh).await;
                if let Err(e) = ready {
                    let _ = boot_tx.send(Boot::Failed(id, e));
                    return;
                }
                let listener = if !round_robin || id.0 == 0 {
                    match TcpListener::bind(addr) {
                        Ok(l) => Some(l),
                        Err(e) => {
                            let _ = boot_tx.send(Boot::Failed(id, format!("binding {addr}: {e}")));
                            return;
                        }
                    }
                } else {
                    None
                };
                if let Some(l) = &listener {
                    if let Ok(local) = l.local_addr() {
                        let _ = addr_tx.try_send(local);
                    }
                }
                // Low traffic (API, metrics, admin): with round-robin placement only shard 0
                // listens there and serves what it accepts itself.
                let internal_listener = match internal {
                    Some(at) if !round_robin || id.0 == 0 => match TcpListener::bind(at) {
                        Ok(l) => Some(l),
                        Err(e) => {
                            let _ = boot_tx.send(Boot::Failed(id, format!("binding {at}: {e}")));
                            return;
                        }
                    },
                    _ => None,
                };
                if let Some((settings, (broker, presence))) = redis {
                    if let Err(e) = start_redis(&shard, settings, broker, presence).await {
                        let _ = boot_tx.send(Boot::Failed(id, e));
                        return;
                    }
                }
                if let Some(settings) = nats {
                    start_nats(&shard, settings).await;
                }
                glommio::spawn_local(server::timers(shard.clone())).detach();
                if id.0 == 0 {
                    glommio::spawn_local(server::ops::aggregate_info(shard.clone())).detach();
                }
                server::proxy::spawn(&shard);
                if let Some(l) = listener {
                    if round_robin {
                        glommio::spawn_local(server::accept_round_robin(
                            shard.clone(),
                            env.clone(),
                            l,
                        ))
                        .detach();
                    } else {
                        glommio::spawn_local(server::accept_loop(shard.clone(), env.clone(), l))
                            .detach();
                    }
                }
                if let Some(l) = internal_listener {
                    let env = Rc::new(Env {
                        origins,
                        port: Port::Internal,
                        tls: internal_tls,
                        rate: None,
                        // Its own counts: a flood on the public port leaves the API room.
                        admission: Admission::new(&cfg),
                    });
                    glommio::spawn_local(server::accept_loop(shard.clone(), env, l)).detach();
                }
                let _ = boot_tx.send(Boot::Listening);
                if let Some(Control::Shutdown) = ctl_rx.recv().await {
                    drain(&shard).await;
                }
            })
            .map_err(|e| RunError::Io(format!("starting shard {i}: {e}")))?;
        handles.push(handle);
    }
    drop(boot_tx);
    // The internal port mostly shares the main port's TLS: reload that only once.
    let internal_tls =
        internal_tls.filter(|i| main_tls.as_ref().is_none_or(|m| !Arc::ptr_eq(m, i)));
    let tls: Vec<(&'static str, Arc<ServerTls>)> =
        [("http_server.tls", main_tls), ("http_server.internal_tls", internal_tls)]
            .into_iter()
            .filter_map(|(key, t)| Some((key, t?)))
            .collect();
    for _ in 0..count {
        match boot_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Boot::Listening) => {}
            Ok(Boot::Failed(id, e)) => {
                let running =
                    Running { addr, internal, heartbeats, tls, _claims: claims, controls, handles };
                running.request_shutdown();
                return Err(RunError::Io(format!("shard {id}: {e}")));
            }
            Err(_) => return Err(RunError::Io("shards did not start within 30s".into())),
        }
    }
    if round_robin {
        if let Ok(local) = addr_rx.try_recv() {
            addr = local;
        }
    }
    drop(reservation);
    Ok(Running { addr, internal, heartbeats, tls, _claims: claims, controls, handles })
}

/// Reads the shard's Redis topology (a cluster's masters and slots), connects its links
/// (waiting a bounded time so a node that says it listens can publish) and, on shard 0, starts
/// the node announcements. Fails only when the topology cannot be read: the shard then cannot
/// tell which server keeps a channel.
async fn start_redis(
    shard: &ShardRef,
    settings: Arc<redis::Settings>,
    broker: bool,
    presence: bool,
) -> Result<(), String> {
    let topology = redis::Topology::discover(&settings).await?;
    let settings = topology.settings(settings);
    let addresses = topology.addresses.clone();
    let engine = redis::Redis::new(Arc::clone(&settings), topology, broker, presence);
    let inbox = Rc::new(Inbox::default());
    let control = shard.borrow().id().0 == 0;
    let links = shard.borrow_mut().engine().set_redis(engine, Rc::clone(&inbox), control);
    spawn_inbox(shard, inbox, Shard::redis_events);
    // A presence-only Redis needs no PUB/SUB connection.
    let roles: &[redis::io::Role] = if broker {
        &[redis::io::Role::Commands, redis::io::Role::PubSub]
    } else {
        &[redis::io::Role::Commands]
    };
    for (ctx, address) in links.into_iter().zip(addresses) {
        for &role in roles {
            let link = redis::io::run(ctx.clone(), Arc::clone(&settings), role, address.clone());
            glommio::spawn_local(link).detach();
        }
    }
    let limit = settings.connect_timeout.max(Duration::from_secs(1)) * 3;
    if !broker_up(shard, limit, |s| s.engine().redis_up()).await {
        let id = shard.borrow().id();
        tracing::warn!(shard = %id, "redis not reachable yet; publishing fails until it is");
    }
    if broker && shard.borrow().id().0 == 0 {
        glommio::spawn_local(crate::api::query::control_loop(shard.clone())).detach();
    }
    Ok(())
}

/// Connects a shard's NATS broker (waiting a bounded time) and, on shard 0, starts the node
/// announcements.
async fn start_nats(shard: &ShardRef, settings: Arc<nats::Settings>) {
    let id = shard.borrow().id();
    let inbox = Rc::new(Inbox::default());
    let broker = nats::Nats::new(Arc::clone(&settings), id.0 == 0);
    let ctx = shard.borrow_mut().engine().set_nats(broker, Rc::clone(&inbox));
    spawn_inbox(shard, inbox, Shard::nats_inputs);
    glommio::spawn_local(nats::io::run(ctx, Arc::clone(&settings))).detach();
    let limit = settings.dial_timeout.max(Duration::from_secs(1)) * 3;
    if !broker_up(shard, limit, |s| s.engine().nats_up()).await {
        tracing::warn!(shard = %id, "nats not reachable yet; publishing fails until it is");
    }
    if id.0 == 0 {
        glommio::spawn_local(crate::api::query::control_loop(shard.clone())).detach();
    }
}

/// Starts the task that hands what a shard's link tasks push into `inbox` to the shard.
fn spawn_inbox<T: 'static>(shard: &ShardRef, inbox: Rc<Inbox<T>>, to: fn(&mut Shard, Vec<T>)) {
    let shard = shard.clone();
    let task = async move { inbox.drain(|batch| to(&mut shard.borrow_mut(), batch)).await };
    glommio::spawn_local(task).detach();
}

/// Waits (up to `limit`) until `up` holds for the shard's broker links, so a node that reports
/// itself ready can publish. Returns whether it does.
async fn broker_up(shard: &ShardRef, limit: Duration, up: impl Fn(&mut Shard) -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let ready = up(&mut shard.borrow_mut());
        if ready || std::time::Instant::now() >= deadline {
            return ready;
        }
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
}

async fn join_meshes(
    shard: &ShardRef,
    env: &Rc<Env>,
    main_mesh: MeshBuilder<Frame, glommio::channels::channel_mesh::Full>,
    reply_mesh: MeshBuilder<Frame, glommio::channels::channel_mesh::Full>,
) -> Result<(), String> {
    let (id, count) = {
        let s = shard.borrow();
        (s.id(), s.count())
    };
    for (lane, mesh) in [(Lane::Main, main_mesh), (Lane::Reply, reply_mesh)] {
        let (senders, mut receivers) =
            mesh.join().await.map_err(|_| "joining the shard mesh failed".to_string())?;
        if senders.peer_id() != id.index() {
            return Err(format!("mesh peer id {} does not match shard id {id}", senders.peer_id()));
        }
        let senders = Rc::new(senders);
        for peer in (0..count).filter(|&p| p != id.index()) {
            let spill = shard.borrow_mut().mesh().spill_of(lane, peer);
            let bounced = shard.clone();
            let forward = mesh::forward(spill, senders.clone(), peer, move |msg| {
                bounced.borrow_mut().undeliverable(msg);
            });
            glommio::spawn_local(forward).detach();
        }
        shard.borrow_mut().mesh().join(lane, senders);
        for (_, rx) in receivers.streams() {
            server::spawn_pump(shard, env, rx);
        }
    }
    Ok(())
}

/// Shutdown of one shard: stop accepting, close every client with 3001, and wait (bounded by
/// `shutdown.timeout`) until their close handshakes are done.
async fn drain(shard: &ShardRef) {
    let timeout = {
        let mut s = shard.borrow_mut();
        s.begin_shutdown();
        s.cfg().shutdown.timeout
    };
    let deadline = std::time::Instant::now() + timeout;
    while !shard.borrow_mut().conns().is_empty() && std::time::Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
    let s = shard.borrow();
    let stats = s.stats();
    tracing::info!(
        shard = %s.id(),
        publications_delivered = stats.messages_sent,
        deliveries_dropped = stats.deliveries_dropped,
        calls_refused = stats.calls_refused,
        slow_disconnects = stats.slow_disconnects,
        "shard stopped"
    );
}

/// Runs the server until SIGINT or SIGTERM, then shuts down gracefully; SIGHUP reloads the
/// listeners' TLS certificates. Tells systemd (when
/// `$NOTIFY_SOCKET` is set) READY=1 once every shard listens and STOPPING=1 when draining starts,
/// and pings its watchdog while every shard's heartbeat moves.
pub fn run(cfg: Config) -> Result<(), RunError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| RunError::Io(format!("installing signal handlers: {e}")))?;
    let limits = systemd::Limits::read();
    tracing::info!(
        nofile = ?limits.nofile,
        memlock_bytes = ?limits.memlock_bytes,
        somaxconn = ?limits.somaxconn,
        "effective limits (None = unlimited or unknown)"
    );
    for w in limits.warnings(shard_count(&cfg), cfg.client.connection_limit) {
        tracing::warn!("{w}");
    }
    if cfg.admin.enabled && cfg.admin.insecure {
        tracing::warn!("INSECURE admin mode enabled, make sure you understand risks");
    }
    let tokens = [
        ("client.token", &cfg.client.token),
        ("client.subscription_token", &cfg.client.subscription_token.token),
    ];
    for (key, t) in tokens {
        if t.insecure_skip_jwks_endpoint_safety_check && t.jwks_public_endpoint.contains("{{") {
            tracing::warn!(
                key,
                "JWKS endpoint template safety check skipped: a forged token may choose where keys \
                 are fetched from; list the allowed values in the regex group instead (INSECURE)"
            );
        }
    }
    let node_name = cfg.node.name.clone();
    let pid_file = cfg.pid_file.clone();
    let running = start(cfg)?;
    if !pid_file.is_empty() {
        // Written once listening, as init scripts and `PIDFile=` expect.
        if let Err(e) = std::fs::write(&pid_file, format!("{}\n", std::process::id())) {
            running.shutdown();
            return Err(RunError::Config(format!("pid_file: cannot write {pid_file:?}: {e}")));
        }
    }
    crate::node::init(&node_name, running.addr.port());
    println!("rotor listening on {}", running.addr);
    if let Some(internal) = running.internal {
        println!("rotor internal endpoints on {internal}");
    }
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let notifier = Arc::new(systemd::Notifier::from_env());
    notifier.notify(&format!("READY=1\nSTATUS=listening on {}", running.addr));
    let (stop_tx, stop_rx) = bounded::<()>(1);
    let watchdog = systemd::watchdog_interval().filter(|_| notifier.enabled()).map(|every| {
        let (notifier, beats) = (Arc::clone(&notifier), running.heartbeats.clone());
        std::thread::spawn(move || watchdog_loop(&notifier, &beats, every, &stop_rx))
    });
    for sig in signals.forever() {
        if sig == SIGHUP {
            running.reload_tls();
            continue;
        }
        tracing::info!(signal = sig, "shutting down");
        break;
    }
    notifier.notify("STOPPING=1");
    drop(stop_tx);
    if let Some(w) = watchdog {
        let _ = w.join();
    }
    running.shutdown();
    if !pid_file.is_empty() {
        let _ = std::fs::remove_file(&pid_file);
    }
    Ok(())
}

/// Sends WATCHDOG=1 every `every` as long as all shard heartbeats advanced since the last one.
fn watchdog_loop(
    notifier: &systemd::Notifier,
    beats: &[Arc<std::sync::atomic::AtomicU64>],
    every: Duration,
    stop: &Receiver<()>,
) {
    use std::sync::atomic::Ordering;
    let read = || beats.iter().map(|b| b.load(Ordering::Relaxed)).collect::<Vec<_>>();
    let mut last = read();
    loop {
        match stop.recv_timeout(every) {
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let now = read();
        if now.iter().zip(&last).all(|(n, l)| n != l) {
            notifier.notify("WATCHDOG=1");
        } else {
            tracing::error!("a shard stopped ticking; withholding the systemd watchdog ping");
        }
        last = now;
    }
}
