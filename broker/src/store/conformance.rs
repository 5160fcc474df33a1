//! The contract every [`MailboxStore`] keeps, as test cases run against each engine.
//!
//! Each case takes a fresh, empty store. The [`store_conformance!`](crate::store_conformance) macro
//! turns the whole list into `#[test]`s for one engine, so a new engine (in this crate, or outside
//! it with the `conformance` feature) adds one line and inherits every case. The building blocks
//! (`entry`, `append`, `ids`, `count`) serve an engine's own extra tests too.
//!
//! Panics are the point here: this module is test code.

use bytes::Bytes;
use switchboard_proto::Receipts;

use super::{
    Batch, CommitOutcome, Duplicate, Entry, EntryKind, MailboxStore, MailboxUsage, Maintenance,
    Remembered,
};

/// What an engine's expression in [`store_conformance!`](crate::store_conformance) gives: a fresh
/// store with its guard, or, for an engine that needs an outside server, maybe nothing (the case
/// then returns at once; the engine says why and fails instead where a skip is not allowed).
pub trait Fresh {
    type Guard;
    type Store: MailboxStore;
    fn fresh(self) -> Option<(Self::Guard, Self::Store)>;
}

impl<G, S: MailboxStore> Fresh for (G, S) {
    type Guard = G;
    type Store = S;
    fn fresh(self) -> Option<(G, S)> {
        Some(self)
    }
}

impl<G, S: MailboxStore> Fresh for Option<(G, S)> {
    type Guard = G;
    type Store = S;
    fn fresh(self) -> Option<(G, S)> {
        self
    }
}

pub fn entry(id: u64, mailbox: &str, body: &str) -> Entry {
    Entry {
        id,
        mailbox: mailbox.into(),
        kind: EntryKind::Message,
        peer: "alice".into(),
        send_id: id.wrapping_mul(10),
        message_id: id,
        sent_at_ms: 1_700_000_000_000 + id,
        expires_at_ms: 0,
        body: Bytes::copy_from_slice(body.as_bytes()),
        receipts: switchboard_proto::Receipts::All,
    }
}

pub fn append(store: &mut dyn MailboxStore, entries: Vec<Entry>) {
    store
        .commit(&Batch {
            appends: entries,
            deletes: vec![],
            ..Default::default()
        })
        .expect("commit");
}

pub fn ids(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.id).collect()
}

/// How many entries `mailbox` holds, read back through `fetch`.
pub fn count(store: &mut dyn MailboxStore, mailbox: &str) -> usize {
    store.fetch(mailbox, 0, 1 << 20).expect("fetch").len()
}

pub fn reads_back_in_order_with_paging(store: &mut dyn MailboxStore) {
    append(store, (1..=5).map(|i| entry(i, "bob", "x")).collect());
    append(store, vec![entry(6, "carol", "y"), entry(7, "bob", "z")]);
    assert_eq!(ids(&store.fetch("bob", 0, 3).expect("fetch")), [1, 2, 3]);
    assert_eq!(ids(&store.fetch("bob", 3, 10).expect("fetch")), [4, 5, 7]);
    assert_eq!(
        ids(&store.fetch("bob", 7, 10).expect("fetch")),
        Vec::<u64>::new()
    );
    assert_eq!(store.fetch("nobody", 0, 10).expect("fetch"), vec![]);
    assert_eq!(count(store, "bob"), 6);
    assert_eq!(count(store, "carol"), 1);
    assert_eq!(count(store, "nobody"), 0);
}

pub fn keeps_every_field(store: &mut dyn MailboxStore) {
    let mut receipt = entry(1 << 62, "alice", "");
    receipt.kind = EntryKind::Expired;
    receipt.peer = "bob".into();
    receipt.send_id = u64::MAX;
    receipt.message_id = 42;
    receipt.sent_at_ms = u64::MAX;
    receipt.expires_at_ms = u64::MAX - 1;
    let mut binary = entry(3, "alice", "");
    binary.body = Bytes::from_static(&[0, 0xff, 0xfe, b'x']);
    binary.receipts = Receipts::Delivered;
    let mut quiet = entry(4, "alice", "no receipts");
    quiet.receipts = Receipts::None;
    append(store, vec![binary.clone(), quiet.clone(), receipt.clone()]);
    assert_eq!(
        store.fetch("alice", 0, 10).expect("fetch"),
        vec![binary, quiet, receipt]
    );
}

