//! The coordinator: starts the target (and the raw floor with `--compare raw`), spawns the
//! worker processes, runs the scenario's phases, measures the server through procfs, and hands
//! the numbers to [`crate::report`]. Every wait is bounded and every send loop is bounded in
//! count and time; the run ends by itself within `--max-runtime`.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

use crate::adapter::{channel_name, Flavor, ProtocolSpec, Publisher};
use crate::cli::{PayloadKind, RunArgs, Scenario, TargetKind};
use crate::error::{Context, Error, Result};
use crate::hist::{self, Percentiles};
use crate::procfs;
use crate::proto::WorkerReport;
use crate::report::NodeFigures;
use crate::report::{self, Metrics};
use crate::target::{self, External, RotorOptions, Target};
use crate::workers::Workers;

/// Entry point of a coordinator run.
pub fn main(args: &RunArgs) -> Result<()> {
    validate(args)?;
    let started = Instant::now();
    // One CA and server certificate for the whole run (removed at the end).
    let certs = if args.tls { Some(crate::certs::generate()?) } else { None };
    let certs = certs.as_ref();
    let mut runs = Vec::new();
    // Baselines first (in the order given, each once, never the target itself), target last.
    let mut baselines: Vec<TargetKind> = Vec::new();
    for kind in args.compare.iter().map(|c| c.kind()) {
        if kind != args.target && !baselines.contains(&kind) {
            baselines.push(kind);
        }
    }
    for kind in baselines {
        runs.push(run_target(args, kind, started, certs)?);
    }
    runs.push(run_target(args, args.target, started, certs)?);
    let result = report::RunResult::new(args, runs);
    println!("{}", result.markdown());
    if let Some(path) = &args.out {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).context(format!("creating {}", dir.display()))?;
        }
        let text = serde_json::to_string_pretty(&result).context("encoding result")?;
        std::fs::write(path, text).context(format!("writing {}", path.display()))?;
        eprintln!("result written to {}", path.display());
    }
    if let Some(dir) = &args.plots {
        crate::plots::write_all(dir, &result)?;
        eprintln!("plots written to {}", dir.display());
    }
    if args.assert_sane {
        let problems = result.problems();
        if !problems.is_empty() {
            return Err(Error::Server(format!("insane numbers: {}", problems.join("; "))));
        }
        eprintln!("sanity checks passed");
    }
    Ok(())
}

fn validate(args: &RunArgs) -> Result<()> {
    if args.connections == 0 {
        return Err(Error::Args("--connections must be > 0".into()));
    }
    if !(args.rate > 0.0 && args.rate <= 1_000_000.0) {
        return Err(Error::Args("--rate must be in (0, 1e6]".into()));
    }
    if !(args.duration > 0.0 && args.duration <= 3600.0) {
        return Err(Error::Args("--duration must be in (0, 3600]".into()));
    }
    if !(args.slow_fraction > 0.0 && args.slow_fraction <= 1.0) {
        return Err(Error::Args("--slow-fraction must be in (0, 1]".into()));
    }
    if let Some(addr) = args.addr {
        if !addr.ip().is_loopback() {
            return Err(Error::Args(format!("--addr {addr} is not in 127.0.0.0/8")));
        }
    }
    let per_worker = args.connections.div_ceil(args.worker_count());
    if per_worker > 19_500 {
        return Err(Error::Args(format!(
            "{per_worker} connections per worker exceed one process's file limit; raise --workers"
        )));
    }
    let started_rotor =
        args.target == TargetKind::Rotor && args.addr.is_none() && args.compare.is_empty();
    if (args.tls || args.ws_compression) && !started_rotor {
        return Err(Error::Args(
            "--tls and --ws-compression need a Rotor the harness starts, without --compare".into(),
        ));
    }
    if args.raw_client() && args.uni_sse {
        return Err(Error::Args(
            "--tls/--ws-compression/--raw-ws are for WebSocket clients".into(),
        ));
    }
    if args.source_base != 0 && usize::from(args.source_base) + args.worker_count() > 255 {
        return Err(Error::Args("too many workers for 127.0.0.x source addresses".into()));
    }
    Ok(())
}

