//! Worker process (`rotor-loadtest worker`, hidden): drives one share of the clients on a
//! single-threaded tokio runtime. Reads a [`WorkerSpec`] and then [`Command`]s as JSON lines on
//! stdin, answers with [`Event`]s on stdout. Client sockets bind to the worker's own source
//! address with `IP_BIND_ADDRESS_NO_PORT`, so each worker gets its own ~28K ephemeral ports.
//! The worker exits on `Shutdown`, stdin EOF, or when `max_lifetime_s` has passed.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use nix::sys::socket::{setsockopt, sockopt};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::adapter::{channel_name, ClientProtocol, Frame, Inbound, Session};
use crate::error::{Context, Error, Result};
use crate::hist;
use crate::proto::{Command, ConnectReport, Event, WorkerReport, WorkerSpec};
use crate::rawws::{self, RawWs, WIRE_RX};

fn message(frame: Frame) -> Message {
    match frame {
        Frame::Text(t) => Message::text(t),
        Frame::Binary(b) => Message::binary(b),
    }
}

/// The payload bytes of a data frame (`None` for control frames).
fn data(m: &Message) -> Option<&[u8]> {
    match m {
        Message::Text(t) => Some(t.as_bytes()),
        Message::Binary(b) => Some(b),
        _ => None,
    }
}

/// Writes one event line to stdout.
fn emit(event: &Event) {
    let mut out = std::io::stdout().lock();
    if let Ok(line) = serde_json::to_string(event) {
        // The coordinator going away closes the pipe; the lifetime bound ends us then.
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// Entry point of the `worker` subcommand.
pub fn main() -> Result<()> {
    let stdin = std::io::stdin();
    let mut first = String::new();
    stdin.lock().read_line(&mut first).context("reading the worker spec")?;
    let spec: WorkerSpec = serde_json::from_str(&first).context("parsing the worker spec")?;
    if !spec.addr.ip().is_loopback() {
        return Err(Error::Args(format!("refusing non-loopback target {}", spec.addr)));
    }
    let (tx, rx) = mpsc::unbounded_channel::<Option<Command>>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<Command>(&line) {
                Ok(cmd) => {
                    if tx.send(Some(cmd)).is_err() {
                        return;
                    }
                }
                Err(e) => emit(&Event::Log { msg: format!("bad command {line:?}: {e}") }),
            }
        }
        let _ = tx.send(None);
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, run(spec, rx))
}

/// Whether client sockets are currently being read by slow consumer candidates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Normal,
    Slow,
}

struct Stats {
    hist: Histogram<u64>,
    deliveries: u64,
    slow_deliveries: u64,
    per_second: HashMap<u64, u64>,
    closes: BTreeMap<String, u64>,
    open: usize,
    bad_frames: u64,
    /// Clients whose connection ended, to open again on `Reconnect`.
    ended: Vec<usize>,
}

struct Ctx {
    spec: WorkerSpec,
    protocol: Box<dyn ClientProtocol>,
    stats: RefCell<Stats>,
    mode: watch::Sender<Mode>,
    /// TLS client setup when the spec asks for TLS.
    tls: Option<tokio_rustls::TlsConnector>,
}

async fn run(spec: WorkerSpec, mut rx: mpsc::UnboundedReceiver<Option<Command>>) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(spec.max_lifetime_s);
    let (mode, _) = watch::channel(Mode::Normal);
    let tls = match &spec.tls_ca_pem {
        Some(pem) => Some(rawws::tls_connector(pem).map_err(Error::Args)?),
        None => None,
    };
    let ctx = Rc::new(Ctx {
        tls,
        protocol: spec.protocol.client(),
        stats: RefCell::new(Stats {
            hist: hist::new(),
            deliveries: 0,
            slow_deliveries: 0,
            per_second: HashMap::new(),
            closes: BTreeMap::new(),
            open: 0,
            bad_frames: 0,
            ended: Vec::new(),
        }),
        mode,
        spec,
    });
    emit(&Event::Ready { worker: ctx.spec.worker });
    let mut connecting = false;
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd.flatten() {
                Some(Command::Connect) if !connecting => {
                    connecting = true;
                    let first = ctx.spec.first_client;
                    let clients = (first..first + ctx.spec.clients).collect();
                    tokio::task::spawn_local(connect_all(Rc::clone(&ctx), clients));
                }
                Some(Command::Connect) => {}
                Some(Command::Reconnect) => {
                    let ended = std::mem::take(&mut ctx.stats.borrow_mut().ended);
                    tokio::task::spawn_local(connect_all(Rc::clone(&ctx), ended));
                }
                Some(Command::Report { reset }) => emit(&Event::Report(report(&ctx, reset)?)),
                Some(Command::SlowStart { resume_after_ms }) => {
                    ctx.mode.send_replace(Mode::Slow);
                    if let Some(ms) = resume_after_ms {
                        let ctx = Rc::clone(&ctx);
                        tokio::task::spawn_local(async move {
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                            ctx.mode.send_replace(Mode::Normal);
                        });
                    }
                }
                Some(Command::SlowResume) => { ctx.mode.send_replace(Mode::Normal); }
                Some(Command::Shutdown) | None => break,
            },
            _ = tokio::time::sleep_until(deadline) => {
                emit(&Event::Log { msg: format!("worker {} reached its lifetime bound", ctx.spec.worker) });
                break;
            }
        }
    }
    Ok(())
}

