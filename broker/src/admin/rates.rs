//! Accepted and delivered messages per second over the last minutes, for the status answer and the
//! dashboard's plot.
//!
//! A task on the admin listener's own thread reads the broker's counters once a second (two atomic
//! loads) and keeps the last [`HISTORY`] samples; the hot path is never touched, and the rates are
//! differences of those samples.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::metrics::Metrics;

/// Samples kept: five minutes at one a second.
pub(crate) const HISTORY: usize = 300;
/// How often the counters are sampled.
pub(crate) const EVERY: Duration = Duration::from_secs(1);

/// One second's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Rate {
    /// The end of the second, ms since the Unix epoch.
    pub at_ms: u64,
    pub accepted_per_sec: f64,
    pub delivered_per_sec: f64,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at_ms: u64,
    accepted: u64,
    delivered: u64,
}

/// The recent samples. A std mutex: it is held for a push or a copy, never across an await, by the
/// admin thread only.
#[derive(Debug, Default, Clone)]
pub(crate) struct Rates(Arc<Mutex<VecDeque<Sample>>>);

impl Rates {
    /// Records the counters as they stand at `at_ms`.
    pub(crate) fn sample(&self, metrics: &Metrics, at_ms: u64) {
        let totals = metrics.totals();
        let sample = Sample {
            at_ms,
            accepted: totals.accepted,
            delivered: totals.delivered,
        };
        if let Ok(mut samples) = self.0.lock() {
            if samples.len() > HISTORY {
                samples.pop_front();
            }
            samples.push_back(sample);
        }
    }

    /// The rate of every second sampled, oldest first.
    pub(crate) fn history(&self) -> Vec<Rate> {
        let Ok(samples) = self.0.lock() else {
            return Vec::new();
        };
        samples
            .iter()
            .zip(samples.iter().skip(1))
            .map(|(a, b)| {
                let secs = (b.at_ms.saturating_sub(a.at_ms) as f64 / 1000.0).max(0.001);
                Rate {
                    at_ms: b.at_ms,
                    accepted_per_sec: b.accepted.saturating_sub(a.accepted) as f64 / secs,
                    delivered_per_sec: b.delivered.saturating_sub(a.delivered) as f64 / secs,
                }
            })
            .collect()
    }
}

/// Samples `metrics` into `rates` every [`EVERY`], for as long as the admin thread runs.
pub(crate) async fn run(rates: Rates, metrics: Arc<Metrics>) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        rates.sample(&metrics, crate::admin::now_ms());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_proto::ReceiptStatus;

    #[test]
    fn rates_are_the_differences_of_the_samples_per_second() {
        let metrics = Metrics::new();
        let rates = Rates::default();
        rates.sample(&metrics, 1_000);
        for _ in 0..4 {
            metrics.accepted();
        }
        metrics.receipt(ReceiptStatus::Delivered);
        rates.sample(&metrics, 3_000);
        let history = rates.history();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].at_ms, 3_000);
        assert_eq!(history[0].accepted_per_sec, 2.0);
        assert_eq!(history[0].delivered_per_sec, 0.5);
        for at in 0..(HISTORY as u64 + 10) {
            rates.sample(&metrics, 4_000 + at * 1_000);
        }
        assert_eq!(rates.history().len(), HISTORY, "the oldest samples go");
    }
}
