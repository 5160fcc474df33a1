//! The log engine beyond the shared contract: reopening, torn tails and damage ([`recovery`]),
//! reclaiming space and the snapshot ([`space`]), migration from SQLite ([`migration`]).

mod migration;
mod recovery;
mod space;

use std::path::{Path, PathBuf};

use super::{LogOptions, LogStore};
use crate::store::conformance::{append, entry, ids};
use crate::store::{Durability, MailboxStore};

pub(crate) fn open_log() -> (tempfile::TempDir, LogStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = LogStore::open(dir.path(), Durability::Fsync).expect("open");
    (dir, store)
}

/// Segments of 4 KiB and no snapshot from housekeeping, so a test rolls and replays quickly.
fn small() -> LogOptions {
    LogOptions {
        segment_bytes: 4096,
        snapshot_after_bytes: u64::MAX,
        accept_loss: false,
    }
}

fn open(dir: &Path, options: LogOptions) -> LogStore {
    LogStore::open_with(dir, Durability::Os, options).expect("open")
}

/// Closes `store` as a crash would leave it: no snapshot.
fn crash(mut store: LogStore) {
    store.since_snapshot = 0;
    store.identity = None; // No high-water mark recorded at close either.
    drop(store);
}

/// The segment files in `dir`'s log, oldest first.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let log = dir.join(super::LOG_DIR);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&log)
        .expect("log dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    files.sort();
    files
}

fn snapshot_file(dir: &Path) -> PathBuf {
    dir.join(super::LOG_DIR).join("index.snap")
}

/// Ids in `mailbox`, read back through `fetch` (bodies included, so a bad location shows).
fn all_ids(store: &mut LogStore, mailbox: &str) -> Vec<u64> {
    let page = store.fetch(mailbox, 0, 1 << 20).expect("fetch");
    for e in &page {
        assert_eq!(
            e,
            &entry(e.id, mailbox, &body(e.id)),
            "entry {} reads back",
            e.id
        );
    }
    ids(&page)
}

/// The body entry `id` gets in these tests: its size varies with the id.
fn body(id: u64) -> String {
    format!("body of {id} {}", "x".repeat((id % 50) as usize))
}

/// Appends entries `ids` to `mailbox`, each with [`body`].
fn add(store: &mut LogStore, mailbox: &str, ids: impl IntoIterator<Item = u64>) {
    append(
        store,
        ids.into_iter()
            .map(|i| entry(i, mailbox, &body(i)))
            .collect(),
    );
}

#[test]
fn each_messages_receipt_choice_survives_a_crash_and_a_snapshot() {
    use switchboard_proto::Receipts;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = open(dir.path(), small());
    let choices = [Receipts::All, Receipts::Delivered, Receipts::None];
    let entries: Vec<_> = (1..=3u64)
        .map(|id| {
            let mut e = crate::store::conformance::entry(id, "bob", "x");
            e.receipts = choices[id as usize - 1];
            e
        })
        .collect();
    crate::store::conformance::append(&mut store, entries.clone());
    for snapshot in [false, true] {
        if snapshot {
            drop(store);
        } else {
            crash(store);
        }
        store = open(dir.path(), small());
        let read = store.fetch("bob", 0, 10).expect("fetch");
        assert_eq!(read, entries, "snapshot: {snapshot}");
    }
}

#[test]
fn a_reopened_log_has_every_entry_send_and_the_high_water_mark() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = open(dir.path(), small());
    for batch in 0..40u64 {
        add(&mut store, "bob", batch * 5 + 1..=batch * 5 + 5);
    }
    let deletes: Vec<u64> = (1..=200).filter(|i: &u64| i.is_multiple_of(3)).collect();
    store
        .commit(&crate::store::Batch {
            deletes: deletes.clone(),
            reserve_ids_through: 500,
            ..Default::default()
        })
        .expect("commit");
    let expected: Vec<u64> = (1..=200).filter(|i: &u64| !i.is_multiple_of(3)).collect();
    assert!(
        segment_files(dir.path()).len() > 2,
        "the test rolls segments"
    );
    for snapshot in [false, true] {
        if snapshot {
            drop(store);
            assert!(snapshot_file(dir.path()).exists());
        } else {
            crash(store);
        }
        store = open(dir.path(), small());
        assert_eq!(all_ids(&mut store, "bob"), expected, "snapshot: {snapshot}");
        assert_eq!(store.last_id().expect("last id"), 500);
        assert_eq!(store.sent("alice", 30).expect("sent"), Some(3));
        let usage = store.usage().expect("usage");
        assert_eq!(usage[0].entries, expected.len() as u64);
    }
}
