//! `switchboard-bench`: measures a Switchboard broker, and the brokers it is compared with, on the
//! same workloads (see BENCHMARKS.md).
//!
//! Without `--addr` the bench starts `switchboard-broker` itself (the release binary next to this
//! one) on 127.0.0.1 port 0 with a temporary data directory, runs one workload and prints one JSON
//! line with its figures on stdout. With `--peer` it drives Mosquitto, NATS or Redis at `--addr`.

mod body;
mod collect;
mod peer;
mod server;
mod summary;
mod switchboard;
mod system;
mod workload;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context as _};
use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::peer::Peer;
use crate::server::{BrokerConfig, BrokerProcess};
use crate::switchboard::Switchboard;
use crate::system::System;
use crate::workload::{
    datagrams, fan_in, idle, large_mailbox, latency, offline, relay, store, storm, Ctx, Load,
};

/// Benchmarks Switchboard and its peers; prints one JSON line per run.
#[derive(Debug, Parser)]
#[command(name = "switchboard-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    workload: Workload,
    /// Use the broker already listening here instead of starting one (with --peer: the peer's address).
    #[arg(long, global = true, value_name = "ADDR")]
    addr: Option<SocketAddr>,
    /// More brokers of the same cluster as --addr (repeatable): the clients are spread over all of
    /// them, each recipient on another broker than its sender, so every message crosses brokers.
    #[arg(long, global = true, value_name = "ADDR")]
    also: Vec<SocketAddr>,
    /// Replicas of the peer's streams (JetStream's `num_replicas`; 3 on a 3-node cluster).
    #[arg(long, global = true, default_value_t = 1)]
    replicas: usize,
    /// Drive this peer broker at --addr instead of Switchboard.
    #[arg(long, global = true, value_enum)]
    peer: Option<Peer>,
    /// The started broker's `durability` setting.
    #[arg(long, global = true, value_enum, default_value_t = Durability::Fsync)]
    durability: Durability,
    /// The started broker's mailbox store [default: the broker's own default].
    #[arg(long, global = true, value_enum)]
    store: Option<Store>,
    /// The broker binary to start [default: switchboard-broker next to this executable].
    #[arg(long, global = true, value_name = "PATH")]
    broker_bin: Option<PathBuf>,
    /// Extra setting for the started broker, as an environment variable (repeatable), e.g.
    /// SWITCHBOARD_BROKER_LIMITS__WINDOW=512.
    #[arg(long = "broker-env", global = true, value_name = "KEY=VALUE", value_parser = parse_env)]
    broker_env: Vec<(String, String)>,
    /// The started broker's log filter; `listening on` must stay visible (server at info).
    #[arg(
        long,
        global = true,
        default_value = "warn,switchboard_broker::server=info"
    )]
    broker_log: String,
    /// Process id of the server at --addr, for memory figures (idle needs it).
    #[arg(long, global = true, value_name = "PID")]
    server_pid: Option<u32>,
    /// The whole run must finish within this many seconds.
    #[arg(long, global = true, default_value_t = 600)]
    timeout: u64,
    /// Threads of the bench's own runtime.
    #[arg(long, global = true, default_value_t = 2)]
    threads: usize,
    /// Keep the started broker's data directory and log (its path is printed on stderr).
    #[arg(long, global = true)]
    keep_data: bool,
    /// Free text copied into the JSON line (for example the peer's durability configuration).
    #[arg(long, global = true)]
    label: Option<String>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Workload {
    /// P pairs, recipients online: messages/s end to end and latency percentiles.
    Relay(Load),
    /// Recipients offline while the senders send; then they connect and drain: accept and drain rates.
    Offline(Load),
    /// One message in flight at a time: latency percentiles.
    Latency(latency::Args),
    /// N connected, idle clients: server memory per connection.
    Idle(idle::Args),
    /// Many senders to one recipient.
    FanIn(fan_in::Args),
    /// N offline clients with K messages each reconnect at once: time until all are drained.
    ReconnectStorm(storm::Args),
    /// One mailbox of N messages across a broker restart: restart time, drain rate, peak memory.
    LargeMailbox(large_mailbox::Args),
    /// P pairs of datagrams (never stored, never acknowledged), at --rate per pair or flat out:
    /// delivered per second, loss rate, latency (Switchboard, or --peer nats for NATS core).
    Datagrams(datagrams::Args),
    /// Not over the network: one store engine driven directly with the Router's batch shapes.
    Store(store::Args),
    /// Not a workload: prints the JSON lines in FILEs as Markdown tables of medians.
    Summarize {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

impl Workload {
    fn name(&self) -> &'static str {
        match self {
            Workload::Relay(_) => "relay",
            Workload::Offline(_) => "offline",
            Workload::Latency(_) => "latency",
            Workload::Idle(_) => "idle",
            Workload::FanIn(_) => "fan-in",
            Workload::ReconnectStorm(_) => "reconnect-storm",
            Workload::LargeMailbox(_) => "large-mailbox",
            Workload::Store(_) => "store",
            Workload::Datagrams(_) => "datagrams",
            Workload::Summarize { .. } => "summarize",
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Durability {
    Fsync,
    Os,
}

/// The broker's `store` setting.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Store {
    Sqlite,
    Log,
    Memory,
}

impl Store {
    fn as_str(self) -> &'static str {
        match self {
            Store::Sqlite => "sqlite",
            Store::Log => "log",
            Store::Memory => "memory",
        }
    }
}

impl Durability {
    fn to_store(self) -> switchboard_broker::store::Durability {
        match self {
            Durability::Fsync => switchboard_broker::store::Durability::Fsync,
            Durability::Os => switchboard_broker::store::Durability::Os,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Durability::Fsync => "fsync",
            Durability::Os => "os",
        }
    }
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    let (key, value) = s.split_once('=').ok_or("expected KEY=VALUE")?;
    Ok((key.to_string(), value.to_string()))
}

/// The figures of one workload.
#[derive(Serialize)]
#[serde(untagged)]
pub enum Figures {
    Relay(relay::Report),
    Offline(offline::Report),
    Latency(latency::Report),
    Idle(idle::Report),
    FanIn(fan_in::Report),
    ReconnectStorm(storm::Report),
    LargeMailbox(large_mailbox::Report),
    Datagrams(datagrams::Report),
}

/// The JSON line of one run.
#[derive(Serialize)]
struct Line {
    system: &'static str,
    workload: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    durability: Option<&'static str>,
    /// The started broker's store, when --store chose one.
    #[serde(skip_serializing_if = "Option::is_none")]
    store: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<String>,
    #[serde(flatten)]
    figures: Figures,
    /// The server's peak resident memory over its life (`VmHWM` at the end of the run).
    #[serde(skip_serializing_if = "Option::is_none")]
    server_peak_rss_bytes: Option<u64>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Workload::Store(args) = &cli.workload {
        // On this thread and without a runtime, so an instruction count sees only the store.
        let line = store::run(args, cli.durability.to_store(), cli.durability.as_str())
            .and_then(|report| Ok(serde_json::to_string(&report)?));
        return print(line);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    print(runtime.block_on(run(cli)))
}

/// Prints a run's JSON line, or its error.
fn print(line: anyhow::Result<String>) -> ExitCode {
    match line {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<String> {
    if let Workload::Summarize { files } = &cli.workload {
        return summary::render(files);
    }
    server::raise_fd_limit();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let tag = format!("b{now_ms}");
    let timeout = Duration::from_secs(cli.timeout);
    if let Some(peer) = cli.peer {
        let addr = cli
            .addr
            .ok_or_else(|| anyhow!("--peer needs --addr of the running {}", peer.name()))?;
        let ctx = Ctx::new(tag, timeout, cli.server_pid);
        let figures = peer::run(peer, addr, cli.replicas, &cli.workload, &ctx).await?;
        let line = Line {
            system: peer.name(),
            workload: cli.workload.name(),
            durability: None,
            store: None,
            label: cli.label,
            figures,
            server_peak_rss_bytes: workload::server_memory(&ctx).map(|m| m.peak),
        };
        return Ok(serde_json::to_string(&line)?);
    }
    if let Some(addr) = cli.addr {
        let sys = Switchboard {
            addr,
            others: cli.also.clone(),
            connect_timeout: Duration::from_secs(30),
        };
        let ctx = Ctx::new(tag, timeout, cli.server_pid);
        let figures = match &cli.workload {
            Workload::LargeMailbox(_) => {
                anyhow::bail!("large-mailbox restarts the broker, so it needs a broker the bench starts (drop --addr)")
            }
            w => run_on_switchboard(&sys, w, &ctx).await?,
        };
        let line = Line {
            system: sys.name(),
            workload: cli.workload.name(),
            durability: None,
            store: None,
            label: cli.label,
            figures,
            server_peak_rss_bytes: workload::server_memory(&ctx).map(|m| m.peak),
        };
        return Ok(serde_json::to_string(&line)?);
    }
    run_with_own_broker(cli, tag, timeout).await
}

/// Starts a broker in a temporary directory, runs the workload on it, stops it.
async fn run_with_own_broker(cli: Cli, tag: String, timeout: Duration) -> anyhow::Result<String> {
    let dir = tempfile::Builder::new()
        .prefix("switchboard-bench-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let data_dir = dir.path().join("data");
    let mut env = vec![
        (
            "SWITCHBOARD_BROKER_DURABILITY".to_string(),
            cli.durability.as_str().to_string(),
        ),
        (
            "SWITCHBOARD_BROKER_LOG__LEVEL".to_string(),
            cli.broker_log.clone(),
        ),
    ];
    if let Some(store) = cli.store {
        env.push(("SWITCHBOARD_BROKER_STORE".into(), store.as_str().into()));
    }
    if let Workload::LargeMailbox(args) = &cli.workload {
        // The default limits (1,000,000 entries, 1 GiB) must not refuse the fill.
        let entries = args.messages.saturating_add(1_000).max(1_000_000);
        let bytes = (args.messages.saturating_mul(args.size as u64) * 2).max(1 << 30);
        env.push((
            "SWITCHBOARD_BROKER_MAILBOX__MAX_MESSAGES".into(),
            entries.to_string(),
        ));
        env.push((
            "SWITCHBOARD_BROKER_MAILBOX__MAX_BYTES".into(),
            bytes.to_string(),
        ));
    }
    env.extend(cli.broker_env.iter().cloned());
    let config = BrokerConfig {
        bin: match &cli.broker_bin {
            Some(bin) => bin.clone(),
            None => BrokerConfig::default_bin()?,
        },
        env,
        start_timeout: Duration::from_secs(120),
    };
    let broker = BrokerProcess::start(&config, &data_dir).await?;
    let ctx = Ctx::new(tag, timeout, Some(broker.pid));
    let (figures, broker) = match &cli.workload {
        Workload::LargeMailbox(args) => {
            let (report, broker) =
                large_mailbox::run(broker, &config, &data_dir, args, &ctx).await?;
            (Figures::LargeMailbox(report), broker)
        }
        w => {
            let sys = Switchboard {
                addr: broker.addr,
                others: Vec::new(),
                connect_timeout: Duration::from_secs(30),
            };
            (run_on_switchboard(&sys, w, &ctx).await?, broker)
        }
    };
    let peak = server::memory(broker.pid).ok().map(|m| m.peak);
    if let Err(e) = broker.stop(Duration::from_secs(30)).await {
        eprintln!("warning: {e:#}");
    }
    if cli.keep_data {
        eprintln!("kept {}", dir.keep().display());
    }
    let line = Line {
        system: "switchboard",
        workload: cli.workload.name(),
        durability: Some(cli.durability.as_str()),
        store: cli.store.map(Store::as_str),
        label: cli.label,
        figures,
        server_peak_rss_bytes: peak,
    };
    Ok(serde_json::to_string(&line)?)
}

/// Runs a workload on Switchboard: those every system supports, and datagrams.
async fn run_on_switchboard(
    sys: &Switchboard,
    workload: &Workload,
    ctx: &Ctx,
) -> anyhow::Result<Figures> {
    match workload {
        Workload::Datagrams(args) => {
            let target = datagrams::Target::Switchboard(sys.addr);
            Ok(Figures::Datagrams(datagrams::run(target, args, ctx).await?))
        }
        w => run_workload(sys, w, ctx).await,
    }
}

/// Runs one of the workloads every system supports.
pub async fn run_workload<S: System>(
    sys: &S,
    workload: &Workload,
    ctx: &Ctx,
) -> anyhow::Result<Figures> {
    Ok(match workload {
        Workload::Relay(load) => Figures::Relay(relay::run(sys, load, ctx).await?),
        Workload::Offline(load) => Figures::Offline(offline::run(sys, load, ctx).await?),
        Workload::Latency(args) => Figures::Latency(latency::run(sys, args, ctx).await?),
        Workload::Idle(args) => Figures::Idle(idle::run(sys, args, ctx).await?),
        Workload::FanIn(args) => Figures::FanIn(fan_in::run(sys, args, ctx).await?),
        Workload::ReconnectStorm(args) => {
            Figures::ReconnectStorm(storm::run(sys, args, ctx).await?)
        }
        Workload::LargeMailbox(_) => anyhow::bail!("large-mailbox runs on Switchboard only"),
        Workload::Store(_) => anyhow::bail!("store drives a store engine, not a system"),
        Workload::Datagrams(_) => anyhow::bail!("datagrams runs on Switchboard and NATS core only"),
        Workload::Summarize { .. } => anyhow::bail!("summarize is not a workload"),
    })
}
