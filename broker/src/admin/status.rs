//! `GET /api/v1/status`: the broker at a glance, what the dashboard shows and `admin status`
//! prints: version, uptime, readiness, the settings that matter, connections, totals and rates,
//! the mailboxes and the deepest of them, store commit latency.

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use super::api::{age_secs, ask, mailbox_page, ASK_DEADLINE};
use super::json::{ApiError, MailboxJson};
use super::rates::Rate;
use super::{now_ms, AdminState};
use crate::metrics::Totals as Counters;
use crate::router::{MailboxOrder, Totals};
use crate::settings::Settings;

/// Mailboxes the status lists as the deepest.
const DEEPEST: usize = 5;

#[derive(Debug, Serialize)]
pub(crate) struct StatusJson {
    pub version: &'static str,
    pub started_at_ms: u64,
    pub uptime_secs: u64,
    /// `/readyz` would answer 200 (the store's answer aside).
    pub ready: bool,
    pub store: String,
    pub durability: String,
    pub tls: bool,
    pub connections: u64,
    pub totals: Counters,
    /// The last full second's rates (0 before the second sample).
    pub accepted_per_sec: f64,
    pub delivered_per_sec: f64,
    /// One rate per second, oldest first, for the last minutes.
    pub history: Vec<Rate>,
    pub mailboxes: MailboxSummary,
    pub deepest: Vec<MailboxJson>,
    pub limits: LimitsJson,
}

#[derive(Debug, Serialize)]
pub(crate) struct MailboxSummary {
    /// Mailboxes holding entries.
    pub count: u64,
    pub entries: u64,
    pub bytes: u64,
    /// Seconds since the oldest waiting entry was accepted; `null` when every mailbox is empty.
    pub oldest_entry_age_secs: Option<u64>,
}

/// The limits an operator checks first.
#[derive(Debug, Serialize)]
pub(crate) struct LimitsJson {
    pub max_connections: usize,
    pub window: usize,
    pub window_bytes: u64,
    pub max_frame_bytes: usize,
    pub max_sends_per_sec: u64,
    pub mailbox_max_messages: u64,
    pub mailbox_max_bytes: u64,
}

impl LimitsJson {
    fn new(settings: &Settings) -> Self {
        Self {
            max_connections: settings.limits.max_connections,
            window: settings.limits.window,
            window_bytes: settings.limits.window_bytes,
            max_frame_bytes: settings.limits.max_frame_bytes,
            max_sends_per_sec: settings.limits.max_sends_per_sec,
            mailbox_max_messages: settings.mailbox.max_messages,
            mailbox_max_bytes: settings.mailbox.max_bytes,
        }
    }
}

/// When the oldest waiting entry was accepted, asked of the store thread with a bounded wait.
pub(crate) async fn oldest_sent_at_ms(state: &AdminState) -> Option<u64> {
    tokio::time::timeout(ASK_DEADLINE, state.broker.store.oldest_sent_at_ms())
        .await
        .ok()
        .and_then(Result::ok)
        .flatten()
}

pub(crate) async fn status(State(state): State<AdminState>) -> Result<Json<StatusJson>, ApiError> {
    let totals = ask(&state.broker.router, Totals, "router").await?;
    let deepest = mailbox_page(&state, MailboxOrder::Depth, 0, DEEPEST).await?;
    let oldest = oldest_sent_at_ms(&state).await;
    let now = now_ms();
    let history = state.rates.history();
    let last = history.last().copied();
    let settings = &state.settings;
    Ok(Json(StatusJson {
        version: env!("CARGO_PKG_VERSION"),
        started_at_ms: state.started_at_ms,
        uptime_secs: age_secs(now, state.started_at_ms),
        ready: state.broker.readiness.not_ready().is_none(),
        store: format!("{:?}", settings.store).to_lowercase(),
        durability: format!("{:?}", settings.durability).to_lowercase(),
        tls: !settings.tls.cert_file.as_os_str().is_empty(),
        connections: state
            .broker
            .connections
            .load(std::sync::atomic::Ordering::Relaxed) as u64,
        totals: state.broker.metrics.totals(),
        accepted_per_sec: last.map_or(0.0, |r| r.accepted_per_sec),
        delivered_per_sec: last.map_or(0.0, |r| r.delivered_per_sec),
        history,
        mailboxes: MailboxSummary {
            count: totals.mailboxes,
            entries: totals.entries,
            bytes: totals.bytes,
            oldest_entry_age_secs: oldest.map(|at| age_secs(now, at)),
        },
        deepest: deepest.mailboxes,
        limits: LimitsJson::new(settings),
    }))
}
