//! Exponential backoff with jitter, for everything that retries.
//!
//! The backend's reconnect loops and the workers' restarts use this one
//! type, so "how long until the next try" is decided in one place: `min`,
//! then doubling up to `max`. Reconnects draw each delay from the upper half
//! of that value ([`Backoff::next_delay`]) so that nodes which lost Redis at
//! the same moment do not all come back in the same millisecond; a worker's
//! restart uses the exact value ([`Backoff::delay_after`]) so that its state
//! in `/debug/state` is predictable.

use std::time::Duration;

/// Doubling delays between `min` and `max`.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            next: min,
        }
    }

    /// The next delay, with jitter: drawn from `[d/2, d]` where `d` doubles
    /// on every call until it reaches `max`.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        delay.mul_f64(0.5 + rand::random::<f64>() * 0.5)
    }

    /// The largest delay.
    pub(crate) fn max(&self) -> Duration {
        self.max
    }

    /// Starts again from `min` (after a success).
    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }

    /// The delay after `failures` failures in a row, without jitter:
    /// `min · 2^failures`, at most `max`.
    pub(crate) fn delay_after(&self, failures: u32) -> Duration {
        self.min
            .saturating_mul(2u32.saturating_pow(failures.min(16)))
            .min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jittered_delays_double_up_to_the_maximum() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let bounds = [100, 200, 350, 350];
        for max in bounds {
            let delay = backoff.next_delay();
            assert!(
                delay <= Duration::from_millis(max) && delay >= Duration::from_millis(max / 2),
                "{delay:?} not within [{}, {max}] ms",
                max / 2
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn exact_delays_double_up_to_the_maximum() {
        let backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(1));
        let delays: Vec<_> = (0..5).map(|n| backoff.delay_after(n).as_millis()).collect();
        assert_eq!(delays, [200, 400, 800, 1000, 1000]);
        assert_eq!(backoff.delay_after(u32::MAX), Duration::from_secs(1));
    }
}
