//! Which settings the Router works with, and the one rule that needs nothing else: when a message
//! expires.

use std::time::Duration;

use super::usage::Limits;
use super::window::WindowSize;
use crate::settings::Settings;

/// Tuning the Router takes from the settings.
#[derive(Debug, Clone, Copy)]
pub struct RouterConfig {
    pub window: usize,
    pub window_bytes: u64,
    pub page_size: usize,
    pub max_messages: u64,
    pub max_bytes: u64,
    pub default_ttl: Option<Duration>,
    pub max_ttl: Option<Duration>,
    pub receipt_ttl: Option<Duration>,
    pub expiry_sweep: Duration,
    pub dedupe_window: Duration,
    pub dedupe_max: u64,
    /// How often the store's maintenance pass runs (`dedupe.maintenance_ms`).
    pub maintenance: Duration,
    /// The frame limit sessions write under: a stored entry whose `deliver` exceeds it is set aside.
    pub max_frame_bytes: usize,
    /// Other brokers share the store (cluster mode, `store = "postgres"`): ids are provisional
    /// and the store's to number, nothing goes out before its commit, and every delivery is read
    /// from the store in commit order (`router/wake.rs`).
    pub shared_store: bool,
}

impl RouterConfig {
    pub fn from_settings(s: &Settings) -> Self {
        let secs = |n: u64| (n > 0).then(|| Duration::from_secs(n));
        Self {
            window: s.limits.window,
            window_bytes: s.limits.window_bytes,
            page_size: s.limits.page_size,
            max_messages: s.mailbox.max_messages,
            max_bytes: s.mailbox.max_bytes,
            default_ttl: secs(s.mailbox.default_ttl_secs),
            max_ttl: secs(s.mailbox.max_ttl_secs),
            receipt_ttl: secs(s.mailbox.receipt_ttl_secs),
            expiry_sweep: Duration::from_millis(s.mailbox.expiry_sweep_ms),
            dedupe_window: Duration::from_secs(s.dedupe.window_secs),
            dedupe_max: s.dedupe.max_remembered,
            maintenance: Duration::from_millis(s.dedupe.maintenance_ms),
            max_frame_bytes: s.limits.max_frame_bytes,
            shared_store: s.store == crate::settings::StoreKind::Postgres,
        }
    }

    /// When a message sent now with `ttl_ms` expires (ms since the epoch), or 0 for never.
    pub(super) fn expiry(&self, now_ms: u64, ttl_ms: Option<u64>) -> u64 {
        let asked = ttl_ms
            .filter(|&t| t > 0)
            .map(Duration::from_millis)
            .or(self.default_ttl);
        let ttl = match (asked, self.max_ttl) {
            (Some(ttl), Some(max)) => ttl.min(max),
            (ttl, _) => match ttl {
                Some(ttl) => ttl,
                None => return 0,
            },
        };
        now_ms.saturating_add(millis(ttl))
    }

    /// When a receipt stored now expires (ms since the epoch), or 0 for never.
    pub(super) fn receipt_expiry(&self, now_ms: u64) -> u64 {
        self.receipt_ttl
            .map_or(0, |ttl| now_ms.saturating_add(millis(ttl)))
    }

    /// How much one session may hold unacknowledged, and how much a page read asks for.
    pub(super) fn window_size(&self) -> WindowSize {
        WindowSize {
            entries: self.window,
            bytes: self.window_bytes,
            page: self.page_size,
        }
    }

    /// How much one mailbox may hold.
    pub(super) fn mailbox_limits(&self) -> Limits {
        Limits {
            entries: self.max_messages,
            bytes: self.max_bytes,
        }
    }
}

/// A duration in whole milliseconds, saturating (a `u64` of ms lasts 584 million years).
pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A small configuration for the unit tests of the router's parts.
    pub(in crate::router) fn config() -> RouterConfig {
        RouterConfig {
            window: 4,
            window_bytes: 100,
            page_size: 8,
            max_messages: 10,
            max_bytes: 1_000,
            default_ttl: None,
            max_ttl: None,
            receipt_ttl: None,
            expiry_sweep: Duration::from_secs(1),
            dedupe_window: Duration::from_secs(60),
            dedupe_max: 1_000,
            maintenance: Duration::from_secs(60),
            max_frame_bytes: switchboard_proto::DEFAULT_MAX_FRAME,
            shared_store: false,
        }
    }

    #[test]
    fn without_a_ttl_or_a_default_a_message_never_expires() {
        assert_eq!(config().expiry(1_000, None), 0);
        assert_eq!(config().expiry(1_000, Some(0)), 0);
    }

    #[test]
    fn the_senders_ttl_counts_from_now_and_zero_means_the_default() {
        let mut c = config();
        assert_eq!(c.expiry(1_000, Some(500)), 1_500);
        c.default_ttl = Some(Duration::from_secs(2));
        assert_eq!(c.expiry(1_000, Some(0)), 3_000);
        assert_eq!(c.expiry(1_000, None), 3_000);
    }

    #[test]
    fn the_maximum_caps_the_senders_ttl_and_the_default() {
        let mut c = config();
        c.max_ttl = Some(Duration::from_secs(1));
        assert_eq!(c.expiry(1_000, Some(60_000)), 2_000);
        c.default_ttl = Some(Duration::from_secs(60));
        assert_eq!(c.expiry(1_000, None), 2_000);
        // A maximum alone does not make messages without a ttl expire.
        c.default_ttl = None;
        assert_eq!(c.expiry(1_000, None), 0);
    }

    #[test]
    fn receipts_expire_after_their_own_ttl_and_not_the_messages() {
        let mut c = config();
        c.default_ttl = Some(Duration::from_secs(60));
        assert_eq!(c.receipt_expiry(1_000), 0, "no receipt ttl: never");
        c.receipt_ttl = Some(Duration::from_secs(2));
        assert_eq!(c.receipt_expiry(1_000), 3_000);
        assert_eq!(c.receipt_expiry(u64::MAX - 1), u64::MAX);
    }

    #[test]
    fn an_expiry_far_in_the_future_saturates() {
        assert_eq!(config().expiry(u64::MAX - 1, Some(10)), u64::MAX);
    }
}