fn report(ctx: &Ctx, reset: bool) -> Result<WorkerReport> {
    let mut s = ctx.stats.borrow_mut();
    let mut per_second: Vec<(u64, u64)> = s.per_second.iter().map(|(k, v)| (*k, *v)).collect();
    per_second.sort_unstable();
    let r = WorkerReport {
        deliveries: s.deliveries,
        slow_deliveries: s.slow_deliveries,
        latency_hist: hist::encode(&s.hist)?,
        per_second,
        closes: s.closes.clone(),
        open: s.open,
        bad_frames: s.bad_frames,
        wire_rx_bytes: if reset {
            WIRE_RX.swap(0, std::sync::atomic::Ordering::Relaxed)
        } else {
            WIRE_RX.load(std::sync::atomic::Ordering::Relaxed)
        },
    };
    if reset {
        s.hist.reset();
        s.deliveries = 0;
        s.slow_deliveries = 0;
        s.per_second.clear();
    }
    Ok(r)
}

enum Opened {
    Ok(Link, Session, Duration),
    Failed(String),
}

/// Opens `clients` (global indices), reports how that went, and reads them until they end.
async fn connect_all(ctx: Rc<Ctx>, clients: Vec<usize>) {
    let total = clients.len();
    let started = Instant::now();
    let sem = Rc::new(Semaphore::new(ctx.spec.connect_concurrency.max(1)));
    let (tx, mut rx) = mpsc::unbounded_channel::<std::result::Result<Duration, String>>();
    for client in clients {
        let (ctx, sem, tx) = (Rc::clone(&ctx), Rc::clone(&sem), tx.clone());
        tokio::task::spawn_local(async move {
            let opened = {
                let Ok(_permit) = sem.acquire().await else { return };
                let t0 = Instant::now();
                let limit = Duration::from_millis(ctx.spec.connect_timeout_ms);
                match tokio::time::timeout(limit, open(&ctx, client)).await {
                    Ok(Ok((link, session))) => Opened::Ok(link, session, t0.elapsed()),
                    Ok(Err(e)) => Opened::Failed(e),
                    Err(_) => Opened::Failed("timeout".into()),
                }
            };
            match opened {
                Opened::Ok(ws, session, took) => {
                    let _ = tx.send(Ok(took));
                    ctx.stats.borrow_mut().open += 1;
                    read_loop(&ctx, client, ws, session).await;
                    let mut s = ctx.stats.borrow_mut();
                    s.open -= 1;
                    s.ended.push(client);
                }
                Opened::Failed(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
    }
    drop(tx);
    let mut rep = ConnectReport::default();
    let mut lat = hist::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            r = rx.recv() => match r {
                Some(Ok(took)) => {
                    rep.ok += 1;
                    lat.saturating_record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1));
                }
                Some(Err(e)) => {
                    rep.failed += 1;
                    *rep.errors.entry(e).or_default() += 1;
                }
                None => break,
            },
            _ = tick.tick() => emit(&Event::Progress { done: rep.ok + rep.failed }),
        }
        if rep.ok + rep.failed == total {
            break;
        }
    }
    rep.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    rep.latency_hist = hist::encode(&lat).unwrap_or_default();
    emit(&Event::Connected(rep));
}

fn is_slow(spec: &WorkerSpec, client: usize) -> bool {
    spec.slow_below.is_some_and(|n| client < n)
}

/// Short, countable failure reason.
fn reason(prefix: &str, e: impl std::fmt::Display) -> String {
    let text = e.to_string();
    let short: String = text.chars().take(80).collect();
    format!("{prefix}: {short}")
}

async fn tcp_connect(spec: &WorkerSpec, client: usize) -> std::io::Result<TcpStream> {
    let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    sock.set_nonblocking(true)?;
    sock.set_tcp_nodelay(true)?;
    if let Some(ip) = spec.source_ip {
        setsockopt(&sock, sockopt::IpBindAddressNoPort, &true).map_err(std::io::Error::from)?;
        sock.bind(&SocketAddr::new(ip.into(), 0).into())?;
    }
    if let Some(size) = spec.slow_rcvbuf.filter(|_| is_slow(spec, client)) {
        sock.set_recv_buffer_size(size)?;
    }
    let std: std::net::TcpStream = sock.into();
    TcpSocket::from_std_stream(std).connect(spec.addr).await
}

