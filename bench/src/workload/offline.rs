//! Offline: recipients are away while P senders each send M messages and wait for every `Accepted`
//! (the accept rate), then the recipients connect and drain their mailboxes (the drain rate).

use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Ctx, Load};
use crate::collect::{self, Collector, Delivery};
use crate::system::{SendStats, System};

#[derive(Debug, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub load: Load,
    /// Accepted messages per second while every recipient is offline.
    pub accept_per_sec: f64,
    pub accept_s: f64,
    /// Delivered messages per second, from the recipients' connect to the last delivery.
    pub drain_per_sec: f64,
    pub drain_s: f64,
    #[serde(flatten)]
    pub sent: SendStats,
    pub delivery: Delivery,
    /// Receipts the senders found when they came back after the drain (Switchboard only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipts: Option<u64>,
}

pub(crate) async fn run<S: System>(sys: &S, load: &Load, ctx: &Ctx) -> anyhow::Result<Report> {
    let deadline = ctx.deadline();
    let senders = ctx.names("s", load.pairs);
    let recipients = ctx.names("r", load.pairs);
    if !sys.keeps_offline() {
        anyhow::bail!("{} keeps nothing for offline recipients", sys.name());
    }
    sys.prepare(&recipients).await?;

    let connected = super::connect_senders(sys, &senders).await?;
    let plans = super::pair_plans(&recipients, load.messages, load.inflight, load.size);
    let start = Instant::now();
    let sent = super::send_all::<S>(connected, plans, deadline).await?;
    let accept_elapsed = sent.finished.duration_since(start);
    super::close_senders::<S>(sent.senders, 0, Duration::ZERO).await?;

    let collectors = (0..load.pairs)
        .map(|i| Collector::new(load.messages, i as u32..i as u32 + 1))
        .collect();
    let drain_start = Instant::now();
    let receiving = super::start_receivers(sys, &recipients, collectors, deadline).await?;
    let collectors = super::join_receivers(receiving).await?;
    let merged = collect::merge(&collectors, sent.stats.accepted);
    let drain_elapsed = merged
        .last_at
        .unwrap_or(drain_start)
        .duration_since(drain_start);

    let receipts = if sys.has_receipts() {
        let back = super::connect_senders(sys, &senders).await?;
        let wait = Duration::from_secs(60).min(deadline.saturating_duration_since(Instant::now()));
        Some(super::close_senders::<S>(back, load.messages, wait).await?)
    } else {
        None
    };
    Ok(Report {
        load: load.clone(),
        accept_per_sec: super::rate(sent.stats.accepted, accept_elapsed),
        accept_s: super::secs(accept_elapsed),
        drain_per_sec: super::rate(merged.delivery.delivered, drain_elapsed),
        drain_s: super::secs(drain_elapsed),
        sent: sent.stats,
        delivery: merged.delivery,
        receipts,
    })
}
