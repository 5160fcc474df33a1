//! A data directory of today's SQLite store moves into the log on the first open; an old file is
//! never ignored.

use super::*;
use crate::store::conformance::count;
use crate::store::{Batch, Remembered, SqliteStore};

/// A SQLite store filled through the trait: bob holds 1, 3, 5; a send remembered without an entry;
/// ids reserved through 50.
fn sqlite_store(dir: &Path) {
    let mut old = SqliteStore::open(dir, Durability::Fsync).expect("sqlite");
    add_sqlite(&mut old);
    drop(old);
}

fn add_sqlite(old: &mut SqliteStore) {
    let mut receipt = entry(5, "bob", "");
    receipt.kind = crate::store::EntryKind::Delivered;
    receipt.body = bytes::Bytes::new();
    old.commit(&Batch {
        appends: vec![
            entry(1, "bob", "one"),
            entry(2, "bob", "two"),
            entry(3, "bob", "three"),
        ],
        ..Default::default()
    })
    .expect("commit");
    old.commit(&Batch {
        appends: vec![receipt],
        deletes: vec![2],
        remembered: vec![Remembered {
            sender: "carol".into(),
            send_id: 7,
            message_id: 4,
            at_ms: 1_700_000_000_004,
        }],
        reserve_ids_through: 50,
    })
    .expect("commit");
}

fn check(store: &mut LogStore) {
    let page = store.fetch("bob", 0, 10).expect("fetch");
    assert_eq!(ids(&page), [1, 3, 5]);
    assert_eq!(page[1], entry(3, "bob", "three"));
    assert_eq!(store.sent("carol", 7).expect("sent"), Some(4));
    assert_eq!(
        store.sent("alice", 20).expect("sent"),
        Some(2),
        "delivered, still remembered"
    );
    assert_eq!(store.last_id().expect("last id"), 50);
    assert_eq!(count(store, "bob"), 3);
}

#[test]
fn a_sqlite_store_is_migrated_on_the_first_open_and_its_files_retired() {
    let dir = tempfile::tempdir().expect("temp dir");
    sqlite_store(dir.path());
    let mut store = LogStore::open(dir.path(), Durability::Fsync).expect("migrated");
    check(&mut store);
    assert!(!dir.path().join("switchboard.db").exists());
    assert!(dir.path().join("switchboard.db.migrated").exists());
    drop(store);
    let mut store = LogStore::open(dir.path(), Durability::Fsync).expect("reopened");
    check(&mut store);
    crash(store);
    std::fs::remove_file(snapshot_file(dir.path())).ok();
    let mut store = LogStore::open(dir.path(), Durability::Fsync).expect("replayed");
    check(&mut store);
}

#[test]
fn a_log_and_a_sqlite_store_side_by_side_are_refused_naming_both() {
    let dir = tempfile::tempdir().expect("temp dir");
    drop(LogStore::open(dir.path(), Durability::Fsync).expect("log"));
    sqlite_store(dir.path());
    let err = LogStore::open(dir.path(), Durability::Fsync).expect_err("refused");
    let text = err.to_string();
    assert!(
        text.contains(&dir.path().join("log").display().to_string()),
        "{text}"
    );
    assert!(
        text.contains(&dir.path().join("switchboard.db").display().to_string()),
        "{text}"
    );
}

#[test]
fn an_interrupted_migration_is_redone_or_finished() {
    let dir = tempfile::tempdir().expect("temp dir");
    sqlite_store(dir.path());
    // Interrupted while writing the copy: a half-built `log.migrating/` is thrown away.
    let half = dir.path().join(super::super::migrate::MIGRATING_DIR);
    std::fs::create_dir_all(&half).expect("half-built copy");
    std::fs::write(half.join("0000000001.seg"), b"garbage").expect("garbage");
    let mut store = LogStore::open(dir.path(), Durability::Fsync).expect("migrated");
    check(&mut store);
    drop(store);
    // Interrupted after the log was in place, before the SQLite files were renamed.
    std::fs::rename(
        dir.path().join("switchboard.db.migrated"),
        dir.path().join("switchboard.db"),
    )
    .expect("put the old file back");
    let mut store = LogStore::open(dir.path(), Durability::Fsync).expect("finished");
    check(&mut store);
    assert!(!dir.path().join("switchboard.db").exists());
}
