//! The Router: owns the mailboxes and every decision about delivery.
//!
//! One path for a message: a session hands a [`Submit`] to the Router, which checks the recipient's
//! mailbox limits, gives the message the next broker id and queues it for the store. The Router keeps
//! at most one store commit in flight; whatever arrives meanwhile waits and goes into the next batch, so
//! one fsync covers many messages. When a batch is durable the Router answers every submitter
//! (`Accepted`, with the original id for a resend the store recognised) and hands the new entries to
//! online recipients. An [`Ack`] removes the entry and appends a receipt to the sender's own mailbox in
//! the same batch, so neither the message nor the news of its delivery can be lost. A timer sweeps
//! expired messages the same way, with an `expired` receipt.
//!
//! This file is the actor and its message handlers: the messages in, the futures out. The state it
//! drives lives in plain structs with synchronous methods, one question each: `ids.rs` numbers
//! entries under a durable reservation, `usage.rs` counts mailboxes against their limits, `commit.rs`
//! collects the next batch, `early.rs` hands queued entries out before their commit, `window.rs` and
//! `online.rs` keep what each session holds, `deleting.rs` keeps page reads from handing out what is
//! being deleted. The actor's conversations with the store sit beside this file, one each:
//! `cycle.rs` (commits), `flush.rs` (page reads), `housekeeping.rs` (the timers).

mod admin;
mod commit;
mod config;
mod cycle;
mod deleting;
mod early;
mod flush;
mod housekeeping;
mod ids;
mod messages;
mod online;
mod removing;
#[cfg(test)]
mod testing;
mod undeliverable;
mod usage;
mod wake;
mod window;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use bytes::Bytes;
use switchboard_proto::{ReceiptStatus, Receipts, RejectReason};
use tokio::sync::oneshot;

pub use admin::{
    ListMailboxes, ListWindows, Listed, MailboxInfo, MailboxOrder, MailboxPage, MailboxRow,
    MailboxTotals, ReadEntries, Totals, Windows,
};
pub use config::RouterConfig;
pub use messages::{Ack, Attach, Deliver, Detach, Drain, Stop, Submit};
pub use removing::{Removal, Remove, RemoveError, Target, PURGE_PAGE};
pub use wake::Wake;

use self::commit::CommitQueue;
use self::deleting::Deleting;
use self::early::Early;
use self::ids::Ids;
use self::messages::SessionLink;
use self::online::{Acked, Online};
use self::usage::{Over, Usage};
use self::window::{InFlight, Window};
use crate::metrics::Metrics;
use crate::store::{Entry, EntryKind, MailboxUsage, StoreError, StoreHandle};

/// The Router's mailbox: sessions awaiting `send` beyond this are held back (backpressure).
const MAILBOX_CAPACITY: usize = 4_096;

/// The delivery actor, on the main arbiter; see the module documentation.
pub struct Router {
    /// The store thread; every disk operation goes through it, never on this thread.
    store: StoreHandle,
    config: RouterConfig,
    ids: Ids,
    usage: Usage,
    /// The batch collecting for the next commit; at most one commit in flight.
    queue: CommitQueue,
    early: Early,
    online: Online<SessionLink>,
    /// Entries whose delete is queued or committing, and the reads that may still see them.
    deleting: Deleting,
    /// An expiry sweep is under way.
    sweeping: bool,
    /// Shutdown waiting for everything queued to be committed.
    drained: VecDeque<oneshot::Sender<()>>,
    /// The broker's counters (`GET /metrics`).
    metrics: Arc<Metrics>,
    /// How far the dedupe window's cut may move at the next maintenance pass.
    forget_cut: housekeeping::ForgetCut,
    /// Entries whose stored body is damaged, already set aside: never handed out, never set aside
    /// twice, even where the store could not delete them (`flush.rs`).
    damaged: rustc_hash::FxHashSet<u64>,
}

impl Router {
    /// `last_id` is the store's high-water mark, so ids continue after a restart; `usage` is the
    /// store's per-mailbox usage at start-up.
    pub fn new(
        store: StoreHandle,
        config: RouterConfig,
        last_id: u64,
        usage: Vec<MailboxUsage>,
    ) -> Self {
        Self {
            store,
            ids: if config.shared_store {
                Ids::provisional()
            } else {
                Ids::new(last_id)
            },
            usage: Usage::new(config.mailbox_limits(), usage),
            config,
            queue: CommitQueue::default(),
            early: Early::default(),
            online: Online::new(),
            deleting: Deleting::default(),
            sweeping: false,
            drained: VecDeque::new(),
            metrics: Arc::default(),
            forget_cut: housekeeping::ForgetCut::default(),
            damaged: rustc_hash::FxHashSet::default(),
        }
    }

