//! Relay: P pairs, recipients online, each sender streams M messages to its own recipient with up to
//! `inflight` unaccepted; end-to-end messages per second and latency from the send time in the body.

use std::time::Duration;

use serde::Serialize;

use super::{Ctx, Load};
use crate::collect::{self, Collector, Delivery, Latency};
use crate::system::{SendStats, System};

#[derive(Debug, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub load: Load,
    /// Delivered messages per second, from the first send to the last delivery.
    pub msgs_per_sec: f64,
    pub elapsed_s: f64,
    /// Send (time stamped in the body) to receipt by the recipient.
    pub latency: Latency,
    #[serde(flatten)]
    pub sent: SendStats,
    pub delivery: Delivery,
    /// Delivery receipts the senders got (Switchboard only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipts: Option<u64>,
}

pub(crate) async fn run<S: System>(sys: &S, load: &Load, ctx: &Ctx) -> anyhow::Result<Report> {
    let deadline = ctx.deadline();
    let senders = ctx.names("s", load.pairs);
    let recipients = ctx.names("r", load.pairs);
    sys.prepare(&recipients).await?;
    let collectors = (0..load.pairs)
        .map(|i| Collector::new(load.messages, i as u32..i as u32 + 1))
        .collect();
    let receiving = super::start_receivers(sys, &recipients, collectors, deadline).await?;
    let connected = super::connect_senders(sys, &senders).await?;
    let plans = super::pair_plans(&recipients, load.messages, load.inflight, load.size);
    let start = std::time::Instant::now();
    let sent = super::send_all::<S>(connected, plans, deadline).await?;
    let collectors = super::join_receivers(receiving).await?;
    let merged = collect::merge(&collectors, sent.stats.accepted);
    let elapsed = merged.last_at.unwrap_or(start).duration_since(start);
    let receipts = if sys.has_receipts() {
        let wait = Duration::from_secs(30)
            .min(deadline.saturating_duration_since(std::time::Instant::now()));
        Some(super::close_senders::<S>(sent.senders, load.messages, wait).await?)
    } else {
        super::close_senders::<S>(sent.senders, 0, Duration::ZERO).await?;
        None
    };
    Ok(Report {
        load: load.clone(),
        msgs_per_sec: super::rate(merged.delivery.delivered, elapsed),
        elapsed_s: super::secs(elapsed),
        latency: Latency::of(&merged.latency),
        sent: sent.stats,
        delivery: merged.delivery,
        receipts,
    })
}
