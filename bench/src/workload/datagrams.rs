//! Datagrams: P pairs, each sender sends M datagrams to its own recipient, at a fixed rate per pair
//! or flat out; delivered per second, loss rate and latency from the send time in the body.
//!
//! Switchboard is driven through its client library (over UDP once the broker answered the bind,
//! as a program would), NATS core through `async-nats` publish/subscribe: both at most once, neither
//! stores anything. Nothing is acknowledged, so a sender's rate is what it offered, and what did not
//! arrive within `--linger-ms` of the last send is counted lost. For Switchboard the report also
//! says where the client library lost some (`client`: its own counts, summed over every client).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use bytes::Bytes;
use futures_util::StreamExt as _;
use serde::Serialize;
use switchboard_client::{Client, ClientOptions, DatagramStats, Event, Events};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Ctx;
use crate::body;
use crate::collect::{self, Collector, Latency};

#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct Args {
    /// Sender-recipient pairs, one connection each.
    #[arg(long, default_value_t = 4)]
    pub pairs: usize,
    /// Datagrams per sender.
    #[arg(long, default_value_t = 100_000)]
    pub messages: u64,
    /// Body size in bytes (at least 20).
    #[arg(long, default_value_t = 128)]
    pub size: usize,
    /// Datagrams per second per sender; 0 sends flat out.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// How long receivers wait for stragglers after the last send, in milliseconds.
    #[arg(long, default_value_t = 1_000)]
    #[serde(skip)]
    pub linger_ms: u64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub args: Args,
    pub sent: u64,
    pub delivered: u64,
    /// Sent but not delivered, as a fraction of sent.
    pub loss_rate: f64,
    /// Delivered datagrams per second, from the first send to the last delivery.
    pub msgs_per_sec: f64,
    /// Sent datagrams per second, over the send phase.
    pub offered_per_sec: f64,
    pub elapsed_s: f64,
    pub latency: Latency,
    pub duplicates: u64,
    /// UDP datagrams the kernel dropped for a full socket receive buffer during the run, on the
    /// whole machine (`RcvbufErrors` in /proc/net/snmp; absent where there is none): the loss at the
    /// broker's and the recipients' sockets, which neither process sees.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_rcvbuf_drops: Option<u64>,
    /// What the Switchboard clients counted, summed over senders and recipients (absent for NATS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<DatagramStats>,
}

/// Where the datagrams go.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target {
    Switchboard(SocketAddr),
    NatsCore(SocketAddr),
}

/// A sender's connection. The Switchboard one keeps its (unread) events so the client stays up.
enum Tx {
    Switchboard(Client, #[allow(dead_code)] Events),
    Nats(async_nats::Client, String),
}

/// A receiver's connection, with the client handle that keeps it open.
enum Rx {
    Switchboard(#[allow(dead_code)] Client, Events),
    Nats(
        #[allow(dead_code)] async_nats::Client,
        async_nats::Subscriber,
    ),
}

impl Tx {
    async fn send(&mut self, to: &str, body: Bytes) -> anyhow::Result<()> {
        match self {
            Tx::Switchboard(client, _) => Ok(client.send_datagram(to, body).await?),
            Tx::Nats(client, prefix) => Ok(client.publish(format!("{prefix}.{to}"), body).await?),
        }
    }

    /// Ends the sender; its client's datagram counts, for Switchboard.
    async fn finish(self) -> anyhow::Result<Option<DatagramStats>> {
        match self {
            Tx::Switchboard(client, _) => {
                let stats = client.datagram_stats();
                client.close().await?;
                Ok(Some(stats))
            }
            Tx::Nats(client, _) => {
                client.flush().await?;
                Ok(None)
            }
        }
    }
}

impl Rx {
    async fn next(&mut self) -> Option<Bytes> {
        match self {
            Rx::Switchboard(_, events) => loop {
                match events.next().await? {
                    Event::Datagram(d) => return Some(d.body),
                    Event::Closed(_) => return None,
                    _ => {}
                }
            },
            Rx::Nats(_, sub) => sub.next().await.map(|m| m.payload),
        }
    }

    fn stats(&self) -> Option<DatagramStats> {
        match self {
            Rx::Switchboard(client, _) => Some(client.datagram_stats()),
            Rx::Nats(..) => None,
        }
    }
}

/// How many received datagrams each client library holds for the program, the same on both sides:
/// NATS's `subscription_capacity`, Switchboard's `events_capacity`. Past it, NATS drops (a slow
/// consumer) and so does Switchboard (`dropped_slow_reader`).
const CLIENT_BUFFER: usize = 1 << 20;

async fn connect_switchboard(addr: SocketAddr, name: &str) -> anyhow::Result<(Client, Events)> {
    let mut options = ClientOptions::new(addr.to_string(), name);
    options.events_capacity = CLIENT_BUFFER;
    Client::connect(options)
        .await
        .with_context(|| format!("cannot connect {name} to {addr}"))
}

async fn connect_nats(addr: SocketAddr) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .subscription_capacity(CLIENT_BUFFER)
        .connect(addr.to_string())
        .await
        .with_context(|| format!("cannot connect to NATS at {addr}"))
}

impl Target {
    async fn receiver(self, ctx: &Ctx, name: &str) -> anyhow::Result<Rx> {
        Ok(match self {
            Target::Switchboard(addr) => {
                let (client, events) = connect_switchboard(addr, name).await?;
                Rx::Switchboard(client, events)
            }
            Target::NatsCore(addr) => {
                let client = connect_nats(addr).await?;
                let sub = client.subscribe(format!("{}.{name}", ctx.tag)).await?;
                client.flush().await?;
                Rx::Nats(client, sub)
            }
        })
    }

