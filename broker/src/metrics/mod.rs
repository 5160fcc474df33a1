//! What the broker counts, in the Prometheus/OpenMetrics text format, for the admin listener's
//! `GET /metrics`.
//!
//! Written with the `prometheus` crate in the Prometheus text format (what `promtool check metrics`
//! and every scraper read). Counters live in one [`Metrics`] per broker (not a process-global registry, so several brokers
//! in one process, as in the tests, count apart). Every labelled series is created up front and its
//! handle kept, so counting on the hot path is one atomic add: no lock, no allocation, no lookup.
//! Values that are cheaper to read than to track (connections open, process memory and descriptors)
//! are read when scraped.

mod datagrams;
mod process;

pub(crate) use datagrams::DatagramCounters;
pub use datagrams::{Dropped, Via};

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};
use switchboard_proto::{ReceiptStatus, RejectReason};

/// The content type of [`Metrics::render`]'s output: the Prometheus text format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every reason a send can be rejected for, in the order of [`reason_index`].
const REASONS: [RejectReason; 6] = [
    RejectReason::InvalidRecipient,
    RejectReason::TooLarge,
    RejectReason::Unavailable,
    RejectReason::MailboxFull,
    RejectReason::Forbidden,
    RejectReason::RateLimited,
];

/// The broker's counters and the gauges set at scrape time.
pub struct Metrics {
    registry: Registry,
    accepted: IntCounter,
    delivered: IntCounter,
    rejected: Vec<IntCounter>,
    receipts_delivered: IntCounter,
    receipts_expired: IntCounter,
    receipts_undeliverable: IntCounter,
    receipts_removed: IntCounter,
    connections_total: IntCounter,
    auth_failures: IntCounter,
    bytes_in: IntCounter,
    bytes_out: IntCounter,
    commit_seconds: Histogram,
    commit_entries: Histogram,
    connections: IntGauge,
    mailboxes: IntGauge,
    mailbox_entries: IntGauge,
    mailbox_bytes: IntGauge,
    oldest_entry_age: IntGauge,
    resident_bytes: IntGauge,
    open_fds: IntGauge,
    /// Datagrams in, out and dropped.
    pub(crate) datagrams: DatagramCounters,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The label value a reason or status has on the wire (`mailbox-full`, `expired`).
fn wire_name(value: &impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

fn reason_index(reason: RejectReason) -> Option<usize> {
    REASONS.iter().position(|r| *r == reason)
}

/// Registers metrics into one registry. Names, labels and buckets are constants of this file, never
/// input, so a refusal is a programming error that the unit test below catches: it panics at start.
struct Registrar(Registry);

const OURS: &str = "metric names and buckets are constants checked by the tests";

impl Registrar {
    fn add<M: prometheus::core::Collector + Clone + 'static>(&self, metric: M) -> M {
        self.0.register(Box::new(metric.clone())).expect(OURS);
        metric
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.add(IntCounter::new(name, help).expect(OURS))
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.add(IntGauge::new(name, help).expect(OURS))
    }

    /// One counter per label value, created now so counting never looks a label up.
    fn labelled(&self, name: &str, help: &str, label: &str, values: &[String]) -> Vec<IntCounter> {
        let family = self.add(IntCounterVec::new(Opts::new(name, help), &[label]).expect(OURS));
        values
            .iter()
            .map(|v| family.with_label_values(&[v.as_str()]))
            .collect()
    }

    fn histogram(&self, name: &str, help: &str, start: f64, count: usize) -> Histogram {
        let buckets = exponential_buckets(start, 2.0, count).expect(OURS);
        self.add(Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect(OURS))
    }
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registrar(Registry::new_custom(Some("switchboard".into()), None).expect(OURS));
        let reasons: Vec<String> = REASONS.iter().map(wire_name).collect();
        let statuses = [
            ReceiptStatus::Delivered,
            ReceiptStatus::Expired,
            ReceiptStatus::Undeliverable,
            ReceiptStatus::Removed,
        ]
        .map(|s| wire_name(&s));
        let receipts = r.labelled(
            "receipts_total",
            "Receipts created for senders, by status",
            "status",
            &statuses,
        );
        r.gauge(
            "process_start_time_seconds",
            "When the broker started, since the Unix epoch",
        )
        .set(process::now_secs());
        Self {
            accepted: r.counter("messages_accepted_total", "Sends answered `accepted`"),
            delivered: r.counter(
                "messages_delivered_total",
                "Messages their recipient acknowledged",
            ),
            rejected: r.labelled(
                "messages_rejected_total",
                "Sends answered `rejected`, by reason",
                "reason",
                &reasons,
            ),
            receipts_delivered: receipts[0].clone(),
            receipts_expired: receipts[1].clone(),
            receipts_undeliverable: receipts[2].clone(),
            receipts_removed: receipts[3].clone(),
            connections_total: r.counter("connections_total", "Connections accepted"),
            auth_failures: r.counter("auth_failures_total", "Refused `hello`s"),
            bytes_in: r.counter("received_bytes_total", "Bytes read from clients"),
            bytes_out: r.counter("sent_bytes_total", "Bytes written to clients"),
            // 50 µs .. ~1.6 s: an fsynced commit on a fast disk to a stalled one.
            commit_seconds: r.histogram(
                "store_commit_seconds",
                "Time to make one batch durable (fsync included)",
                0.000_05,
                16,
            ),
            commit_entries: r.histogram(
                "store_commit_entries",
                "Entries appended and deleted per commit",
                1.0,
                14,
            ),
            connections: r.gauge("connections_open", "Connections open now"),
            mailboxes: r.gauge("mailboxes", "Mailboxes holding entries"),
            mailbox_entries: r.gauge("mailbox_entries", "Entries waiting in all mailboxes"),
            mailbox_bytes: r.gauge("mailbox_bytes", "Body bytes waiting in all mailboxes"),
            oldest_entry_age: r.gauge(
                "mailbox_oldest_entry_age_seconds",
                "Age of the oldest entry waiting in any mailbox (0 when all are empty)",
            ),
            resident_bytes: r.gauge(
                "process_resident_memory_bytes",
                "Resident memory of the broker process",
            ),
            open_fds: r.gauge("process_open_fds", "File descriptors open"),
            datagrams: DatagramCounters::new(&r),
            // Last: every field above registered through `r` first.
            registry: r.0,
        }
    }

