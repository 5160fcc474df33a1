//! The PostgreSQL engine beyond the shared contract: reopening, schema versions, two brokers' stores
//! on one database, and a database that goes away and comes back. Each test skips where PostgreSQL
//! is not installed, and fails instead when `CI` is set. What waits for what when several connections
//! work at once is in `concurrency.rs`.

use std::sync::Arc;

use super::harness::{TestDatabase, TestPostgres};
use super::PostgresStore;
use crate::store::conformance::{append, count, entry, ids};
use crate::store::{Batch, Duplicate, Durability, Entry, MailboxStore, Renumbered};

mod concurrency;

/// A fresh database on the shared test server and a store open on it, or `None` to skip.
pub(crate) fn open_postgres() -> Option<(TestDatabase, PostgresStore)> {
    let db = TestPostgres::shared_or_skip("postgres store")?;
    let store = PostgresStore::open(&db.url, Durability::Fsync).expect("open");
    Some((db, store))
}

/// A database holding `kept`, taken back to an older schema by `back` (SQL), and a client on it.
fn at_an_older_version(kept: Entry, back: &str) -> Option<(TestDatabase, postgres::Client)> {
    let (db, mut store) = open_postgres()?;
    append(&mut store, vec![kept]);
    drop(store);
    let mut client = postgres::Client::connect(&db.url, postgres::NoTls).expect("connect");
    client
        .batch_execute(back)
        .expect("back to an older version");
    Some((db, client))
}

/// Stores "one" (id 1) and "two" (id 2) for bob, then deletes `id`.
fn two_for_bob_then_delete(store: &mut PostgresStore, id: u64) {
    append(store, vec![entry(1, "bob", "one"), entry(2, "bob", "two")]);
    store
        .commit(&Batch {
            deletes: vec![id],
            ..Default::default()
        })
        .expect("delete");
}

#[test]
fn postgres_keeps_entries_and_last_id_across_reopen() {
    let Some((db, mut store)) = open_postgres() else {
        return;
    };
    two_for_bob_then_delete(&mut store, 2);
    drop(store);
    let mut store = PostgresStore::open(&db.url, Durability::Os).expect("reopen");
    assert_eq!(
        store.fetch("bob", 0, 10).expect("fetch"),
        vec![entry(1, "bob", "one")]
    );
    assert_eq!(store.last_id().expect("last id"), 2);
}

#[test]
fn postgres_refuses_a_database_from_a_newer_version() {
    let Some((db, store)) = open_postgres() else {
        return;
    };
    drop(store);
    let mut client = postgres::Client::connect(&db.url, postgres::NoTls).expect("connect");
    client
        .batch_execute("UPDATE switchboard_meta SET value = 99 WHERE key = 'schema_version'")
        .expect("update");
    let err = PostgresStore::open(&db.url, Durability::Fsync).expect_err("refused");
    assert!(err.to_string().contains("schema version 99"), "{err}");
}

/// A database of schema version 1 (before presence) gets its sessions table and today's version on
/// the next open, and keeps its entries.
#[test]
fn postgres_migrates_a_version_1_database_to_today() {
    let Some((db, mut client)) = at_an_older_version(
        entry(1, "bob", "kept"),
        "DROP TABLE switchboard_sessions, switchboard_removed;
         DROP SEQUENCE switchboard_ids;
         INSERT INTO switchboard_meta (key, value) VALUES ('stored_id', 1);
         UPDATE switchboard_meta SET value = 1 WHERE key = 'schema_version'",
    ) else {
        return;
    };
    let mut store = PostgresStore::open(&db.url, Durability::Fsync).expect("migrated");
    assert_eq!(ids(&store.fetch("bob", 0, 10).expect("fetch")), [1]);
    let version: i64 = client
        .query_one(
            "SELECT value FROM switchboard_meta WHERE key = 'schema_version'",
            &[],
        )
        .expect("version")
        .get(0);
    assert_eq!(version, super::schema::SCHEMA_VERSION);
    let sessions: i64 = client
        .query_one("SELECT count(*) FROM switchboard_sessions", &[])
        .expect("the sessions table")
        .get(0);
    assert_eq!(sessions, 0);
}

