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
//! Early delivery: a fresh send (the sender's first attempt, so certainly not a resend the store would
//! recognise) and every receipt are handed to an online recipient as soon as they are queued, when
//! nothing older of that mailbox is still waiting. If the acknowledgement comes back while the entry's
//! batch is still queued, the entry leaves the batch: the store only remembers the send (for resends),
//! the sender hears `Accepted` at once, and the message never touches the disk. Ids handed out before
//! their commit are covered by a reservation the store has made durable (`reserve_ids_through`), so a
//! restart after a crash never gives them out again.
//!
//! Per online client the Router keeps the entries it has handed out and not yet seen acknowledged (at
//! most `window`) and a cursor: every entry of that mailbox with an id at or below the cursor has been
//! handed out. Entries above the cursor are either delivered straight from a fresh commit (when the
//! client has no backlog) or read back from the store a page at a time, so a mailbox of any size flushes
//! in order with bounded memory, and anything that arrives during a flush queues behind it.
//!
//! An entry whose delete is queued or committing is in `deleting`, so no page read hands it out again.
//! A page read that started before a delete committed may still return the entry, so the id leaves
//! `deleting` only once every such read has come back.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use bytes::Bytes;
// Maps keyed by broker ids use the fast non-keyed hash; ids are ours, not a peer's choice. Maps keyed
// by client ids keep std's keyed hash, since peers choose those.
use rustc_hash::{FxHashMap, FxHashSet};
use switchboard_proto::{ClientId, RejectReason};
use tokio::sync::oneshot;

use crate::settings::Settings;
use crate::store::{
    Batch, CommitOutcome, Entry, EntryKind, ExpiredEntry, MailboxUsage, Maintenance, Remembered,
    StoreError, StoreHandle,
};

/// A session's request to store and route a message.
#[derive(Message)]
#[rtype(result = "Result<u64, RejectReason>")]
pub struct Submit {
    pub from: ClientId,
    pub client_msg_id: u64,
    pub to: ClientId,
    pub body: Bytes,
    /// Time to live asked for by the sender; `None` or 0 for the broker's default.
    pub ttl_ms: Option<u64>,
    /// The sender says this is its first attempt (`Send.fresh`): the message may be handed out
    /// before it is on disk.
    pub fresh: bool,
}

/// An entry handed to the session of its mailbox's owner, to be written to the socket.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Deliver(pub Entry);

/// The client behind a session came online; start flushing its mailbox. Answers how many entries
/// wait in it.
#[derive(Message)]
#[rtype(result = "Result<u64, StoreError>")]
pub struct Attach {
    pub client: ClientId,
    pub conn_id: u64,
    pub session: Recipient<Deliver>,
}

/// The session `conn_id` of `client` has ended; what it held unacknowledged stays in the mailbox.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Detach {
    pub client: ClientId,
    pub conn_id: u64,
}

/// `client` has handled entry `id`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Ack {
    pub client: ClientId,
    pub conn_id: u64,
    pub id: u64,
}

/// Resolves once every queued write has been committed (used by shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

/// Stops the Router, releasing its store handle (the last step of shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

/// Tuning the Router takes from the settings.
#[derive(Debug, Clone, Copy)]
pub struct RouterConfig {
    pub window: usize,
    pub window_bytes: u64,
    pub page_size: usize,
    pub max_messages: u64,
    pub max_bytes: u64,
    pub default_ttl: Option<Duration>,
    pub max_ttl: Option<Duration>,
    pub expiry_sweep: Duration,
    pub dedupe_window: Duration,
    pub dedupe_max: u64,
}

impl RouterConfig {
    pub fn from_settings(s: &Settings) -> Self {
        let secs = |n: u64| (n > 0).then(|| Duration::from_secs(n));
        Self {
            window: s.limits.window,
            window_bytes: s.limits.window_bytes,
            page_size: s.limits.page_size,
            max_messages: s.mailbox.max_messages,
            max_bytes: s.mailbox.max_bytes,
            default_ttl: secs(s.mailbox.default_ttl_secs),
            max_ttl: secs(s.mailbox.max_ttl_secs),
            expiry_sweep: Duration::from_millis(s.mailbox.expiry_sweep_ms),
            dedupe_window: Duration::from_secs(s.dedupe.window_secs),
            dedupe_max: s.dedupe.max_remembered,
        }
    }

