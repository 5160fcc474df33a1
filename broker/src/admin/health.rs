//! Whether the broker serves (`GET /healthz`) and whether it is ready for traffic (`GET /readyz`),
//! as load balancers and Kubernetes probes ask.
//!
//! Live means the process answers HTTP at all. Ready means the client listener accepts and the store
//! answers within [`STORE_DEADLINE`]; while starting and once shutting down it is not, so a balancer
//! stops sending clients before they would be turned away.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

/// How long the store may take to answer a readiness check before the broker counts as not ready.
pub(crate) const STORE_DEADLINE: Duration = Duration::from_secs(1);

const STARTING: u8 = 0;
const SERVING: u8 = 1;
const STOPPING: u8 = 2;

/// Where the broker is in its life, as the readiness check reports it.
#[derive(Debug, Default)]
pub struct Readiness(AtomicU8);

impl Readiness {
    /// The client listener accepts: ready as soon as the store answers too.
    pub(crate) fn serving(&self) {
        self.0.store(SERVING, Ordering::Release);
    }

    /// Shutdown began: not ready again.
    pub(crate) fn stopping(&self) {
        self.0.store(STOPPING, Ordering::Release);
    }

    /// Why the broker is not ready, if it is not, as far as its state says.
    pub(crate) fn not_ready(&self) -> Option<&'static str> {
        match self.0.load(Ordering::Acquire) {
            SERVING => None,
            STARTING => Some("starting"),
            _ => Some("shutting down"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_between_start_and_shutdown() {
        let readiness = Readiness::default();
        assert_eq!(readiness.not_ready(), Some("starting"));
        readiness.serving();
        assert_eq!(readiness.not_ready(), None);
        readiness.stopping();
        assert_eq!(readiness.not_ready(), Some("shutting down"));
    }
}
