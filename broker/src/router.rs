//! The Router: owns the mailboxes and every decision about delivery.
//!
//! One path for a message: a session hands a [`Submit`] to the Router, which gives the message the next
//! broker id and queues it for the store. The Router keeps at most one store commit in flight; whatever
//! arrives meanwhile waits and goes into the next batch, so one fsync covers many messages. When a batch
//! is durable the Router answers every submitter (`Accepted`) and only then hands the new entries to
//! online recipients. An [`Ack`] removes the entry and appends a receipt to the sender's own mailbox in
//! the same batch, so neither the message nor the news of its delivery can be lost.
//!
//! Per online client the Router keeps the entries it has handed out and not yet seen acknowledged (at
//! most `window`) and a cursor: every entry of that mailbox with an id at or below the cursor has been
//! handed out. Entries above the cursor are either delivered straight from a fresh commit (when the
//! client has no backlog) or read back from the store a page at a time, so a mailbox of any size flushes
//! in order with bounded memory, and anything that arrives during a flush queues behind it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use bytes::Bytes;
use switchboard_proto::{ClientId, RejectReason};
use tokio::sync::oneshot;

use crate::store::{Batch, Entry, EntryKind, StoreError, StoreHandle};

/// A session's request to store and route a message.
#[derive(Message)]
#[rtype(result = "Result<u64, RejectReason>")]
pub struct Submit {
    pub from: ClientId,
    pub client_msg_id: u64,
    pub to: ClientId,
    pub body: Bytes,
}

/// An entry handed to the session of its mailbox's owner, to be written to the socket.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Deliver(pub Entry);

/// The client behind a session came online; start flushing its mailbox. Answers the mailbox size.
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

/// Tuning the Router takes from the settings.
#[derive(Debug, Clone, Copy)]
pub struct RouterConfig {
    pub window: usize,
    pub page_size: usize,
}

/// What the Router remembers of an entry it handed out, to write the receipt when it is acknowledged.
struct InFlight {
    kind: EntryKind,
    sender: String,
    client_msg_id: u64,
}

/// Delivery state of one connected client.
struct Online {
    conn_id: u64,
    session: Recipient<Deliver>,
    in_flight: HashMap<u64, InFlight>,
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

/// Writes waiting for the next commit, with whoever waits on them.
#[derive(Default)]
struct Pending {
    batch: Batch,
    accepted: Vec<(u64, oneshot::Sender<Result<u64, RejectReason>>)>,
}

pub struct Router {
    store: StoreHandle,
    config: RouterConfig,
    /// The last broker id given out.
    last_id: u64,
    online: HashMap<ClientId, Online>,
    pending: Pending,
    committing: bool,
    /// Acknowledged entries whose delete is not yet committed: a page read must not hand them out again.
    deleting: HashSet<u64>,
    drained: VecDeque<oneshot::Sender<()>>,
}

/// How long to wait before retrying a page read that failed.
const FETCH_RETRY: Duration = Duration::from_secs(1);
/// The Router's mailbox: sessions awaiting `send` beyond this are held back (backpressure).
const MAILBOX_CAPACITY: usize = 4_096;

impl Router {
    /// `last_id` is the store's high-water mark, so ids continue after a restart.
    pub fn new(store: StoreHandle, config: RouterConfig, last_id: u64) -> Self {
        Self {
            store,
            config,
            last_id,
            online: HashMap::new(),
            pending: Pending::default(),
            committing: false,
            deleting: HashSet::new(),
            drained: VecDeque::new(),
        }
    }

