//! Latency: one pair, one message in flight: the next is sent only once the previous has arrived.
//! Reports send-to-delivery and send-to-accepted percentiles after a warm-up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::mpsc;

use super::Ctx;
use crate::collect::{self, Collector, Delivery, Latency};
use crate::system::{SendPlan, SendStats, Sender as _, System};

/// How long one message may take before the run is declared stuck.
const ONE_MESSAGE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Serialize, clap::Args)]
pub struct Args {
    /// Messages measured (after the warm-up).
    #[arg(long, default_value_t = 10_000)]
    pub messages: u64,
    /// Messages sent first and not measured.
    #[arg(long, default_value_t = 500)]
    pub warmup: u64,
    /// Body size in bytes (at least 20).
    #[arg(long, default_value_t = 128, value_parser = super::parse_size)]
    pub size: usize,
}

#[derive(Debug, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub args: Args,
    /// Send to delivery at the recipient.
    pub latency: Latency,
    /// Send to `Accepted` (or the system's equivalent) at the sender.
    pub accepted_latency: Latency,
    #[serde(flatten)]
    pub sent: SendStats,
    pub delivery: Delivery,
}

pub(crate) async fn run<S: System>(sys: &S, args: &Args, ctx: &Ctx) -> anyhow::Result<Report> {
    let deadline = ctx.deadline();
    let sender = ctx.names("s", 1);
    let recipient = ctx.names("r", 1);
    sys.prepare(&recipient).await?;
    let total = args.warmup + args.messages;
    let (tx, mut arrived) = mpsc::unbounded_channel();
    let collector = Collector::new(total, 0..1)
        .timed_from(args.warmup)
        .notifying(tx);
    let receiving = super::start_receivers(sys, &recipient, vec![collector], deadline).await?;
    let mut senders = super::connect_senders(sys, &sender).await?;
    let mut sender = senders.pop().ok_or_else(|| anyhow!("no sender"))?;
    let mut accepted = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3)?;
    let mut stats = SendStats::default();
    let to: Arc<[String]> = Arc::from(recipient);
    for seq in 0..total {
        let plan = SendPlan {
            to: to.clone(),
            sender: 0,
            seqs: seq..seq + 1,
            inflight: 1,
            size: args.size,
        };
        let sent_at = Instant::now();
        let one_deadline = deadline.min(sent_at + ONE_MESSAGE);
        stats += sender.send(&plan, one_deadline).await?;
        if seq >= args.warmup {
            let ns = u64::try_from(sent_at.elapsed().as_nanos()).unwrap_or(u64::MAX);
            accepted.record(ns.max(1))?;
        }
        loop {
            match tokio::time::timeout_at(one_deadline.into(), arrived.recv()).await {
                Ok(Some(got)) if got >= seq => break,
                Ok(Some(_)) => continue,
                Ok(None) => bail!("the receiver stopped after message {seq}"),
                Err(_) => bail!("message {seq} did not arrive within {ONE_MESSAGE:?}"),
            }
        }
    }
    let collectors = super::join_receivers(receiving).await?;
    super::close_senders::<S>(vec![sender], total, Duration::from_secs(5)).await?;
    let merged = collect::merge(&collectors, stats.accepted);
    Ok(Report {
        args: args.clone(),
        latency: Latency::of(&merged.latency),
        accepted_latency: Latency::of(&accepted),
        sent: stats,
        delivery: merged.delivery,
    })
}
