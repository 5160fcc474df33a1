//! How long to wait before each attempt to get a lost connection back.
//!
//! The wait is exponential backoff with full jitter: before attempt *n* the client sleeps a time drawn
//! uniformly between `base` and `min(cap, base × 2ⁿ⁻¹)`, so a broker that restarts is not met by every
//! client at the same instant, and a broker that keeps failing is asked at most once per `cap`.
//!
//! Whether to try at all depends on how the connection ended; that rule lives beside the error type
//! (`error.rs`).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How a client reconnects after losing its connection; see
/// [`ClientOptions::reconnect`](crate::ClientOptions::reconnect).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconnect {
    /// The shortest wait before an attempt, and the wait before the first one. Below
    /// [`Reconnect::MIN_DELAY`] it counts as that, so a client never spins against a dead broker.
    pub base: Duration,
    /// The longest wait before an attempt. Below `base` it counts as `base`. A connection that stayed
    /// up at least this long counts as a success: the attempts after its loss start again from one.
    pub cap: Duration,
}

impl Reconnect {
    /// The floor under [`Reconnect::base`]: 10 milliseconds.
    pub const MIN_DELAY: Duration = Duration::from_millis(10);

    /// A policy waiting between `base` and `cap` before each attempt.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self { base, cap }
    }

    /// The longest wait before attempt `attempt` (counted from 1) of one outage:
    /// `min(cap, base × 2^(attempt − 1))`, with the floors described on the fields.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let base = self.floor();
        let cap = self.top();
        let doublings = attempt.saturating_sub(1);
        2u32.checked_pow(doublings)
            .and_then(|factor| base.checked_mul(factor))
            .map_or(cap, |ceiling| ceiling.min(cap))
    }

    /// The wait before attempt `attempt` (counted from 1), with fresh jitter: uniformly between
    /// `base` and [`Reconnect::ceiling`]. Programs that retry something else (a local command, a
    /// first connection) can pace themselves with the same policy.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_at(attempt, jitter())
    }

    /// The wait before attempt `attempt` for a jitter `sample` read as a fraction of 2⁶⁴: 0 gives
    /// `base`, `u64::MAX` nearly the ceiling.
    fn delay_at(&self, attempt: u32, sample: u64) -> Duration {
        let base = self.floor();
        let span = self.ceiling(attempt).saturating_sub(base).as_nanos();
        let extra = (span * u128::from(sample)) >> 64;
        // `extra` is below `span`, which came from a Duration: it fits back into one.
        base.saturating_add(Duration::from_nanos(
            u64::try_from(extra).unwrap_or(u64::MAX),
        ))
    }

    /// The connection lifetime after which attempts are counted from one again.
    pub(crate) fn settled_after(&self) -> Duration {
        self.top()
    }

    fn floor(&self) -> Duration {
        self.base.max(Self::MIN_DELAY)
    }

    fn top(&self) -> Duration {
        self.cap.max(self.floor())
    }
}

impl Default for Reconnect {
    /// Between 100 milliseconds and 30 seconds.
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(30))
    }
}

/// A random 64-bit value for jitter. `RandomState` is seeded from the operating system once per
/// thread and differs per call; hashing a counter with it is plenty for spreading reconnects.
fn jitter() -> u64 {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(CALLS.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_ceiling_doubles_from_base_and_stops_at_cap() {
        let policy = Reconnect::new(ms(100), ms(1_000));
        let ceilings: Vec<_> = (1..=7).map(|n| policy.ceiling(n)).collect();
        assert_eq!(
            ceilings,
            [
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1_000),
                ms(1_000),
                ms(1_000)
            ]
        );
        assert_eq!(policy.ceiling(u32::MAX), ms(1_000), "no overflow");
        assert_eq!(policy.ceiling(0), ms(100));
    }

    #[test]
    fn delays_lie_between_base_and_the_ceiling() {
        let policy = Reconnect::new(ms(100), ms(1_000));
        assert_eq!(
            policy.delay_at(1, u64::MAX),
            ms(100),
            "attempt 1 waits base"
        );
        assert_eq!(policy.delay_at(3, 0), ms(100));
        assert_eq!(
            policy.delay_at(3, 1 << 63),
            ms(250),
            "half way from 100 to 400"
        );
        assert!(policy.delay_at(3, u64::MAX) < ms(400));
        assert!(policy.delay_at(3, u64::MAX) > ms(399));
        assert!(policy.delay_at(40, u64::MAX) < ms(1_000));
        for attempt in 1..50 {
            let delay = policy.delay(attempt);
            assert!(
                delay >= ms(100) && delay <= policy.ceiling(attempt),
                "{delay:?}"
            );
        }
    }

    #[test]
    fn jitter_spreads_the_delays() {
        let policy = Reconnect::new(ms(100), ms(10_000));
        let delays: std::collections::HashSet<_> = (0..20).map(|_| policy.delay(8)).collect();
        assert!(delays.len() > 1, "{delays:?}");
    }

    #[test]
    fn a_zero_base_or_a_cap_below_base_never_spins() {
        let zero = Reconnect::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(zero.ceiling(1), Reconnect::MIN_DELAY);
        assert_eq!(zero.delay_at(9, 0), Reconnect::MIN_DELAY);
        let inverted = Reconnect::new(ms(500), ms(100));
        assert_eq!(inverted.ceiling(5), ms(500));
        assert_eq!(inverted.delay_at(5, u64::MAX), ms(500));
    }
}