pub(crate) fn progress(len: u64, what: &str) -> ProgressBar {
    if !std::io::stdout().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{msg:>12} [{elapsed_precise}] {wide_bar} {pos}/{len}")
    {
        bar.set_style(style);
    }
    bar.set_message(what.to_owned());
    bar
}

/// Runs `f` with this process's CPU affinity set to `cpus` (children inherit it), then restores.
fn with_affinity<T>(cpus: &[usize], f: impl FnOnce() -> Result<T>) -> Result<T> {
    if cpus.is_empty() {
        return f();
    }
    let me = Pid::from_raw(0);
    let saved = sched_getaffinity(me).context("sched_getaffinity")?;
    let mut set = CpuSet::new();
    for &c in cpus {
        set.set(c).context(format!("CPU {c}"))?;
    }
    sched_setaffinity(me, &set).context("sched_setaffinity")?;
    let r = f();
    sched_setaffinity(me, &saved).context("restoring affinity")?;
    r
}

fn start_target(
    args: &RunArgs,
    kind: TargetKind,
    certs: Option<&crate::certs::Certs>,
) -> Result<Box<dyn Target>> {
    let exe = std::env::current_exe().context("locating own executable")?;
    with_affinity(&args.server_cpus.0, || -> Result<Box<dyn Target>> {
        Ok(match kind {
            TargetKind::Raw => Box::new(target::start_raw(&exe, args.max_runtime)?),
            TargetKind::Nats => Box::new(target::start_nats(&args.nats_bin, args.max_runtime)?),
            TargetKind::Socketio => Box::new(target::start_socketio(
                &args.node_bin,
                &target::peers_dir(args.peers_dir.as_deref()),
                args.max_runtime,
            )?),
            TargetKind::Rotor => match args.addr {
                Some(addr) => Box::new(External {
                    addr,
                    pid: args.server_pid,
                    protocol: ProtocolSpec::centrifugo(
                        Flavor::from_flags(args.protobuf, args.uni_sse),
                        args.hmac_secret.clone(),
                        args.api_key.clone(),
                    )
                    .with_tags_filters(args.tags_filters, args.tag_publications),
                }),
                None => {
                    let opts = RotorOptions {
                        bin: args.rotor_bin.clone(),
                        shards: args.shards,
                        queue_max_size: args.queue_max_size,
                        log_level: args.server_log_level.clone(),
                        flavor: Flavor::from_flags(args.protobuf, args.uni_sse),
                        connect_proxy: args.connect_proxy.then(|| exe.clone()),
                        tags_filters: args.tags_filters,
                        tag_publications: args.tag_publications,
                        tls: certs.map(|c| (c.cert.clone(), c.key.clone())),
                        ws_compression: args.ws_compression,
                    };
                    if args.nodes > 1 {
                        Box::new(target::start_cluster(&opts, args.nodes, &args.redis_bin)?)
                    } else {
                        Box::new(target::start_rotor(&opts)?)
                    }
                }
            },
        })
    })
}

/// CPU and memory of a server made of `pids` (summed over several nodes).
pub(crate) fn sample(pids: &[u32]) -> Option<procfs::Sample> {
    let mut total: Option<procfs::Sample> = None;
    for &p in pids {
        let one = procfs::sample(p).ok()?;
        let t = total.get_or_insert(procfs::Sample { cpu_us: 0, stat_cpu_us: 0, rss_kb: 0 });
        t.cpu_us += one.cpu_us;
        t.stat_cpu_us += one.stat_cpu_us;
        t.rss_kb += one.rss_kb;
    }
    total
}

pub(crate) fn cpu_delta(a: Option<procfs::Sample>, b: Option<procfs::Sample>) -> Option<u64> {
    Some(b?.cpu_us.saturating_sub(a?.cpu_us))
}

pub(crate) fn stat_delta(a: Option<procfs::Sample>, b: Option<procfs::Sample>) -> Option<u64> {
    Some(b?.stat_cpu_us.saturating_sub(a?.stat_cpu_us))
}

