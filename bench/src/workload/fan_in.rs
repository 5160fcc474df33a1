//! Fan-in: many senders stream to one recipient that is online; messages per second and latency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::Ctx;
use crate::collect::{self, Collector, Delivery, Latency};
use crate::system::{SendPlan, SendStats, System};

#[derive(Debug, Clone, Serialize, clap::Args)]
pub struct Args {
    /// Senders, all sending to the one recipient.
    #[arg(long, default_value_t = 16)]
    pub senders: usize,
    /// Messages per sender.
    #[arg(long, default_value_t = 25_000)]
    pub messages: u64,
    /// Body size in bytes (at least 20).
    #[arg(long, default_value_t = 128, value_parser = super::parse_size)]
    pub size: usize,
    /// Unaccepted sends per sender, at most.
    #[arg(long, default_value_t = 256)]
    pub inflight: usize,
}

#[derive(Debug, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub args: Args,
    pub msgs_per_sec: f64,
    pub elapsed_s: f64,
    pub latency: Latency,
    #[serde(flatten)]
    pub sent: SendStats,
    pub delivery: Delivery,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipts: Option<u64>,
}

pub(crate) async fn run<S: System>(sys: &S, args: &Args, ctx: &Ctx) -> anyhow::Result<Report> {
    let deadline = ctx.deadline();
    let senders = ctx.names("s", args.senders);
    let recipient = ctx.names("r", 1);
    sys.prepare(&recipient).await?;
    let total = args.messages * args.senders as u64;
    let collector = Collector::new(total, 0..args.senders as u32);
    let receiving = super::start_receivers(sys, &recipient, vec![collector], deadline).await?;
    let connected = super::connect_senders(sys, &senders).await?;
    let to: Arc<[String]> = Arc::from(recipient);
    let plans = (0..args.senders)
        .map(|i| SendPlan {
            to: to.clone(),
            sender: i as u32,
            seqs: 0..args.messages,
            inflight: args.inflight,
            size: args.size,
        })
        .collect();
    let start = Instant::now();
    let sent = super::send_all::<S>(connected, plans, deadline).await?;
    let collectors = super::join_receivers(receiving).await?;
    let merged = collect::merge(&collectors, sent.stats.accepted);
    let elapsed = merged.last_at.unwrap_or(start).duration_since(start);
    let receipts = if sys.has_receipts() {
        let wait = Duration::from_secs(30).min(deadline.saturating_duration_since(Instant::now()));
        Some(super::close_senders::<S>(sent.senders, args.messages, wait).await?)
    } else {
        super::close_senders::<S>(sent.senders, 0, Duration::ZERO).await?;
        None
    };
    Ok(Report {
        args: args.clone(),
        msgs_per_sec: super::rate(merged.delivery.delivered, elapsed),
        elapsed_s: super::secs(elapsed),
        latency: Latency::of(&merged.latency),
        sent: sent.stats,
        delivery: merged.delivery,
        receipts,
    })
}