pub fn deletes_including_within_the_same_batch(store: &mut dyn MailboxStore) {
    append(store, (1..=3).map(|i| entry(i, "bob", "x")).collect());
    store
        .commit(&Batch {
            appends: vec![entry(4, "bob", "x"), entry(5, "bob", "x")],
            deletes: vec![2, 4, 99],
            ..Default::default()
        })
        .expect("commit");
    assert_eq!(ids(&store.fetch("bob", 0, 10).expect("fetch")), [1, 3, 5]);
    assert_eq!(count(store, "bob"), 3);
}

pub fn last_id_survives_deleting_everything(store: &mut dyn MailboxStore) {
    assert_eq!(store.last_id().expect("last id"), 0);
    append(store, vec![entry(7, "bob", "x"), entry(9, "bob", "x")]);
    store
        .commit(&Batch {
            appends: vec![],
            deletes: vec![7, 9],
            ..Default::default()
        })
        .expect("commit");
    assert_eq!(count(store, "bob"), 0);
    assert_eq!(store.last_id().expect("last id"), 9);
}

pub fn recognises_resends_across_and_within_batches(store: &mut dyn MailboxStore) {
    let first = store
        .commit(&Batch {
            appends: vec![entry(1, "bob", "x")],
            deletes: vec![],
            ..Default::default()
        })
        .expect("commit");
    assert_eq!(first, CommitOutcome::default());
    // Same sender, same client id: a resend, whatever the recipient or body.
    let mut resend = entry(2, "carol", "y");
    resend.send_id = 10;
    let mut other = entry(3, "bob", "z");
    other.peer = "dave".into();
    other.send_id = 10;
    let mut again = entry(4, "bob", "z");
    again.peer = "dave".into();
    again.send_id = 10;
    let outcome = store
        .commit(&Batch {
            appends: vec![resend, other, again],
            deletes: vec![1],
            ..Default::default()
        })
        .expect("commit");
    assert_eq!(
        outcome.duplicates,
        [
            Duplicate { id: 2, original: 1 },
            Duplicate { id: 4, original: 3 }
        ]
    );
    assert_eq!(ids(&store.fetch("bob", 0, 10).expect("fetch")), [3]);
    assert_eq!(count(store, "carol"), 0);
    // Remembered even after the original was delivered and deleted.
    assert_eq!(store.sent("alice", 10).expect("sent"), Some(1));
    assert_eq!(store.sent("alice", 11).expect("sent"), None);
    assert_eq!(store.last_id().expect("last id"), 4);
}

pub fn remembers_sends_it_does_not_store(store: &mut dyn MailboxStore) {
    let remembered = |send_id, message_id| Remembered {
        sender: "alice".into(),
        send_id,
        message_id,
        at_ms: 1_700_000_000_000,
    };
    let outcome = store
        .commit(&Batch {
            remembered: vec![remembered(70, 5)],
            reserve_ids_through: 100,
            ..Default::default()
        })
        .expect("commit");
    assert_eq!(outcome, CommitOutcome::default());
    assert_eq!(store.sent("alice", 70).expect("sent"), Some(5));
    assert_eq!(count(store, "bob"), 0);
    // Ids up to the reservation are never given out again.
    assert_eq!(store.last_id().expect("last id"), 100);
    // A resend of a remembered send, in a later batch and in the same batch.
    let mut later = entry(101, "bob", "x");
    later.send_id = 70;
    let mut same = entry(103, "bob", "y");
    same.send_id = 71;
    let outcome = store
        .commit(&Batch {
            appends: vec![later, same],
            remembered: vec![remembered(71, 102)],
            ..Default::default()
        })
        .expect("commit");
    assert_eq!(
        outcome.duplicates,
        [
            Duplicate {
                id: 101,
                original: 5
            },
            Duplicate {
                id: 103,
                original: 102
            }
        ]
    );
    assert_eq!(count(store, "bob"), 0);
    assert_eq!(store.last_id().expect("last id"), 103);
}

