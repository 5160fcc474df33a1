//! Large mailbox: fill one recipient's mailbox with N messages, restart the broker on the same data
//! directory, then let the recipient drain it. Reports the fill rate, the restart time (spawn to
//! `listening on`), the time to the first delivery, the drain rate, and the broker's memory at rest
//! and at its peak during the drain (`VmHWM`, reset just before the recipient connects).
//!
//! Switchboard only: it restarts the broker, so the bench must have started it.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde::Serialize;

use super::Ctx;
use crate::collect::{self, Collector, Delivery};
use crate::server::{self, BrokerConfig, BrokerProcess};
use crate::switchboard::Switchboard;
use crate::system::{Receiver as _, SendPlan, SendStats, System as _};

/// How often the drain samples the broker's resident memory.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// Pause before reading memory "at rest".
const SETTLE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Serialize, clap::Args)]
pub struct Args {
    /// Messages put in the one mailbox.
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: u64,
    /// Body size in bytes (at least 20).
    #[arg(long, default_value_t = 128, value_parser = super::parse_size)]
    pub size: usize,
    /// Senders filling the mailbox.
    #[arg(long, default_value_t = 4)]
    pub senders: usize,
    /// Unaccepted sends per sender, at most.
    #[arg(long, default_value_t = 256)]
    pub inflight: usize,
    /// After the drain, also reconnect the senders and collect their receipts (one per message).
    #[arg(long)]
    pub collect_receipts: bool,
}

#[derive(Debug, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub args: Args,
    pub fill_per_sec: f64,
    pub fill_s: f64,
    /// Size of the data directory after the fill.
    pub data_bytes: u64,
    /// SIGTERM to exit.
    pub stop_s: f64,
    /// Spawn to `listening on` with the full mailbox.
    pub restart_s: f64,
    /// `Hi.pending` seen by the recipient.
    pub pending: u64,
    pub rss_at_rest_bytes: u64,
    /// Connect (before the handshake) to the first delivery.
    pub first_delivery_ms: f64,
    pub drain_per_sec: f64,
    pub drain_s: f64,
    /// `VmHWM` over the drain (reset when the recipient connects).
    pub peak_rss_bytes: u64,
    /// Highest `VmRSS` sampled every 50 ms during the drain.
    pub sampled_peak_rss_bytes: u64,
    pub rss_after_drain_bytes: u64,
    #[serde(flatten)]
    pub sent: SendStats,
    pub delivery: Delivery,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipts: Option<u64>,
}

/// Runs the workload on `broker` (serving `data_dir`); returns the report and the restarted broker.
pub(crate) async fn run(
    broker: BrokerProcess,
    config: &BrokerConfig,
    data_dir: &Path,
    args: &Args,
    ctx: &Ctx,
) -> anyhow::Result<(Report, BrokerProcess)> {
    let deadline = ctx.deadline();
    let connect_timeout = Duration::from_secs(30);
    let sys = Switchboard {
        addr: broker.addr,
        others: Vec::new(),
        connect_timeout,
    };
    let senders = ctx.names("s", args.senders);
    let recipient = ctx.names("big", 1);
    let to: Arc<[String]> = Arc::from(recipient.clone());
    let share = |j: u64| {
        let n = args.senders as u64;
        args.messages / n + u64::from(j < args.messages % n)
    };
    let plans: Vec<SendPlan> = (0..args.senders as u64)
        .map(|j| SendPlan {
            to: to.clone(),
            sender: j as u32,
            seqs: 0..share(j),
            inflight: args.inflight,
            size: args.size,
        })
        .collect();
    let connected = super::connect_senders(&sys, &senders).await?;
    let start = Instant::now();
    let sent = super::send_all::<Switchboard>(connected, plans, deadline).await?;
    let fill = sent.finished.duration_since(start);
    super::close_senders::<Switchboard>(sent.senders, 0, Duration::ZERO).await?;
    if sent.stats.rejected > 0 {
        bail!(
            "{} sends were rejected while filling (raise mailbox.max_messages / max_bytes)",
            sent.stats.rejected
        );
    }
    // Every file below it: the log store keeps its segments in `data_dir/log/`.
    let data_bytes = super::store::disk_usage(data_dir);

    let stop = broker.stop(Duration::from_secs(60)).await?;
    let broker = BrokerProcess::start(config, data_dir).await?;
    let pid = broker.pid;
    let sys = Switchboard {
        addr: broker.addr,
        others: Vec::new(),
        connect_timeout,
    };
    tokio::time::sleep(SETTLE).await;
    let at_rest = server::memory(pid)?.rss;

    server::reset_peak(pid)?;
    let sampling = Arc::new(AtomicBool::new(true));
    let sampled = Arc::new(AtomicU64::new(0));
    let sampler = tokio::spawn(sample(pid, sampling.clone(), sampled.clone()));
    let connect_at = Instant::now();
    let receiver = sys.receiver(&recipient[0]).await?;
    let pending = receiver.pending();
    let collector = Collector::new(sent.stats.accepted, 0..args.senders as u32);
    let collector = receiver.receive(collector, deadline).await?;
    sampling.store(false, Ordering::Relaxed);
    sampler.await.context("the memory sampler panicked")?;
    let peak = server::memory(pid)?.peak;
    let merged = collect::merge([&collector], sent.stats.accepted);
    let first = merged
        .first_at
        .unwrap_or(connect_at)
        .duration_since(connect_at);
    let drain = merged
        .last_at
        .unwrap_or(connect_at)
        .duration_since(connect_at);
    tokio::time::sleep(SETTLE).await;
    let after = server::memory(pid)?.rss;

    let receipts = if args.collect_receipts {
        let back = super::connect_senders(&sys, &senders).await?;
        let each: Vec<u64> = (0..args.senders as u64).map(share).collect();
        let wait = deadline.saturating_duration_since(Instant::now());
        Some(super::close_senders_expecting::<Switchboard>(back, &each, wait).await?)
    } else {
        None
    };
    let report = Report {
        args: args.clone(),
        fill_per_sec: super::rate(sent.stats.accepted, fill),
        fill_s: super::secs(fill),
        data_bytes,
        stop_s: super::secs(stop),
        restart_s: super::secs(broker.started_in),
        pending,
        rss_at_rest_bytes: at_rest,
        first_delivery_ms: super::millis(first),
        drain_per_sec: super::rate(merged.delivery.delivered, drain),
        drain_s: super::secs(drain),
        peak_rss_bytes: peak,
        sampled_peak_rss_bytes: sampled.load(Ordering::Relaxed),
        rss_after_drain_bytes: after,
        sent: sent.stats,
        delivery: merged.delivery,
        receipts,
    };
    Ok((report, broker))
}

/// Samples `VmRSS` of `pid` into `peak` until `running` turns false.
async fn sample(pid: u32, running: Arc<AtomicBool>, peak: Arc<AtomicU64>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    while running.load(Ordering::Relaxed) {
        tick.tick().await;
        if let Ok(m) = server::memory(pid) {
            peak.fetch_max(m.rss, Ordering::Relaxed);
        }
    }
}