/// With mailbox limits, a message past them is refused in the transaction: not stored, its send
/// not remembered (so its resend, once there is room, is stored), receipts stored regardless, and
/// a resend of a stored message still recognised however full the mailbox.
#[test]
fn postgres_refuses_messages_past_the_mailbox_limit_and_forgets_their_sends() {
    let Some((_db, store)) = open_postgres() else {
        return;
    };
    let limits = super::MailboxLimits {
        entries: 1,
        bytes: 1 << 20,
    };
    let mut store = store.with_mailbox_limits(limits);
    append(&mut store, vec![entry(1, "bob", "fits")]);
    let mut receipt = entry(3, "bob", "");
    receipt.kind = crate::store::EntryKind::Delivered;
    let mut resend = entry(4, "bob", "fits");
    resend.send_id = 10; // entry 1's send, again
    let outcome = store
        .commit(&Batch {
            appends: vec![entry(2, "bob", "too many"), receipt, resend],
            ..Default::default()
        })
        .expect("commit");
    assert_eq!(outcome.not_stored, [2]);
    assert_eq!(outcome.duplicates, [Duplicate { id: 4, original: 1 }]);
    assert_eq!(ids(&store.fetch("bob", 0, 10).expect("fetch")), [1, 3]);
    assert_eq!(store.sent("alice", 20).expect("sent"), None, "forgotten");
}

/// Of two stores on one database, one sweeps: the other finds nothing due until the first's
/// connection is gone, then takes over.
#[test]
fn postgres_one_store_sweeps_at_a_time() {
    let Some((db, mut one)) = open_postgres() else {
        return;
    };
    let mut two = PostgresStore::open(&db.url, Durability::Fsync).expect("open");
    let mut due = entry(1, "bob", "x");
    due.expires_at_ms = 5;
    append(&mut one, vec![due]);
    assert_eq!(one.expired(10, 10).expect("sweep").len(), 1);
    assert_eq!(
        one.expired(10, 10).expect("again").len(),
        1,
        "still the sweeper"
    );
    assert!(
        two.expired(10, 10).expect("sweep").is_empty(),
        "not the sweeper"
    );
    drop(one);
    // The server drops the lock with the connection, a moment after the client closed it.
    let started = std::time::Instant::now();
    while two.expired(10, 10).expect("sweep").is_empty() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "never took over"
        );
        std::thread::yield_now();
    }
}

/// An entry removed by one store (an ack) and then by another (an expiry, or the ack of a session
/// taken over) gives one receipt: the second commit's receipt is not stored.
#[test]
fn postgres_stores_a_receipt_only_with_the_delete_that_removed_its_entry() {
    let Some((db, mut one)) = open_postgres() else {
        return;
    };
    let mut two = PostgresStore::open(&db.url, Durability::Fsync).expect("open");
    append(&mut one, vec![entry(1, "bob", "x")]);
    let receipt = |id, kind| {
        let mut r = entry(id, "alice", "");
        r.kind = kind;
        r.message_id = 1;
        r
    };
    let delivered = Batch {
        appends: vec![receipt(2, crate::store::EntryKind::Delivered)],
        deletes: vec![1],
        ..Default::default()
    };
    assert!(one
        .commit(&delivered)
        .expect("commit")
        .not_stored
        .is_empty());
    let expired = Batch {
        appends: vec![receipt(3, crate::store::EntryKind::Expired)],
        deletes: vec![1],
        ..Default::default()
    };
    assert_eq!(two.commit(&expired).expect("commit").not_stored, [3]);
    assert_eq!(ids(&one.fetch("alice", 0, 10).expect("fetch")), [2]);
    assert!(one.fetch("bob", 0, 10).expect("fetch").is_empty());
}

