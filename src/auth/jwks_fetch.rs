//! The threads that fetch JWKS documents, so that shard threads never do network I/O: a few
//! std threads started on demand, a bounded queue, at most `per_host` fetches in flight per
//! host and `fetchers` in all, and a deadline for a job to leave the queue.
//!
//! Why these bounds: a templated endpoint takes part of its URL from unverified claims, so a
//! key server that never answers (or a forged issuer pointing at one) must cost at most its
//! own host's share of the fetchers, never the other tenants' fetches, and a client waiting on
//! a fetch must get an answer within a known time even when the queue is long — which also
//! keeps shutdown from waiting on fetches (the threads are never joined).
//!
//! Owns: the queue, the per-host counts and the threads. Must not: cache or parse keys (the
//! `Fetcher` given to it does) or be waited on by a shard.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How many fetches run at once, per host and in all, and how long a job may wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Fetch threads at most.
    pub fetchers: usize,
    /// Fetches in flight per host (`host:port`).
    pub per_host: usize,
    /// Jobs waiting at most; past it a job is refused at once.
    pub queued: usize,
    /// Longest wait in the queue; past it a job is refused.
    pub queue_deadline: Duration,
}

impl Limits {
    pub(crate) const SPEC: Limits = Limits {
        fetchers: 4,
        per_host: 2,
        queued: 64,
        // Plus at most two request timeouts for the fetch itself: a connecting client knows
        // about its token within a few seconds, whatever the key servers do.
        queue_deadline: Duration::from_secs(3),
    };
}

/// Why a URL was not fetched.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    #[error("fetch queue full")]
    QueueFull,
    #[error("waited too long in the fetch queue")]
    Expired,
    #[error("key source stopped")]
    Stopped,
    #[error("no fetch thread: {0}")]
    NoThread(String),
}

/// What the pool runs: fetch a URL and record the result, or record that it was refused.
pub(crate) trait Fetcher: Send + Sync + 'static {
    fn fetch(&self, url: &str);
    fn refuse(&self, url: &str, why: Refused);
}

struct Job {
    url: String,
    host: String,
    queued_at: Instant,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    in_flight: HashMap<String, usize>,
    threads: usize,
    idle: usize,
    closed: bool,
}

struct Shared<F> {
    fetcher: F,
    limits: Limits,
    state: Mutex<State>,
    wake: Condvar,
}

/// The fetch threads of one key source; stopping when dropped (queued jobs are refused,
/// running fetches finish on their own).
pub(crate) struct Pool<F: Fetcher> {
    shared: Arc<Shared<F>>,
}

impl<F: Fetcher> Pool<F> {
    pub(crate) fn new(fetcher: F, limits: Limits) -> Self {
        Pool {
            shared: Arc::new(Shared {
                fetcher,
                limits,
                state: Mutex::new(State::default()),
                wake: Condvar::new(),
            }),
        }
    }

    /// Queues a fetch of `url`; never blocks on I/O. A refusal is reported to the fetcher.
    pub(crate) fn submit(&self, url: &str) {
        let shared = &self.shared;
        let refused = {
            let mut state = lock(&shared.state);
            if state.closed {
                Some(Refused::Stopped)
            } else if state.queue.len() >= shared.limits.queued {
                Some(Refused::QueueFull)
            } else {
                let job =
                    Job { url: url.to_owned(), host: host_of(url), queued_at: Instant::now() };
                state.queue.push_back(job);
                self.start_thread(&mut state).err()
            }
        };
        match refused {
            Some(why) => shared.fetcher.refuse(url, why),
            None => shared.wake.notify_one(),
        }
    }

    /// Starts a thread when none is idle and the limit allows; an error only when the job
    /// just queued has no thread at all to run it (it is then taken back).
    fn start_thread(&self, state: &mut State) -> Result<(), Refused> {
        if state.idle > 0 || state.threads >= self.shared.limits.fetchers {
            return Ok(());
        }
        let shared = Arc::clone(&self.shared);
        match std::thread::Builder::new().name("rotor-jwks".into()).spawn(move || work(&shared)) {
            Ok(_) => {
                state.threads += 1;
                Ok(())
            }
            Err(_) if state.threads > 0 => Ok(()),
            Err(e) => {
                state.queue.pop_back();
                Err(Refused::NoThread(e.to_string()))
            }
        }
    }
}

