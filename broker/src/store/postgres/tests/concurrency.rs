//! Several connections on one database at once: what waits for what (the mailboxes' row locks, the
//! page reads' connection of their own), and ids in commit order under concurrent commits.

use std::collections::HashSet;
use std::sync::Arc;

use super::open_postgres;
use crate::store::conformance::{append, entry, ids};
use crate::store::postgres::PostgresStore;
use crate::store::{Batch, Durability, MailboxStore};

/// A transaction on `holder` that holds the usage row of `mailbox`, new: a commit appending to that
/// mailbox waits for it, as it would for another commit to it.
fn holding_a_new_mailbox_row<'a>(
    holder: &'a mut postgres::Client,
    mailbox: &str,
) -> postgres::Transaction<'a> {
    let mut tx = holder.transaction().expect("begin");
    tx.execute(
        "INSERT INTO switchboard_mailboxes (mailbox, entries, bytes) VALUES ($1, 0, 0)",
        &[&mailbox],
    )
    .expect("hold the mailbox's row");
    tx
}

/// The appends of commits to different mailboxes share no lock: one to a mailbox whose row another
/// transaction holds waits for it, one to another mailbox does not, and the waiting one's id comes
/// out above every id drawn before it could draw.
#[test]
fn postgres_commits_to_different_mailboxes_do_not_wait_for_each_other() {
    let Some((db, store)) = open_postgres() else {
        return;
    };
    drop(store);
    let mut holder = postgres::Client::connect(&db.url, postgres::NoTls).expect("connect");
    let tx = holding_a_new_mailbox_row(&mut holder, "bob");
    let commit_to = |mailbox: &'static str| {
        let url = db.url.clone();
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut store = PostgresStore::open(&url, Durability::Fsync).expect("open");
            let mut e = entry(crate::store::PROVISIONAL_IDS + 1, mailbox, "x");
            e.peer = format!("{mailbox}'s sender"); // not a resend of the other
            let outcome = store.commit(&Batch {
                appends: vec![e],
                ..Default::default()
            });
            let _ = done.send(outcome.map(|o| o.renumbered[0].stored_as));
        });
        finished
    };
    let to_bob = commit_to("bob");
    let to_carol = commit_to("carol");
    let wait = std::time::Duration::from_secs(10);
    let carol_id = to_carol
        .recv_timeout(wait)
        .expect("carol's commit does not wait for bob's row")
        .expect("commit");
    assert!(
        to_bob.try_recv().is_err(),
        "bob's commit waits while his row is held"
    );
    tx.commit().expect("release bob's row");
    let bob_id = to_bob
        .recv_timeout(wait)
        .expect("bob's commit goes on once the row is free")
        .expect("commit");
    assert!(
        bob_id > carol_id,
        "drawn after the lock: {bob_id} > {carol_id}"
    );
}

/// Two stores committing at once, each to a mailbox of its own and to one they share, all with
/// provisional ids, while a third pages the shared one by cursor: every mailbox holds its commits in
/// commit order, and the reader, which never looks below its cursor, sees every entry.
#[test]
fn postgres_concurrent_commits_keep_each_mailbox_in_commit_order() {
    const ROUNDS: u64 = 60;
    let Some((db, mut reader)) = open_postgres() else {
        return;
    };
    let writing = Arc::new(std::sync::atomic::AtomicUsize::new(2));
    let writers: Vec<_> = (0..2u64)
        .map(|w| {
            let (url, writing) = (db.url.clone(), writing.clone());
            std::thread::spawn(move || {
                let mut store = PostgresStore::open(&url, Durability::Os).expect("open");
                let own = format!("own-{w}");
                let mut stored = Vec::new();
                for round in 0..ROUNDS {
                    let id = crate::store::PROVISIONAL_IDS + 1 + 2 * (round * 2 + w);
                    let body = format!("{w}/{round}");
                    let mut shared = entry(id, "shared", &body);
                    shared.send_id = id;
                    let mut mine = entry(id + 1, &own, &body);
                    mine.send_id = id + 1;
                    let outcome = store
                        .commit(&Batch {
                            appends: vec![shared, mine],
                            ..Default::default()
                        })
                        .expect("commit");
                    let got: Vec<u64> = outcome.renumbered.iter().map(|r| r.stored_as).collect();
                    assert_eq!(got.len(), 2, "both renumbered");
                    stored.extend(got);
                }
                writing.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                stored
            })
        })
        .collect();
    let mut cursor = 0;
    let mut seen = Vec::new();
    let started = std::time::Instant::now();
    loop {
        let done = writing.load(std::sync::atomic::Ordering::SeqCst) == 0;
        let page = reader.fetch("shared", cursor, 1000).expect("fetch");
        for e in &page {
            assert!(e.id > cursor, "a page is above its cursor");
            cursor = e.id;
            seen.push(e.id);
        }
        if done && page.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "writers never finished"
        );
    }
    let mut all: Vec<u64> = Vec::new();
    for writer in writers {
        all.extend(writer.join().expect("writer"));
    }
    let distinct: HashSet<u64> = all.iter().copied().collect();
    assert_eq!(distinct.len(), all.len(), "every id stored once");
    let shared = reader.fetch("shared", 0, 1000).expect("fetch");
    assert_eq!(shared.len() as u64, 2 * ROUNDS);
    assert_eq!(
        seen,
        ids(&shared),
        "the cursor reader skipped no late commit"
    );
    for w in 0..2 {
        // Each writer's commits follow each other, so its rounds are in order in both mailboxes.
        let mut rounds = |mailbox: &str| -> Vec<String> {
            reader
                .fetch(mailbox, 0, 1000)
                .expect("fetch")
                .iter()
                .map(|e| String::from_utf8_lossy(&e.body).into_owned())
                .filter(|b| b.starts_with(&format!("{w}/")))
                .collect()
        };
        let expected: Vec<String> = (0..ROUNDS).map(|r| format!("{w}/{r}")).collect();
        assert_eq!(rounds("shared"), expected);
        assert_eq!(rounds(&format!("own-{w}")), expected);
    }
}