    /// When a message sent now with `ttl_ms` expires (ms since the epoch), or 0 for never.
    fn expiry(&self, now_ms: u64, ttl_ms: Option<u64>) -> u64 {
        let asked = ttl_ms
            .filter(|&t| t > 0)
            .map(Duration::from_millis)
            .or(self.default_ttl);
        let ttl = match (asked, self.max_ttl) {
            (Some(ttl), Some(max)) => ttl.min(max),
            (ttl, _) => match ttl {
                Some(ttl) => ttl,
                None => return 0,
            },
        };
        now_ms.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
    }
}

/// What the Router remembers of an entry it handed out, to write the receipt when it is acknowledged.
struct InFlight {
    kind: EntryKind,
    sender: String,
    client_msg_id: u64,
    body_len: u64,
}

/// Delivery state of one connected client.
struct Online {
    conn_id: u64,
    session: Recipient<Deliver>,
    in_flight: FxHashMap<u64, InFlight>,
    /// Body bytes of the entries in flight.
    in_flight_bytes: u64,
    /// Every entry of the mailbox with an id at or below this has been handed to this session.
    cursor: u64,
    /// The store may hold entries above `cursor` that were not handed out.
    backlog: bool,
    /// A page read is under way.
    fetching: bool,
    /// A commit landed entries for this client while a page read was under way, so a short page does
    /// not prove the backlog empty.
    arrived_while_fetching: bool,
}

/// Entries and bytes of one mailbox.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Usage {
    entries: u64,
    bytes: u64,
}

/// An entry whose delete is queued or committing.
struct Deleting {
    mailbox: String,
    body_len: u64,
}

/// Answers owed to senders, by the id their message got.
type Answers = FxHashMap<u64, oneshot::Sender<Result<u64, RejectReason>>>;

/// Writes waiting for the next commit, with whoever waits on them.
#[derive(Default)]
struct Pending {
    batch: Batch,
    accepted: Answers,
    /// Appends acknowledged before their batch left for the store: they are not stored.
    skipped: FxHashSet<u64>,
    /// Per online owner, the appends of this batch not handed out yet, in id order, each with
    /// whether it may go out before its commit. Tried again when the owner acknowledges something
    /// and after each commit.
    waiting: HashMap<String, VecDeque<(u64, bool)>>,
    /// Where each append of this batch sits in `batch.appends`.
    index: FxHashMap<u64, usize>,
}

pub struct Router {
    store: StoreHandle,
    config: RouterConfig,
    /// The last broker id given out.
    last_id: u64,
    /// Ids up to this one are covered by a committed reservation and may be handed out early.
    ids_reserved: u64,
    /// Entries handed out early and not yet acknowledged that stayed out of one batch already (see
    /// [`Router::commit_pending`]); the next batch writes them.
    carried: FxHashSet<u64>,
    /// Entries handed out early that their commit did not store (it failed, or the store recognised
    /// a resend): their ack deletes nothing and sends no receipt.
    never_stored: FxHashSet<u64>,
    /// Mailboxes with entries in the committing batch that were not handed out: nothing newer of
    /// theirs goes out before that commit lands.
    committing_waiting: HashSet<String>,
    online: HashMap<ClientId, Online>,
    /// Committed usage of every non-empty mailbox.
    usage: HashMap<String, Usage>,
    /// Appends queued or committing, per mailbox; they count against the limits too.
    reserved: HashMap<String, Usage>,
    pending: Pending,
    committing: bool,
    deleting: FxHashMap<u64, Deleting>,
    /// Commits completed so far; a read is stamped with this when it starts.
    commits_done: u64,
    /// Store reads under way (page reads, expiry sweeps), counted by their start stamp.
    reads: BTreeMap<u64, usize>,
    /// Ids deleted by commit N, waiting for every read stamped before N to come back.
    releasing: VecDeque<(u64, Vec<u64>)>,
    sweeping: bool,
    drained: VecDeque<oneshot::Sender<()>>,
}