impl<F: Fetcher> Drop for Pool<F> {
    fn drop(&mut self) {
        let dropped: Vec<Job> = {
            let mut state = lock(&self.shared.state);
            state.closed = true;
            state.queue.drain(..).collect()
        };
        self.shared.wake.notify_all();
        for job in dropped {
            self.shared.fetcher.refuse(&job.url, Refused::Stopped);
        }
    }
}

/// One fetch thread: takes the oldest job whose host has room, until the pool is dropped.
fn work<F: Fetcher>(shared: &Shared<F>) {
    let limits = shared.limits;
    let mut state = lock(&shared.state);
    loop {
        if state.closed {
            state.threads -= 1;
            return;
        }
        let now = Instant::now();
        let expired = take_expired(&mut state.queue, now, limits.queue_deadline);
        if !expired.is_empty() {
            drop(state);
            for job in expired {
                shared.fetcher.refuse(&job.url, Refused::Expired);
            }
            state = lock(&shared.state);
            continue;
        }
        let free =
            |host: &str, s: &State| s.in_flight.get(host).is_none_or(|n| *n < limits.per_host);
        let Some(i) = state.queue.iter().position(|j| free(&j.host, &state)) else {
            // Nothing runnable: wake for a new job, a host slot freed, or the next expiry.
            let until_expiry = state.queue.front().map_or(limits.queue_deadline, |j| {
                (j.queued_at + limits.queue_deadline).saturating_duration_since(now)
            });
            state.idle += 1;
            state = match shared.wake.wait_timeout(state, until_expiry.max(MIN_WAIT)) {
                Ok((s, _)) => s,
                Err(poisoned) => poisoned.into_inner().0,
            };
            state.idle -= 1;
            continue;
        };
        let Some(job) = state.queue.remove(i) else { continue };
        *state.in_flight.entry(job.host.clone()).or_default() += 1;
        drop(state);
        shared.fetcher.fetch(&job.url);
        state = lock(&shared.state);
        if let Some(n) = state.in_flight.get_mut(&job.host) {
            *n -= 1;
            if *n == 0 {
                state.in_flight.remove(&job.host);
            }
        }
        // A job of this host may be runnable now on another idle thread.
        shared.wake.notify_one();
    }
}

/// Shortest idle wait, so an expiry a moment away does not spin.
const MIN_WAIT: Duration = Duration::from_millis(5);

fn take_expired(queue: &mut VecDeque<Job>, now: Instant, deadline: Duration) -> Vec<Job> {
    let mut expired = Vec::new();
    queue.retain_mut(|job| {
        let keep = now.saturating_duration_since(job.queued_at) < deadline;
        if !keep {
            expired.push(Job {
                url: std::mem::take(&mut job.url),
                host: String::new(),
                queued_at: job.queued_at,
            });
        }
        keep
    });
    expired
}

/// `host:port` of a URL, lowercased (what the per-host limit counts).
fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    host.to_ascii_lowercase()
}