    /// Counts into `metrics` (the admin listener's) instead of counters nobody reads.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Queues `entry` for the next commit and counts it against its mailbox; with `early`, hands it
    /// to its online owner at once if nothing older of the mailbox is still waiting.
    fn append(&mut self, entry: Entry, early: bool) {
        let receipt = entry.kind.is_receipt();
        self.usage
            .queue(&entry.mailbox, entry.body.len() as u64, receipt);
        let may_go_early = early && self.ids.may_go_early(entry.id);
        if self.config.shared_store {
            // Nothing goes out before its commit: it is read from the store in commit order.
            self.queue.push(entry);
            return;
        }
        let window = self.online.get_mut(&entry.mailbox);
        if self.early.admit(&entry, may_go_early, window).is_err() {
            self.went_away(&entry.mailbox);
        }
        self.queue.push(entry);
    }

    /// Queues a receipt in `owner`'s mailbox about its message `message_id` to `peer`; receipts
    /// always may go out early (they are the broker's, never resent).
    fn queue_receipt(
        &mut self,
        kind: EntryKind,
        owner: String,
        peer: String,
        send_id: u64,
        message_id: u64,
    ) {
        if let Some(status) = kind.receipt_status() {
            self.metrics.receipt(status);
        }
        let id = self.ids.next();
        let now = now_ms();
        let receipt = Entry {
            id,
            mailbox: owner,
            kind,
            peer,
            send_id,
            message_id,
            sent_at_ms: now,
            expires_at_ms: self.config.receipt_expiry(now),
            receipts: Receipts::All,
            body: Bytes::new(),
        };
        self.append(receipt, true);
    }

    /// Queues a `kind` receipt about the message `about` (leaving its mailbox undelivered) for its
    /// sender, if the sender asked for that kind.
    fn tell_sender(&mut self, kind: EntryKind, about: &Entry) {
        let wanted = kind
            .receipt_status()
            .is_some_and(|status| about.receipts.wants(status));
        if about.kind == EntryKind::Message && wanted {
            let (sender, owner) = (about.peer.clone(), about.mailbox.clone());
            self.queue_receipt(kind, sender, owner, about.send_id, about.id);
        }
    }

    /// Queues the delete of entry `id` of `mailbox`.
    fn delete(&mut self, id: u64, mailbox: String, body_len: u64) {
        self.deleting.insert(id, mailbox, body_len);
        self.queue.delete(id);
    }

    /// Hands out what waits for `owner` in the collecting batch, as far as it now can.
    fn catch_up(&mut self, owner: &str) {
        let window = self.online.get_mut(owner);
        if self.early.catch_up(owner, window, &self.queue).is_err() {
            self.went_away(owner);
        }
    }

    /// The session is gone; its unacknowledged entries stay in the store for the next connection.
    fn went_away(&mut self, client: &str) {
        if self.online.remove(client) {
            tracing::debug!(
                client,
                "session gone; its mailbox waits for the next connection"
            );
        }
    }
}

/// The wall clock in ms since the epoch: entries carry it, as sent-at and expiry times.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Actor for Router {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        ctx.run_interval(self.config.expiry_sweep, |router, ctx| router.sweep(ctx));
        ctx.run_interval(self.config.maintenance, |router, ctx| router.maintain(ctx));
        if self.config.shared_store {
            ctx.run_interval(wake::SAFETY_SWEEP, |router, ctx| router.wake_everyone(ctx));
        }
    }
}

impl Handler<Submit> for Router {
    type Result = ResponseFuture<Result<u64, RejectReason>>;

    fn handle(&mut self, msg: Submit, ctx: &mut Context<Self>) -> Self::Result {
        match self.usage.check(msg.to.as_str(), msg.body.len() as u64) {
            Err(Over::TooLarge) => return Box::pin(async { Err(RejectReason::TooLarge) }),
            // A shared store counts what every broker stored, in the transaction: this broker's
            // own counts would be stale both ways.
            Err(Over::Full) if self.config.shared_store => {}
            Err(Over::Full) if !self.queue.holds_send(msg.from.as_str(), msg.send_id) => {
                return self.original_or_full(msg);
            }
            // Room, or a resend of a message in the collecting batch: the store will recognise it.
            _ => {}
        }
        let id = self.ids.next();
        let answer = self.queue.answer_when_committed(id);
        let fresh = msg.fresh;
        // Only a first attempt may go out before the store has had a chance to recognise a resend.
        self.append(msg.into_entry(id, &self.config), fresh);
        self.commit_pending(ctx);
        Box::pin(async move { answer.await.unwrap_or(Err(RejectReason::Unavailable)) })
    }
}

