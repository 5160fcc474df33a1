//! The log engine beyond the shared contract: reopening, torn tails, damage, churn, snapshots,
//! migration from SQLite.

use super::{LogOptions, LogStore};
use crate::store::Durability;

pub(crate) fn open_log() -> (tempfile::TempDir, LogStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = LogStore::open(dir.path(), Durability::Fsync).expect("open");
    (dir, store)
}

#[allow(dead_code)]
fn small() -> LogOptions {
    LogOptions {
        segment_bytes: 4096,
        snapshot_after_bytes: u64::MAX,
    }
}