/// Every critical section is a few assignments, so a lock poisoned by a panic elsewhere still
/// guards consistent data.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// Records what happens to each URL; a fetch of a URL containing "hang" blocks until the
    /// test releases it.
    struct Probe {
        events: mpsc::Sender<(String, Result<(), Refused>)>,
        release: Mutex<mpsc::Receiver<()>>,
    }

    impl Fetcher for Probe {
        fn fetch(&self, url: &str) {
            if url.contains("hang") {
                let _ = lock(&self.release).recv_timeout(Duration::from_secs(10));
            }
            let _ = self.events.send((url.to_owned(), Ok(())));
        }
        fn refuse(&self, url: &str, why: Refused) {
            let _ = self.events.send((url.to_owned(), Err(why)));
        }
    }

    type Events = mpsc::Receiver<(String, Result<(), Refused>)>;

    fn pool(limits: Limits) -> (Pool<Probe>, Events, mpsc::Sender<()>) {
        let (events, seen) = mpsc::channel();
        let (release, released) = mpsc::channel();
        (Pool::new(Probe { events, release: Mutex::new(released) }, limits), seen, release)
    }

    fn next(seen: &Events) -> (String, Result<(), Refused>) {
        seen.recv_timeout(Duration::from_secs(10)).expect("an event within 10 s")
    }

    const LIMITS: Limits =
        Limits { fetchers: 3, per_host: 2, queued: 8, queue_deadline: Duration::from_secs(5) };

    #[test]
    fn a_hanging_host_takes_only_its_own_share_of_the_fetchers() {
        let (pool, seen, release) = pool(LIMITS);
        for i in 0..3 {
            pool.submit(&format!("http://hang.example:80/{i}"));
        }
        pool.submit("http://other.example/jwks");
        assert_eq!(next(&seen), ("http://other.example/jwks".to_owned(), Ok(())));
        // The third hanging job waits for its host, not for a thread.
        for _ in 0..3 {
            release.send(()).unwrap();
        }
        let mut done: Vec<String> = (0..3).map(|_| next(&seen).0).collect();
        done.sort();
        assert_eq!(
            done,
            ["http://hang.example:80/0", "http://hang.example:80/1", "http://hang.example:80/2"]
        );
    }

    #[test]
    fn a_full_queue_refuses_at_once_and_old_jobs_expire() {
        let limits = Limits {
            fetchers: 1,
            per_host: 1,
            queued: 2,
            queue_deadline: Duration::from_millis(300),
        };
        let (pool, seen, release) = pool(limits);
        pool.submit("http://hang.example/a");
        // Wait until the only thread runs it (the queue empties), so the next two queue up.
        while !lock(&pool.shared.state).queue.is_empty() {
            std::thread::yield_now();
        }
        pool.submit("http://b.example/1");
        pool.submit("http://b.example/2");
        pool.submit("http://b.example/3");
        assert_eq!(next(&seen), ("http://b.example/3".to_owned(), Err(Refused::QueueFull)));
        // The thread is busy past the deadline: the queued jobs are refused when it is free.
        std::thread::sleep(limits.queue_deadline); // the deadline itself is what is tested
        release.send(()).unwrap();
        assert_eq!(next(&seen), ("http://hang.example/a".to_owned(), Ok(())));
        assert_eq!(next(&seen), ("http://b.example/1".to_owned(), Err(Refused::Expired)));
        assert_eq!(next(&seen), ("http://b.example/2".to_owned(), Err(Refused::Expired)));
    }

    #[test]
    fn dropping_the_pool_refuses_what_waits_and_lets_threads_go() {
        let limits = Limits { fetchers: 1, ..LIMITS };
        let (pool, seen, release) = pool(limits);
        pool.submit("http://hang.example/a");
        while !lock(&pool.shared.state).queue.is_empty() {
            std::thread::yield_now();
        }
        pool.submit("http://b.example/waiting");
        let shared = Arc::clone(&pool.shared);
        drop(pool);
        assert_eq!(next(&seen), ("http://b.example/waiting".to_owned(), Err(Refused::Stopped)));
        release.send(()).unwrap();
        assert_eq!(next(&seen).0, "http://hang.example/a");
        let started = Instant::now();
        while lock(&shared.state).threads > 0 {
            assert!(started.elapsed() < Duration::from_secs(10), "the thread did not stop");
            std::thread::yield_now();
        }
    }

    #[test]
    fn hosts_are_counted_by_authority() {
        assert_eq!(host_of("https://User@Keys.Example:8443/a/b?c"), "keys.example:8443");
        assert_eq!(host_of("http://127.0.0.1/jwks"), "127.0.0.1");
        assert_eq!(host_of("no-scheme/x"), "no-scheme");
    }
}