pub(crate) fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn run_target(
    args: &RunArgs,
    kind: TargetKind,
    started: Instant,
    certs: Option<&crate::certs::Certs>,
) -> Result<Metrics> {
    let deadline = started + Duration::from_secs(args.max_runtime);
    let mut server = start_target(args, kind, certs)?;
    eprintln!(
        "== {} ({}) at {}, pid {:?}: {:?}, {} connections, {} workers",
        server.name(),
        match kind {
            _ if kind == args.target => "target",
            TargetKind::Raw => "floor",
            _ => "peer",
        },
        server.addr(),
        server.pid(),
        args.scenario,
        args.connections,
        args.worker_count()
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut m = Metrics::new(server.name(), args);
    let ca = certs.map(|c| c.ca_pem.as_str());
    let result = scenario(args, server.as_mut(), &mut m, deadline, ca);
    m.server_log = server.warnings();
    server.stop()?;
    result?;
    Ok(m)
}

fn scenario(
    args: &RunArgs,
    server: &mut dyn Target,
    m: &mut Metrics,
    deadline: Instant,
    tls_ca_pem: Option<&str>,
) -> Result<()> {
    let pids = server.pids();
    let pids = pids.as_slice();
    let helper = server.helper_pid().into_iter().collect::<Vec<_>>();
    let before = sample(pids);
    let tcp_before = procfs::tcp_mem_kb();
    m.rss_before_kb = before.map(|s| s.rss_kb);
    let slow = (args.scenario == Scenario::SlowConsumer).then(|| {
        ((args.connections as f64 * args.slow_fraction).round() as usize).clamp(1, args.connections)
    });
    let channels = if matches!(args.scenario, Scenario::FanoutMany | Scenario::Soak) {
        args.channels.max(1)
    } else {
        1
    };
    let mut workers = with_affinity(&args.client_cpus.0, || {
        Workers::spawn(args, &server.addrs(), server.protocol(), channels, slow, tls_ca_pem)
    })?;
    let storm = args.scenario == Scenario::ConnectStorm;
    let cpu0 = sample(pids);
    let t0 = Instant::now();
    let connected = workers.connect(args.connections, deadline)?;
    let connect_wall = t0.elapsed();
    let cpu1 = sample(pids);
    m.connected = connected.ok;
    m.connect_failed = connected.failed;
    m.connect_errors = connected.errors.clone();
    m.connect_seconds = Some(secs(connect_wall));
    m.connect_rate = Some(connected.ok as f64 / secs(connect_wall).max(1e-6));
    m.connect_latency = Some(hist::percentiles(&connected.latency));
    if storm {
        m.cpu_us_per_connect = cpu_delta(cpu0, cpu1).map(|c| c as f64 / connected.ok.max(1) as f64);
        m.server_cpu_us = cpu_delta(cpu0, cpu1);
        m.server_cpu_us_stat = stat_delta(cpu0, cpu1);
    }
    if connected.ok == 0 {
        workers.shutdown();
        return Err(Error::Server(format!("no client connected: {:?}", connected.errors)));
    }
    match args.scenario {
        Scenario::Idle | Scenario::ConnectStorm => {
            std::thread::sleep(Duration::from_secs(1));
            let after = sample(pids);
            record_memory(m, before, after, tcp_before, connected.ok);
            if args.scenario == Scenario::Idle {
                let c0 = sample(pids);
                let hold = Duration::from_secs_f64(args.duration);
                let bar = progress(hold.as_secs(), "holding");
                let until = (Instant::now() + hold).min(deadline);
                while Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(250).min(until - Instant::now()));
                    bar.set_position(
                        hold.as_secs().saturating_sub((until - Instant::now()).as_secs()),
                    );
                }
                bar.finish_and_clear();
                let c1 = sample(pids);
                m.hold_seconds = Some(args.duration);
                m.server_cpu_us = cpu_delta(c0, c1);
                m.server_cpu_us_stat = stat_delta(c0, c1);
                m.cpu_us_per_conn_second = cpu_delta(c0, c1)
                    .map(|c| c as f64 / (connected.ok as f64 * args.duration.max(1e-9)));
            }
            let reports = workers.report(false, deadline)?;
            m.closes = merge_closes(&reports);
        }
        Scenario::Broadcast | Scenario::FanoutMany => {
            let after = sample(pids);
            record_memory(m, before, after, tcp_before, connected.ok);
            let mut publisher: Vec<Box<dyn Publisher>> =
                (0..args.publishers.max(1)).map(|_| server.publisher()).collect();
            let subs = subscribers_per_channel(args.connections, channels, connected.ok);
            // Warm-up: a short burst not counted, then counters reset.
            let warm = publish_phase(
                &mut publisher,
                args,
                channels,
                args.rate.min(1000.0) * 0.5,
                0.5,
                deadline,
                "warm-up",
            )?;
            drain(
                &mut workers,
                expected(&warm.per_channel, &subs),
                Duration::from_secs(3),
                deadline,
            )?;
            workers.report(true, deadline)?;
            let c0 = sample(pids);
            let h0 = sample(&helper);
            let phase = publish_phase(
                &mut publisher,
                args,
                channels,
                args.rate,
                args.duration,
                deadline,
                "publishing",
            )?;
            let want = expected(&phase.per_channel, &subs);
            let reports = drain(&mut workers, want, Duration::from_secs(5), deadline)?;
            let c1 = sample(pids);
            let h1 = sample(&helper);
            fill_delivery(m, &reports, &phase, want, cpu_delta(c0, c1))?;
            m.helper_cpu_us = cpu_delta(h0, h1);
            m.per_node = per_node(&reports, &server.pids(), secs(phase.elapsed))?;
            m.server_cpu_us_stat = stat_delta(c0, c1);
            m.closes = merge_closes(&reports);
        }
        Scenario::SlowConsumer => {
            let after = sample(pids);
            record_memory(m, before, after, tcp_before, connected.ok);
            let slow_n = slow.unwrap_or(1);
            crate::slow::run(args, server, m, &mut workers, connected.ok, slow_n, deadline)?;
        }
        Scenario::Soak => {
            let after = sample(pids);
            record_memory(m, before, after, tcp_before, connected.ok);
            crate::soak::run(args, server, m, &mut workers, connected.ok, channels, deadline)?;
        }
    }
    workers.shutdown();
    Ok(())
}