    /// Counts a send answered `accepted`.
    pub(crate) fn accepted(&self) {
        self.accepted.inc();
    }

    /// Counts a connection the listener accepted (whether or not it was then refused).
    pub(crate) fn connection(&self) {
        self.connections_total.inc();
    }

    /// Counts a refused `hello`.
    pub(crate) fn auth_failure(&self) {
        self.auth_failures.inc();
    }

    /// Counts `bytes` read from a client.
    pub(crate) fn received(&self, bytes: usize) {
        self.bytes_in.inc_by(bytes as u64);
    }

    /// Counts `bytes` written to a client.
    pub(crate) fn sent(&self, bytes: usize) {
        self.bytes_out.inc_by(bytes as u64);
    }

    /// Records one store commit: how long it took and how many entries it appended and deleted.
    pub(crate) fn commit(&self, took: std::time::Duration, entries: usize) {
        self.commit_seconds.observe(took.as_secs_f64());
        self.commit_entries.observe(entries as f64);
    }

    /// Counts a send rejected for `reason`.
    pub(crate) fn rejected(&self, reason: RejectReason) {
        if let Some(counter) = reason_index(reason).and_then(|i| self.rejected.get(i)) {
            counter.inc();
        }
    }

    /// Counts a receipt created with `status`; a `delivered` one is also a message delivered.
    pub(crate) fn receipt(&self, status: ReceiptStatus) {
        match status {
            ReceiptStatus::Delivered => {
                self.delivered.inc();
                self.receipts_delivered.inc();
            }
            ReceiptStatus::Expired => self.receipts_expired.inc(),
            ReceiptStatus::Undeliverable => self.receipts_undeliverable.inc(),
            ReceiptStatus::Removed => self.receipts_removed.inc(),
            ReceiptStatus::Unknown => {}
        }
    }

