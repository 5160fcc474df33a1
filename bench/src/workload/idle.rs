//! Idle: N clients connect, complete the handshake and do nothing; the server's resident memory
//! before and after, divided by N, is its memory per idle connection.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use futures_util::StreamExt as _;
use serde::Serialize;

use super::Ctx;
use crate::server;
use crate::system::System;

/// Connections opened at the same time while building up the idle crowd.
const CONNECTING_AT_ONCE: usize = 128;
/// Pause before each memory reading so the server settles.
const SETTLE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Serialize, clap::Args)]
pub struct Args {
    /// Idle connections.
    #[arg(long, default_value_t = 5_000)]
    pub clients: usize,
}

#[derive(Debug, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub args: Args,
    pub rss_before_bytes: u64,
    pub rss_after_bytes: u64,
    pub bytes_per_connection: f64,
    /// Time to connect (and handshake) all of them, CONNECTING_AT_ONCE at a time.
    pub connect_s: f64,
}

pub(crate) async fn run<S: System>(sys: &S, args: &Args, ctx: &Ctx) -> anyhow::Result<Report> {
    let pid = ctx
        .server_pid
        .ok_or_else(|| anyhow!("idle needs the server's process id: pass --server-pid"))?;
    tokio::time::sleep(SETTLE).await;
    let before = server::memory(pid)?.rss;
    let names = ctx.names("i", args.clients);
    let start = Instant::now();
    let deadline = ctx.deadline();
    let held: Vec<_> = tokio::time::timeout_at(
        deadline.into(),
        futures_util::stream::iter(names.iter().map(|n| sys.idle(n)))
            .buffer_unordered(CONNECTING_AT_ONCE)
            .collect::<Vec<_>>(),
    )
    .await
    .context("connecting the idle clients timed out")?;
    let connect = start.elapsed();
    let held = held.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    tokio::time::sleep(SETTLE).await;
    let after = server::memory(pid)?.rss;
    drop(held);
    Ok(Report {
        args: args.clone(),
        rss_before_bytes: before,
        rss_after_bytes: after,
        bytes_per_connection: ((after as f64 - before as f64) / args.clients.max(1) as f64).round(),
        connect_s: super::secs(connect),
    })
}
