//! `switchboard-bench store`: what one store engine costs per message, without the network.
//!
//! The workload drives a [`MailboxStore`] directly, on the calling thread, in a temporary directory,
//! with the batch shapes the Router commits (`broker/src/router/commit.rs`):
//! - **accept**: N messages from M senders to M mailboxes (sender `i` to mailbox `i`), committed in
//!   batches of B appends; the store remembers each send, as for an offline recipient;
//! - **drain**: after the accept (not measured), each mailbox is read in pages of 256 and every ack
//!   commits as the Router's does (delete the message, append a `Delivered` receipt to its sender's
//!   mailbox), B acks per batch; then the senders read their receipts and delete them;
//! - **relay**: recipients online, messages handed out and acknowledged before their batch leaves,
//!   so a batch carries only their `remembered` sends and the `Delivered` receipts, which the senders
//!   acknowledge after that commit: the next batch deletes them.
//!
//! Everything is deterministic (names, ids, bodies, timestamps), so `valgrind --tool=callgrind` counts
//! the same instructions run after run (BENCHMARKS.md has the command).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use serde::Serialize;
use switchboard_broker::store::{
    Batch, Durability, Entry, EntryKind, MailboxStore, MemoryStore, Remembered, SqliteStore,
};

/// Entries a page read asks for, as the Router's window does.
const PAGE: usize = 256;
/// The send time of message 0; message `k` is sent at `SENT_AT + k` ms.
const SENT_AT: u64 = 1_700_000_000_000;

/// The engines the bench can open. Adding one is one variant here and one arm in [`open`] (for the
/// segmented log: `Engine::Log => Box::new(LogStore::open(dir, durability)?)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Memory,
    Sqlite,
    Log,
}

/// Opens `engine` in `dir`. The one place that names the engines.
fn open(
    engine: Engine,
    dir: &Path,
    durability: Durability,
) -> anyhow::Result<Box<dyn MailboxStore>> {
    Ok(match engine {
        Engine::Memory => Box::new(MemoryStore::new()),
        Engine::Sqlite => Box::new(SqliteStore::open(dir, durability)?),
        Engine::Log => Box::new(switchboard_broker::store::LogStore::open(dir, durability)?),
    })
}

/// What the store is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Accept,
    Drain,
    Relay,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The store engine to drive.
    #[arg(long, value_enum, default_value_t = Engine::Sqlite)]
    pub engine: Engine,
    /// What to time: accept, drain (after an untimed accept) or relay.
    #[arg(long, value_enum, default_value_t = Phase::Accept)]
    pub workload: Phase,
    /// Messages in total.
    #[arg(long, default_value_t = 100_000)]
    pub messages: u64,
    /// Mailboxes, and as many senders.
    #[arg(long, default_value_t = 4)]
    pub mailboxes: u64,
    /// Messages (accept, relay) or acks (drain) per commit.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Body size in bytes.
    #[arg(long, default_value_t = 128)]
    pub size: usize,
}

/// The JSON line of one run.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub bench: &'static str,
    pub engine: Engine,
    pub durability: &'static str,
    pub workload: Phase,
    pub messages: u64,
    pub mailboxes: u64,
    pub batch: usize,
    pub size: usize,
    /// Wall-clock time of the measured phase, per message.
    pub us_per_msg: f64,
    pub msgs_per_sec: f64,
    /// Commits of the measured phase.
    pub commits: u64,
    /// Every file in the store's directory when the run ends, the store still open.
    pub bytes_on_disk: u64,
}

/// Runs one workload on a fresh store and reports it.
pub(crate) fn run(
    args: &Args,
    durability: Durability,
    durability_name: &'static str,
) -> anyhow::Result<Report> {
    anyhow::ensure!(
        args.mailboxes > 0 && args.batch > 0,
        "--mailboxes and --batch must be positive"
    );
    let dir = tempfile::Builder::new()
        .prefix("switchboard-bench-store-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let mut run = Run {
        store: open(args.engine, dir.path(), durability)?,
        args: args.clone(),
        body: Bytes::from((0..args.size).map(|i| (i % 251) as u8).collect::<Vec<u8>>()),
        next_id: 0,
        commits: 0,
    };
    let (elapsed, commits) = match args.workload {
        Phase::Accept => run.measured(Run::accept)?,
        Phase::Drain => {
            run.accept()?;
            run.measured(Run::drain)?
        }
        Phase::Relay => run.measured(Run::relay)?,
    };
    let bytes_on_disk = disk_usage(dir.path());
    drop(run);
    let secs = elapsed.as_secs_f64();
    let per = |n: f64| {
        if args.messages > 0 {
            n / args.messages as f64
        } else {
            0.0
        }
    };
    Ok(Report {
        bench: "store",
        engine: args.engine,
        durability: durability_name,
        workload: args.workload,
        messages: args.messages,
        mailboxes: args.mailboxes,
        batch: args.batch,
        size: args.size,
        us_per_msg: (per(secs * 1e6) * 1000.0).round() / 1000.0,
        msgs_per_sec: if secs > 0.0 {
            (args.messages as f64 / secs).round()
        } else {
            0.0
        },
        commits,
        bytes_on_disk,
    })
}

