//! Early delivery (PROTOCOL.md "Early delivery"): a fresh send reaches an online recipient before its
//! commit, and a message acknowledged before its batch is written never touches the store. A store
//! whose commits the test holds shut makes "before the commit" observable.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use switchboard_broker::settings::Settings;
use switchboard_broker::store::{
    Batch, CommitOutcome, Entry, ExpiredEntry, MailboxStore, MailboxUsage, Maintenance,
    MaintenanceReport, MemoryStore, StoreError,
};
use switchboard_proto::{BrokerFrame, ClientFrame, ReceiptStatus};

use crate::support::*;

/// What the gate saw and whether commits may pass.
#[derive(Default)]
struct GateState {
    open: bool,
    /// Commits waiting at the closed gate.
    blocked: usize,
    /// Ids of every entry a commit stored.
    stored: Vec<u64>,
    /// `(sender, send id)` of every send remembered without its message.
    remembered: Vec<(String, u64)>,
}

/// Holds commits while closed; shared between the test and the store thread.
#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn set_open(&self, open: bool) {
        self.lock().open = open;
        self.changed.notify_all();
    }

    /// Blocks (on a blocking-pool thread) until a commit waits at the closed gate.
    async fn until_a_commit_is_held(self: &Arc<Self>) {
        let gate = self.clone();
        let held = tokio::task::spawn_blocking(move || {
            let state = gate.lock();
            let (state, timeout) = gate
                .changed
                .wait_timeout_while(state, WAIT, |s| s.blocked == 0)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            !timeout.timed_out() && state.blocked > 0
        });
        assert!(
            within("a commit to be held", held).await.expect("join"),
            "no commit reached the closed gate"
        );
    }
}

/// A memory store behind a [`Gate`].
struct GatedStore {
    inner: MemoryStore,
    gate: Arc<Gate>,
}

impl MailboxStore for GatedStore {
    fn commit(&mut self, batch: &Batch) -> Result<CommitOutcome, StoreError> {
        let mut state = self.gate.lock();
        state.blocked += 1;
        self.gate.changed.notify_all();
        let mut state = self
            .gate
            .changed
            .wait_while(state, |s| !s.open)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.blocked -= 1;
        state.stored.extend(batch.appends.iter().map(|e| e.id));
        state.remembered.extend(
            batch
                .remembered
                .iter()
                .map(|r| (r.sender.clone(), r.send_id)),
        );
        drop(state);
        self.inner.commit(batch)
    }

    fn fetch(&mut self, mailbox: &str, after: u64, limit: usize) -> Result<Vec<Entry>, StoreError> {
        self.inner.fetch(mailbox, after, limit)
    }

    fn usage(&mut self) -> Result<Vec<MailboxUsage>, StoreError> {
        self.inner.usage()
    }

    fn expired(&mut self, now_ms: u64, limit: usize) -> Result<Vec<ExpiredEntry>, StoreError> {
        self.inner.expired(now_ms, limit)
    }

    fn sent(&mut self, sender: &str, send_id: u64) -> Result<Option<u64>, StoreError> {
        self.inner.sent(sender, send_id)
    }

    fn maintain(&mut self, what: &Maintenance) -> Result<MaintenanceReport, StoreError> {
        self.inner.maintain(what)
    }

    fn last_id(&mut self) -> Result<u64, StoreError> {
        self.inner.last_id()
    }
}

impl GatedStore {
    /// A store over an empty memory store, its gate open.
    fn open() -> Self {
        let gate = Arc::new(Gate::default());
        gate.set_open(true);
        GatedStore {
            inner: MemoryStore::new(),
            gate,
        }
    }
}

// The gate forwards every method by hand: the store contract checks that it forwards them right.
switchboard_broker::store_conformance! {
    gated_store => ((), GatedStore::open());
}

/// A broker whose commits pass only while the gate is open (it starts open).
async fn gated_broker(
    tune: impl FnOnce(&mut Settings),
) -> (TestBroker, Arc<Gate>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = GatedStore::open();
    let gate = store.gate.clone();
    let mut settings = settings(dir.path());
    tune(&mut settings);
    let broker = TestBroker::start_with_store(settings, Box::new(store)).await;
    (broker, gate, dir)
}

fn send(send_id: u64, to: &str, body: &'static str, fresh: bool) -> ClientFrame {
    ClientFrame::Send {
        send_id,
        to: to.into(),
        body: Bytes::from_static(body.as_bytes()),
        ttl_ms: None,
        fresh,
        receipts: switchboard_proto::Receipts::All,
    }
}

/// The next `Deliver` on `raw`, acknowledged if `ack`; returns (message id, send id, body).
async fn delivered(raw: &mut Raw, ack: bool) -> (u64, u64, Bytes) {
    match raw.recv().await {
        Some(BrokerFrame::Deliver {
            message_id,
            send_id,
            body,
            ..
        }) => {
            if ack {
                raw.send(ClientFrame::Ack { id: message_id }).await;
            }
            (message_id, send_id, body)
        }
        other => panic!("expected a delivery, got {other:?}"),
    }
}

