//! The one time input of a shard: the monotonic instant its timers use and the Unix time that
//! tokens, history and presence are stamped with, read from the system or, in tests, set by
//! hand, so a test moves time forward instead of sleeping.
//!
//! Owns: nothing but the manual clock's current reading. Must not: be shared across threads
//! (a manual clock belongs to one test's shards).

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where a shard reads the time.
#[derive(Debug, Clone, Default)]
pub struct Clock(Option<Rc<Cell<Reading>>>);

#[derive(Debug, Clone, Copy)]
struct Reading {
    instant: Instant,
    unix: Duration,
}

impl Clock {
    /// The system's clocks.
    pub fn system() -> Clock {
        Clock(None)
    }

    /// A clock that stands still until [`Clock::advance`]d, starting now.
    pub fn manual() -> Clock {
        let reading = Reading { instant: Instant::now(), unix: system_unix() };
        Clock(Some(Rc::new(Cell::new(reading))))
    }

    /// Moves a manual clock forward (does nothing to the system clock).
    pub fn advance(&self, by: Duration) {
        if let Some(cell) = &self.0 {
            let r = cell.get();
            cell.set(Reading { instant: r.instant + by, unix: r.unix + by });
        }
    }

    /// The monotonic time.
    pub fn now(&self) -> Instant {
        self.0.as_ref().map_or_else(Instant::now, |c| c.get().instant)
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_ms(&self) -> u64 {
        u64::try_from(self.unix().as_millis()).unwrap_or(u64::MAX)
    }

    /// Seconds since the Unix epoch (token `exp`, connection expiry).
    pub fn unix_secs(&self) -> i64 {
        i64::try_from(self.unix().as_secs()).unwrap_or(i64::MAX)
    }

    fn unix(&self) -> Duration {
        self.0.as_ref().map_or_else(system_unix, |c| c.get().unix)
    }
}

fn system_unix() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let clock = Clock::manual();
        let (t0, u0) = (clock.now(), clock.unix_ms());
        assert_eq!((clock.now(), clock.unix_ms()), (t0, u0));
        clock.advance(Duration::from_millis(1500));
        assert_eq!(clock.now() - t0, Duration::from_millis(1500));
        assert_eq!(clock.unix_ms() - u0, 1500);
        let system = Clock::system();
        system.advance(Duration::from_secs(3600));
        assert!(system.unix_secs() - clock.unix_secs() < 60, "the system clock is not moved");
    }
}
