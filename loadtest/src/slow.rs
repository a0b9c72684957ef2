//! The `slow-consumer` scenario: a broadcast in three phases of `--duration` seconds each,
//! measured in one run so the comparison shares the machine's state.
//!
//! * **A, before**: everybody reads.
//! * **B, slow**: every `slow_every`-th client (4 KB `SO_RCVBUF`) stops reading for
//!   `--slow-stall` seconds, then reads again by itself while publishing goes on, so a client
//!   the server cut meanwhile reads what it was sent up to the close frame (Rotor keeps a
//!   closing socket up to 5 s for it) and reports how it was closed.
//! * **C, after**: the same publishing again; the slow clients the server cut are gone.
//!
//! The healthy clients' baseline is A and C together (without slow readers, before and after),
//! so a drift of the shared machine over the run does not pass for an effect of the slow
//! readers; B is compared against it.

use std::time::{Duration, Instant};

use crate::adapter::Publisher;
use crate::coordinator::{
    cpu_delta, drain, fill_delivery, merge_closes, merged_latency, publish_phase, sample,
    stat_delta,
};
use crate::error::Result;
use crate::hist;
use crate::proto::{Command, WorkerReport};
use crate::report::{Metrics, SlowMetrics};
use crate::target::Target;
use crate::workers::Workers;

/// Runs the three phases once `connected` clients are subscribed.
pub fn run(
    args: &crate::cli::RunArgs,
    server: &mut dyn Target,
    m: &mut Metrics,
    workers: &mut Workers,
    connected: usize,
    slow_every: usize,
    deadline: Instant,
) -> Result<()> {
    let pids = server.pids();
    let pids = pids.as_slice();
    let mut publisher: Vec<Box<dyn Publisher>> =
        (0..args.publishers.max(1)).map(|_| server.publisher()).collect();
    let slow_n = (0..args.connections).filter(|i| i % slow_every == 0).count();
    let healthy = connected.saturating_sub(slow_n) as u64;
    let warm = publish_phase(
        &mut publisher,
        args,
        1,
        args.rate.min(1000.0) * 0.5,
        0.5,
        deadline,
        "warm-up",
    )?;
    drain(workers, warm.sent * connected as u64, Duration::from_secs(3), deadline)?;
    workers.report(true, deadline)?;
    // A: everybody reads.
    let c0 = sample(pids);
    let a = publish_phase(&mut publisher, args, 1, args.rate, args.duration, deadline, "before")?;
    let ra = drain(workers, a.sent * connected as u64, Duration::from_secs(5), deadline)?;
    let c1 = sample(pids);
    fill_delivery(m, &ra, &a, a.sent * connected as u64, cpu_delta(c0, c1))?;
    m.server_cpu_us_stat = stat_delta(c0, c1);
    workers.report(true, deadline)?;
    // B: the slow clients stop reading, and read again after the stall.
    let stall = args.slow_stall.clamp(0.0, args.duration);
    let resume_after_ms = Some((stall * 1000.0) as u64);
    workers.send_all(&Command::SlowStart { resume_after_ms })?;
    let rss_b0 = sample(pids);
    let b = publish_phase(&mut publisher, args, 1, args.rate, args.duration, deadline, "slow")?;
    let rb = drain(workers, b.sent * healthy, Duration::from_secs(5), deadline)?;
    let rss_b1 = sample(pids);
    let healthy_deliveries: u64 = rb.iter().map(|r| r.deliveries).sum();
    workers.report(true, deadline)?;
    // C: without the slow clients the server cut.
    let c = publish_phase(&mut publisher, args, 1, args.rate, args.duration, deadline, "after")?;
    let rc = drain(workers, c.sent * healthy, Duration::from_secs(5), deadline)?;
    let closes = merge_closes(&rc);
    let count = |pick: &dyn Fn(&str) -> bool| -> u64 {
        closes.iter().filter(|(k, _)| pick(k)).map(|(_, v)| *v).sum()
    };
    let before = merged_latency(&ra)?;
    let during = merged_latency(&rb)?;
    let after = merged_latency(&rc)?;
    let baseline = merged_of(&[&ra, &rc])?;
    m.slow = Some(SlowMetrics {
        slow_clients: slow_n,
        stall_seconds: stall,
        baseline,
        before,
        during,
        after,
        // Without samples in both there is no change to speak of.
        p99_change_percent: (baseline.count > 0 && during.count > 0 && baseline.p99_us > 0)
            .then(|| (during.p99_us as f64 / baseline.p99_us as f64 - 1.0) * 100.0),
        healthy_deliveries,
        healthy_expected: b.sent * healthy,
        slow_disconnected_3008: count(&|k| k == "slow:3008"),
        slow_disconnected_any: count(&|k| k.starts_with("slow:") && !k.ends_with("worker-exit")),
        slow_closed_other: count(&|k| {
            k.starts_with("slow:") && k != "slow:3008" && !k.ends_with("worker-exit")
        }),
        healthy_closed: count(&|k| k.starts_with("ok:") && !k.ends_with("worker-exit")),
        rss_growth_kb: match (rss_b0, rss_b1) {
            (Some(x), Some(y)) => Some(y.rss_kb as i64 - x.rss_kb as i64),
            _ => None,
        },
    });
    m.closes = closes;
    Ok(())
}

/// The healthy clients' latency over several phases together.
fn merged_of(phases: &[&[WorkerReport]]) -> Result<hist::Percentiles> {
    let mut h = hist::new();
    for reports in phases {
        for r in *reports {
            hist::merge(&mut h, &hist::decode(&r.latency_hist)?)?;
        }
    }
    Ok(hist::percentiles(&h))
}
