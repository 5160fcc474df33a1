//! A token bucket: `rate` events per second, with a burst of one second's worth.

use std::time::Instant;

/// Admits up to `rate` events per second on average; a rate of 0 admits everything.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: u64, now: Instant) -> Self {
        Self {
            rate: rate as f64,
            tokens: rate as f64,
            at: now,
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// When the bucket was last used.
    pub fn last_used(&self) -> Instant {
        self.at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_of_one_second_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(3, start);
        assert!((0..3).all(|_| bucket.take(start)));
        assert!(!bucket.take(start));
        assert!(bucket.take(start + Duration::from_millis(340)));
        assert!(!bucket.take(start + Duration::from_millis(340)));
        let mut open = TokenBucket::new(0, start);
        assert!((0..1000).all(|_| open.take(start)));
    }
}