/// How long to wait before retrying a page read that failed.
const FETCH_RETRY: Duration = Duration::from_secs(1);
/// The Router's mailbox: sessions awaiting `send` beyond this are held back (backpressure).
const MAILBOX_CAPACITY: usize = 4_096;
/// Expired entries handled per sweep read.
const SWEEP_BATCH: usize = 1_024;
/// How often old remembered sends are forgotten and free space handed back.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(60);
/// How many ids a reservation covers; a new one is asked for when half is used. A restart after a
/// crash skips at most this many ids.
const ID_RESERVATION: u64 = 1 << 20;

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
            config,
            last_id,
            ids_reserved: last_id,
            carried: FxHashSet::default(),
            never_stored: FxHashSet::default(),
            committing_waiting: HashSet::new(),
            online: HashMap::new(),
            usage: usage
                .into_iter()
                .map(|u| {
                    let usage = Usage {
                        entries: u.entries,
                        bytes: u.bytes,
                    };
                    (u.mailbox, usage)
                })
                .collect(),
            reserved: HashMap::new(),
            pending: Pending::default(),
            committing: false,
            deleting: FxHashMap::default(),
            commits_done: 0,
            reads: BTreeMap::new(),
            releasing: VecDeque::new(),
            sweeping: false,
            drained: VecDeque::new(),
        }
    }

    /// Queues a receipt; receipts always may go out early (they are the broker's, never resent).
    fn append_receipt(&mut self, entry: Entry) {
        self.append(entry, true);
    }

    fn next_id(&mut self) -> u64 {
        self.last_id += 1;
        self.last_id
    }

    /// Queues `entry` for the next commit and counts it against its mailbox; with `early`, hands it
    /// to its online owner at once if nothing older of the mailbox is still waiting.
    fn append(&mut self, entry: Entry, early: bool) {
        let len = entry.body.len() as u64;
        add(&mut self.reserved, &entry.mailbox, 1, len);
        let early = early && entry.id <= self.ids_reserved;
        if !(early && self.hand_out_early(&entry))
            && self.online.contains_key(entry.mailbox.as_str())
        {
            // Its owner is online and did not get it: it waits, and so does everything after it.
            match self.pending.waiting.get_mut(entry.mailbox.as_str()) {
                Some(queue) => queue.push_back((entry.id, early)),
                None => {
                    let queue = VecDeque::from([(entry.id, early)]);
                    self.pending.waiting.insert(entry.mailbox.clone(), queue);
                }
            }
        }
        self.pending
            .index
            .insert(entry.id, self.pending.batch.appends.len());
        self.pending.batch.appends.push(entry);
    }

    /// Hands a queued entry to its owner if the owner is online, has room, and has been handed every
    /// older entry of its mailbox: none stored and not read yet (no backlog, no page read), none
    /// committing and not handed out, none queued and waiting. Returns whether the entry is taken care
    /// of: handed out, or its owner is offline.
    fn hand_out_early(&mut self, entry: &Entry) -> bool {
        let Some(online) = self.online.get_mut(entry.mailbox.as_str()) else {
            return true;
        };
        let owner = entry.mailbox.as_str();
        let caught_up = !online.backlog
            && !online.fetching
            && !self.committing_waiting.contains(owner)
            && self
                .pending
                .waiting
                .get(owner)
                .is_none_or(VecDeque::is_empty);
        if !caught_up || !has_room(online, &self.config, entry.body.len() as u64) {
            return false;
        }
        match hand_out(online, entry.clone()) {
            Handed::Yes => true,
            Handed::Full => false,
            Handed::Gone => {
                let owner = entry.mailbox.clone();
                self.went_away(&owner);
                true
            }
        }
    }

    /// Hands out, in order, the queued entries of `owner` that could go out early but found no room
    /// or something older in the way, as far as they now can. Without this, one entry that missed its
    /// chance would hold back every later one of its mailbox until they are all committed, and under
    /// steady load that never ends.
    fn catch_up(&mut self, owner: &str) {
        let Some(queue) = self.pending.waiting.get_mut(owner) else {
            return;
        };
        let Some(online) = self.online.get_mut(owner) else {
            queue.clear();
            return;
        };
        if online.backlog || online.fetching || self.committing_waiting.contains(owner) {
            return;
        }
        while let Some(&(id, early)) = queue.front() {
            if id <= online.cursor {
                queue.pop_front();
                continue;
            }
            let Some(entry) = self
                .pending
                .index
                .get(&id)
                .and_then(|&at| self.pending.batch.appends.get(at))
            else {
                queue.pop_front();
                continue;
            };
            if !early || !has_room(online, &self.config, entry.body.len() as u64) {
                return;
            }
            match hand_out(online, entry.clone()) {
                Handed::Yes => {
                    queue.pop_front();
                }
                Handed::Full => return,
                Handed::Gone => {
                    self.went_away(owner);
                    return;
                }
            }
        }
    }

    /// A new session for `owner`: none of the queued entries has been handed to it, so all of them
    /// (less those acknowledged already) wait for it in order, behind anything committing. Only those
    /// that were waiting keep their leave to go out early; the others (whether they went out to the old
    /// session or were queued while the owner was away) wait for their commit, which is always safe.
    fn requeue(&mut self, owner: &str) {
        let old: FxHashMap<u64, bool> = self
            .pending
            .waiting
            .remove(owner)
            .unwrap_or_default()
            .into_iter()
            .collect();
        let queue: VecDeque<(u64, bool)> = self
            .pending
            .batch
            .appends
            .iter()
            .filter(|e| e.mailbox == owner && !self.pending.skipped.contains(&e.id))
            .map(|e| (e.id, old.get(&e.id).copied().unwrap_or(false)))
            .collect();
        if !queue.is_empty() {
            self.pending.waiting.insert(owner.to_owned(), queue);
        }
        if self.committing {
            self.committing_waiting.insert(owner.to_owned());
        }
    }

    /// After a commit, [`Router::catch_up`] every owner with entries waiting.
    fn catch_up_all(&mut self) {
        let owners: Vec<String> = self
            .pending
            .waiting
            .iter()
            .filter(|(_, queue)| !queue.is_empty())
            .map(|(owner, _)| owner.clone())
            .collect();
        for owner in owners {
            self.catch_up(&owner);
        }
    }

    /// Whether `entry` is with its owner's current session, not acknowledged, and its owner has
    /// nothing waiting behind anything committing.
    fn out_unacknowledged(&self, entry: &Entry) -> bool {
        let owner = entry.mailbox.as_str();
        !self.committing_waiting.contains(owner)
            && self
                .online
                .get(owner)
                .is_some_and(|o| o.in_flight.contains_key(&entry.id))
    }

    /// Queues the delete of entry `id` of `mailbox`.
    fn delete(&mut self, id: u64, mailbox: String, body_len: u64) {
        self.deleting.insert(id, Deleting { mailbox, body_len });
        self.pending.batch.deletes.push(id);
    }

    /// Sends what is pending to the store unless a commit is already under way.
    fn commit_pending(&mut self, ctx: &mut Context<Self>) {
        if self.committing || self.pending.batch.is_empty() {
            if !self.committing {
                self.drained.drain(..).for_each(|tx| {
                    let _ = tx.send(());
                });
            }
            return;
        }
        self.committing = true;
        let Pending {
            mut batch,
            mut accepted,
            skipped,
            waiting,
            index: _,
        } = std::mem::take(&mut self.pending);
        self.committing_waiting = waiting
            .into_iter()
            .filter(|(_, queue)| !queue.is_empty())
            .map(|(owner, _)| owner)
            .collect();
        // Acknowledged before reaching the store: only the sends are remembered, for resends. Handed
        // out early and not acknowledged yet: left for the next batch once, as the ack is likely on
        // its way. That keeps a mailbox's entries in id order in the store: what stays out is newer
        // than what goes in, and an owner with entries waiting keeps none out.
        let appends = std::mem::take(&mut batch.appends);
        let mut kept = Vec::new();
        for entry in appends {
            if skipped.contains(&entry.id) {
                self.carried.remove(&entry.id);
                if entry.kind == EntryKind::Message {
                    batch.remembered.push(Remembered {
                        sender: entry.peer,
                        client_msg_id: entry.client_msg_id,
                        message_id: entry.id,
                        at_ms: entry.sent_at_ms,
                    });
                }
            } else if self.carried.remove(&entry.id) || !self.out_unacknowledged(&entry) {
                batch.appends.push(entry);
            } else {
                self.carried.insert(entry.id);
                kept.push(entry);
            }
        }
        for entry in kept {
            if let Some(tx) = accepted.remove(&entry.id) {
                self.pending.accepted.insert(entry.id, tx);
            }
            self.pending
                .index
                .insert(entry.id, self.pending.batch.appends.len());
            self.pending.batch.appends.push(entry);
        }
        if self.last_id + ID_RESERVATION / 2 > self.ids_reserved {
            batch.reserve_ids_through = self.last_id + ID_RESERVATION;
        }
        let reserve = batch.reserve_ids_through;
        let appended = batch.appends.clone();
        let deletes = batch.deletes.clone();
        let store = self.store.clone();
        async move { store.commit(batch).await }
            .into_actor(self)
            .map(move |result, router, ctx| {
                if result.is_ok() {
                    router.ids_reserved = router.ids_reserved.max(reserve);
                }
                router.committed(result, appended, deletes, accepted);
                router.committing_waiting.clear();
                router.catch_up_all();
                router.commit_pending(ctx);
            })
            .spawn(ctx);
    }

    fn committed(
        &mut self,
        result: Result<CommitOutcome, StoreError>,
        appended: Vec<Entry>,
        deletes: Vec<u64>,
        accepted: Answers,
    ) {
        self.committing = false;
        self.commits_done += 1;
        for entry in &appended {
            sub(
                &mut self.reserved,
                &entry.mailbox,
                1,
                entry.body.len() as u64,
            );
        }
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(error) => {
                // Nothing of the batch happened. Senders hear `unavailable`; acknowledged entries are
                // still stored and are handed out again on the client's next connection.
                tracing::error!(%error, entries = appended.len(), "store commit failed; senders get Rejected(unavailable)");
                for (_, tx) in accepted {
                    let _ = tx.send(Err(RejectReason::Unavailable));
                }
                for entry in &appended {
                    self.not_stored(entry);
                }
                self.release(deletes);
                return;
            }
        };
        let duplicates: FxHashMap<u64, u64> = outcome
            .duplicates
            .iter()
            .map(|d| (d.id, d.original))
            .collect();
        for (id, tx) in accepted {
            let _ = tx.send(Ok(duplicates.get(&id).copied().unwrap_or(id)));
        }
        for id in &deletes {
            if let Some(gone) = self.deleting.get(id) {
                sub(&mut self.usage, &gone.mailbox, 1, gone.body_len);
            }
        }
        self.release(deletes);
        for entry in appended {
            if duplicates.contains_key(&entry.id) {
                tracing::debug!(sender = %entry.peer, send_id = entry.client_msg_id, "resend recognised; stored once");
                self.not_stored(&entry);
                continue;
            }
            add(&mut self.usage, &entry.mailbox, 1, entry.body.len() as u64);
            self.arrived(entry);
        }
    }

    /// `entry` did not reach the store. If it went out early, its ack must not delete (and uncount)
    /// an entry that is not there, nor report a delivery for it.
    fn not_stored(&mut self, entry: &Entry) {
        let out = self
            .online
            .get(entry.mailbox.as_str())
            .is_some_and(|o| o.in_flight.contains_key(&entry.id));
        if out {
            self.never_stored.insert(entry.id);
        }
    }

    /// Marks the start of a store read; see the module documentation.
    fn begin_read(&mut self) -> u64 {
        *self.reads.entry(self.commits_done).or_default() += 1;
        self.commits_done
    }

    fn end_read(&mut self, stamp: u64) {
        if let Some(count) = self.reads.get_mut(&stamp) {
            *count -= 1;
            if *count == 0 {
                self.reads.remove(&stamp);
            }
        }
        self.release_ready();
    }

    /// The ids of a just-completed commit leave `deleting` once no older read can return them.
    fn release(&mut self, ids: Vec<u64>) {
        if !ids.is_empty() {
            self.releasing.push_back((self.commits_done, ids));
        }
        self.release_ready();
    }

    fn release_ready(&mut self) {
        let oldest_read = self.reads.keys().next().copied().unwrap_or(u64::MAX);
        while self
            .releasing
            .front()
            .is_some_and(|(commit, _)| *commit <= oldest_read)
        {
            if let Some((_, ids)) = self.releasing.pop_front() {
                for id in ids {
                    self.deleting.remove(&id);
                }
            }
        }
    }

    /// A committed entry: hand it over now if its owner is online and has nothing older waiting.
    fn arrived(&mut self, entry: Entry) {
        let Some(online) = self.online.get_mut(entry.mailbox.as_str()) else {
            return;
        };
        if entry.id <= online.cursor {
            return; // A page read that finished first already handed it out.
        }
        if online.fetching {
            online.arrived_while_fetching = true;
            return;
        }
        if online.backlog || !has_room(online, &self.config, entry.body.len() as u64) {
            online.backlog = true;
            return;
        }
        let owner = entry.mailbox.clone();
        if hand_out(online, entry) == Handed::Gone {
            self.went_away(&owner);
        }
    }

    /// Reads the next page of a client's backlog if its window has room for a useful amount.
    fn refill(&mut self, client: &ClientId, ctx: &mut Context<Self>) {
        let (window, window_bytes) = (self.config.window, self.config.window_bytes);
        let Some(online) = self.online.get_mut(client) else {
            return;
        };
        // Wait until half the window is free so pages are not read one entry at a time.
        let half_full =
            online.in_flight.len() > window / 2 || online.in_flight_bytes > window_bytes / 2;
        if !online.backlog || online.fetching || half_full {
            return;
        }
        online.fetching = true;
        online.arrived_while_fetching = false;
        let limit = (window - online.in_flight.len()).min(self.config.page_size);
        let (after, conn_id) = (online.cursor, online.conn_id);
        let stamp = self.begin_read();
        let store = self.store.clone();
        let mailbox = client.to_string();
        let client = client.clone();
        async move { store.fetch(mailbox, after, limit).await }
            .into_actor(self)
            .map(move |result, router, ctx| {
                router.page_read(client, conn_id, limit, result, ctx);
                router.end_read(stamp);
            })
            .spawn(ctx);
    }

    fn page_read(
        &mut self,
        client: ClientId,
        conn_id: u64,
        limit: usize,
        result: Result<Vec<Entry>, StoreError>,
        ctx: &mut Context<Self>,
    ) {
        let Some(online) = self.online.get_mut(&client) else {
            return;
        };
        if online.conn_id != conn_id {
            return; // A newer session took over and started its own flush.
        }
        online.fetching = false;
        let page = match result {
            Ok(page) => page,
            Err(error) => {
                tracing::error!(%error, client = %client, "reading mailbox failed; retrying");
                ctx.run_later(FETCH_RETRY, move |router, ctx| router.refill(&client, ctx));
                return;
            }
        };
        let short = page.len() < limit;
        online.backlog = !short || online.arrived_while_fetching;
        for entry in page {
            if entry.id <= online.cursor {
                continue; // Handed out straight from a commit that finished first.
            }
            if self.deleting.contains_key(&entry.id) {
                online.cursor = entry.id;
                continue;
            }
            if !has_room(online, &self.config, entry.body.len() as u64) {
                online.backlog = true; // The rest of the page is read again once acks make room.
                break;
            }
            match hand_out(online, entry) {
                Handed::Yes => {}
                Handed::Full => break,
                Handed::Gone => {
                    self.went_away(client.as_str());
                    return;
                }
            }
        }
        self.refill(&client, ctx);
    }

    /// The session is gone; its unacknowledged entries stay in the store for the next connection.
    fn went_away(&mut self, client: &str) {
        if let Some(gone) = self.online.remove(client) {
            if !self.never_stored.is_empty() {
                for id in gone.in_flight.keys() {
                    self.never_stored.remove(id);
                }
            }
            tracing::debug!(
                client,
                "session gone; its mailbox waits for the next connection"
            );
        }
    }

    /// Looks for expired entries unless a sweep is under way.
    fn sweep(&mut self, ctx: &mut Context<Self>) {
        if self.sweeping {
            return;
        }
        self.sweeping = true;
        let stamp = self.begin_read();
        let store = self.store.clone();
        async move { store.expired(now_ms(), SWEEP_BATCH).await }
            .into_actor(self)
            .map(move |result, router, ctx| {
                router.sweeping = false;
                let removed = match result {
                    Ok(due) => router.expire(due),
                    Err(error) => {
                        tracing::error!(%error, "looking for expired messages failed");
                        0
                    }
                };
                router.end_read(stamp);
                router.commit_pending(ctx);
                if removed == SWEEP_BATCH {
                    router.sweep(ctx); // More may be due.
                }
            })
            .spawn(ctx);
    }

    /// Removes expired entries and tells their senders; returns how many it removed.
    fn expire(&mut self, due: Vec<ExpiredEntry>) -> usize {
        let mut removed = 0;
        for ExpiredEntry { entry, body_len } in due {
            if self.deleting.contains_key(&entry.id) {
                continue;
            }
            // Handed out and not yet acknowledged: the delivery is under way, its ack decides.
            let delivering = self
                .online
                .get(entry.mailbox.as_str())
                .is_some_and(|o| o.in_flight.contains_key(&entry.id));
            if delivering {
                continue;
            }
            removed += 1;
            self.delete(entry.id, entry.mailbox.clone(), body_len);
            if entry.kind == EntryKind::Message {
                let id = self.next_id();
                self.append_receipt(Entry {
                    id,
                    mailbox: entry.peer,
                    kind: EntryKind::Expired,
                    peer: entry.mailbox,
                    client_msg_id: entry.client_msg_id,
                    message_id: entry.id,
                    sent_at_ms: now_ms(),
                    expires_at_ms: 0,
                    body: Bytes::new(),
                });
            }
        }
        if removed > 0 {
            tracing::info!(removed, "expired messages removed");
        }
        removed
    }

    fn maintain(&mut self, ctx: &mut Context<Self>) {
        let window = u64::try_from(self.config.dedupe_window.as_millis()).unwrap_or(u64::MAX);
        let what = Maintenance {
            forget_sent_before_ms: now_ms().saturating_sub(window),
            remember_at_most: self.config.dedupe_max,
        };
        let store = self.store.clone();
        async move { store.maintain(what).await }
            .into_actor(self)
            .map(|result, _, _| match result {
                Ok(report) => tracing::debug!(
                    forgotten = report.forgotten,
                    reclaimed_pages = report.reclaimed_pages,
                    "store maintenance"
                ),
                Err(error) => tracing::warn!(%error, "store maintenance failed"),
            })
            .spawn(ctx);
    }

    /// Entries and bytes `mailbox` holds or will hold once queued writes commit.
    fn in_use(&self, mailbox: &str) -> Usage {
        let stored = self.usage.get(mailbox).copied().unwrap_or_default();
        let queued = self.reserved.get(mailbox).copied().unwrap_or_default();
        Usage {
            entries: stored.entries + queued.entries,
            bytes: stored.bytes + queued.bytes,
        }
    }
}

