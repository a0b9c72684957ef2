//! Talking to the service manager: sd_notify datagrams and the process limits operators must set.
//!
//! Owns: the `$NOTIFY_SOCKET` protocol (READY=1, STOPPING=1, WATCHDOG=1, STATUS=…), the watchdog
//! interval from `$WATCHDOG_USEC`, and reading the effective limits that decide how many
//! connections this process can hold. It is a handful of lines, so no dependency is pulled in.
//! Used only by the supervisor thread; must not be called from shards.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends notifications to the service manager when `$NOTIFY_SOCKET` is set; otherwise a no-op.
#[derive(Debug)]
pub struct Notifier {
    socket: Option<(UnixDatagram, String)>,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).
    pub fn from_env() -> Notifier {
        let socket = std::env::var("NOTIFY_SOCKET")
            .ok()
            .filter(|s| !s.is_empty())
            .and_then(|target| UnixDatagram::unbound().ok().map(|sock| (sock, target)));
        Notifier { socket }
    }

    /// Whether a service manager listens.
    pub fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// Sends one notification, e.g. `READY=1`. Failures are logged, never fatal: the server
    /// keeps serving even if the manager went away.
    pub fn notify(&self, state: &str) {
        let Some((sock, target)) = &self.socket else { return };
        let sent = if let Some(name) = target.strip_prefix('@') {
            abstract_addr(name).and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
        } else {
            sock.send_to(state.as_bytes(), target)
        };
        if let Err(e) = sent {
            tracing::warn!(error = %e, state, "sd_notify failed");
        }
    }
}

fn abstract_addr(name: &str) -> std::io::Result<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
}

/// How often to send WATCHDOG=1: half of `$WATCHDOG_USEC`, when the watchdog is meant for this
/// process (`$WATCHDOG_PID` absent or equal to our pid).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Limits that bound how many connections the process can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Soft `RLIMIT_NOFILE` (open files, i.e. sockets); `None` = unlimited.
    pub nofile: Option<u64>,
    /// Soft `RLIMIT_MEMLOCK` in bytes (io_uring rings); `None` = unlimited.
    pub memlock_bytes: Option<u64>,
    /// `net.core.somaxconn` (caps the listen backlog).
    pub somaxconn: Option<u64>,
}

/// Parses one row of `/proc/self/limits` ("Max open files  1024  4096  files").
fn soft_limit(limits: &str, row: &str) -> Option<Option<u64>> {
    let line = limits.lines().find(|l| l.starts_with(row))?;
    let soft = line[row.len()..].split_whitespace().next()?;
    Some(if soft == "unlimited" { None } else { Some(soft.parse().ok()?) })
}

impl Limits {
    /// Reads the limits of this process from `/proc`.
    pub fn read() -> Limits {
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        Limits {
            nofile: soft_limit(&limits, "Max open files").flatten(),
            memlock_bytes: soft_limit(&limits, "Max locked memory").flatten(),
            somaxconn: std::fs::read_to_string("/proc/sys/net/core/somaxconn")
                .ok()
                .and_then(|s| s.trim().parse().ok()),
        }
    }

    /// Warnings for limits below what `shards` and a connection target need
    /// (`connection_target` 0 = no explicit target; then only the basics are checked).
    pub fn warnings(&self, shards: usize, connection_target: usize) -> Vec<String> {
        let mut out = Vec::new();
        // glommio asks for at least 512 KiB of locked memory per executor for its rings.
        let memlock_needed = 512 * 1024 * shards as u64;
        if let Some(m) = self.memlock_bytes.filter(|&m| m < memlock_needed) {
            out.push(format!(
                "memlock limit is {m} bytes; {shards} shards need at least {memlock_needed} \
                 (set LimitMEMLOCK= or ulimit -l)"
            ));
        }
        // Each connection is a file descriptor; keep headroom for listeners, rings, logs.
        let nofile_needed =
            if connection_target > 0 { connection_target as u64 + 1024 } else { 65_536 };
        if let Some(n) = self.nofile.filter(|&n| n < nofile_needed) {
            out.push(format!(
                "open files limit is {n}, below the {nofile_needed} this setup needs; each client \
                 connection is one file (set LimitNOFILE= or ulimit -n)"
            ));
        }
        if let Some(s) = self.somaxconn.filter(|&s| s < 1024) {
            out.push(format!(
                "net.core.somaxconn is {s}; connection bursts beyond it are refused (sysctl -w net.core.somaxconn=4096)"
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROC_LIMITS: &str =
        "Limit                     Soft Limit           Hard Limit           Units     \n\
        Max open files            20000                20000                files     \n\
        Max locked memory         8388608              8388608              bytes     \n";

    #[test]
    fn parses_proc_limits_rows() {
        assert_eq!(soft_limit(PROC_LIMITS, "Max open files"), Some(Some(20_000)));
        assert_eq!(soft_limit(PROC_LIMITS, "Max locked memory"), Some(Some(8_388_608)));
        assert_eq!(
            soft_limit("Max open files  unlimited  unlimited  files", "Max open files"),
            Some(None)
        );
        assert_eq!(soft_limit(PROC_LIMITS, "Max processes"), None);
    }

    #[test]
    fn warns_only_below_what_is_needed() {
        let l =
            Limits { nofile: Some(20_000), memlock_bytes: Some(8 << 20), somaxconn: Some(4096) };
        assert!(l.warnings(4, 0).iter().any(|w| w.starts_with("open files limit is 20000")));
        assert!(l.warnings(4, 10_000).is_empty(), "{:?}", l.warnings(4, 10_000));
        let low = Limits { nofile: None, memlock_bytes: Some(64 * 1024), somaxconn: Some(128) };
        let w = low.warnings(2, 0);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("memlock") && w[1].contains("somaxconn"));
    }

    #[test]
    fn notifier_sends_datagrams_to_a_path_socket() {
        let path = std::env::temp_dir().join(format!("rotor-notify-unit-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            socket: Some((UnixDatagram::unbound().unwrap(), path.to_string_lossy().into())),
        };
        n.notify("READY=1");
        let mut buf = [0u8; 64];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
        let _ = std::fs::remove_file(&path);
    }
}