/// Two brokers on one database: a resend through the second is recognised as the first's message,
/// and each sees what the other committed.
#[test]
fn postgres_two_stores_on_one_database_share_mailboxes_and_sends() {
    let Some((db, mut one)) = open_postgres() else {
        return;
    };
    let mut two = PostgresStore::open(&db.url, Durability::Fsync).expect("open");
    append(&mut one, vec![entry(1, "bob", "x")]);
    let mut resend = entry(2, "bob", "x");
    resend.send_id = 10;
    let outcome = two
        .commit(&Batch {
            appends: vec![resend],
            ..Default::default()
        })
        .expect("commit");
    assert_eq!(outcome.duplicates, [Duplicate { id: 2, original: 1 }]);
    assert_eq!(ids(&two.fetch("bob", 0, 10).expect("fetch")), [1]);
    assert_eq!(two.last_id().expect("last id"), 2);
    two.commit(&Batch {
        deletes: vec![1],
        ..Default::default()
    })
    .expect("commit");
    assert_eq!(count(&mut one, "bob"), 0);
    assert_eq!(one.usage().expect("usage"), []);
}

/// Two stores committing at once into the same mailboxes, with their names in opposite orders:
/// rows lock in one order, so neither deadlocks and every entry lands.
#[test]
fn postgres_concurrent_commits_on_one_database_all_land() {
    let Some((db, store)) = open_postgres() else {
        return;
    };
    drop(store);
    let url = Arc::new(db.url.clone());
    let writers: Vec<_> = (0..2u64)
        .map(|w| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut store = PostgresStore::open(&url, Durability::Fsync).expect("open");
                for round in 0..50u64 {
                    let id = 1 + 4 * (round * 2 + w);
                    let mut names = ["bob", "carol"];
                    if w == 1 {
                        names.reverse();
                    }
                    let mut first = entry(id, names[0], "x");
                    first.send_id = id;
                    let mut second = entry(id + 1, names[1], "y");
                    second.send_id = id + 1;
                    store
                        .commit(&Batch {
                            appends: vec![first, second],
                            ..Default::default()
                        })
                        .expect("commit");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("writer");
    }
    let mut store = PostgresStore::open(&url, Durability::Fsync).expect("open");
    assert_eq!(count(&mut store, "bob"), 100);
    assert_eq!(count(&mut store, "carol"), 100);
    let mut usage = store.usage().expect("usage");
    usage.sort_by(|a, b| a.mailbox.cmp(&b.mailbox));
    assert_eq!(
        usage.iter().map(|u| u.entries).collect::<Vec<_>>(),
        [100, 100]
    );
}

/// The database goes away: calls fail (the Router answers `unavailable`), nothing half-done is
/// left, and once it is back the same store serves again without being reopened.
#[test]
fn postgres_store_fails_while_the_database_is_down_and_recovers_by_itself() {
    let Some(server) = TestPostgres::start_or_skip("postgres store recovers") else {
        return;
    };
    let db = server.database().expect("database");
    let mut store = PostgresStore::open(&db.url, Durability::Fsync).expect("open");
    append(&mut store, vec![entry(1, "bob", "before")]);
    server.kill().expect("kill");
    let failed = store.commit(&Batch {
        appends: vec![entry(2, "bob", "during")],
        ..Default::default()
    });
    assert!(failed.is_err(), "a commit with the database down fails");
    assert!(store.fetch("bob", 0, 10).is_err(), "and so does a read");
    server.restart().expect("restart");
    append(&mut store, vec![entry(3, "bob", "after")]);
    assert_eq!(ids(&store.fetch("bob", 0, 10).expect("fetch")), [1, 3]);
}

/// Two brokers' Routers give out ids that do not commit in order; the store stores each append
/// under the next id in commit order, so a reader paging `id > cursor` never skips a late commit.
#[test]
fn postgres_stores_provisional_and_late_ids_in_commit_order() {
    let Some((db, mut one)) = open_postgres() else {
        return;
    };
    let mut two = PostgresStore::open(&db.url, Durability::Fsync).expect("open");
    let provisional = crate::store::PROVISIONAL_IDS;
    let outcome = one
        .commit(&Batch {
            appends: vec![entry(provisional + 7, "bob", "first")],
            ..Default::default()
        })
        .expect("commit");
    assert_eq!(
        outcome.renumbered,
        [Renumbered {
            id: provisional + 7,
            stored_as: 1
        }]
    );
    let page = one.fetch("bob", 0, 10).expect("fetch");
    assert_eq!((page[0].id, page[0].message_id), (1, 1));
    // A reader has seen id 1; the other broker's late commit with a lower id lands above it.
    let mut late = entry(provisional + 3, "bob", "second");
    late.send_id = 99;
    let mut receipt = entry(provisional + 4, "alice", "");
    receipt.kind = crate::store::EntryKind::Delivered;
    receipt.message_id = 1;
    let outcome = two
        .commit(&Batch {
            appends: vec![late, receipt],
            deletes: vec![provisional + 4],
            ..Default::default()
        })
        .expect("commit");
    assert_eq!(
        outcome
            .renumbered
            .iter()
            .map(|r| r.stored_as)
            .collect::<Vec<_>>(),
        [2, 3]
    );
    let after = one.fetch("bob", 1, 10).expect("fetch");
    assert_eq!(ids(&after), [2], "the late commit is after the cursor");
    assert_eq!(
        count(&mut one, "alice"),
        0,
        "a same-batch delete finds its renumbered entry"
    );
    // A resend of the renumbered message is told its stored id.
    let mut resend = entry(provisional + 9, "carol", "again");
    resend.send_id = 99;
    let outcome = one
        .commit(&Batch {
            appends: vec![resend],
            ..Default::default()
        })
        .expect("commit");
    assert_eq!(
        (outcome.duplicates, outcome.renumbered),
        (
            vec![Duplicate {
                id: provisional + 9,
                original: 2
            }],
            vec![]
        )
    );
    assert_eq!(one.sent("alice", 99).expect("sent"), Some(2));
}

/// A database of schema version 2 numbered appends under the row `stored_id`; version 3 draws them
/// from a sequence that starts above it (and above every id stored), and the row goes.
#[test]
fn postgres_migrates_a_version_2_database_to_ids_from_a_sequence() {
    let Some((db, mut client)) = at_an_older_version(
        entry(7, "bob", "kept"),
        "DROP TABLE switchboard_removed;
         DROP SEQUENCE switchboard_ids;
         INSERT INTO switchboard_meta (key, value) VALUES ('stored_id', 40);
         UPDATE switchboard_meta SET value = 2 WHERE key = 'schema_version'",
    ) else {
        return;
    };
    let mut store = PostgresStore::open(&db.url, Durability::Fsync).expect("migrated");
    let outcome = store
        .commit(&Batch {
            appends: vec![entry(crate::store::PROVISIONAL_IDS + 1, "bob", "new")],
            ..Default::default()
        })
        .expect("commit");
    assert_eq!(
        outcome.renumbered,
        [Renumbered {
            id: crate::store::PROVISIONAL_IDS + 1,
            stored_as: 41
        }],
        "above the old stored_id"
    );
    assert_eq!(ids(&store.fetch("bob", 0, 10).expect("fetch")), [7, 41]);
    assert_eq!(store.last_id().expect("last id"), 41);
    let meta: Vec<(String, i64)> = client
        .query("SELECT key, value FROM switchboard_meta ORDER BY key", &[])
        .expect("meta")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        meta,
        [
            ("last_id".to_owned(), 0),
            ("schema_version".to_owned(), super::schema::SCHEMA_VERSION)
        ]
    );
}

/// A mailbox holds what was appended less what was removed, through the store and its reader alike;
/// one never written to holds nothing.
#[test]
fn postgres_counts_what_a_mailbox_holds() {
    let Some((_db, mut store)) = open_postgres() else {
        return;
    };
    two_for_bob_then_delete(&mut store, 1);
    let mut reader = store.page_reader().expect("a reader");
    assert_eq!(store.entries_in("bob").expect("count"), 1);
    assert_eq!(reader.entries_in("bob").expect("count"), 1);
    assert_eq!(store.entries_in("nobody").expect("count"), 0);
    assert_eq!(reader.entries_in("nobody").expect("count"), 0);
}