pub fn tracks_usage(store: &mut dyn MailboxStore) {
    append(store, vec![entry(1, "bob", "abc"), entry(2, "bob", "de")]);
    append(store, vec![entry(3, "carol", "f")]);
    let mut usage = store.usage().expect("usage");
    usage.sort_by(|a, b| a.mailbox.cmp(&b.mailbox));
    let of = |mailbox: &str, entries, bytes| MailboxUsage {
        mailbox: mailbox.into(),
        entries,
        bytes,
    };
    assert_eq!(usage, [of("bob", 2, 5), of("carol", 1, 1)]);
    store
        .commit(&Batch {
            appends: vec![entry(4, "bob", "ghij")],
            deletes: vec![1, 3, 4],
            ..Default::default()
        })
        .expect("commit");
    assert_eq!(store.usage().expect("usage"), [of("bob", 1, 2)]);
    assert_eq!(count(store, "bob"), 1);
    assert_eq!(count(store, "carol"), 0);
}

pub fn lists_expired_entries_without_bodies(store: &mut dyn MailboxStore) {
    let mut soon = entry(1, "bob", "soon");
    soon.expires_at_ms = 1_000;
    let never = entry(2, "bob", "never");
    let mut later = entry(3, "carol", "later!");
    later.expires_at_ms = 2_000;
    let mut sooner = entry(4, "carol", "x");
    sooner.expires_at_ms = 500;
    append(store, vec![soon, never, later, sooner]);
    let due = store.expired(1_500, 10).expect("expired");
    let got: Vec<(u64, u64, usize)> = due
        .iter()
        .map(|e| (e.entry.id, e.body_len, e.entry.body.len()))
        .collect();
    assert_eq!(got, [(4, 1, 0), (1, 4, 0)]);
    assert_eq!(store.expired(5_000, 1).expect("expired").len(), 1);
    assert_eq!(store.expired(5_000, 10).expect("expired").len(), 3);
}

pub fn forgets_old_sends(store: &mut dyn MailboxStore) {
    let sends: Vec<Entry> = (1..=5)
        .map(|i| {
            let mut e = entry(i, "bob", "x");
            e.sent_at_ms = i * 100;
            e
        })
        .collect();
    append(store, sends);
    let report = store
        .maintain(&Maintenance {
            forget_sent_before_ms: 200,
            remember_at_most: 3,
        })
        .expect("maintain");
    assert_eq!(report.forgotten, 2);
    let remembered: Vec<u64> = (1..=5)
        .filter(|i| store.sent("alice", i * 10).expect("sent").is_some())
        .collect();
    assert_eq!(remembered, [3, 4, 5]);
    // Forgotten means a resend is stored as new.
    let mut resend = entry(6, "bob", "x");
    resend.send_id = 10;
    append(store, vec![resend]);
    assert_eq!(count(store, "bob"), 6);
}

/// The cap on remembered sends forgets exactly the oldest by count, even when a batch's sends share
/// one time (issue 12, finding 9: a cut by time alone forgot all six of them under a cap of 3).
/// Outside the macro for now: the PostgreSQL engine still cuts by time (its owner's to change).
pub fn the_cap_forgets_exactly_the_oldest_even_within_one_millisecond(
    store: &mut dyn MailboxStore,
) {
    let sends: Vec<Entry> = (1..=6)
        .map(|i| {
            let mut e = entry(i, "bob", "x");
            e.sent_at_ms = 1_000;
            e
        })
        .collect();
    append(store, sends);
    let report = store
        .maintain(&Maintenance {
            forget_sent_before_ms: 0,
            remember_at_most: 3,
        })
        .expect("maintain");
    assert_eq!(report.forgotten, 3);
    let remembered: Vec<u64> = (1..=6)
        .filter(|i| store.sent("alice", i * 10).expect("sent").is_some())
        .collect();
    assert_eq!(remembered, [4, 5, 6]);
}