fn record_memory(
    m: &mut Metrics,
    before: Option<procfs::Sample>,
    after: Option<procfs::Sample>,
    tcp_before: Option<u64>,
    n: usize,
) {
    m.rss_after_kb = after.map(|s| s.rss_kb);
    if let (Some(b), Some(a)) = (before, after) {
        m.rss_per_conn_kb = Some((a.rss_kb as f64 - b.rss_kb as f64) / n.max(1) as f64);
    }
    if let (Some(b), Some(a)) = (tcp_before, procfs::tcp_mem_kb()) {
        m.tcp_buffers_per_conn_kb = Some((a as f64 - b as f64) / n.max(1) as f64);
    }
}

/// Subscribers per channel, scaled by the share of clients that connected.
pub(crate) fn subscribers_per_channel(n: usize, channels: usize, connected: usize) -> Vec<f64> {
    let mut v = vec![0.0; channels];
    for i in 0..n {
        v[i % channels] += 1.0;
    }
    let scale = connected as f64 / n as f64;
    v.iter().map(|x| x * scale).collect()
}

pub(crate) fn expected(per_channel: &[u64], subs: &[f64]) -> u64 {
    per_channel.iter().zip(subs).map(|(p, s)| *p as f64 * s).sum::<f64>().round() as u64
}

pub(crate) fn merged_latency(reports: &[WorkerReport]) -> Result<Percentiles> {
    let mut h = hist::new();
    for r in reports {
        hist::merge(&mut h, &hist::decode(&r.latency_hist)?)?;
    }
    Ok(hist::percentiles(&h))
}

