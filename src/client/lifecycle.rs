//! A connection's life on its shard after the socket opened: its timers (stale, ping, pong,
//! expiry) and its end.
//!
//! Owns: what each timer checks when it fires and what forgetting a connection undoes. The
//! timer heap itself is the connection table's. Must not: perform I/O (the socket tasks end on
//! their own once a connection is closing).

use std::time::{Duration, Instant};

use rand::Rng;

use crate::client::conn::{ConnKey, State, Timer, TimerKind};
use crate::client::queue::Out;
use crate::client::Clients;
use crate::metrics::{FrameType, TransportLabel, COMMAND_BUCKETS};
use crate::protocol::codes;
use crate::shard::id::Lane;
use crate::shard::msg::{Cast, ShardMsg};
use crate::transport::websocket::{self, OpCode};

impl Clients<'_> {
    /// Registers a new connection's first timer (no `connect` within
    /// `client.stale_close_delay` → 3502).
    pub fn start_timers(&mut self, key: ConnKey, now: Instant) {
        let stale = self.env.cfg.client.stale_close_delay;
        if !stale.is_zero() {
            self.conns.add_timer(Timer { at: now + stale, key, kind: TimerKind::Stale });
        }
    }

    /// Arms the first ping at a random moment in [interval/2, interval], so pings of
    /// connections accepted together do not all fire in the same tick.
    pub fn start_pings(&mut self, key: ConnKey, now: Instant) {
        let ping = self.env.cfg.client.ping_interval;
        if ping.is_zero() {
            return;
        }
        let half = ping / 2;
        let spread = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        let jitter = Duration::from_millis(rand::rng().random_range(0..=spread));
        self.conns.add_timer(Timer { at: now + half + jitter, key, kind: TimerKind::Ping });
    }

    /// Arms the timer that closes a connection with 3005 once `at` plus
    /// `client.expired_close_delay` passed without a refresh. It re-checks the session's
    /// `expire_at` when it fires, so an extra timer after a refresh is harmless.
    pub fn arm_expiry(&mut self, key: ConnKey, at: i64, now: i64) {
        let delay = self.env.cfg.client.expired_close_delay;
        self.arm_after(key, secs_until(at, now) + delay, TimerKind::Expire);
    }

    /// Arms the timer that ends a token subscription at `at` plus
    /// `client.expired_sub_close_delay`.
    pub fn arm_sub_expiry(&mut self, key: ConnKey, at: i64, now: i64) {
        let delay = self.env.cfg.client.expired_sub_close_delay;
        self.arm_after(key, secs_until(at, now) + delay, TimerKind::SubExpire);
    }

    /// Server-side subscription refresh (sub_refresh proxy): ask the backend at `at` itself.
    pub fn arm_sub_refresh(&mut self, key: ConnKey, at: i64, now: i64) {
        self.arm_after(key, secs_until(at, now), TimerKind::SubExpire);
    }

    /// Server-side refresh (refresh proxy): ask the backend at `at` itself.
    pub fn arm_refresh(&mut self, key: ConnKey, at: i64, now: i64) {
        self.arm_after(key, secs_until(at, now), TimerKind::Expire);
    }

    fn arm_after(&mut self, key: ConnKey, wait: Duration, kind: TimerKind) {
        self.conns.add_timer(Timer { at: self.env.clock.now() + wait, key, kind });
    }

    /// Fires due timers; returns when the next one is due.
    pub fn run_timers(&mut self, now: Instant) -> Option<Instant> {
        loop {
            match self.conns.due_timer(now) {
                Ok(t) => self.fire(t, now),
                Err(next) => return next,
            }
        }
    }

    fn fire(&mut self, t: Timer, now: Instant) {
        let cfg = &self.env.cfg.client;
        let (ping, pong, expired_delay) =
            (cfg.ping_interval, cfg.pong_timeout, cfg.expired_close_delay);
        let Some(conn) = self.conns.get_mut(t.key).filter(|c| c.closing.is_none()) else {
            return;
        };
        match t.kind {
            TimerKind::Stale => {
                if matches!(conn.state, State::Connecting) {
                    self.disconnect(t.key, codes::DISCONNECT_STALE);
                }
            }
            TimerKind::Ping if conn.busy && conn.awaiting_pong => {
                // The last pong waits unread behind a command in flight: one unanswered
                // ping at a time, or the second pong would arrive unasked for (3501).
                self.conns.add_timer(Timer { at: now + ping, key: t.key, kind: TimerKind::Ping });
            }
            TimerKind::Ping => {
                // Unidirectional clients cannot answer.
                let pong = if conn.transport.unidirectional() { Duration::ZERO } else { pong };
                conn.awaiting_pong = !pong.is_zero();
                let out = if conn.native_ping() {
                    Out::Control(websocket::frame(OpCode::Ping, b""))
                } else if conn.protobuf {
                    Out::Data { frame: self.env.pings.protobuf.clone(), header: 2 }
                } else {
                    Out::Data { frame: self.env.pings.json.clone(), header: 2 }
                };
                self.enqueue(t.key, Some(FrameType::ServerPing), out);
                let sent = self.conns.micros();
                if let Some(c) = self.conns.get_mut(t.key) {
                    c.ping_sent = sent;
                }
                self.conns.add_timer(Timer { at: now + ping, key: t.key, kind: TimerKind::Ping });
                if !pong.is_zero() {
                    let at = now + pong;
                    self.conns.add_timer(Timer { at, key: t.key, kind: TimerKind::Pong });
                }
            }
            TimerKind::Pong => {
                if conn.awaiting_pong && conn.busy {
                    // A command in flight (a backend proxy call) holds the reader: the pong
                    // is likely unread in the socket. Look again once it could be read.
                    self.conns.add_timer(Timer {
                        at: now + pong,
                        key: t.key,
                        kind: TimerKind::Pong,
                    });
                } else if conn.awaiting_pong {
                    self.disconnect(t.key, codes::DISCONNECT_NO_PONG);
                }
            }
            TimerKind::SubExpire => self.expire_subs(t.key),
            TimerKind::Expire => {
                let Some(session) = conn.session() else { return };
                let Some(at) = session.expire_at else { return };
                if session.server_refresh {
                    if self.env.clock.unix_secs() >= at {
                        self.refresh_proxy(t.key);
                    } else {
                        let wait = secs_until(at, self.env.clock.unix_secs());
                        self.arm_after(t.key, wait, TimerKind::Expire);
                    }
                    return;
                }
                let delay = i64::try_from(expired_delay.as_secs()).unwrap_or(i64::MAX);
                let close_at = at.saturating_add(delay);
                if self.env.clock.unix_secs() >= close_at {
                    self.disconnect(t.key, codes::DISCONNECT_EXPIRED);
                } else {
                    let wait = secs_until(close_at, self.env.clock.unix_secs())
                        .max(Duration::from_secs(1));
                    self.conns.add_timer(Timer {
                        at: now + wait,
                        key: t.key,
                        kind: TimerKind::Expire,
                    });
                }
            }
        }
    }

    /// A WebSocket pong frame arrived (native ping mode).
    pub fn native_pong(&mut self, key: ConnKey) {
        if self.conns.get(key).is_some_and(|c| c.native_ping() && c.awaiting_pong) {
            self.ponged(key);
        }
    }

    /// The client answered the last ping: the round trip is counted.
    pub(crate) fn ponged(&mut self, key: ConnKey) {
        let now = self.conns.micros();
        let Some(c) = self.conns.get_mut(key) else { return };
        c.awaiting_pong = false;
        let took = Duration::from_micros(u64::from(now.wrapping_sub(c.ping_sent)));
        let transport = TransportLabel::from(c.transport) as usize;
        self.metrics.ping_pong[transport].observe_duration(took, &COMMAND_BUCKETS);
    }

    /// Forgets a connection whose socket tasks have finished: its subscriptions go, and the
    /// user's home shard stops counting it.
    pub fn remove_conn(&mut self, key: ConnKey) {
        self.drop_subscriptions(key);
        let Some(conn) = self.conns.remove(key) else { return };
        if let State::Connected(s) = conn.state {
            self.metrics.action("remove_client");
            if s.counted {
                self.user_gone(&s.user);
            }
        }
    }

    /// Tells a user's home shard that one of its counted connections is gone.
    pub fn user_gone(&mut self, user: &std::sync::Arc<str>) {
        let cast = Cast::UserGone { user: std::sync::Arc::clone(user) };
        let home = self.mesh.home_of(user);
        self.mesh.send(Lane::Main, home, ShardMsg::Cast(Box::new(cast)));
    }
}

/// How long until Unix second `at`, from `now` (zero when past).
fn secs_until(at: i64, now: i64) -> Duration {
    Duration::from_secs(u64::try_from(at.saturating_sub(now)).unwrap_or(0))
}