    /// The text a scrape returns, with the scrape-time gauges set from `now`.
    pub(crate) fn render(&self, now: &Snapshot) -> String {
        let as_gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.connections.set(as_gauge(now.connections));
        self.mailboxes.set(as_gauge(now.mailboxes));
        self.mailbox_entries.set(as_gauge(now.mailbox_entries));
        self.mailbox_bytes.set(as_gauge(now.mailbox_bytes));
        self.oldest_entry_age
            .set(as_gauge(now.oldest_entry_age_secs));
        if let Some(rss) = process::resident_bytes() {
            self.resident_bytes.set(as_gauge(rss));
        }
        if let Some(fds) = process::open_fds() {
            self.open_fds.set(as_gauge(fds));
        }
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|error| format!("# cannot encode the metrics: {error}\n"))
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// What a scrape reads from the rest of the broker.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Snapshot {
    pub connections: u64,
    pub mailboxes: u64,
    pub mailbox_entries: u64,
    pub mailbox_bytes: u64,
    /// Seconds since the oldest waiting entry was accepted; 0 when every mailbox is empty.
    pub oldest_entry_age_secs: u64,
}

/// The running totals the admin API's status and the dashboard show, read without a scrape.
#[derive(Debug, Default, Clone, Copy, PartialEq, serde::Serialize)]
pub(crate) struct Totals {
    pub accepted: u64,
    pub delivered: u64,
    pub rejected: u64,
    pub connections_total: u64,
    pub received_bytes: u64,
    pub sent_bytes: u64,
    pub commits: u64,
    /// Mean time per commit since start, in microseconds (0 before the first).
    pub commit_mean_us: u64,
}

impl Metrics {
    /// The counters as they stand: one atomic read each.
    pub(crate) fn totals(&self) -> Totals {
        let commits = self.commit_seconds.get_sample_count();
        let sum = self.commit_seconds.get_sample_sum();
        Totals {
            accepted: self.accepted.get(),
            delivered: self.delivered.get(),
            rejected: self.rejected.iter().map(IntCounter::get).sum(),
            connections_total: self.connections_total.get(),
            received_bytes: self.bytes_in.get(),
            sent_bytes: self.bytes_out.get(),
            commits,
            commit_mean_us: if commits == 0 {
                0
            } else {
                (sum * 1e6 / commits as f64) as u64
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_is_named_as_prometheus_users_expect() {
        let metrics = Metrics::new();
        metrics.accepted();
        metrics.rejected(RejectReason::MailboxFull);
        metrics.receipt(ReceiptStatus::Expired);
        let text = metrics.render(&Snapshot {
            connections: 3,
            ..Snapshot::default()
        });
        for line in [
            "switchboard_messages_accepted_total 1",
            "switchboard_messages_rejected_total{reason=\"mailbox-full\"} 1",
            "switchboard_messages_rejected_total{reason=\"rate-limited\"} 0",
            "switchboard_receipts_total{status=\"expired\"} 1",
            "switchboard_receipts_total{status=\"removed\"} 0",
            "switchboard_mailbox_oldest_entry_age_seconds 0",
            "switchboard_connections_open 3",
            "switchboard_store_commit_seconds_count 0",
            "switchboard_process_resident_memory_bytes ",
            "switchboard_datagrams_dropped_total{reason=\"offline\"} 0",
        ] {
            assert!(text.contains(line), "no `{line}` in\n{text}");
        }
    }
}