fn add(map: &mut HashMap<String, Usage>, mailbox: &str, entries: u64, bytes: u64) {
    let usage = match map.get_mut(mailbox) {
        Some(usage) => usage,
        None => map.entry(mailbox.to_owned()).or_default(),
    };
    usage.entries += entries;
    usage.bytes += bytes;
}

fn sub(map: &mut HashMap<String, Usage>, mailbox: &str, entries: u64, bytes: u64) {
    if let Some(usage) = map.get_mut(mailbox) {
        usage.entries = usage.entries.saturating_sub(entries);
        usage.bytes = usage.bytes.saturating_sub(bytes);
        if usage.entries == 0 {
            map.remove(mailbox);
        }
    }
}

/// Whether a session's window has room for one more entry of `len` body bytes. An empty window
/// always has room, so an entry larger than the byte window still goes out, alone.
fn has_room(online: &Online, config: &RouterConfig, len: u64) -> bool {
    online.in_flight.is_empty()
        || (online.in_flight.len() < config.window
            && online.in_flight_bytes.saturating_add(len) <= config.window_bytes)
}

#[derive(Debug, PartialEq, Eq)]
enum Handed {
    Yes,
    /// The session's mailbox is full (the window should prevent it): the entry stays in the store.
    Full,
    /// The session has stopped.
    Gone,
}