    async fn sender(self, ctx: &Ctx, name: &str) -> anyhow::Result<Tx> {
        Ok(match self {
            Target::Switchboard(addr) => {
                let (client, events) = connect_switchboard(addr, name).await?;
                Tx::Switchboard(client, events)
            }
            Target::NatsCore(addr) => Tx::Nats(connect_nats(addr).await?, ctx.tag.clone()),
        })
    }
}

/// Receives into `collector` until it is complete or `stop` says the senders are done and the
/// linger has passed.
async fn receive(
    mut rx: Rx,
    mut collector: Collector,
    mut stop: watch::Receiver<bool>,
) -> (Collector, Option<DatagramStats>) {
    while !collector.done() {
        tokio::select! {
            body = rx.next() => match body {
                Some(body) => collector.record(&body),
                None => break,
            },
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    (collector, rx.stats())
}

/// Sends `args.messages` datagrams from sender `index` to `to`, paced at `args.rate` per second.
async fn send(
    mut tx: Tx,
    index: u32,
    to: String,
    args: Args,
) -> anyhow::Result<(u64, Option<DatagramStats>)> {
    let mut ticks = (args.rate > 0).then(|| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate as f64));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    for seq in 0..args.messages {
        if let Some(ticks) = ticks.as_mut() {
            ticks.tick().await;
        }
        tx.send(&to, Bytes::from(body::make(index, seq, args.size)))
            .await?;
    }
    let stats = tx.finish().await?;
    Ok((args.messages, stats))
}

pub(crate) async fn run(target: Target, args: &Args, ctx: &Ctx) -> anyhow::Result<Report> {
    let senders = ctx.names("ds", args.pairs);
    let recipients = ctx.names("dr", args.pairs);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut receiving: Vec<JoinHandle<(Collector, Option<DatagramStats>)>> = Vec::new();
    for (i, name) in recipients.iter().enumerate() {
        let rx = target.receiver(ctx, name).await?;
        let collector = Collector::new(args.messages, i as u32..i as u32 + 1);
        receiving.push(tokio::spawn(receive(rx, collector, stop_rx.clone())));
    }
    let mut txs = Vec::new();
    for name in &senders {
        txs.push(target.sender(ctx, name).await?);
    }
    let rcvbuf_before = rcvbuf_errors();
    let start = Instant::now();
    let sending: Vec<_> = txs
        .into_iter()
        .zip(recipients.iter().cloned())
        .enumerate()
        .map(|(i, (tx, to))| tokio::spawn(send(tx, i as u32, to, args.clone())))
        .collect();
    let mut sent = 0;
    let mut counts: Option<DatagramStats> = None;
    for task in sending {
        let (n, stats) = task
            .await
            .map_err(|e| anyhow!("a sender panicked: {e}"))??;
        sent += n;
        if let Some(stats) = stats {
            *counts.get_or_insert_with(DatagramStats::default) += stats;
        }
    }
    let sent_at = start.elapsed();
    tokio::time::sleep(Duration::from_millis(args.linger_ms)).await;
    let _ = stop_tx.send(true);
    let mut collectors = Vec::new();
    for task in receiving {
        let (collector, stats) = task
            .await
            .map_err(|e| anyhow!("a receiver panicked: {e}"))?;
        collectors.push(collector);
        if let Some(stats) = stats {
            *counts.get_or_insert_with(DatagramStats::default) += stats;
        }
    }
    let kernel_rcvbuf_drops = rcvbuf_before
        .zip(rcvbuf_errors())
        .map(|(before, after)| after.saturating_sub(before));
    let merged = collect::merge(&collectors, sent);
    let delivered = merged.delivery.delivered;
    let elapsed = merged.last_at.unwrap_or(start).duration_since(start);
    Ok(Report {
        args: args.clone(),
        sent,
        delivered,
        loss_rate: if sent > 0 {
            (sent.saturating_sub(delivered)) as f64 / sent as f64
        } else {
            0.0
        },
        msgs_per_sec: super::rate(delivered, elapsed),
        offered_per_sec: super::rate(sent, sent_at),
        elapsed_s: super::secs(elapsed),
        latency: Latency::of(&merged.latency),
        duplicates: merged.delivery.duplicated,
        kernel_rcvbuf_drops,
        client: counts,
    })
}

/// The kernel's count of UDP datagrams dropped for a full receive buffer, if it tells.
fn rcvbuf_errors() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (names, values) = (udp.next()?, udp.next()?);
    let at = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    values.split_whitespace().nth(at)?.parse().ok()
}
