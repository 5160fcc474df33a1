//! Space under churn stays bounded; the snapshot is used when it fits and ignored when it does not;
//! what an entry and a remembered send cost in memory.

use super::*;
use crate::store::{Batch, Maintenance};

/// Housekeeping that forgets every send (so only entries keep segments alive).
const FORGET_ALL: Maintenance = Maintenance {
    forget_sent_before_ms: u64::MAX,
    remember_at_most: 0,
};

fn disk(dir: &Path) -> (usize, u64) {
    let files = segment_files(dir);
    let bytes = files
        .iter()
        .map(|f| std::fs::metadata(f).expect("meta").len())
        .sum();
    (files.len(), bytes)
}

#[test]
fn churn_across_many_segments_keeps_disk_use_bounded_and_the_live_entries_readable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = open(dir.path(), small());
    // Every 50th entry stays forever; the rest are acknowledged one batch later.
    let kept = |id: u64| id.is_multiple_of(50);
    let mut sizes = Vec::new();
    let mut next = 1;
    for round in 0..60 {
        for _ in 0..10 {
            let appends = (next..next + 10)
                .map(|i| entry(i, "bob", &body(i)))
                .collect();
            let deletes = (next.saturating_sub(10)..next)
                .filter(|&i| i > 0 && !kept(i))
                .collect();
            store
                .commit(&Batch {
                    appends,
                    deletes,
                    ..Default::default()
                })
                .expect("commit");
            next += 10;
        }
        store.maintain(&FORGET_ALL).expect("maintain");
        if round >= 10 {
            sizes.push(disk(dir.path()));
        }
    }
    let wrote = next * 60;
    let (most_files, most_bytes) = sizes
        .iter()
        .fold((0, 0), |(f, b), &(f2, b2)| (f.max(f2), b.max(b2)));
    assert!(most_files <= 12, "segment files keep piling up: {sizes:?}");
    assert!(
        most_bytes < wrote / 8,
        "{most_bytes} bytes on disk after writing ~{wrote}: {sizes:?}"
    );
    let live: Vec<u64> = (1..next - 10)
        .filter(|&i| kept(i))
        .chain(next - 10..next)
        .collect();
    assert_eq!(all_ids(&mut store, "bob"), live);
    crash(store);
    let mut store = open(dir.path(), small());
    assert_eq!(all_ids(&mut store, "bob"), live, "after a full replay");
    assert_eq!(store.last_id().expect("last id"), next - 1);
}

/// The cap cuts inside one millisecond (a frame of kind 3): after compaction and a crash, exactly
/// the newest stay remembered, and a snapshot of the cut reads back the same.
#[test]
fn a_cut_inside_one_millisecond_survives_compaction_a_crash_and_a_snapshot() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = open(dir.path(), small());
    for first in (1..200).step_by(10) {
        let sends = (first..first + 10)
            .map(|id| {
                let mut e = entry(id, "bob", "x");
                e.sent_at_ms = 1_000;
                e
            })
            .collect();
        store
            .commit(&Batch {
                appends: sends,
                deletes: (first..first + 10).collect(),
                ..Default::default()
            })
            .expect("commit");
    }
    let cap = Maintenance {
        forget_sent_before_ms: 0,
        remember_at_most: 15,
    };
    assert_eq!(store.maintain(&cap).expect("maintain").forgotten, 185);
    for _ in 0..3 {
        store.maintain(&cap).expect("maintain");
    }
    let remembered = |store: &mut LogStore| -> Vec<u64> {
        (1..=200)
            .filter(|id| store.sent("alice", id * 10).expect("sent").is_some())
            .collect()
    };
    let newest: Vec<u64> = (186..=200).collect();
    assert_eq!(remembered(&mut store), newest);
    crash(store);
    let mut store = open(dir.path(), small());
    assert_eq!(remembered(&mut store), newest, "replayed");
    drop(store); // A clean close writes a snapshot.
    let mut store = open(dir.path(), small());
    assert_eq!(remembered(&mut store), newest, "from the snapshot");
}