/// Gives `entry` to the session, advancing the cursor only if it was taken.
fn hand_out(online: &mut Online, entry: Entry) -> Handed {
    let id = entry.id;
    let in_flight = InFlight {
        kind: entry.kind,
        sender: entry.peer.clone(),
        client_msg_id: entry.client_msg_id,
        body_len: entry.body.len() as u64,
    };
    match online.session.try_send(Deliver(entry)) {
        Ok(()) => {
            online.in_flight_bytes += in_flight.body_len;
            online.in_flight.insert(id, in_flight);
            online.cursor = id;
            Handed::Yes
        }
        Err(SendError::Full(_)) => {
            tracing::warn!(
                entry = id,
                "session mailbox full; the entry waits in the store"
            );
            online.backlog = true;
            Handed::Full
        }
        Err(SendError::Closed(_)) => Handed::Gone,
    }
}

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
        ctx.run_interval(MAINTENANCE_EVERY, |router, ctx| router.maintain(ctx));
    }
}

impl Handler<Submit> for Router {
    type Result = ResponseFuture<Result<u64, RejectReason>>;

    fn handle(&mut self, msg: Submit, ctx: &mut Context<Self>) -> Self::Result {
        let len = msg.body.len() as u64;
        if len > self.config.max_bytes {
            return Box::pin(async { Err(RejectReason::TooLarge) });
        }
        let used = self.in_use(msg.to.as_str());
        let full = used.entries >= self.config.max_messages
            || used.bytes.saturating_add(len) > self.config.max_bytes;
        if full {
            let queued = self.pending.batch.appends.iter().any(|e| {
                e.kind == EntryKind::Message
                    && e.peer == msg.from.as_str()
                    && e.client_msg_id == msg.client_msg_id
            });
            if !queued {
                // Full, unless this is a resend of a message already stored: then the sender must
                // hear the original's id, not a rejection. Asked after any commit in flight.
                let store = self.store.clone();
                let (from, send_id) = (msg.from.into_string(), msg.client_msg_id);
                return Box::pin(async move {
                    match store.sent(from, send_id).await {
                        Ok(Some(original)) => Ok(original),
                        Ok(None) => Err(RejectReason::MailboxFull),
                        Err(_) => Err(RejectReason::Unavailable),
                    }
                });
            }
            // A resend of a message in the queued batch: the store will recognise it.
        }
        let now = now_ms();
        let id = self.next_id();
        let (tx, rx) = oneshot::channel();
        self.pending.accepted.insert(id, tx);
        let entry = Entry {
            id,
            mailbox: msg.to.into_string(),
            kind: EntryKind::Message,
            peer: msg.from.into_string(),
            client_msg_id: msg.client_msg_id,
            message_id: id,
            sent_at_ms: now,
            expires_at_ms: self.config.expiry(now, msg.ttl_ms),
            body: msg.body,
        };
        // Only a first attempt may go out before the store has had a chance to recognise a resend.
        self.append(entry, msg.fresh);
        self.commit_pending(ctx);
        Box::pin(async move { rx.await.unwrap_or(Err(RejectReason::Unavailable)) })
    }
}