/// A client's connection: a WebSocket, or an HTTP streaming response carrying SSE events.
enum Link {
    Ws(Box<WebSocketStream<TcpStream>>),
    Sse(Box<SseStream>),
    /// The raw client (TLS, permessage-deflate, or `--raw-ws`).
    Raw(Box<RawWs>),
}

/// What a link produced next.
enum Incoming {
    /// A data frame's payload or an event's data.
    Data(Vec<u8>),
    /// A control frame (nothing to do).
    Control,
    /// The connection ended, with the reason to count.
    Closed(String),
}

impl Link {
    async fn next(&mut self) -> Incoming {
        match self {
            Link::Ws(ws) => match ws.next().await {
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                    Incoming::Data(data(&m).unwrap_or_default().to_vec())
                }
                Some(Ok(Message::Close(f))) => Incoming::Closed(
                    f.map(|f| u16::from(f.code).to_string()).unwrap_or_else(|| "close".into()),
                ),
                Some(Ok(_)) => Incoming::Control,
                Some(Err(e)) => Incoming::Closed(reason("error", e)),
                None => Incoming::Closed("eof".to_owned()),
            },
            Link::Raw(ws) => match ws.next().await {
                rawws::Event::Data(d) => Incoming::Data(d),
                rawws::Event::Control => Incoming::Control,
                rawws::Event::Closed(why) => Incoming::Closed(why),
            },
            Link::Sse(s) => match s.next_event().await {
                Ok(Some(event)) => Incoming::Data(event),
                Ok(None) => Incoming::Closed("eof".to_owned()),
                Err(e) => Incoming::Closed(e),
            },
        }
    }

    /// Sends a frame; a streaming link has no way back and drops it.
    async fn send(&mut self, frame: Frame) -> std::result::Result<(), String> {
        match self {
            Link::Ws(ws) => ws.send(message(frame)).await.map_err(|e| reason("send", e)),
            Link::Raw(ws) => match frame {
                Frame::Text(t) => ws.send(0x1, t.as_bytes()).await,
                Frame::Binary(b) => ws.send(0x2, &b).await,
            },
            Link::Sse(_) => Ok(()),
        }
    }
}

/// A `text/event-stream` response read from a socket: the chunked body is decoded and split
/// into events at blank lines.
struct SseStream {
    tcp: TcpStream,
    raw: Vec<u8>,
    body: Vec<u8>,
}

impl SseStream {
    async fn open(
        mut tcp: TcpStream,
        addr: SocketAddr,
        path: &str,
        body: &str,
    ) -> std::result::Result<Self, String> {
        use tokio::io::AsyncWriteExt as _;
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        tcp.write_all(request.as_bytes()).await.map_err(|e| reason("send", e))?;
        let mut s = SseStream { tcp, raw: Vec::new(), body: Vec::new() };
        let end = loop {
            if let Some(p) = s.raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            if !s.fill().await? {
                return Err("eof before the response head".into());
            }
        };
        let head = String::from_utf8_lossy(&s.raw[..end]).into_owned();
        if !head.starts_with("HTTP/1.1 200") {
            return Err(reason("rejected", head.lines().next().unwrap_or("")));
        }
        s.raw.drain(..end);
        Ok(s)
    }

    async fn fill(&mut self) -> std::result::Result<bool, String> {
        use tokio::io::AsyncReadExt as _;
        let mut chunk = [0u8; 16 * 1024];
        let n = self.tcp.read(&mut chunk).await.map_err(|e| reason("read", e))?;
        self.raw.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// Moves every complete chunk from `raw` to `body`; false once the last chunk came.
    fn decode_chunks(&mut self) -> std::result::Result<bool, String> {
        while let Some(p) = self.raw.windows(2).position(|w| w == b"\r\n") {
            let size = std::str::from_utf8(&self.raw[..p])
                .ok()
                .and_then(|t| usize::from_str_radix(t.trim(), 16).ok())
                .ok_or("bad chunk size")?;
            if size == 0 {
                return Ok(false);
            }
            if self.raw.len() < p + size + 4 {
                break;
            }
            self.body.extend_from_slice(&self.raw[p + 2..p + 2 + size]);
            self.raw.drain(..p + size + 4);
        }
        Ok(true)
    }

    /// The data of the next event; `None` when the stream ended.
    async fn next_event(&mut self) -> std::result::Result<Option<Vec<u8>>, String> {
        loop {
            // The stream opens with an empty line.
            let skip = self.body.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
            self.body.drain(..skip);
            if let Some(p) = self.body.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = self.body.drain(..p + 2).take(p).collect();
                let data = event.strip_prefix(b"data: ").ok_or("not an SSE data line")?;
                return Ok(Some(data.to_vec()));
            }
            let had = self.body.len();
            if !self.decode_chunks()? {
                return Ok(None);
            }
            if self.body.len() == had && !self.fill().await? {
                return Ok(None);
            }
        }
    }
}

