//! The worker processes of one target run, seen from the coordinator: spawning them with
//! their specs, sending commands, collecting their events (every wait bounded), and stopping
//! them by their own PIDs.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::process::{Child, ChildStdin, Command as Process, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::adapter::ProtocolSpec;
use crate::cli::{RunArgs, Scenario};
use crate::coordinator::progress;
use crate::error::{Context, Error, Result};
use crate::hist;
use crate::proto::{Command, ConnectReport, Event, WorkerReport, WorkerSpec};

/// The clients of each worker: (first index, count). `slow` clients (indices below it) get
/// a worker of their own, so reading their backlog when they resume does not delay the
/// healthy clients whose latency is measured; the rest are spread over `workers`.
fn client_ranges(n: usize, workers: usize, slow: Option<usize>) -> Vec<(usize, usize)> {
    let slow = slow.unwrap_or(0).min(n);
    let mut out = Vec::new();
    if slow > 0 {
        out.push((0, slow));
    }
    let rest = n - slow;
    let w = workers.max(1);
    let mut first = slow;
    for k in 0..w {
        let count = rest / w + usize::from(k < rest % w);
        if count > 0 || out.is_empty() {
            out.push((first, count));
        }
        first += count;
    }
    out
}

/// Merged connect outcome of all workers.
pub struct Connected {
    pub ok: usize,
    pub failed: usize,
    pub errors: BTreeMap<String, u64>,
    pub latency: hdrhistogram::Histogram<u64>,
}

enum Msg {
    Event(Event),
    Gone,
}

/// The worker processes of one target run.
pub struct Workers {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    rx: mpsc::Receiver<(usize, Msg)>,
}