/// Deliveries and latency of the clients of each node (worker k talks to node k mod n).
fn per_node(reports: &[WorkerReport], pids: &[u32], seconds: f64) -> Result<Vec<NodeFigures>> {
    if pids.len() < 2 {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for (node, pid) in pids.iter().enumerate() {
        let mine: Vec<WorkerReport> =
            reports.iter().skip(node).step_by(pids.len()).cloned().collect();
        let deliveries: u64 = mine.iter().map(|r| r.deliveries + r.slow_deliveries).sum();
        out.push(NodeFigures {
            node,
            pid: *pid,
            clients: mine.iter().map(|r| r.open).sum(),
            deliveries_per_sec: deliveries as f64 / seconds.max(1e-6),
            latency: merged_latency(&mine)?,
        });
    }
    Ok(out)
}

pub(crate) fn merge_closes(reports: &[WorkerReport]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for r in reports {
        for (k, v) in &r.closes {
            *out.entry(k.clone()).or_default() += v;
        }
    }
    out
}

pub(crate) fn fill_delivery(
    m: &mut Metrics,
    reports: &[WorkerReport],
    phase: &PhaseStats,
    want: u64,
    cpu_us: Option<u64>,
) -> Result<()> {
    let mut h = hist::new();
    let mut per_second: BTreeMap<u64, u64> = BTreeMap::new();
    for r in reports {
        hist::merge(&mut h, &hist::decode(&r.latency_hist)?)?;
        for (s, c) in &r.per_second {
            *per_second.entry(*s).or_default() += c;
        }
        m.bad_frames += r.bad_frames;
    }
    let deliveries: u64 = reports.iter().map(|r| r.deliveries + r.slow_deliveries).sum();
    let wire: u64 = reports.iter().map(|r| r.wire_rx_bytes).sum();
    if wire > 0 {
        m.wire_rx_bytes = Some(wire);
        m.wire_bytes_per_delivery = (deliveries > 0).then(|| wire as f64 / deliveries as f64);
    }
    m.publishes = Some(phase.sent);
    m.publish_errors = Some(phase.errors);
    m.publish_skipped = Some(phase.skipped);
    m.publish_rate = Some(phase.sent as f64 / secs(phase.elapsed).max(1e-6));
    m.publish_api_latency = Some(hist::percentiles(&phase.api_latency));
    m.deliveries = Some(deliveries);
    m.expected_deliveries = Some(want);
    m.deliveries_per_sec = Some(deliveries as f64 / secs(phase.elapsed).max(1e-6));
    m.latency = Some(hist::percentiles(&h));
    m.latency_cdf =
        h.iter_quantiles(1).map(|v| (v.quantile_iterated_to(), v.value_iterated_to())).collect();
    let start_s = phase.start_ns / 1_000_000_000;
    m.per_second = per_second
        .into_iter()
        .filter(|(s, _)| *s >= start_s)
        .map(|(s, c)| (s - start_s, c))
        .collect();
    m.server_cpu_us = cpu_us;
    if let Some(c) = cpu_us {
        m.cpu_us_per_delivery = (deliveries > 0).then(|| c as f64 / deliveries as f64);
        m.server_cpu_percent = Some(c as f64 / 1e4 / secs(phase.elapsed).max(1e-6));
    }
    Ok(())
}

/// Result of one publish phase.
pub(crate) struct PhaseStats {
    pub(crate) sent: u64,
    pub(crate) errors: u64,
    pub(crate) per_channel: Vec<u64>,
    pub(crate) elapsed: Duration,
    start_ns: u64,
    api_latency: hdrhistogram::Histogram<u64>,
    pub(crate) skipped: u64,
}

impl PhaseStats {
    fn empty(channels: usize, start_ns: u64) -> Self {
        Self {
            sent: 0,
            errors: 0,
            per_channel: vec![0; channels],
            elapsed: Duration::ZERO,
            start_ns,
            api_latency: hist::new(),
            skipped: 0,
        }
    }
}

/// Publishes at `rate` for `duration` seconds: at most `rate × duration` publishes and never
/// past `duration + 2 s` (or the run deadline). Tick `i` is due at `i / rate` and is sent by
/// publisher `i % K` (each its own keep-alive connection and thread), so a slow API answer
/// does not hold back the schedule; ticks more than a second late are skipped, not bunched.
pub(crate) fn publish_phase(
    publishers: &mut [Box<dyn Publisher>],
    args: &RunArgs,
    channels: usize,
    rate: f64,
    duration: f64,
    deadline: Instant,
    what: &str,
) -> Result<PhaseStats> {
    let max = (rate * duration).ceil().max(1.0) as u64;
    let start = Instant::now();
    let stop = (start + Duration::from_secs_f64(duration + 2.0)).min(deadline);
    let bar = progress(max, what);
    let k = publishers.len().max(1) as u64;
    let start_ns = crate::clock::now_ns();
    let results: Vec<Result<PhaseStats>> = std::thread::scope(|scope| {
        let handles: Vec<_> = publishers
            .iter_mut()
            .enumerate()
            .map(|(j, publisher)| {
                let bar = bar.clone();
                scope.spawn(move || {
                    let mut st = PhaseStats::empty(channels, start_ns);
                    let mut last_error = String::new();
                    let mut tick = j as u64;
                    while tick < max {
                        let due = start + Duration::from_secs_f64(tick as f64 / rate);
                        let now = Instant::now();
                        if now >= stop {
                            break;
                        }
                        if due > now {
                            std::thread::sleep(due - now);
                        } else if now - due > Duration::from_secs(1) {
                            st.skipped += 1;
                            tick += k;
                            continue;
                        }
                        let ch = (tick as usize) % channels;
                        let t = crate::clock::now_ns();
                        let body = match args.payload_kind {
                            PayloadKind::Padded => {
                                crate::payload::build(t, tick, args.payload_bytes)
                            }
                            PayloadKind::AppJson => {
                                crate::payload::build_app_json(t, tick, args.payload_bytes)
                            }
                        };
                        match publisher.publish(&channel_name(ch, channels), &body) {
                            Ok(()) => {
                                st.sent += 1;
                                st.per_channel[ch] += 1;
                                let us = (crate::clock::now_ns().saturating_sub(t) / 1000).max(1);
                                st.api_latency.saturating_record(us);
                            }
                            Err(e) => {
                                st.errors += 1;
                                last_error = e.to_string();
                                if st.sent == 0 && st.errors >= 10 {
                                    return Err(Error::Server(format!(
                                        "publishing fails: {last_error}"
                                    )));
                                }
                            }
                        }
                        tick += k;
                        bar.inc(1);
                    }
                    if st.errors > 0 {
                        eprintln!("{what}: {} publish errors, last: {last_error}", st.errors);
                    }
                    Ok(st)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(Error::Server("publisher panicked".into()))))
            .collect()
    });
    bar.finish_and_clear();
    let mut total = PhaseStats::empty(channels, start_ns);
    for r in results {
        let st = r?;
        total.sent += st.sent;
        total.errors += st.errors;
        total.skipped += st.skipped;
        for (a, b) in total.per_channel.iter_mut().zip(&st.per_channel) {
            *a += b;
        }
        hist::merge(&mut total.api_latency, &st.api_latency)?;
    }
    total.elapsed = start.elapsed().max(Duration::from_secs_f64(duration));
    Ok(total)
}

/// Polls the workers until `want` deliveries arrived or counts stop moving for a second;
/// returns the last reports (counters not reset).
pub(crate) fn drain(
    workers: &mut Workers,
    want: u64,
    limit: Duration,
    deadline: Instant,
) -> Result<Vec<WorkerReport>> {
    let until = (Instant::now() + limit).min(deadline);
    let mut last = 0;
    let mut still = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let reports = workers.report(false, deadline)?;
        let got: u64 = reports.iter().map(|r| r.deliveries + r.slow_deliveries).sum();
        if got != last {
            last = got;
            still = Instant::now();
        }
        if got >= want || Instant::now() >= until || still.elapsed() >= Duration::from_secs(1) {
            return Ok(reports);
        }
    }
}
