//! What receivers record: which messages arrived (exactly once, or how not) and how long they took.
//!
//! One [`Collector`] per receiving connection. It keeps a bit per `(sender, seq)` so a duplicate is
//! seen the moment it arrives, and a latency histogram fed from the send time in the body. Workloads
//! merge the collectors of a run into one [`Delivery`] summary for the JSON line.

use std::ops::Range;
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::body;

/// Latencies are recorded in nanoseconds up to an hour, to three significant figures.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("static histogram bounds are valid")
}

/// Receives messages for one connection and checks them off.
pub struct Collector {
    /// Distinct messages this receiver waits for before it is done.
    expected: u64,
    /// Senders whose messages may arrive here; any other is counted as unexpected.
    senders: Range<u32>,
    /// Messages with a sequence number below this are checked off but not timed (warm-up).
    timed_from_seq: u64,
    /// One bit per sequence number, per sender (index `sender - senders.start`).
    seen: Vec<Vec<u64>>,
    pub unique: u64,
    pub duplicates: u64,
    /// Bodies that are not ours, or from a sender that does not send here.
    pub unexpected: u64,
    pub latency: Histogram<u64>,
    pub first_at: Option<Instant>,
    pub last_at: Option<Instant>,
    /// Told the sequence number of every new message (the latency workload waits on it).
    notify: Option<mpsc::UnboundedSender<u64>>,
}

/// Sequence numbers above this are not ours (it bounds the bitmaps).
const MAX_SEQ: u64 = 1 << 32;

impl Collector {
    pub fn new(expected: u64, senders: Range<u32>) -> Self {
        let slots = senders.len();
        Self {
            expected,
            senders,
            timed_from_seq: 0,
            seen: vec![Vec::new(); slots],
            unique: 0,
            duplicates: 0,
            unexpected: 0,
            latency: histogram(),
            first_at: None,
            last_at: None,
            notify: None,
        }
    }

    /// Leaves messages below `seq` out of the latency histogram.
    pub fn timed_from(mut self, seq: u64) -> Self {
        self.timed_from_seq = seq;
        self
    }

    /// Reports every new message's sequence number on `tx`.
    pub fn notifying(mut self, tx: mpsc::UnboundedSender<u64>) -> Self {
        self.notify = Some(tx);
        self
    }

    /// Every expected message has arrived.
    pub fn done(&self) -> bool {
        self.unique >= self.expected
    }

    pub fn expected(&self) -> u64 {
        self.expected
    }

    /// Checks off one received body.
    pub fn record(&mut self, body: &[u8]) {
        let now_ns = body::now_ns();
        let now = Instant::now();
        self.first_at.get_or_insert(now);
        self.last_at = Some(now);
        let Some(header) = body::read(body) else {
            self.unexpected += 1;
            return;
        };
        if !self.senders.contains(&header.sender) || header.seq >= MAX_SEQ {
            self.unexpected += 1;
            return;
        }
        let bits = &mut self.seen[(header.sender - self.senders.start) as usize];
        let (word, bit) = ((header.seq / 64) as usize, header.seq % 64);
        if bits.len() <= word {
            bits.resize(word + 1, 0);
        }
        if bits[word] & (1 << bit) != 0 {
            self.duplicates += 1;
            return;
        }
        bits[word] |= 1 << bit;
        self.unique += 1;
        if header.seq >= self.timed_from_seq {
            let _ = self
                .latency
                .record(now_ns.saturating_sub(header.sent_ns).max(1));
        }
        if let Some(tx) = &self.notify {
            let _ = tx.send(header.seq);
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub samples: u64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Self {
        let us = |ns: u64| (ns as f64 / 100.0).round() / 10.0;
        Self {
            p50_us: us(h.value_at_quantile(0.50)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            samples: h.len(),
        }
    }
}

/// The exactly-once verdict of a run, over all its receivers.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Delivery {
    pub expected: u64,
    pub delivered: u64,
    pub missing: u64,
    pub duplicated: u64,
    pub unexpected: u64,
}

/// Everything the receivers of a run saw, merged.
pub(crate) struct Merged {
    pub delivery: Delivery,
    pub latency: Histogram<u64>,
    pub first_at: Option<Instant>,
    pub last_at: Option<Instant>,
}

/// Merges the collectors of a run; `expected` counts what was sent (and accepted) in total.
pub(crate) fn merge<'a>(
    collectors: impl IntoIterator<Item = &'a Collector>,
    expected: u64,
) -> Merged {
    let mut latency = histogram();
    let mut delivery = Delivery {
        expected,
        ..Delivery::default()
    };
    let (mut first_at, mut last_at): (Option<Instant>, Option<Instant>) = (None, None);
    for c in collectors {
        delivery.delivered += c.unique;
        delivery.duplicated += c.duplicates;
        delivery.unexpected += c.unexpected;
        let _ = latency.add(&c.latency);
        first_at = match (first_at, c.first_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        last_at = last_at.max(c.last_at);
    }
    delivery.missing = expected.saturating_sub(delivery.delivered);
    Merged {
        delivery,
        latency,
        first_at,
        last_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_and_strangers_are_counted_apart() {
        let mut c = Collector::new(3, 0..2);
        c.record(&body::make(0, 1, 32));
        c.record(&body::make(1, 1, 32));
        c.record(&body::make(0, 1, 32));
        c.record(&body::make(5, 1, 32));
        c.record(b"junk");
        assert_eq!((c.unique, c.duplicates, c.unexpected), (2, 1, 2));
        assert!(!c.done());
        c.record(&body::make(1, 200, 32));
        assert!(c.done());
        let merged = merge([&c], 4);
        assert_eq!(merged.delivery.missing, 1);
        assert_eq!(merged.latency.len(), 3);
    }
}
