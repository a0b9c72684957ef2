//! The `soak` scenario: N subscribed connections held for `--duration` seconds with the
//! server's pings on and a steady `--rate` of publishes over `--channels` channels, sampling
//! the server's resident memory (`VmRSS`), open file descriptors and the deliveries every
//! `--sample-every` seconds. What it answers: does anything grow while nothing changes?
//!
//! The steady state starts at the first sample after one interval of publishing (buffers and
//! pools have taken their working size by then); growth is the last sample against that one.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::adapter::Publisher;
use crate::coordinator::{
    cpu_delta, drain, expected, merge_closes, merged_latency, publish_phase, sample,
    subscribers_per_channel,
};
use crate::error::Result;
use crate::procfs;
use crate::report::Metrics;
use crate::target::Target;
use crate::workers::Workers;

/// Growth of RSS or fds over the steady state that still counts as flat, percent.
pub const FLAT_PERCENT: f64 = 2.0;

/// One sample of the server during the soak.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct SoakSample {
    /// Seconds since publishing started.
    pub t_s: f64,
    /// Server RSS, KiB (summed over nodes).
    pub rss_kb: u64,
    /// Server open file descriptors (summed over nodes).
    pub fds: u64,
    /// Publications received by all clients so far.
    pub deliveries: u64,
    /// Publishes accepted so far.
    pub publishes: u64,
    /// Client connections still open.
    pub open_clients: usize,
    /// Server CPU since the previous sample, percent of one core.
    pub cpu_percent: Option<f64>,
}

/// Soak results.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SoakMetrics {
    /// Every sample, the first right before publishing starts.
    pub samples: Vec<SoakSample>,
    /// Index in `samples` where the steady state starts.
    pub steady_from: usize,
    /// RSS growth over the steady state, percent.
    pub rss_growth_percent: Option<f64>,
    /// Open fd growth over the steady state, percent.
    pub fd_growth_percent: Option<f64>,
}

impl SoakMetrics {
    fn growth(&self, of: impl Fn(&SoakSample) -> u64) -> Option<f64> {
        let first = of(self.samples.get(self.steady_from)?);
        let last = of(self.samples.last()?);
        (first > 0).then(|| (last as f64 / first as f64 - 1.0) * 100.0)
    }

    /// The steady-state sample and the last one.
    pub fn ends(&self) -> Option<(&SoakSample, &SoakSample)> {
        Some((self.samples.get(self.steady_from)?, self.samples.last()?))
    }

    /// Whether RSS and fds stayed flat (growth below [`FLAT_PERCENT`]).
    pub fn flat(&self) -> bool {
        let ok = |g: Option<f64>| g.is_some_and(|g| g < FLAT_PERCENT);
        ok(self.rss_growth_percent) && ok(self.fd_growth_percent)
    }

    /// The samples as a Markdown table, and the verdict in words.
    pub fn markdown(&self, target: &str) -> String {
        let mut out = format!(
            "\n{target} soak samples:\n\n| t (s) | RSS (MiB) | fds | open clients | publishes \
             | deliveries | server CPU (% of a core) |\n|---:|---:|---:|---:|---:|---:|---:|\n"
        );
        for s in &self.samples {
            out.push_str(&format!(
                "| {:.0} | {:.1} | {} | {} | {} | {} | {} |\n",
                s.t_s,
                s.rss_kb as f64 / 1024.0,
                s.fds,
                s.open_clients,
                s.publishes,
                s.deliveries,
                s.cpu_percent.map_or("–".to_owned(), |c| format!("{c:.1}"))
            ));
        }
        if let Some((a, b)) = self.ends() {
            let pct = |g: Option<f64>| g.map_or("–".to_owned(), |g| format!("{g:+.2}%"));
            out.push_str(&format!(
                "\nFrom t = {:.0} s to t = {:.0} s: RSS {:.1} → {:.1} MiB ({}), fds {} → {} ({}): {}.\n",
                a.t_s,
                b.t_s,
                a.rss_kb as f64 / 1024.0,
                b.rss_kb as f64 / 1024.0,
                pct(self.rss_growth_percent),
                a.fds,
                b.fds,
                pct(self.fd_growth_percent),
                if self.flat() {
                    format!("flat (both below {FLAT_PERCENT}% growth)")
                } else {
                    format!("NOT flat (growth of {FLAT_PERCENT}% or more)")
                }
            ));
        }
        out
    }
}

/// Fds of a server made of `pids`, summed.
fn fds(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|p| procfs::fd_count(*p)).sum()
}

