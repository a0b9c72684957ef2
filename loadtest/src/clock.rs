//! One clock for every process of a run: `CLOCK_MONOTONIC` in nanoseconds. The coordinator
//! stamps it into each payload and workers subtract it on receipt; all processes share the
//! host's monotonic clock, so the difference is the publish→receive latency.

use nix::time::{clock_gettime, ClockId};

/// Nanoseconds of `CLOCK_MONOTONIC` (0 if the clock cannot be read, which Linux never does).
pub fn now_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| {
            let secs = u64::try_from(t.tv_sec()).unwrap_or(0);
            let nanos = u64::try_from(t.tv_nsec()).unwrap_or(0);
            secs * 1_000_000_000 + nanos
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn monotonic_moves_forward() {
        let a = super::now_ns();
        let b = super::now_ns();
        assert!(a > 0 && b >= a);
    }
}