    fn next_id(&mut self) -> u64 {
        self.last_id += 1;
        self.last_id
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
        let Pending { batch, accepted } = std::mem::take(&mut self.pending);
        let appended = batch.appends.clone();
        let deletes = batch.deletes.clone();
        let store = self.store.clone();
        async move { store.commit(batch).await }
            .into_actor(self)
            .map(move |result, router, ctx| {
                router.committing = false;
                for id in &deletes {
                    router.deleting.remove(id);
                }
                match result {
                    Ok(()) => {
                        for (id, tx) in accepted {
                            let _ = tx.send(Ok(id));
                        }
                        for entry in appended {
                            router.arrived(entry);
                        }
                    }
                    Err(error) => {
                        tracing::error!(%error, entries = appended.len(), "store commit failed; senders get Rejected(unavailable)");
                        for (_, tx) in accepted {
                            let _ = tx.send(Err(RejectReason::Unavailable));
                        }
                    }
                }
                router.commit_pending(ctx);
            })
            .spawn(ctx);
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
        if online.backlog || online.in_flight.len() >= self.config.window {
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
        let window = self.config.window;
        let Some(online) = self.online.get_mut(client) else {
            return;
        };
        // Wait until half the window is free so pages are not read one entry at a time.
        if !online.backlog || online.fetching || online.in_flight.len() > window / 2 {
            return;
        }
        online.fetching = true;
        online.arrived_while_fetching = false;
        let limit = (window - online.in_flight.len()).min(self.config.page_size);
        let (after, conn_id) = (online.cursor, online.conn_id);
        let store = self.store.clone();
        let mailbox = client.to_string();
        let client = client.clone();
        async move { store.fetch(mailbox, after, limit).await }
            .into_actor(self)
            .map(move |result, router, ctx| router.page_read(client, conn_id, limit, result, ctx))
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
            if self.deleting.contains(&entry.id) {
                online.cursor = entry.id;
                continue;
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
        if self.online.remove(client).is_some() {
            tracing::debug!(
                client,
                "session gone; its mailbox waits for the next connection"
            );
        }
    }
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
    };
    match online.session.try_send(Deliver(entry)) {
        Ok(()) => {
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
    }
}

impl Handler<Submit> for Router {
    type Result = ResponseFuture<Result<u64, RejectReason>>;

    fn handle(&mut self, msg: Submit, ctx: &mut Context<Self>) -> Self::Result {
        let id = self.next_id();
        let (tx, rx) = oneshot::channel();
        self.pending.batch.appends.push(Entry {
            id,
            mailbox: msg.to.into_string(),
            kind: EntryKind::Message,
            peer: msg.from.into_string(),
            client_msg_id: msg.client_msg_id,
            message_id: id,
            sent_at_ms: now_ms(),
            body: msg.body,
        });
        self.pending.accepted.push((id, tx));
        self.commit_pending(ctx);
        Box::pin(async move { rx.await.unwrap_or(Err(RejectReason::Unavailable)) })
    }
}

impl Handler<Attach> for Router {
    type Result = ResponseFuture<Result<u64, StoreError>>;

    fn handle(&mut self, msg: Attach, ctx: &mut Context<Self>) -> Self::Result {
        // A takeover replaces the old state: what the old session held unacknowledged is still in
        // the store and is handed out again from the start of the mailbox.
        self.online.insert(
            msg.client.clone(),
            Online {
                conn_id: msg.conn_id,
                session: msg.session,
                in_flight: HashMap::new(),
                cursor: 0,
                backlog: true,
                fetching: false,
                arrived_while_fetching: false,
            },
        );
        let store = self.store.clone();
        let mailbox = msg.client.to_string();
        let count = async move { store.count(mailbox).await };
        self.refill(&msg.client, ctx);
        Box::pin(count)
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
        self.deleting.insert(msg.id);
        self.pending.batch.deletes.push(msg.id);
        if done.kind == EntryKind::Message {
            let id = self.next_id();
            self.pending.batch.appends.push(Entry {
                id,
                mailbox: done.sender,
                kind: EntryKind::Receipt,
                peer: msg.client.to_string(),
                client_msg_id: done.client_msg_id,
                message_id: msg.id,
                sent_at_ms: now_ms(),
                body: Bytes::new(),
            });
        }
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

/// Stops the Router, releasing its store handle (the last step of shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

impl Handler<Stop> for Router {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
