//! Outside measurement of a server process through procfs: CPU time, resident memory
//! (`VmRSS` from `/proc/<pid>/status`) and the kernel's TCP buffer memory (`/proc/net/sockstat`).
//!
//! CPU comes two ways: utime+stime of `/proc/<pid>/stat` (all threads, in clock ticks converted
//! with the real `CLK_TCK` from `getconf`, so 10 ms resolution at 100 Hz), and the sum of the
//! `sum_exec_runtime` nanoseconds of `/proc/<pid>/task/*/schedstat` (every live thread). The
//! nanosecond sum is the primary figure — short smoke runs would otherwise measure in whole
//! ticks — and the tick figure is kept next to it as a cross-check.

use std::sync::OnceLock;

use serde::Serialize;

use crate::error::{Context, Error, Result};

/// One reading of a process.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Sample {
    /// On-CPU time of all live threads (schedstat ns), in microseconds; falls back to
    /// `stat_cpu_us` when schedstat is unavailable.
    pub cpu_us: u64,
    /// utime + stime from `/proc/<pid>/stat`, in microseconds (tick resolution).
    pub stat_cpu_us: u64,
    /// Resident set size in KiB.
    pub rss_kb: u64,
}

/// Clock ticks per second, asked once from `getconf CLK_TCK`.
pub fn clk_tck() -> Result<u64> {
    static TCK: OnceLock<u64> = OnceLock::new();
    if let Some(t) = TCK.get() {
        return Ok(*t);
    }
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .context("running getconf CLK_TCK")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let tck: u64 = text
        .trim()
        .parse()
        .map_err(|_| Error::Server(format!("getconf CLK_TCK printed {text:?}")))?;
    if tck == 0 {
        return Err(Error::Server("getconf CLK_TCK printed 0".into()));
    }
    Ok(*TCK.get_or_init(|| tck))
}

/// Parses utime+stime (ticks) out of a `/proc/<pid>/stat` line.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may contain spaces and parentheses; fields after the last ')'
    // start at field 3 (state), so utime (14) and stime (15) are at offsets 11 and 12.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Parses `VmRSS:  1234 kB` out of `/proc/<pid>/status`.
pub fn parse_rss_kb(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Reads CPU and RSS of `pid`.
pub fn sample(pid: u32) -> Result<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .context(format!("reading /proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .context(format!("reading /proc/{pid}/status"))?;
    let ticks = parse_stat_ticks(&stat)
        .ok_or_else(|| Error::Server(format!("unparsable /proc/{pid}/stat")))?;
    let rss_kb = parse_rss_kb(&status)
        .ok_or_else(|| Error::Server(format!("no VmRSS in /proc/{pid}/status")))?;
    let stat_cpu_us = ticks * 1_000_000 / clk_tck()?;
    let cpu_us = schedstat_ns(pid).map_or(stat_cpu_us, |ns| ns / 1000);
    Ok(Sample { cpu_us, stat_cpu_us, rss_kb })
}

/// Sum of the first field (ns on CPU) of `/proc/<pid>/task/*/schedstat`.
pub fn schedstat_ns(pid: u32) -> Option<u64> {
    let mut total = 0u64;
    let mut any = false;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(entry) = entry else { continue };
        // A thread may exit between listing and reading; skip it.
        let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat")) else { continue };
        if let Some(ns) = text.split_whitespace().next().and_then(|f| f.parse::<u64>().ok()) {
            total += ns;
            any = true;
        }
    }
    any.then_some(total)
}

/// Open file descriptors of `pid` (entries of `/proc/<pid>/fd`).
pub fn fd_count(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// Kernel TCP buffer memory in KiB (`TCP: … mem <pages>` of `/proc/net/sockstat`, 4 KiB pages),
/// host-wide: on loopback it covers both ends.
pub fn tcp_mem_kb() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    parse_sockstat_mem_pages(&text).map(|p| p * 4)
}

/// Parses the `mem` field of the `TCP:` line of `/proc/net/sockstat`.
pub fn parse_sockstat_mem_pages(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let mut it = line.split_whitespace();
    while let Some(word) = it.next() {
        if word == "mem" {
            return it.next()?.parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_comm() {
        let stat = "1234 (ro tor) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 \
                    100 1000 200 18446744073709551615";
        assert_eq!(parse_stat_ticks(stat), Some(300));
    }

    #[test]
    fn rss_and_sockstat() {
        assert_eq!(parse_rss_kb("Name:\trotor\nVmRSS:\t   5120 kB\n"), Some(5120));
        let s =
            "sockets: used 300\nTCP: inuse 10 orphan 0 tw 2 alloc 12 mem 7\nUDP: inuse 1 mem 0\n";
        assert_eq!(parse_sockstat_mem_pages(s), Some(7));
    }

    #[test]
    fn own_process_is_readable() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kb > 0);
        assert!(schedstat_ns(std::process::id()).unwrap() > 0);
        assert!(fd_count(std::process::id()).unwrap() >= 3, "stdin, stdout, stderr at least");
    }
}