/// Runs the soak once `connected` clients are subscribed to `channels` channels.
pub fn run(
    args: &crate::cli::RunArgs,
    server: &mut dyn Target,
    m: &mut Metrics,
    workers: &mut Workers,
    connected: usize,
    channels: usize,
    deadline: Instant,
) -> Result<()> {
    let pids = server.pids();
    let pids = pids.as_slice();
    let mut publisher: Vec<Box<dyn Publisher>> =
        (0..args.publishers.max(1)).map(|_| server.publisher()).collect();
    let subs = subscribers_per_channel(args.connections, channels, connected);
    workers.report(true, deadline)?;
    let every = args.sample_every.clamp(1.0, args.duration);
    let start = Instant::now();
    let mut soak = SoakMetrics::default();
    let mut cpu = sample(pids);
    let first = cpu.map(|s| s.rss_kb).unwrap_or(0);
    soak.samples.push(SoakSample {
        rss_kb: first,
        fds: fds(pids),
        open_clients: connected,
        ..SoakSample::default()
    });
    let c0 = cpu;
    let (mut publishes, mut want, mut errors, mut skipped) = (0u64, 0u64, 0u64, 0u64);
    // Bounded: one window per interval, never past --duration (nor the run deadline).
    let windows = (args.duration / every).ceil() as usize;
    for _ in 0..windows {
        let left = args.duration - start.elapsed().as_secs_f64();
        if left < 0.5 || Instant::now() >= deadline {
            break;
        }
        let phase = publish_phase(
            &mut publisher,
            args,
            channels,
            args.rate,
            every.min(left),
            deadline,
            "soak",
        )?;
        publishes += phase.sent;
        errors += phase.errors;
        skipped += phase.skipped;
        want += expected(&phase.per_channel, &subs);
        let reports = workers.report(false, deadline)?;
        let now = sample(pids);
        let t_s = start.elapsed().as_secs_f64();
        let prev_t = soak.samples.last().map_or(0.0, |s| s.t_s);
        let s = SoakSample {
            t_s,
            rss_kb: now.map_or(0, |s| s.rss_kb),
            fds: fds(pids),
            deliveries: reports.iter().map(|r| r.deliveries + r.slow_deliveries).sum(),
            publishes,
            open_clients: reports.iter().map(|r| r.open).sum(),
            cpu_percent: cpu_delta(cpu, now).map(|c| c as f64 / 1e4 / (t_s - prev_t).max(1e-6)),
        };
        eprintln!(
            "soak t={:.0}s rss={} KiB fds={} open={} publishes={} deliveries={}",
            s.t_s, s.rss_kb, s.fds, s.open_clients, s.publishes, s.deliveries
        );
        soak.samples.push(s);
        cpu = now;
    }
    let reports = drain(workers, want, Duration::from_secs(5), deadline)?;
    let c1 = sample(pids);
    let elapsed = start.elapsed();
    let deliveries: u64 = reports.iter().map(|r| r.deliveries + r.slow_deliveries).sum();
    m.publishes = Some(publishes);
    m.publish_errors = Some(errors);
    m.publish_skipped = Some(skipped);
    m.publish_rate = Some(publishes as f64 / elapsed.as_secs_f64().max(1e-6));
    m.deliveries = Some(deliveries);
    m.expected_deliveries = Some(want);
    m.deliveries_per_sec = Some(deliveries as f64 / elapsed.as_secs_f64().max(1e-6));
    m.latency = Some(merged_latency(&reports)?);
    m.server_cpu_us = cpu_delta(c0, c1);
    m.server_cpu_percent = m.server_cpu_us.map(|c| c as f64 / 1e4 / elapsed.as_secs_f64());
    m.cpu_us_per_delivery =
        m.server_cpu_us.filter(|_| deliveries > 0).map(|c| c as f64 / deliveries as f64);
    // Steady state: from the sample after the first interval of publishing.
    soak.steady_from = 1.min(soak.samples.len().saturating_sub(1));
    soak.rss_growth_percent = soak.growth(|s| s.rss_kb);
    soak.fd_growth_percent = soak.growth(|s| s.fds);
    m.soak = Some(soak);
    m.closes = merge_closes(&reports);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t_s: f64, rss_kb: u64, fds: u64) -> SoakSample {
        SoakSample { t_s, rss_kb, fds, ..SoakSample::default() }
    }

    #[test]
    fn growth_is_measured_from_the_steady_state_and_judged_against_two_percent() {
        let mut s = SoakMetrics {
            samples: vec![
                at(0.0, 50_000, 100),
                at(60.0, 100_000, 19_010),
                at(1800.0, 101_000, 19_010),
            ],
            steady_from: 1,
            ..SoakMetrics::default()
        };
        s.rss_growth_percent = s.growth(|x| x.rss_kb);
        s.fd_growth_percent = s.growth(|x| x.fds);
        assert!((s.rss_growth_percent.unwrap() - 1.0).abs() < 1e-9, "the ramp-up is not growth");
        assert_eq!(s.fd_growth_percent, Some(0.0));
        assert!(s.flat());
        assert!(s.markdown("rotor").contains("flat (both below 2% growth)"));
        s.samples.push(at(1860.0, 103_000, 19_010));
        s.rss_growth_percent = s.growth(|x| x.rss_kb);
        assert!(!s.flat());
        assert!(s.markdown("rotor").contains("NOT flat"));
    }
}