impl Handler<Attach> for Router {
    type Result = Result<u64, StoreError>;

    fn handle(&mut self, msg: Attach, ctx: &mut Context<Self>) -> Self::Result {
        // A takeover replaces the old state: what the old session held unacknowledged is still in
        // the store and is handed out again from the start of the mailbox.
        let replaced = self.online.insert(
            msg.client.clone(),
            Online {
                conn_id: msg.conn_id,
                session: msg.session,
                in_flight: FxHashMap::default(),
                in_flight_bytes: 0,
                cursor: 0,
                backlog: true,
                fetching: false,
                arrived_while_fetching: false,
            },
        );
        if let Some(old) = replaced {
            for id in old.in_flight.keys() {
                self.never_stored.remove(id);
            }
        }
        self.requeue(msg.client.as_str());
        self.refill(&msg.client, ctx);
        // What this session will be handed: the committed entries less those being deleted.
        let stored = self.usage.get(msg.client.as_str()).map_or(0, |u| u.entries);
        let leaving = self
            .deleting
            .values()
            .filter(|d| d.mailbox == msg.client.as_str())
            .count() as u64;
        Ok(stored.saturating_sub(leaving))
    }
}

impl Handler<Detach> for Router {
    type Result = ();

    fn handle(&mut self, msg: Detach, _: &mut Context<Self>) {
        if self
            .online
            .get(&msg.client)
            .is_some_and(|o| o.conn_id == msg.conn_id)
        {
            self.went_away(msg.client.as_str());
        }
    }
}

