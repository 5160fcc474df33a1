//! How much memory every connection's half-received frames may hold together.
//!
//! A frame that is still arriving has its whole length reserved in its connection's read buffer (so it
//! arrives in few reads), and a peer can announce a large frame and then stall. Without a bound, a
//! thousand such peers at 1 MiB each hold a gigabyte until their keepalive runs out. So every
//! reservation beyond a connection's ordinary read buffer is taken from one broker-wide budget
//! (`limits.max_partial_frames_bytes`); a connection that cannot get budget for the frame it is
//! receiving is told `overloaded` and closed, and its memory is given back at once.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The broker-wide budget for partial frames; shared by every session (`Arc`).
#[derive(Debug)]
pub(crate) struct FrameBudget {
    limit: usize,
    used: AtomicUsize,
}

impl FrameBudget {
    /// A budget of `limit` bytes, none used.
    pub(crate) fn new(limit: usize) -> Self {
        FrameBudget {
            limit,
            used: AtomicUsize::new(0),
        }
    }

    /// The configured limit, for the error a refused connection hears.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Takes `bytes` if that keeps the total within the limit.
    pub(crate) fn try_take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    /// Gives back `bytes` taken earlier.
    pub(crate) fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes taken now.
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_never_exceeded_and_comes_back() {
        let budget = FrameBudget::new(100);
        assert!(budget.try_take(60));
        assert!(!budget.try_take(41), "60 + 41 is over");
        assert!(budget.try_take(40));
        assert_eq!(budget.used(), 100);
        budget.give_back(60);
        assert!(budget.try_take(60));
        assert!(!budget.try_take(usize::MAX), "no overflow");
    }
}
