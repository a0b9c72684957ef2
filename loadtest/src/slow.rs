//! The `slow-consumer` scenario: a broadcast in alternating phases of `--duration` seconds,
//! measured in one run so the comparison shares the machine's state.
//!
//! * **Without stalled readers**: everybody reads.
//! * **With stalled readers**: the `--slow-fraction` of the clients (4 KB `SO_RCVBUF`, in a
//!   worker process of their own, so catching up costs the healthy clients' workers nothing)
//!   stop reading for `--slow-stall` seconds, then read again by themselves while publishing
//!   goes on: a client the server cut meanwhile reads what it was sent up to the close frame
//!   (Rotor keeps a closing socket up to 5 s for it) and reports how it was closed.
//!
//! `--slow-cycles` stalls, each between two phases without (the cut clients connect again
//! before the next cycle): on a machine whose load drifts (other builds), a single "before"
//! and "after" differ by more than the effect sought, so both conditions are sampled across
//! the whole run and pooled.

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

/// Runs the phases once `connected` clients are subscribed, the first `slow_n` slow.
pub fn run(
    args: &crate::cli::RunArgs,
    server: &mut dyn Target,
    m: &mut Metrics,
    workers: &mut Workers,
    connected: usize,
    slow_n: usize,
    deadline: Instant,
) -> Result<()> {
    let pids = server.pids();
    let pids = pids.as_slice();
    let mut publisher: Vec<Box<dyn Publisher>> =
        (0..args.publishers.max(1)).map(|_| server.publisher()).collect();
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
    let stall = args.slow_stall.clamp(0.0, args.duration);
    let cycles = args.slow_cycles.clamp(1, 20);
    let (mut without, mut with) = (Vec::new(), Vec::new());
    let (mut healthy_deliveries, mut healthy_expected) = (0, 0);
    let mut rss_growth_kb = None;
    let mut closes = Default::default();
    for cycle in 0..=cycles {
        if cycle > 0 {
            // The slow clients the server cut come back (they live in worker 0).
            workers.reconnect(0, deadline)?;
        }
        // Everybody reads.
        let c0 = sample(pids);
        let open = connected as u64;
        let a =
            publish_phase(&mut publisher, args, 1, args.rate, args.duration, deadline, "without")?;
        let ra = drain(workers, a.sent * open, Duration::from_secs(5), deadline)?;
        let c1 = sample(pids);
        if cycle == 0 {
            fill_delivery(m, &ra, &a, a.sent * open, cpu_delta(c0, c1))?;
            m.server_cpu_us_stat = stat_delta(c0, c1);
        }
        without.push(ra);
        closes = merge_closes(&workers.report(true, deadline)?);
        if cycle == cycles {
            break;
        }
        // The slow clients stop reading, and read again after the stall.
        let resume_after_ms = Some((stall * 1000.0) as u64);
        workers.send_all(&Command::SlowStart { resume_after_ms })?;
        let rss0 = sample(pids);
        let b = publish_phase(&mut publisher, args, 1, args.rate, args.duration, deadline, "with")?;
        let rb = drain(workers, b.sent * healthy, Duration::from_secs(5), deadline)?;
        let rss1 = sample(pids);
        healthy_deliveries += rb.iter().map(|r| r.deliveries).sum::<u64>();
        healthy_expected += b.sent * healthy;
        if let (Some(x), Some(y)) = (rss0, rss1) {
            let grew = y.rss_kb as i64 - x.rss_kb as i64;
            rss_growth_kb = Some(rss_growth_kb.unwrap_or(grew).max(grew));
        }
        with.push(rb);
        workers.report(true, deadline)?;
    }
    let count = |pick: &dyn Fn(&str) -> bool| -> u64 {
        closes.iter().filter(|(k, _)| pick(k)).map(|(_, v)| *v).sum()
    };
    let baseline = merged_of(&without)?;
    let during = merged_of(&with)?;
    let p99s = |phases: &[Vec<WorkerReport>]| -> Result<Vec<f64>> {
        phases.iter().map(|r| Ok(merged_latency(r)?.p99_us as f64 / 1000.0)).collect()
    };
    m.slow = Some(SlowMetrics {
        slow_clients: slow_n,
        stall_seconds: stall,
        cycles,
        baseline,
        during,
        baseline_p99_ms: p99s(&without)?,
        during_p99_ms: p99s(&with)?,
        p99_change_percent: paired_change(&p99s(&without)?, &p99s(&with)?),
        healthy_deliveries,
        healthy_expected,
        slow_disconnected_3008: count(&|k| k == "slow:3008"),
        slow_disconnected_any: count(&|k| k.starts_with("slow:") && !k.ends_with("worker-exit")),
        slow_closed_other: count(&|k| {
            k.starts_with("slow:") && k != "slow:3008" && !k.ends_with("worker-exit")
        }),
        healthy_closed: count(&|k| k.starts_with("ok:") && !k.ends_with("worker-exit")),
        rss_growth_kb,
    });
    m.closes = closes;
    Ok(())
}

/// The median over cycles of the change of the healthy p99 in a phase with stalled readers
/// against the mean of the two phases without around it, percent. Pairing each phase with its
/// neighbours cancels the machine's drift, and the median keeps one disturbed phase (a
/// build elsewhere on the box) from deciding; `None` when a phase measured nothing.
fn paired_change(without: &[f64], with: &[f64]) -> Option<f64> {
    let mut changes: Vec<f64> = Vec::new();
    for (i, w) in with.iter().enumerate() {
        let around = (without.get(i)? + without.get(i + 1)?) / 2.0;
        if around <= 0.0 || *w <= 0.0 {
            return None;
        }
        changes.push((w / around - 1.0) * 100.0);
    }
    changes.sort_by(f64::total_cmp);
    let n = changes.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(changes[n / 2]),
        _ => Some((changes[n / 2 - 1] + changes[n / 2]) / 2.0),
    }
}

/// The healthy clients' latency over several phases together.
fn merged_of(phases: &[Vec<WorkerReport>]) -> Result<hist::Percentiles> {
    let mut h = hist::new();
    for reports in phases {
        for r in reports {
            hist::merge(&mut h, &hist::decode(&r.latency_hist)?)?;
        }
    }
    Ok(hist::percentiles(&h))
}

#[cfg(test)]
mod tests {
    use super::paired_change;

    #[test]
    fn the_change_is_the_median_of_each_stalled_phase_against_its_neighbours() {
        // Cycle 2's neighbours were disturbed; its own +900% does not decide.
        let without = [10.0, 10.0, 100.0, 10.0];
        let with = [11.0, 1000.0, 9.0];
        let change = paired_change(&without, &with).unwrap();
        assert!((change - 10.0).abs() < 1e-9, "{change}");
        assert_eq!(paired_change(&[10.0, 10.0], &[0.0]), None, "a phase measured nothing");
        assert_eq!(paired_change(&[10.0], &[]), None);
    }
}
