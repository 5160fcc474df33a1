//! The workloads, each written once against [`System`] and run on every system alike.
//!
//! A workload connects what it needs, measures, checks that every accepted message arrived exactly
//! once, and returns a serialisable report that `main` prints as one JSON line. Every wait is bounded
//! by the run's deadline (`--timeout`).

pub(crate) mod datagrams;
pub(crate) mod fan_in;
pub(crate) mod idle;
pub(crate) mod large_mailbox;
pub(crate) mod latency;
pub(crate) mod offline;
pub(crate) mod relay;
pub(crate) mod store;
pub(crate) mod storm;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::task::JoinHandle;

use crate::collect::Collector;
use crate::system::{Receiver as _, SendPlan, SendStats, Sender as _, System};

/// What every workload gets besides its own arguments.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Prefix of every client name, unique per run, so runs against a long-lived server never meet
    /// each other's mailboxes.
    pub tag: String,
    /// The run must finish within this.
    pub timeout: Duration,
    /// The server's process id, for memory figures.
    pub server_pid: Option<u32>,
    started: Instant,
}

impl Ctx {
    pub fn new(tag: String, timeout: Duration, server_pid: Option<u32>) -> Self {
        Self {
            tag,
            timeout,
            server_pid,
            started: Instant::now(),
        }
    }

    /// When the whole run must be over.
    pub fn deadline(&self) -> Instant {
        self.started + self.timeout
    }

    /// `count` client names for one role, such as `TAG-s0`, `TAG-s1`, ...
    pub fn names(&self, role: &str, count: usize) -> Vec<String> {
        (0..count)
            .map(|i| format!("{}-{role}{i}", self.tag))
            .collect()
    }
}

/// Messages per second, rounded.
pub(crate) fn rate(messages: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        (messages as f64 / secs).round()
    } else {
        0.0
    }
}

/// Seconds with millisecond precision, for reports.
pub(crate) fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// Milliseconds with microsecond precision, for reports.
pub(crate) fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// Connects the receivers `names` (all of them before any message is sent) and starts each on its
/// collector.
pub(crate) async fn start_receivers<S: System>(
    sys: &S,
    names: &[String],
    collectors: Vec<Collector>,
    deadline: Instant,
) -> anyhow::Result<Vec<JoinHandle<anyhow::Result<Collector>>>> {
    let mut receivers = Vec::with_capacity(names.len());
    for name in names {
        receivers.push(
            sys.receiver(name)
                .await
                .with_context(|| format!("cannot connect receiver {name}"))?,
        );
    }
    Ok(receivers
        .into_iter()
        .zip(collectors)
        .map(|(r, c)| tokio::spawn(r.receive(c, deadline)))
        .collect())
}

/// Connects the senders `names`.
pub(crate) async fn connect_senders<S: System>(
    sys: &S,
    names: &[String],
) -> anyhow::Result<Vec<S::Sender>> {
    let mut senders = Vec::with_capacity(names.len());
    for name in names {
        senders.push(
            sys.sender(name)
                .await
                .with_context(|| format!("cannot connect sender {name}"))?,
        );
    }
    Ok(senders)
}

/// What a finished send phase leaves.
pub(crate) struct Sent<T> {
    pub senders: Vec<T>,
    pub stats: SendStats,
    /// When the last sender heard its last answer.
    pub finished: Instant,
}

/// Runs every sender on its plan at once and waits for all of them.
pub(crate) async fn send_all<S: System>(
    senders: Vec<S::Sender>,
    plans: Vec<SendPlan>,
    deadline: Instant,
) -> anyhow::Result<Sent<S::Sender>> {
    let tasks: Vec<_> = senders
        .into_iter()
        .zip(plans)
        .map(|(mut sender, plan)| {
            tokio::spawn(async move {
                let stats = sender.send(&plan, deadline).await;
                (sender, stats, Instant::now())
            })
        })
        .collect();
    let mut sent = Sent {
        senders: Vec::with_capacity(tasks.len()),
        stats: SendStats::default(),
        finished: Instant::now(),
    };
    for task in tasks {
        let (sender, stats, finished) = task.await.context("a sender task panicked")?;
        sent.stats += stats?;
        sent.senders.push(sender);
        sent.finished = sent.finished.max(finished);
    }
    Ok(sent)
}

/// Closes every sender, waiting up to `wait` for `receipts_each` receipts on each; returns the
/// receipts counted in total.
pub(crate) async fn close_senders<S: System>(
    senders: Vec<S::Sender>,
    receipts_each: u64,
    wait: Duration,
) -> anyhow::Result<u64> {
    let expected = vec![receipts_each; senders.len()];
    close_senders_expecting::<S>(senders, &expected, wait).await
}

/// Closes every sender, waiting up to `wait` for `receipts[i]` receipts on sender `i`; returns the
/// receipts counted in total.
pub(crate) async fn close_senders_expecting<S: System>(
    senders: Vec<S::Sender>,
    receipts: &[u64],
    wait: Duration,
) -> anyhow::Result<u64> {
    let tasks: Vec<_> = senders
        .into_iter()
        .zip(receipts)
        .map(|(s, &n)| tokio::spawn(s.close(n, wait)))
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.context("a sender task panicked")??;
    }
    Ok(total)
}

/// Waits for every receiver task.
pub(crate) async fn join_receivers(
    tasks: Vec<JoinHandle<anyhow::Result<Collector>>>,
) -> anyhow::Result<Vec<Collector>> {
    let mut collectors = Vec::with_capacity(tasks.len());
    for task in tasks {
        collectors.push(task.await.context("a receiver task panicked")??);
    }
    Ok(collectors)
}

/// One recipient per plan: sender `i` sends `messages` to `to[i]`.
pub(crate) fn pair_plans(
    to: &[String],
    messages: u64,
    inflight: usize,
    size: usize,
) -> Vec<SendPlan> {
    to.iter()
        .enumerate()
        .map(|(i, name)| SendPlan {
            to: Arc::from(vec![name.clone()]),
            sender: i as u32,
            seqs: 0..messages,
            inflight,
            size,
        })
        .collect()
}

/// Reports the server's memory if its process id is known.
pub(crate) fn server_memory(ctx: &Ctx) -> Option<crate::server::Memory> {
    ctx.server_pid
        .and_then(|pid| crate::server::memory(pid).ok())
}

/// The load of the pair workloads (relay, offline).
#[derive(Debug, Clone, serde::Serialize, clap::Args)]
pub struct Load {
    /// Sender/recipient pairs.
    #[arg(long, default_value_t = 4)]
    pub pairs: usize,
    /// Messages per sender.
    #[arg(long, default_value_t = 100_000)]
    pub messages: u64,
    /// Body size in bytes (at least 20: the header of sender, sequence number and send time).
    #[arg(long, default_value_t = 128, value_parser = parse_size)]
    pub size: usize,
    /// Unaccepted sends per sender, at most.
    #[arg(long, default_value_t = 256)]
    pub inflight: usize,
}

/// A body size: at least the header.
pub(crate) fn parse_size(s: &str) -> Result<usize, String> {
    let size: usize = s.parse().map_err(|e| format!("{e}"))?;
    if size < crate::body::HEADER_LEN {
        return Err(format!(
            "at least {} bytes: every body starts with the sender, sequence number and send time",
            crate::body::HEADER_LEN
        ));
    }
    Ok(size)
}