async fn open(ctx: &Ctx, client: usize) -> std::result::Result<(Link, Session), String> {
    let spec = &ctx.spec;
    let stream = tcp_connect(spec, client).await.map_err(|e| reason("tcp", e))?;
    let channel = channel_name(client, spec.channels);
    let request = ctx.protocol.stream_request(client, &channel).map_err(|e| reason("open", e))?;
    let mut link = match request {
        Some((path, body)) => {
            Link::Sse(Box::new(SseStream::open(stream, spec.addr, &path, &body).await?))
        }
        None if spec.raw_ws || spec.ws_compression || ctx.tls.is_some() => {
            let io: Box<dyn rawws::Io> = match &ctx.tls {
                Some(tls) => {
                    let name = rustls::pki_types::ServerName::IpAddress(spec.addr.ip().into());
                    let s = tls
                        .connect(name, rawws::Counted(stream))
                        .await
                        .map_err(|e| reason("tls", e))?;
                    Box::new(s)
                }
                None => Box::new(rawws::Counted(stream)),
            };
            let host = spec.addr.to_string();
            let ws = RawWs::connect(io, &host, ctx.protocol.ws_path(), spec.ws_compression)
                .await
                .map_err(|e| reason("upgrade", e))?;
            Link::Raw(Box::new(ws))
        }
        None => {
            let url = format!("ws://{}{}", spec.addr, ctx.protocol.ws_path());
            let (ws, _) = tokio_tungstenite::client_async(url, stream)
                .await
                .map_err(|e| reason("upgrade", e))?;
            Link::Ws(Box::new(ws))
        }
    };
    for frame in ctx.protocol.open_frames(client, &channel).map_err(|e| reason("open", e))? {
        link.send(frame).await?;
    }
    let mut session = Session::new(&channel);
    loop {
        match link.next().await {
            Incoming::Data(d) => {
                let mut inbound = Inbound::default();
                ctx.protocol.on_frame(&mut session, &d, &mut inbound);
                if let Some(err) = inbound.error {
                    return Err(reason("rejected", err));
                }
                for r in inbound.replies {
                    link.send(r).await?;
                }
                if inbound.ready {
                    return Ok((link, session));
                }
            }
            Incoming::Control => {}
            Incoming::Closed(why) => return Err(format!("closed: {why}")),
        }
    }
}

async fn read_loop(ctx: &Ctx, client: usize, mut link: Link, mut session: Session) {
    let slow = is_slow(&ctx.spec, client);
    let mut mode = ctx.mode.subscribe();
    let tag = if slow { "slow" } else { "ok" };
    let end = loop {
        if slow && *mode.borrow_and_update() == Mode::Slow {
            if mode.changed().await.is_err() {
                break "worker-exit".to_owned();
            }
            continue;
        }
        tokio::select! {
            m = link.next() => match m {
                Incoming::Data(d) => {
                    let mut inbound = Inbound::default();
                    ctx.protocol.on_frame(&mut session, &d, &mut inbound);
                    record(ctx, slow, &inbound);
                    for r in inbound.replies {
                        if link.send(r).await.is_err() {
                            break;
                        }
                    }
                }
                Incoming::Control => {}
                Incoming::Closed(why) => break why,
            },
            r = mode.changed() => if r.is_err() { break "worker-exit".to_owned() },
        }
    };
    *ctx.stats.borrow_mut().closes.entry(format!("{tag}:{end}")).or_default() += 1;
}

fn record(ctx: &Ctx, slow: bool, inbound: &Inbound) {
    let mut s = ctx.stats.borrow_mut();
    s.bad_frames += inbound.unknown;
    if inbound.delivered_ts.is_empty() {
        return;
    }
    let now = crate::clock::now_ns();
    let n = inbound.delivered_ts.len() as u64;
    if slow {
        s.slow_deliveries += n;
    } else {
        s.deliveries += n;
        for ts in &inbound.delivered_ts {
            let us = now.saturating_sub(*ts) / 1000;
            s.hist.saturating_record(us.max(1));
        }
    }
    *s.per_second.entry(now / 1_000_000_000).or_default() += n;
}