impl Handler<Ack> for Router {
    type Result = ();

    fn handle(&mut self, msg: Ack, ctx: &mut Context<Self>) {
        let Some(online) = self
            .online
            .get_mut(&msg.client)
            .filter(|o| o.conn_id == msg.conn_id)
        else {
            return;
        };
        let Some(done) = online.in_flight.remove(&msg.id) else {
            tracing::debug!(client = %msg.client, entry = msg.id, "ack for an entry not in flight; ignored");
            return;
        };
        online.in_flight_bytes = online.in_flight_bytes.saturating_sub(done.body_len);
        if !self.never_stored.is_empty() && self.never_stored.remove(&msg.id) {
            self.catch_up(msg.client.as_str());
            self.refill(&msg.client, ctx);
            return;
        }
        if self.pending.index.contains_key(&msg.id) {
            // Handed out early and acknowledged before its batch left: it need not be stored at all.
            self.pending.skipped.insert(msg.id);
            sub(&mut self.reserved, msg.client.as_str(), 1, done.body_len);
            if let Some(tx) = self.pending.accepted.remove(&msg.id) {
                let _ = tx.send(Ok(msg.id));
            }
        } else {
            self.delete(msg.id, msg.client.to_string(), done.body_len);
        }
        if done.kind == EntryKind::Message {
            let id = self.next_id();
            self.append_receipt(Entry {
                id,
                mailbox: done.sender,
                kind: EntryKind::Delivered,
                peer: msg.client.to_string(),
                client_msg_id: done.client_msg_id,
                message_id: msg.id,
                sent_at_ms: now_ms(),
                expires_at_ms: 0,
                body: Bytes::new(),
            });
        }
        self.catch_up(msg.client.as_str());
        self.commit_pending(ctx);
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
