//! Torn writes at the end of the log are cut off; damage anywhere else is refused by name.

use super::*;
use crate::store::Batch;

/// A log of three batches (ids 1–6) and a fourth (ids 7–8) whose frame spans the returned byte
/// range of the returned segment file.
fn four_batches(dir: &Path) -> (PathBuf, std::ops::Range<u64>) {
    let mut store = open(dir, LogOptions::default());
    for first in [1, 3, 5] {
        add(&mut store, "bob", first..first + 2);
    }
    let before = store.segments.head_len();
    add(&mut store, "bob", 7..9);
    let after = store.segments.head_len();
    crash(store);
    let files = segment_files(dir);
    assert_eq!(files.len(), 1);
    (files[0].clone(), before..after)
}

/// After a torn last frame the log opens with the first three batches and takes new commits.
fn keeps_the_first_three_and_goes_on(dir: &Path) {
    // Each round cuts a log that an earlier round opened whole: without this, the high-water mark
    // of that open would (rightly) refuse the cut log as one that lost its newest commits.
    std::fs::remove_file(dir.join("IDENTITY.log")).expect("forget the high-water mark");
    let mut store = open(dir, LogOptions::default());
    assert_eq!(all_ids(&mut store, "bob"), [1, 2, 3, 4, 5, 6]);
    assert_eq!(store.last_id().expect("last id"), 6);
    add(&mut store, "bob", 9..10);
    crash(store);
    let mut store = open(dir, LogOptions::default());
    assert_eq!(all_ids(&mut store, "bob"), [1, 2, 3, 4, 5, 6, 9]);
}

#[test]
fn a_last_frame_cut_anywhere_is_dropped_and_everything_before_it_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (file, last) = four_batches(dir.path());
    let whole = std::fs::read(&file).expect("read");
    for cut in last.start..last.end {
        std::fs::write(&file, &whole[..cut as usize]).expect("cut");
        keeps_the_first_three_and_goes_on(dir.path());
    }
}

#[test]
fn a_last_frame_with_damaged_bytes_is_dropped_and_everything_before_it_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (file, last) = four_batches(dir.path());
    let whole = std::fs::read(&file).expect("read");
    for at in (last.start..last.end).step_by(3) {
        let mut damaged = whole.clone();
        damaged[at as usize] ^= 0x5a;
        std::fs::write(&file, &damaged).expect("damage");
        keeps_the_first_three_and_goes_on(dir.path());
    }
}

#[test]
fn zeros_after_the_last_frame_are_a_torn_tail() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (file, last) = four_batches(dir.path());
    let mut bytes = std::fs::read(&file).expect("read");
    bytes.truncate(last.start as usize);
    bytes.extend_from_slice(&[0; 4096]);
    std::fs::write(&file, &bytes).expect("zeros");
    keeps_the_first_three_and_goes_on(dir.path());
}

#[test]
fn a_damaged_frame_before_a_valid_one_is_refused_with_file_and_offset() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (file, last) = four_batches(dir.path());
    let mut bytes = std::fs::read(&file).expect("read");
    // A payload byte of the third frame, which the fourth follows.
    let third = (last.start - 40) as usize;
    bytes[third] ^= 1;
    std::fs::write(&file, &bytes).expect("damage");
    let err = LogStore::open_with(dir.path(), Durability::Os, LogOptions::default())
        .expect_err("refused");
    let text = err.to_string();
    assert!(text.contains(&file.display().to_string()), "{text}");
    assert!(text.contains("checksum"), "{text}");
}

#[test]
fn a_damaged_frame_in_an_older_segment_is_refused_with_file_and_offset() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = open(dir.path(), small());
    for first in (1..200).step_by(4) {
        add(&mut store, "bob", first..first + 4);
    }
    crash(store);
    let files = segment_files(dir.path());
    assert!(files.len() >= 3, "rolled: {files:?}");
    let older = &files[1];
    let mut bytes = std::fs::read(older).expect("read");
    let len = bytes.len();
    // The last frame of a sealed segment: damage there is no torn write.
    bytes[len - 3] ^= 0xff;
    std::fs::write(older, &bytes).expect("damage");
    let err = LogStore::open_with(dir.path(), Durability::Os, small()).expect_err("refused");
    let text = err.to_string();
    assert!(text.contains(&older.display().to_string()), "{text}");
    assert!(text.contains("corrupt at byte"), "{text}");
    // Cut short instead of damaged: refused too.
    bytes.truncate(len - 3);
    std::fs::write(older, &bytes).expect("cut");
    let err = LogStore::open_with(dir.path(), Durability::Os, small()).expect_err("refused");
    assert!(err.to_string().contains("cut short"), "{err}");
}

/// The newest segment removed behind the store's back (after a clean close recorded the
/// high-water mark): refused as a log that lost its newest commits; accepted only when asked, and
/// then numbering goes on above every id handed out or reserved before.
#[test]
fn a_log_whose_newest_segment_was_removed_is_refused_unless_the_loss_is_accepted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = open(dir.path(), small());
    for first in (1..200).step_by(2) {
        add(&mut store, "bob", first..first + 2);
    }
    let last = store.last_id().expect("last id");
    drop(store);
    let files = segment_files(dir.path());
    assert!(files.len() > 2, "the log rolled: {files:?}");
    std::fs::remove_file(files.last().expect("newest")).expect("remove the newest segment");

    let refused = LogStore::open_with(dir.path(), Durability::Os, small())
        .expect_err("a log that lost its newest segment is refused");
    let text = refused.to_string();
    assert!(
        text.contains("lost its newest commits")
            && text.contains(&format!("up to id {last}"))
            && text.contains("--accept-store-loss"),
        "{text}"
    );
    let accepting = LogOptions {
        accept_loss: true,
        ..small()
    };
    let mut store = LogStore::open_with(dir.path(), Durability::Os, accepting).expect("accepted");
    assert_eq!(
        store.last_id().expect("last id"),
        last + 2 * crate::store::ID_RESERVATION,
        "no id is reused, nor one a lost reservation covered"
    );
    drop(store);
    open(dir.path(), small());
}

/// The newest frame cut off after a crash while the frame before it carried an id reservation:
/// the last id still stands at the reservation, so only the highest id written, which each frame
/// carries, shows the loss, and the start is refused.
#[test]
fn a_log_that_lost_commits_under_a_reservation_that_survived_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = LogStore::open_with(dir.path(), Durability::Fsync, small()).expect("open");
    store
        .commit(&Batch {
            appends: vec![entry(1, "bob", &body(1))],
            reserve_ids_through: 1_000_000,
            ..Default::default()
        })
        .expect("commit under a reservation");
    let head = segment_files(dir.path()).pop().expect("a segment");
    let before = std::fs::metadata(&head).expect("segment").len();
    add(&mut store, "bob", 2..=2);
    crash(store);
    assert_eq!(segment_files(dir.path()).pop(), Some(head.clone()));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&head)
        .and_then(|f| f.set_len(before))
        .expect("cut the newest frame off");
    let err = LogStore::open_with(dir.path(), Durability::Fsync, small()).expect_err("refused");
    let text = err.to_string();
    assert!(
        text.contains("lost its newest commits") && text.contains("expected entries up to id 2"),
        "{text}"
    );
}