impl Workers {
    pub fn spawn(
        args: &RunArgs,
        addrs: &[std::net::SocketAddr],
        protocol: ProtocolSpec,
        channels: usize,
        slow: Option<usize>,
        tls_ca_pem: Option<&str>,
    ) -> Result<Self> {
        let exe = std::env::current_exe().context("locating own executable")?;
        let ranges = client_ranges(args.connections, args.worker_count(), slow);
        let w = ranges.len();
        let (tx, rx) = mpsc::channel();
        let mut me = Workers { children: Vec::new(), stdins: Vec::new(), rx };
        let storm = args.scenario == Scenario::ConnectStorm;
        for (k, (first, count)) in ranges.into_iter().enumerate() {
            let spec = WorkerSpec {
                worker: k,
                addr: addrs[k % addrs.len()],
                source_ip: (args.source_base != 0)
                    .then(|| Ipv4Addr::new(127, 0, 0, args.source_base.saturating_add(k as u8))),
                first_client: first,
                clients: count,
                protocol: protocol.clone(),
                channels,
                connect_concurrency: if storm {
                    args.storm_concurrency
                } else {
                    args.connect_concurrency
                },
                connect_timeout_ms: args.connect_timeout_ms,
                slow_below: slow,
                slow_rcvbuf: slow.map(|_| 4096),
                max_lifetime_s: args.max_runtime,
                raw_ws: args.raw_client(),
                tls_ca_pem: tls_ca_pem.map(str::to_owned),
                ws_compression: args.ws_compression,
            };
            let mut child = Process::new(&exe)
                .arg("worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .context("spawning a worker")?;
            let mut stdin = child
                .stdin
                .take()
                .ok_or_else(|| Error::Worker { worker: k, msg: "no stdin".into() })?;
            let stdout = child
                .stdout
                .take()
                .ok_or_else(|| Error::Worker { worker: k, msg: "no stdout".into() })?;
            let line = serde_json::to_string(&spec).context("encoding worker spec")?;
            writeln!(stdin, "{line}").context("sending worker spec")?;
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    match serde_json::from_str::<Event>(&line) {
                        Ok(ev) => {
                            if tx.send((k, Msg::Event(ev))).is_err() {
                                return;
                            }
                        }
                        Err(_) => eprintln!("worker {k}: {line}"),
                    }
                }
                let _ = tx.send((k, Msg::Gone));
            });
            me.children.push(child);
            me.stdins.push(stdin);
        }
        let until = Instant::now() + Duration::from_secs(20);
        let mut ready = vec![false; w];
        while ready.iter().any(|r| !r) {
            match me.next(until)? {
                (k, Event::Ready { .. }) => ready[k] = true,
                (_, other) => log_event(&other),
            }
        }
        Ok(me)
    }

    /// Next event from any worker before `until`.
    pub fn next(&mut self, until: Instant) -> Result<(usize, Event)> {
        let left = until.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(left) {
            Ok((k, Msg::Event(ev))) => Ok((k, ev)),
            Ok((k, Msg::Gone)) => {
                Err(Error::Worker { worker: k, msg: "exited unexpectedly".into() })
            }
            Err(_) => Err(Error::Timeout("waiting for workers".into())),
        }
    }

    pub fn send_all(&mut self, cmd: &Command) -> Result<()> {
        let line = serde_json::to_string(cmd).context("encoding command")?;
        for (k, stdin) in self.stdins.iter_mut().enumerate() {
            writeln!(stdin, "{line}")
                .and_then(|()| stdin.flush())
                .map_err(|e| Error::Worker { worker: k, msg: format!("sending command: {e}") })?;
        }
        Ok(())
    }

    pub fn connect(&mut self, n: usize, deadline: Instant) -> Result<Connected> {
        self.send_all(&Command::Connect)?;
        let bar = progress(n as u64, "connecting");
        let w = self.children.len();
        let mut done = vec![0usize; w];
        let mut reports: Vec<Option<ConnectReport>> = vec![None; w];
        while reports.iter().any(Option::is_none) {
            match self.next(deadline)? {
                (k, Event::Progress { done: d }) => {
                    done[k] = d;
                    bar.set_position(done.iter().sum::<usize>() as u64);
                }
                (k, Event::Connected(r)) => {
                    done[k] = r.ok + r.failed;
                    bar.set_position(done.iter().sum::<usize>() as u64);
                    reports[k] = Some(r);
                }
                (_, other) => log_event(&other),
            }
        }
        bar.finish_and_clear();
        let mut out = Connected { ok: 0, failed: 0, errors: BTreeMap::new(), latency: hist::new() };
        for r in reports.into_iter().flatten() {
            out.ok += r.ok;
            out.failed += r.failed;
            for (e, c) in r.errors {
                *out.errors.entry(e).or_default() += c;
            }
            hist::merge(&mut out.latency, &hist::decode(&r.latency_hist)?)?;
        }
        Ok(out)
    }

    /// Asks worker `k` to open again the clients whose connections ended; returns how many
    /// it opened.
    pub fn reconnect(&mut self, k: usize, deadline: Instant) -> Result<usize> {
        let line = serde_json::to_string(&Command::Reconnect).context("encoding command")?;
        let stdin = self
            .stdins
            .get_mut(k)
            .ok_or_else(|| Error::Worker { worker: k, msg: "no such worker".into() })?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .map_err(|e| Error::Worker { worker: k, msg: format!("sending command: {e}") })?;
        let until = (Instant::now() + Duration::from_secs(30)).min(deadline);
        loop {
            match self.next(until)? {
                (j, Event::Connected(r)) if j == k => return Ok(r.ok),
                (_, other) => log_event(&other),
            }
        }
    }

    pub fn report(&mut self, reset: bool, deadline: Instant) -> Result<Vec<WorkerReport>> {
        self.send_all(&Command::Report { reset })?;
        let until = (Instant::now() + Duration::from_secs(30)).min(deadline);
        let mut reports: Vec<Option<WorkerReport>> = vec![None; self.children.len()];
        while reports.iter().any(Option::is_none) {
            match self.next(until)? {
                (k, Event::Report(r)) => reports[k] = Some(r),
                (_, other) => log_event(&other),
            }
        }
        Ok(reports.into_iter().flatten().collect())
    }

    /// Asks every worker to exit, waits a little, then kills (by its own PID) whoever remains.
    pub fn shutdown(&mut self) {
        let _ = self.send_all(&Command::Shutdown);
        self.stdins.clear();
        let until = Instant::now() + Duration::from_secs(10);
        for child in &mut self.children {
            while Instant::now() < until {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if !matches!(child.try_wait(), Ok(Some(_))) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        self.children.clear();
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn log_event(ev: &Event) {
    if let Event::Log { msg } = ev {
        eprintln!("{msg}");
    }
}

#[cfg(test)]
mod tests {
    use super::client_ranges;

    #[test]
    fn slow_clients_get_a_worker_of_their_own() {
        assert_eq!(client_ranges(10, 2, None), vec![(0, 5), (5, 5)]);
        assert_eq!(client_ranges(10, 2, Some(3)), vec![(0, 3), (3, 4), (7, 3)]);
        assert_eq!(client_ranges(10, 1, Some(10)), vec![(0, 10)]);
        assert_eq!(client_ranges(3, 5, None), vec![(0, 1), (1, 1), (2, 1)]);
    }
}