/// The next frame must be `Accepted` for send `send_id`; returns the message id.
async fn accepted(raw: &mut Raw, send_id: u64) -> u64 {
    match raw.recv().await {
        Some(BrokerFrame::Accepted {
            send_id: got,
            message_id,
        }) if got == send_id => message_id,
        other => panic!("expected accepted for send {send_id}, got {other:?}"),
    }
}

/// The next frame must be a `delivered` receipt for send `send_id`; acknowledges it.
async fn receipt(raw: &mut Raw, send_id: u64) {
    match raw.recv().await {
        Some(BrokerFrame::Receipt {
            receipt_id,
            send_id: got,
            status: ReceiptStatus::Delivered,
            ..
        }) if got == send_id => raw.send(ClientFrame::Ack { id: receipt_id }).await,
        other => panic!("expected a delivered receipt for send {send_id}, got {other:?}"),
    }
}

/// One message alice → bob through the store, so the broker has committed (and reserved ids).
async fn warm_up(alice: &mut Raw, bob: &mut Raw) {
    alice.send(send(1, "bob", "warm-up", true)).await;
    accepted(alice, 1).await;
    delivered(bob, true).await;
    receipt(alice, 1).await;
}

/// A gated broker with alice, bob and dave connected, after a warm-up, with a commit held at the
/// closed gate (dave's send 1 to offline carol): whatever comes next waits in the following batch.
struct Held {
    broker: TestBroker,
    gate: Arc<Gate>,
    alice: Raw,
    bob: Raw,
    dave: Raw,
    _dir: tempfile::TempDir,
}

async fn a_commit_held(tune: impl FnOnce(&mut Settings)) -> Held {
    let (broker, gate, dir) = gated_broker(tune).await;
    let (mut alice, _) = Raw::hello(broker.addr, "alice", 30).await;
    let (mut bob, _) = Raw::hello(broker.addr, "bob", 30).await;
    let (mut dave, _) = Raw::hello(broker.addr, "dave", 30).await;
    warm_up(&mut alice, &mut bob).await;
    gate.set_open(false);
    dave.send(send(1, "carol", "blocker", true)).await;
    gate.until_a_commit_is_held().await;
    Held {
        broker,
        gate,
        alice,
        bob,
        dave,
        _dir: dir,
    }
}

#[actix_rt::test]
async fn a_fresh_message_acknowledged_before_its_commit_never_reaches_the_store() {
    let Held {
        broker,
        gate,
        mut alice,
        mut bob,
        mut dave,
        _dir,
    } = a_commit_held(|_| {}).await;

    alice.send(send(2, "bob", "fast", true)).await;
    let (fast, send_id, body) = delivered(&mut bob, true).await;
    assert_eq!((send_id, &body[..]), (2, &b"fast"[..]));
    // Accepted, then the receipt, both while the store is still shut: the recipient has it.
    assert_eq!(accepted(&mut alice, 2).await, fast);
    receipt(&mut alice, 2).await;
    assert!(gate.lock().blocked > 0, "the gate let a commit through");

    gate.set_open(true);
    accepted(&mut dave, 1).await;
    // A later send's answer proves every earlier batch committed.
    dave.send(send(2, "carol", "after", true)).await;
    accepted(&mut dave, 2).await;
    {
        let state = gate.lock();
        assert!(
            !state.stored.contains(&fast),
            "the early-acknowledged message was stored: {:?}",
            state.stored
        );
        assert!(state.remembered.contains(&("alice".to_string(), 2)));
    }

    // The remembered send still makes a resend idempotent, and bob gets no second copy.
    alice.send(send(2, "bob", "fast", false)).await;
    assert_eq!(accepted(&mut alice, 2).await, fast);
    alice.send(send(3, "bob", "next", true)).await;
    accepted(&mut alice, 3).await;
    let (_, send_id, body) = delivered(&mut bob, true).await;
    assert_eq!((send_id, &body[..]), (3, &b"next"[..]));
    broker.stop().await;
}

#[actix_rt::test]
async fn a_send_that_may_be_a_resend_waits_for_its_commit_and_order_holds() {
    let Held {
        broker,
        gate,
        mut alice,
        mut bob,
        _dir,
        ..
    } = a_commit_held(|_| {}).await;
    alice.send(send(2, "bob", "maybe a resend", false)).await;
    alice.send(send(3, "bob", "fresh behind it", true)).await;
    // Neither may overtake the commit: the first could be a resend the store would recognise, and
    // the second must not overtake the first.
    let early = tokio::time::timeout(Duration::from_millis(300), bob.framed.next()).await;
    assert!(early.is_err(), "bob got {early:?} before the commit");

    gate.set_open(true);
    let (_, first, _) = delivered(&mut bob, true).await;
    let (_, second, _) = delivered(&mut bob, true).await;
    assert_eq!((first, second), (2, 3));
    // Both answered, in order; a receipt may come between them.
    let mut answered = Vec::new();
    while answered.len() < 2 {
        match alice.recv().await {
            Some(BrokerFrame::Accepted { send_id, .. }) => answered.push(send_id),
            Some(BrokerFrame::Receipt { .. }) => {}
            other => panic!("expected answers, got {other:?}"),
        }
    }
    assert_eq!(answered, [2, 3]);
    broker.stop().await;
}