#[test]
fn remembered_sends_survive_compaction_and_forgetting_survives_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = open(dir.path(), small());
    for first in (1..400).step_by(10) {
        add(&mut store, "bob", first..first + 10);
        store
            .commit(&Batch {
                deletes: (first..first + 10).collect(),
                ..Default::default()
            })
            .expect("commit");
    }
    // Sends 1..=400 are at 1_700_000_000_001..; keep those from id 201 on.
    let keep_from = Maintenance {
        forget_sent_before_ms: 1_700_000_000_201,
        remember_at_most: u64::MAX,
    };
    assert_eq!(store.maintain(&keep_from).expect("maintain").forgotten, 200);
    for _ in 0..3 {
        store.maintain(&keep_from).expect("maintain");
    }
    assert!(
        segment_files(dir.path()).len() < 8,
        "dead segments reclaimed"
    );
    crash(store);
    let mut store = open(dir.path(), small());
    assert_eq!(
        store.sent("alice", 2000).expect("sent"),
        None,
        "forgotten stays forgotten"
    );
    assert_eq!(store.sent("alice", 2010).expect("sent"), Some(201));
    assert_eq!(store.sent("alice", 4000).expect("sent"), Some(400));
    assert_eq!(store.last_id().expect("last id"), 400);
}

#[test]
fn a_clean_close_leaves_a_snapshot_that_the_next_open_uses() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = open(dir.path(), small());
    add(&mut store, "bob", 1..=100);
    drop(store);
    let mut store = open(dir.path(), small());
    assert_eq!(store.since_snapshot, 0, "nothing replayed");
    assert_eq!(all_ids(&mut store, "bob"), (1..=100).collect::<Vec<_>>());
    // Frames after the snapshot are replayed on top of it.
    add(&mut store, "bob", 101..=110);
    crash(store);
    let mut store = open(dir.path(), small());
    assert!(
        store.since_snapshot > 0,
        "the frames after it were replayed"
    );
    assert_eq!(all_ids(&mut store, "bob"), (1..=110).collect::<Vec<_>>());
}

#[test]
fn a_damaged_or_foreign_snapshot_falls_back_to_the_whole_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = open(dir.path(), small());
    add(&mut store, "bob", 1..=100);
    drop(store);
    let snap = snapshot_file(dir.path());
    let good = std::fs::read(&snap).expect("snapshot");
    let mut damaged = good.clone();
    damaged[good.len() / 2] ^= 1;
    std::fs::write(&snap, &damaged).expect("damage");
    let mut store = open(dir.path(), small());
    assert!(store.since_snapshot > 0, "replayed the whole log");
    assert_eq!(all_ids(&mut store, "bob"), (1..=100).collect::<Vec<_>>());
    crash(store);
    // A snapshot of another log (covering more than this one has) is not believed either.
    let other = tempfile::tempdir().expect("temp dir");
    let mut bigger = open(other.path(), small());
    add(&mut bigger, "carol", 1..=300);
    drop(bigger);
    std::fs::copy(snapshot_file(other.path()), &snap).expect("foreign snapshot");
    let mut store = open(dir.path(), small());
    assert_eq!(all_ids(&mut store, "bob"), (1..=100).collect::<Vec<_>>());
    assert_eq!(all_ids(&mut store, "carol"), Vec::<u64>::new());
}

/// The memory figures ARCHITECTURE.md states, from the index's own capacities.
#[test]
fn memory_per_pending_message_and_per_remembered_send() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = open(dir.path(), LogOptions::default());
    let n = 100_000u64;
    for first in (1..=n).step_by(1000) {
        append(
            &mut store,
            (first..first + 1000)
                .map(|i| entry(i, "bob", "x"))
                .collect(),
        );
    }
    let per_entry = store.index.entry_memory_bytes() as f64 / n as f64;
    let per_send = store.index.sent.memory_bytes() as f64 / n as f64;
    assert_eq!(std::mem::size_of::<super::super::index::Meta>(), 72);
    assert!(per_entry < 200.0, "{per_entry} B per pending message");
    assert!(per_send < 100.0, "{per_send} B per remembered send");
}
