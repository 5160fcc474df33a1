//! Reconnect storm: N clients each have K messages waiting; all of them reconnect at once. Reports
//! the time until every client has drained its mailbox.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::Ctx;
use crate::collect::{self, Collector, Delivery};
use crate::system::{Receiver as _, SendPlan, SendStats, System};

/// Attempts per client to connect during the storm (a full accept backlog can refuse some).
const CONNECT_ATTEMPTS: u32 = 5;

#[derive(Debug, Clone, Serialize, clap::Args)]
pub struct Args {
    /// Clients reconnecting at once.
    #[arg(long, default_value_t = 10_000)]
    pub clients: usize,
    /// Messages waiting for each client.
    #[arg(long, default_value_t = 10)]
    pub messages: u64,
    /// Body size in bytes (at least 20).
    #[arg(long, default_value_t = 128, value_parser = super::parse_size)]
    pub size: usize,
    /// Senders filling the mailboxes beforehand.
    #[arg(long, default_value_t = 4)]
    pub senders: usize,
    /// Unaccepted sends per filling sender, at most.
    #[arg(long, default_value_t = 256)]
    pub inflight: usize,
}

/// Per-client drain times in milliseconds from the start of the storm.
#[derive(Debug, Serialize)]
pub struct ClientTimes {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub args: Args,
    /// Accepted messages per second while filling the mailboxes.
    pub fill_per_sec: f64,
    pub fill_s: f64,
    /// From the storm's start until the last client has every message.
    pub drain_s: f64,
    pub drain_per_sec: f64,
    pub client_drained: ClientTimes,
    /// Connection attempts that failed and were retried.
    pub connect_retries: u64,
    /// Clients that never connected.
    pub failed_clients: u64,
    #[serde(flatten)]
    pub sent: SendStats,
    pub delivery: Delivery,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipts: Option<u64>,
}

struct Outcome {
    collector: Collector,
    retries: u64,
    failed: bool,
    done_at: Instant,
}

async fn reconnect<S: System>(
    sys: S,
    name: String,
    collector: Collector,
    deadline: Instant,
) -> Outcome {
    let mut retries = 0;
    let mut attempt = 0;
    let receiver = loop {
        attempt += 1;
        match sys.receiver(&name).await {
            Ok(receiver) => break Some(receiver),
            Err(e) if attempt < CONNECT_ATTEMPTS && Instant::now() < deadline => {
                retries += 1;
                if retries == 1 {
                    eprintln!("warning: {name}: {e:#}; retrying");
                }
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
            }
            Err(e) => {
                eprintln!("warning: {name}: {e:#}; giving up");
                break None;
            }
        }
    };
    let Some(receiver) = receiver else {
        return Outcome {
            collector,
            retries,
            failed: true,
            done_at: Instant::now(),
        };
    };
    let fallback = Collector::new(collector.expected(), 0..0);
    match receiver.receive(collector, deadline).await {
        Ok(collector) => Outcome {
            collector,
            retries,
            failed: false,
            done_at: Instant::now(),
        },
        Err(e) => {
            eprintln!("warning: {name}: {e:#}");
            Outcome {
                collector: fallback,
                retries,
                failed: true,
                done_at: Instant::now(),
            }
        }
    }
}

pub(crate) async fn run<S: System>(sys: &S, args: &Args, ctx: &Ctx) -> anyhow::Result<Report> {
    let deadline = ctx.deadline();
    let clients = ctx.names("c", args.clients);
    let senders = ctx.names("f", args.senders);
    if !sys.keeps_offline() {
        anyhow::bail!("{} keeps nothing for offline recipients", sys.name());
    }
    sys.prepare(&clients).await?;

    // Sender j fills clients j, j + F, j + 2F, ... with K messages each, round robin.
    let targets: Vec<Vec<String>> = (0..args.senders)
        .map(|j| {
            clients
                .iter()
                .skip(j)
                .step_by(args.senders)
                .cloned()
                .collect()
        })
        .collect();
    let plans: Vec<SendPlan> = targets
        .iter()
        .enumerate()
        .map(|(j, to)| SendPlan {
            to: Arc::from(to.clone()),
            sender: j as u32,
            seqs: 0..to.len() as u64 * args.messages,
            inflight: args.inflight,
            size: args.size,
        })
        .collect();
    let connected = super::connect_senders(sys, &senders).await?;
    let start = Instant::now();
    let sent = super::send_all::<S>(connected, plans, deadline).await?;
    let fill = sent.finished.duration_since(start);
    super::close_senders::<S>(sent.senders, 0, Duration::ZERO).await?;

    let storm = Instant::now();
    let tasks: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let j = (i % args.senders) as u32;
            let collector = Collector::new(args.messages, j..j + 1);
            tokio::spawn(reconnect(sys.clone(), name.clone(), collector, deadline))
        })
        .collect();
    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        outcomes.push(task.await?);
    }
    let merged = collect::merge(outcomes.iter().map(|o| &o.collector), sent.stats.accepted);
    let drain = merged
        .last_at
        .unwrap_or(storm)
        .saturating_duration_since(storm);
    let mut done: Vec<Duration> = outcomes
        .iter()
        .filter(|o| !o.failed)
        .map(|o| o.done_at.duration_since(storm))
        .collect();
    done.sort();
    let at = |q: f64| {
        done.get(((done.len() as f64 * q) as usize).min(done.len().saturating_sub(1)))
            .map_or(0.0, |d| super::millis(*d))
    };
    let receipts = if sys.has_receipts() {
        let back = super::connect_senders(sys, &senders).await?;
        let each: Vec<u64> = targets
            .iter()
            .map(|t| t.len() as u64 * args.messages)
            .collect();
        let wait = Duration::from_secs(120).min(deadline.saturating_duration_since(Instant::now()));
        Some(super::close_senders_expecting::<S>(back, &each, wait).await?)
    } else {
        None
    };
    Ok(Report {
        args: args.clone(),
        fill_per_sec: super::rate(sent.stats.accepted, fill),
        fill_s: super::secs(fill),
        drain_s: super::secs(drain),
        drain_per_sec: super::rate(merged.delivery.delivered, drain),
        client_drained: ClientTimes {
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: done.last().map_or(0.0, |d| super::millis(*d)),
        },
        connect_retries: outcomes.iter().map(|o| o.retries).sum(),
        failed_clients: outcomes.iter().filter(|o| o.failed).count() as u64,
        sent: sent.stats,
        delivery: merged.delivery,
        receipts,
    })
}