#[actix_rt::test]
async fn an_entry_that_found_the_window_full_goes_out_early_once_an_ack_makes_room() {
    let Held {
        broker,
        gate,
        mut alice,
        mut bob,
        _dir,
        ..
    } = a_commit_held(|s| s.limits.window = 1).await;
    alice.send(send(2, "bob", "first", true)).await;
    alice.send(send(3, "bob", "second", true)).await;
    // The window holds one: "second" waits for room, not for the commit that is held.
    let (_, first, _) = delivered(&mut bob, true).await;
    let (_, second, _) = delivered(&mut bob, true).await;
    assert_eq!((first, second), (2, 3));
    assert!(gate.lock().blocked > 0, "the gate let a commit through");
    gate.set_open(true);
    broker.stop().await;
}

/// `Hi.pending`.
fn pending_of(hi: &BrokerFrame) -> u64 {
    match hi {
        BrokerFrame::Hi { pending, .. } => *pending,
        other => panic!("expected hi, got {other:?}"),
    }
}

#[actix_rt::test]
async fn a_resend_wrongly_marked_fresh_is_delivered_but_its_ack_uncounts_nothing() {
    let fx = Fixture::new().await;
    let (mut alice, _) = Raw::hello(fx.addr(), "alice", 30).await;
    let (mut bob, _) = Raw::hello(fx.addr(), "bob", 30).await;
    // Bob holds one message unacknowledged: his mailbox counts one entry.
    alice.send(send(10, "bob", "kept", false)).await;
    accepted(&mut alice, 10).await;
    delivered(&mut bob, false).await;
    // A message stored, delivered and acknowledged.
    alice.send(send(1, "bob", "once", false)).await;
    let original = accepted(&mut alice, 1).await;
    delivered(&mut bob, true).await;
    receipt(&mut alice, 1).await;

    // The same send again, breaking the contract: `fresh` on a resend. It goes out early, and the
    // store recognises it as a resend of the original.
    alice.send(send(1, "bob", "once", true)).await;
    let (copy, send_id, _) = delivered(&mut bob, false).await;
    assert_eq!(send_id, 1);
    assert_ne!(copy, original);
    assert_eq!(accepted(&mut alice, 1).await, original);
    // Acknowledged after the store said "already have it": nothing to delete, no receipt.
    bob.send(ClientFrame::Ack { id: copy }).await;
    bob.send(ClientFrame::Bye).await;
    fx.broker.gone("bob").await;

    let (mut bob, hi) = Raw::hello(fx.addr(), "bob", 30).await;
    assert_eq!(
        pending_of(&hi),
        1,
        "bob's mailbox still counts the kept message"
    );
    let (_, send_id, body) = delivered(&mut bob, true).await;
    assert_eq!((send_id, &body[..]), (10, &b"kept"[..]));
    // Alice's next frame is the receipt of "kept", not one for the copy.
    match alice.recv().await {
        Some(BrokerFrame::Receipt { send_id, .. }) => assert_eq!(send_id, 10),
        other => panic!("expected the receipt of send 10, got {other:?}"),
    }
}

/// `hi.pending` counts a receipt that is on its way to the store: bob acknowledges alice's message
/// while commits are held, alice connects before the receipt is written, and her `hi` says 1 (a
/// `poll` that drains `pending` entries would otherwise leave without it).
#[actix_rt::test]
async fn a_receipt_still_committing_counts_in_pending() {
    let (broker, gate, _dir) = gated_broker(|_| {}).await;
    let (mut alice, _) = Raw::hello(broker.addr, "alice", 30).await;
    let (mut bob, _) = Raw::hello(broker.addr, "bob", 30).await;
    // Not fresh: the message is committed before bob gets it, so his ack queues a receipt that must
    // go through the store.
    alice.send(send(7, "bob", "for the record", false)).await;
    accepted(&mut alice, 7).await;
    alice.send(ClientFrame::Bye).await;
    alice.until_closed().await;
    broker.gone("alice").await;

    gate.set_open(false);
    delivered(&mut bob, true).await;
    gate.until_a_commit_is_held().await;

    let (mut alice, hi) = Raw::hello(broker.addr, "alice", 30).await;
    match hi {
        BrokerFrame::Hi { pending, .. } => assert_eq!(pending, 1, "the committing receipt"),
        other => panic!("expected hi, got {other:?}"),
    }
    gate.set_open(true);
    receipt(&mut alice, 7).await;
}