/// One store under load, and the ids it has given out.
struct Run {
    store: Box<dyn MailboxStore>,
    args: Args,
    body: Bytes,
    /// The last broker id given out.
    next_id: u64,
    commits: u64,
}

impl Run {
    /// Times `phase` and counts its commits.
    fn measured(
        &mut self,
        phase: fn(&mut Run) -> anyhow::Result<()>,
    ) -> anyhow::Result<(Duration, u64)> {
        let (start, commits) = (Instant::now(), self.commits);
        phase(self)?;
        Ok((start.elapsed(), self.commits - commits))
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn commit(&mut self, batch: &Batch) -> anyhow::Result<()> {
        let outcome = self.store.commit(batch).context("commit")?;
        anyhow::ensure!(
            outcome.duplicates.is_empty(),
            "the store saw a resend in a fresh workload"
        );
        self.commits += 1;
        Ok(())
    }

    /// Message `k`: from sender `k mod M` to mailbox `k mod M`, its `k div M`-th send.
    fn message(&mut self, k: u64) -> Entry {
        let pair = k % self.args.mailboxes;
        Entry {
            id: self.id(),
            mailbox: format!("r{pair}"),
            kind: EntryKind::Message,
            peer: format!("s{pair}"),
            send_id: k / self.args.mailboxes + 1,
            message_id: self.next_id,
            sent_at_ms: SENT_AT + k,
            expires_at_ms: 0,
            body: self.body.clone(),
            receipts: switchboard_proto::Receipts::All,
        }
    }

    /// The receipt for `message`, in its sender's mailbox.
    fn receipt(&mut self, message: &Entry) -> Entry {
        Entry {
            id: self.id(),
            mailbox: message.peer.clone(),
            kind: EntryKind::Delivered,
            peer: message.mailbox.clone(),
            send_id: message.send_id,
            message_id: message.id,
            sent_at_ms: message.sent_at_ms,
            expires_at_ms: 0,
            body: Bytes::new(),
            receipts: switchboard_proto::Receipts::All,
        }
    }

    fn accept(&mut self) -> anyhow::Result<()> {
        let mut k = 0;
        while k < self.args.messages {
            let end = (k + self.args.batch as u64).min(self.args.messages);
            let appends = (k..end).map(|k| self.message(k)).collect();
            self.commit(&Batch {
                appends,
                ..Default::default()
            })?;
            k = end;
        }
        Ok(())
    }

    /// Every recipient reads its mailbox and acks it; then every sender does the same with its
    /// receipts.
    fn drain(&mut self) -> anyhow::Result<()> {
        let mut batch = Batch::default();
        for pair in 0..self.args.mailboxes {
            self.read_and_ack(&format!("r{pair}"), &mut batch)?;
        }
        for pair in 0..self.args.mailboxes {
            self.read_and_ack(&format!("s{pair}"), &mut batch)?;
        }
        if !batch.is_empty() {
            self.commit(&batch)?;
        }
        Ok(())
    }

    /// Reads `mailbox` page by page; each entry's ack is its delete, and for a message a receipt to
    /// its sender, committed B acks at a time.
    fn read_and_ack(&mut self, mailbox: &str, batch: &mut Batch) -> anyhow::Result<()> {
        let mut after = 0;
        loop {
            let page = self.store.fetch(mailbox, after, PAGE).context("fetch")?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = last.id;
            for entry in &page {
                batch.deletes.push(entry.id);
                if entry.kind == EntryKind::Message {
                    let receipt = self.receipt(entry);
                    batch.appends.push(receipt);
                }
                if batch.deletes.len() >= self.args.batch {
                    self.commit(&std::mem::take(batch))?;
                }
            }
        }
    }

    /// Batches of B messages acknowledged before they leave: the store gets their sends and the
    /// receipts, and deletes the previous batch's receipts, which their senders have acknowledged.
    fn relay(&mut self) -> anyhow::Result<()> {
        let mut acked_receipts = Vec::new();
        let mut k = 0;
        while k < self.args.messages {
            let end = (k + self.args.batch as u64).min(self.args.messages);
            let mut batch = Batch {
                deletes: std::mem::take(&mut acked_receipts),
                reserve_ids_through: if k == 0 { 1 << 20 } else { 0 },
                ..Default::default()
            };
            for k in k..end {
                let message = self.message(k);
                batch.remembered.push(Remembered {
                    sender: message.peer.clone(),
                    send_id: message.send_id,
                    message_id: message.id,
                    at_ms: message.sent_at_ms,
                });
                let receipt = self.receipt(&message);
                acked_receipts.push(receipt.id);
                batch.appends.push(receipt);
            }
            self.commit(&batch)?;
            k = end;
        }
        if !acked_receipts.is_empty() {
            self.commit(&Batch {
                deletes: acked_receipts,
                ..Default::default()
            })?;
        }
        Ok(())
    }
}

/// Bytes of every file under `dir`, however deep.
pub(crate) fn disk_usage(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_usage(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