/// What leaves a mailbox is counted apart from what was appended (schema version 3), so an ack that
/// deletes from a mailbox (and appends its receipt elsewhere) does not wait for a commit appending
/// to that mailbox; the usage is right either way, and maintenance drops the rows of a mailbox left
/// empty.
#[test]
fn postgres_a_delete_does_not_wait_for_appends_to_its_mailbox() {
    let Some((db, mut store)) = open_postgres() else {
        return;
    };
    append(
        &mut store,
        vec![entry(1, "bob", "x"), entry(2, "bob", "yy")],
    );
    let mut holder = postgres::Client::connect(&db.url, postgres::NoTls).expect("connect");
    let mut tx = holder.transaction().expect("begin");
    tx.execute(
        "UPDATE switchboard_mailboxes SET entries = entries WHERE mailbox = 'bob'",
        &[],
    )
    .expect("hold bob's row, as a commit appending to bob does");
    let url = db.url.clone();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut acker = PostgresStore::open(&url, Durability::Fsync).expect("open");
        let mut receipt = entry(3, "alice", "");
        receipt.kind = crate::store::EntryKind::Delivered;
        receipt.message_id = 1;
        let _ = done.send(acker.commit(&Batch {
            appends: vec![receipt],
            deletes: vec![1],
            ..Default::default()
        }));
    });
    finished
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the ack does not wait for bob's row")
        .expect("commit");
    tx.commit().expect("release");
    let mut usage = store.usage().expect("usage");
    usage.sort_by(|a, b| a.mailbox.cmp(&b.mailbox));
    let of = |u: &crate::store::MailboxUsage| (u.mailbox.clone(), u.entries, u.bytes);
    assert_eq!(
        usage.iter().map(of).collect::<Vec<_>>(),
        [("alice".to_owned(), 1, 0), ("bob".to_owned(), 1, 2)]
    );
    store
        .commit(&Batch {
            deletes: vec![2, 3],
            ..Default::default()
        })
        .expect("commit");
    assert_eq!(store.usage().expect("usage"), []);
    store
        .maintain(&crate::store::Maintenance {
            forget_sent_before_ms: 0,
            remember_at_most: u64::MAX,
        })
        .expect("maintain");
    let rows: i64 = holder
        .query_one(
            "SELECT (SELECT count(*) FROM switchboard_mailboxes)
                  + (SELECT count(*) FROM switchboard_removed)",
            &[],
        )
        .expect("rows")
        .get(0);
    assert_eq!(rows, 0, "an empty mailbox's usage rows are dropped");
    append(&mut store, vec![entry(4, "bob", "again")]);
    assert_eq!(store.usage().expect("usage").len(), 1);
}

/// Page reads have a connection and a thread of their own: a read of one mailbox is answered while a
/// commit waits for a row lock (as a commit waits for the flushes), and once the commit lands, a read
/// sees what it stored.
#[test]
fn postgres_a_page_read_does_not_wait_behind_a_commit() {
    let Some((db, mut store)) = open_postgres() else {
        return;
    };
    append(&mut store, vec![entry(1, "carol", "waiting")]);
    let (handle, thread) = crate::store::StoreHandle::spawn(Box::new(store), 16, Arc::default())
        .expect("spawn the store threads");
    let mut holder = postgres::Client::connect(&db.url, postgres::NoTls).expect("connect");
    let mut tx = holding_a_new_mailbox_row(&mut holder, "bob");
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
    };
    let committing = std::thread::spawn({
        let handle = handle.clone();
        move || {
            runtime().block_on(handle.commit(Batch {
                appends: vec![entry(crate::store::PROVISIONAL_IDS + 1, "bob", "new")],
                ..Default::default()
            }))
        }
    });
    // The commit is on the store's connection, waiting for bob's row.
    let waiting = (0..200).any(|_| {
        let n: i64 = tx
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .expect("pg_stat_activity")
            .get(0);
        n > 0 || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            false
        }
    });
    assert!(
        waiting,
        "the commit reached the database and waits for bob's row"
    );
    let wait = std::time::Duration::from_secs(10);
    let page = runtime()
        .block_on(async { tokio::time::timeout(wait, handle.fetch("carol".into(), 0, 10)).await })
        .expect("the read is answered while the commit waits")
        .expect("fetch");
    assert_eq!(ids(&page), [1]);
    assert!(
        !committing.is_finished(),
        "the commit still waits for bob's row"
    );
    tx.commit().expect("release bob's row");
    committing
        .join()
        .expect("commit thread")
        .expect("the commit lands once the row is free");
    let page = runtime()
        .block_on(handle.fetch("bob".into(), 0, 10))
        .expect("fetch");
    assert_eq!(page.len(), 1, "the reader sees the commit: {page:?}");
    drop(handle);
    thread.join();
}