impl Router {
    /// The mailbox is full, unless this is a resend of a message already stored: then the sender
    /// must hear the original's id, not a rejection. Asked after any commit in flight.
    fn original_or_full(&self, msg: Submit) -> ResponseFuture<Result<u64, RejectReason>> {
        let store = self.store.clone();
        let (from, send_id) = (msg.from.into_string(), msg.send_id);
        Box::pin(async move {
            match store.sent(from, send_id).await {
                Ok(Some(original)) => Ok(original),
                Ok(None) => Err(RejectReason::MailboxFull),
                Err(_) => Err(RejectReason::Unavailable),
            }
        })
    }

    /// Acknowledged entry `id` of `owner` leaves: out of the collecting batch if it is still there
    /// (it was handed out early, and is never stored), by a delete otherwise; a message's sender gets
    /// a receipt, in the same batch.
    fn settle(&mut self, owner: &str, id: u64, done: InFlight) {
        if self.queue.is_collecting(id) {
            self.queue.acked(id);
            self.usage
                .unqueue(owner, done.body_len, done.kind.is_receipt());
        } else {
            self.delete(id, owner.to_owned(), done.body_len);
        }
        if done.kind == EntryKind::Message && done.receipts.wants(ReceiptStatus::Delivered) {
            let (sender, send_id) = (done.sender, done.send_id);
            self.queue_receipt(EntryKind::Delivered, sender, owner.to_owned(), send_id, id);
        }
    }
}

impl Handler<Attach> for Router {
    type Result = ResponseActFuture<Self, Result<u64, StoreError>>;

    fn handle(&mut self, msg: Attach, ctx: &mut Context<Self>) -> Self::Result {
        // A takeover replaces the old state: what the old session held unacknowledged is still in
        // the store and is handed out again from the start of the mailbox.
        let link = SessionLink {
            deliver: msg.session,
            kick: msg.kick,
        };
        let window = Window::new(msg.conn_id, link, self.config.window_size());
        self.online.attach(msg.client.clone(), window);
        self.early.requeue(msg.client.as_str(), &self.queue);
        self.refill(&msg.client, ctx);
        // What this session will be handed (`hi.pending`): the committed entries less those being
        // deleted, never an entry that will not come. Queued messages are left out: one may be a
        // resend the store turns away.
        let client = msg.client.as_str();
        let leaving = self.deleting.count_in(client);
        if !self.config.shared_store {
            // Counted here, and the receipts on their way to the store too (an ack just before
            // this connection must not leave its receipt uncounted).
            let stored = self.usage.stored_entries(client);
            let pending = stored.saturating_sub(leaving) + self.usage.queued_receipts(client);
            return Box::pin(actix::fut::ready(Ok(pending)));
        }
        // Other brokers append to this mailbox and delete from it: only the store knows what it
        // holds. Receipts queued here are left out, since one may commit before the count and be in
        // it already; what is being deleted here is taken off as it stands now (no new delete of
        // this mailbox can start before `hi`), so the count errs low, never high.
        let store = self.store.clone();
        let mailbox = client.to_owned();
        Box::pin(
            async move { store.entries_in(mailbox).await }
                .into_actor(self)
                .map(move |held, _, _| Ok(held?.saturating_sub(leaving))),
        )
    }
}

impl Handler<Detach> for Router {
    type Result = ();

    fn handle(&mut self, msg: Detach, _: &mut Context<Self>) {
        if self.online.is_current(msg.client.as_str(), msg.conn_id) {
            self.went_away(msg.client.as_str());
        }
    }
}

impl Handler<Ack> for Router {
    type Result = ();

    fn handle(&mut self, msg: Ack, ctx: &mut Context<Self>) {
        let owner = msg.client.as_str();
        match self.online.ack(owner, msg.conn_id, msg.id) {
            None => return,
            Some(Acked::NeverStored) => self.catch_up(owner),
            Some(Acked::Entry(done)) => {
                self.settle(owner, msg.id, done);
                self.catch_up(owner);
                self.commit_pending(ctx);
            }
        }
        self.refill(&msg.client, ctx);
    }
}

impl Handler<Drain> for Router {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Drain, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.drained.push_back(tx);
        self.commit_pending(ctx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

impl Handler<Stop> for Router {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