/// Every kind of entry reads back as itself (`removed` is kind byte 3 on disk), and the oldest
/// waiting entry is the one accepted first, whichever mailbox holds it.
pub fn keeps_every_kind_and_knows_the_oldest(store: &mut dyn MailboxStore) {
    assert_eq!(store.oldest_sent_at_ms().expect("oldest"), None, "empty");
    let kinds = [
        EntryKind::Message,
        EntryKind::Delivered,
        EntryKind::Expired,
        EntryKind::Removed,
        EntryKind::Undeliverable,
    ];
    let entries: Vec<Entry> = (1..=5u64)
        .zip(kinds)
        .map(|(id, kind)| Entry {
            kind,
            ..entry(id, if id == 1 { "carol" } else { "alice" }, "")
        })
        .collect();
    append(store, entries.clone());
    assert_eq!(store.fetch("alice", 0, 10).expect("fetch"), entries[1..]);
    assert_eq!(
        store.oldest_sent_at_ms().expect("oldest"),
        Some(entries[0].sent_at_ms)
    );
    store
        .commit(&Batch {
            deletes: vec![1],
            ..Default::default()
        })
        .expect("commit");
    assert_eq!(
        store.oldest_sent_at_ms().expect("oldest"),
        Some(entries[1].sent_at_ms)
    );
}

/// Runs every case of [`crate::store::conformance`] against each engine named:
/// `store_conformance! { memory => ((), MemoryStore::new()); }`. The expression makes a fresh store
/// and returns `(guard, store)`, or an `Option` of it ([`Fresh`]); the guard (a temporary directory,
/// say) lives as long as the test.
#[macro_export]
macro_rules! store_conformance {
    ($($engine:ident => $make:expr;)*) => {$(
        mod $engine {
            #[allow(unused_imports)]
            use super::*;

            #[test]
            fn reads_back_in_order_with_paging() {
                let Some((_guard, mut store)) = $crate::store::conformance::Fresh::fresh($make) else {
                    return;
                };
                $crate::store::conformance::reads_back_in_order_with_paging(&mut store);
            }

            #[test]
            fn keeps_every_field() {
                let Some((_guard, mut store)) = $crate::store::conformance::Fresh::fresh($make) else {
                    return;
                };
                $crate::store::conformance::keeps_every_field(&mut store);
            }

            #[test]
            fn deletes_including_within_the_same_batch() {
                let Some((_guard, mut store)) = $crate::store::conformance::Fresh::fresh($make) else {
                    return;
                };
                $crate::store::conformance::deletes_including_within_the_same_batch(&mut store);
            }

            #[test]
            fn last_id_survives_deleting_everything() {
                let Some((_guard, mut store)) = $crate::store::conformance::Fresh::fresh($make) else {
                    return;
                };
                $crate::store::conformance::last_id_survives_deleting_everything(&mut store);
            }

            #[test]
            fn recognises_resends_across_and_within_batches() {
                let Some((_guard, mut store)) = $crate::store::conformance::Fresh::fresh($make) else {
                    return;
                };
                $crate::store::conformance::recognises_resends_across_and_within_batches(&mut store);
            }

            #[test]
            fn remembers_sends_it_does_not_store() {
                let Some((_guard, mut store)) = $crate::store::conformance::Fresh::fresh($make) else {
                    return;
                };
                $crate::store::conformance::remembers_sends_it_does_not_store(&mut store);
            }

            #[test]
            fn tracks_usage() {
                let Some((_guard, mut store)) = $crate::store::conformance::Fresh::fresh($make) else {
                    return;
                };
                $crate::store::conformance::tracks_usage(&mut store);
            }

            #[test]
            fn lists_expired_entries_without_bodies() {
                let Some((_guard, mut store)) = $crate::store::conformance::Fresh::fresh($make) else {
                    return;
                };
                $crate::store::conformance::lists_expired_entries_without_bodies(&mut store);
            }

            #[test]
            fn keeps_every_kind_and_knows_the_oldest() {
                let Some((_guard, mut store)) = $crate::store::conformance::Fresh::fresh($make) else {
                    return;
                };
                $crate::store::conformance::keeps_every_kind_and_knows_the_oldest(&mut store);
            }

            #[test]
            fn forgets_old_sends() {
                let Some((_guard, mut store)) = $crate::store::conformance::Fresh::fresh($make) else {
                    return;
                };
                $crate::store::conformance::forgets_old_sends(&mut store);
            }
        }
    )*};
}
