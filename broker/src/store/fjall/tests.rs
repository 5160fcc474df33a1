//! The fjall engine beyond the shared contract: what survives closing and reopening it.

use super::FjallStore;
use crate::store::conformance::{append, entry};
use crate::store::{Batch, Durability, MailboxStore};

pub(crate) fn open_fjall() -> (tempfile::TempDir, FjallStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = FjallStore::open(dir.path(), Durability::Fsync).expect("open");
    (dir, store)
}

#[test]
fn fjall_keeps_entries_sends_usage_and_last_id_across_reopen() {
    let (dir, mut store) = open_fjall();
    let mut expiring = entry(2, "bob", "two");
    expiring.expires_at_ms = 1_000;
    append(
        &mut store,
        vec![entry(1, "bob", "one"), expiring, entry(3, "carol", "x")],
    );
    store
        .commit(&Batch {
            deletes: vec![3],
            reserve_ids_through: 50,
            ..Default::default()
        })
        .expect("commit");
    drop(store);
    let mut store = FjallStore::open(dir.path(), Durability::Fsync).expect("reopen");
    let ids: Vec<u64> = store
        .fetch("bob", 0, 10)
        .expect("fetch")
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, [1, 2]);
    assert_eq!(store.last_id().expect("last id"), 50);
    assert_eq!(store.sent("alice", 30).expect("sent"), Some(3));
    let usage = store.usage().expect("usage");
    assert_eq!(
        usage.len(),
        1,
        "carol's emptied mailbox has no row: {usage:?}"
    );
    assert_eq!((usage[0].entries, usage[0].bytes), (2, 6));
    assert_eq!(store.expired(1_000, 10).expect("expired").len(), 1);
}
