//! What the HTTP stage of one listener on one shard may hold at once: connections still in it
//! (accepted, not yet a client transport) and bytes of request bodies being read. Counted per
//! shard, so admitting a request touches no other shard, and per listener, so a flood on the
//! public port leaves the internal port (API, metrics, health) its own room.
//!
//! Why: before a client authenticates it costs the server a socket, a task and its buffers.
//! Per connection these are bounded (`HEAD_MAX_BYTES`, the head deadline, each route's body
//! limit); these two caps bound their sum, so unauthenticated or merely slow clients cannot take
//! the memory or the file descriptors that connected clients need.
//!
//! Owns: the two counts and their caps (`runtime.http_stage_connections`,
//! `runtime.http_body_budget`). Must not: read sockets or answer requests (`serve_connection`
//! does, through the RAII `StageSlot` and `BodyLease` that give the counts back on drop).

use std::cell::Cell;
use std::rc::Rc;

use crate::config::Config;

/// One listener's HTTP-stage counts on one shard.
#[derive(Debug)]
pub struct Admission {
    stage: Cell<usize>,
    stage_max: usize,
    buffered: Cell<usize>,
    budget: usize,
}

impl Admission {
    /// A shard's admission, with the caps `cfg` sets per shard (0 = no cap).
    pub fn new(cfg: &Config) -> Rc<Admission> {
        let cap = |n: usize| if n == 0 { usize::MAX } else { n };
        Rc::new(Admission {
            stage: Cell::new(0),
            stage_max: cap(cfg.runtime.http_stage_connections),
            buffered: Cell::new(0),
            budget: cap(cfg.runtime.http_body_budget),
        })
    }

    /// A place in the HTTP stage for a new connection, or `None` when the shard is full.
    pub fn enter(self: &Rc<Self>) -> Option<StageSlot> {
        let n = self.stage.get();
        (n < self.stage_max).then(|| {
            self.stage.set(n + 1);
            StageSlot(Rc::clone(self))
        })
    }

    /// A lease on `bytes` of the shard's body budget, or `None` when it would overdraw it.
    pub fn lease(self: &Rc<Self>, bytes: usize) -> Option<BodyLease> {
        let mut lease = BodyLease { admission: Rc::clone(self), bytes: 0 };
        lease.grow_to(bytes).then_some(lease)
    }

    /// Whether the HTTP stage is three quarters full: idle keep-alive connections then leave,
    /// making room before new connections are refused.
    pub fn crowded(&self) -> bool {
        self.stage.get() >= self.stage_max - self.stage_max / 4
    }

    /// Connections now in the HTTP stage.
    pub fn in_stage(&self) -> usize {
        self.stage.get()
    }

    /// Body bytes now leased.
    pub fn buffered(&self) -> usize {
        self.buffered.get()
    }
}

/// A connection's place in the HTTP stage; given back when dropped (the connection closed or
/// became a client transport).
#[derive(Debug)]
pub struct StageSlot(Rc<Admission>);

impl Drop for StageSlot {
    fn drop(&mut self) {
        self.0.stage.set(self.0.stage.get().saturating_sub(1));
    }
}

/// Bytes of the body budget held by one request body while it is read and handled.
#[derive(Debug)]
pub struct BodyLease {
    admission: Rc<Admission>,
    bytes: usize,
}

impl BodyLease {
    /// Grows the lease to `bytes` (a chunked body grows as it arrives); false, leaving it as it
    /// was, when the budget cannot cover the growth.
    pub fn grow_to(&mut self, bytes: usize) -> bool {
        if bytes <= self.bytes {
            return true;
        }
        let more = bytes - self.bytes;
        let held = self.admission.buffered.get();
        if held.saturating_add(more) > self.admission.budget {
            return false;
        }
        self.admission.buffered.set(held + more);
        self.bytes = bytes;
        true
    }
}

impl Drop for BodyLease {
    fn drop(&mut self) {
        let a = &self.admission;
        a.buffered.set(a.buffered.get().saturating_sub(self.bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(stage: usize, budget: usize) -> Rc<Admission> {
        let mut cfg = Config::default();
        cfg.runtime.http_stage_connections = stage;
        cfg.runtime.http_body_budget = budget;
        Admission::new(&cfg)
    }

    #[test]
    fn stage_slots_are_capped_and_given_back_on_drop() {
        let a = admission(2, 0);
        let one = a.enter().expect("first");
        let two = a.enter().expect("second");
        assert!(a.crowded());
        assert!(a.enter().is_none(), "a third connection must be refused");
        drop(one);
        assert_eq!(a.in_stage(), 1);
        let _three = a.enter().expect("a freed place is reusable");
        drop(two);
        assert_eq!(a.in_stage(), 1);
        assert!(!a.crowded(), "1 of 2 is not three quarters");
    }

    #[test]
    fn body_leases_share_the_budget_and_grow_only_within_it() {
        let a = admission(0, 100);
        let mut first = a.lease(60).expect("fits");
        assert!(a.lease(41).is_none(), "60 + 41 overdraws 100");
        let second = a.lease(40).expect("60 + 40 fits exactly");
        assert!(!first.grow_to(61), "growth past the budget is refused");
        assert_eq!(a.buffered(), 100, "a refused growth holds nothing more");
        drop(second);
        assert!(first.grow_to(90));
        drop(first);
        assert_eq!(a.buffered(), 0);
    }

    #[test]
    fn zero_means_no_cap() {
        let a = admission(0, 0);
        let slots: Vec<_> = (0..10_000).map(|_| a.enter().expect("uncapped")).collect();
        assert_eq!(a.in_stage(), slots.len());
        assert!(!a.crowded());
        assert!(a.lease(usize::MAX / 2).is_some());
    }
}
