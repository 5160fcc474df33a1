//! A store that checks itself (issue 12, finding 4): a store emptied, deleted, replaced by another
//! store's files or rolled back to an older copy behind the broker's back used to open as if
//! nothing had happened, and the broker served it empty or old without a word. Now each is refused
//! with a message saying what was found and how to proceed, and `--accept-store-loss` starts it.
//! Both embedded engines, as broker processes.
//!
//! The same after a `kill -9` before any maintenance pass, when the store then loses only its newest
//! commits (the SQLite WAL deleted, the log's newest segment cut back to a frame boundary): the mark
//! that follows every commit (`MARK.<engine>`, with `durability = "fsync"`) catches it, also when
//! what was lost are commits under an id reservation that survived, so the store's last id still
//! stands where it stood (the mark is the highest id written, never a reservation).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use switchboard_proto::{BrokerFrame, Receipts};
use switchboard_tests::{binary, BrokerProcess};

use crate::support::*;

/// Something done to a data directory's store behind the broker's back.
type Damage<'a> = dyn Fn(&Path) + 'a;

/// The store's own files in a data directory (not the lock, not the identity file).
fn files(engine: Engine) -> &'static [&'static str] {
    match engine {
        Engine::Log => &["log"],
        Engine::Sqlite => &["switchboard.db", "switchboard.db-wal", "switchboard.db-shm"],
    }
}

#[tokio::test]
async fn a_log_store_emptied_deleted_replaced_or_rolled_back_is_refused_until_accepted() {
    refused_until_accepted(Engine::Log).await;
}

#[tokio::test]
async fn a_sqlite_store_emptied_deleted_replaced_or_rolled_back_is_refused_until_accepted() {
    refused_until_accepted(Engine::Sqlite).await;
}

/// Alice sends bob two messages and the broker stops (the older copy is kept); two more, and it
/// stops again. Another broker's store holds one message. Then, each on a copy of the first
/// directory: the store's files truncated to 0 bytes, deleted with the rest of the directory kept,
/// replaced by the other store's, or by the older copy. Each start is refused, saying what was
/// found and naming `--accept-store-loss`; with the flag each starts, logging the loss as an
/// error. The older copy, once accepted, is the store: it starts again without the flag and bob
/// gets its two messages.
async fn refused_until_accepted(engine: Engine) {
    let root = tempfile::tempdir().expect("tempdir");
    let (ours, older, other) = (
        root.path().join("ours"),
        root.path().join("older"),
        root.path().join("other"),
    );
    store_messages(engine, &ours, 1..=2).await;
    copy_dir(&ours, &older);
    store_messages(engine, &ours, 3..=4).await;
    store_messages(engine, &other, 1..=1).await;

    let emptied = match engine {
        // The log's own id file stays: what it finds is its store with nothing in it.
        Engine::Log => "lost its newest commits",
        Engine::Sqlite => "emptied or deleted",
    };
    let cases: [(&str, &Damage<'_>, &str); 4] = [
        (
            "truncated to 0 bytes",
            &|dir| truncate_all(engine, dir),
            emptied,
        ),
        (
            "deleted",
            &|dir| remove_store(engine, dir),
            "emptied or deleted",
        ),
        (
            "replaced by another store's",
            &|dir| replace_store(engine, dir, &other),
            "replaced by another store's",
        ),
        (
            "rolled back to an older copy",
            &|dir| replace_store(engine, dir, &older),
            "lost its newest commits",
        ),
    ];
    for (n, (what, damage, needle)) in cases.iter().enumerate() {
        let dir = root.path().join(format!("case-{n}"));
        copy_dir(&ours, &dir);
        damage(&dir);
        let out = refused_start(engine, &dir).await;
        assert!(
            out.contains(needle) && out.contains("--accept-store-loss"),
            "{engine:?} store {what}: expected a refusal saying `{needle}`, got:\n{out}"
        );
        let broker = start(engine, &dir, true).await;
        broker
            .output()
            .wait_for(1, &["ACCEPTING STORE LOSS", needle])
            .await;
        broker.terminate().await;
    }

    // The rolled-back copy was accepted: it is the store now, and what it holds is delivered.
    let dir = root.path().join("case-3");
    let broker = start(engine, &dir, false).await;
    let (mut bob, _) = Raw::hello(broker.addr(), "bob", 60).await;
    for expected in [b"message 1", b"message 2"] {
        match bob.recv().await {
            Some(BrokerFrame::Deliver { body, .. }) => assert_eq!(&body[..], expected),
            other => panic!("expected bob's stored message, got {other:?}"),
        }
    }
    drop(bob);
    broker.terminate().await;
}

#[tokio::test]
async fn a_sqlite_store_whose_wal_is_deleted_after_a_crash_is_refused_until_accepted() {
    loses_newest_commits_after_a_crash(Engine::Sqlite, |dir, _| {
        std::fs::remove_file(dir.join("switchboard.db-wal")).expect("delete the WAL");
    })
    .await;
}

#[tokio::test]
async fn a_log_store_whose_newest_segment_is_cut_short_after_a_crash_is_refused_until_accepted() {
    loses_newest_commits_after_a_crash(Engine::Log, |dir, (segment, len)| {
        for newer in segments(dir).into_iter().filter(|s| *s > segment) {
            std::fs::remove_file(newer).expect("remove a newer segment");
        }
        std::fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .and_then(|file| file.set_len(len))
            .expect("cut the segment back");
    })
    .await;
}

#[tokio::test]
async fn a_sqlite_store_that_lost_commits_under_a_surviving_reservation_is_refused() {
    // Messages 2 to 19 of 256 KiB each fill the WAL past SQLite's automatic checkpoint (1,000
    // pages), so the reservation their first commit carried is in the database file; message 20,
    // after it, is only in the WAL.
    let big = |send_id: u64| {
        let mut body = vec![b'x'; 256 * 1024];
        body[..8].copy_from_slice(&send_id.to_le_bytes());
        Bytes::from(body)
    };
    loses_commits_under_a_surviving_reservation(
        Engine::Sqlite,
        &big,
        |dir| {
            let db = dir.join("switchboard.db");
            let len = std::fs::metadata(&db).expect("database file").len();
            assert!(
                len > 2 << 20,
                "the WAL was checkpointed into the database file ({len} bytes)"
            );
            std::fs::remove_file(dir.join("switchboard.db-wal")).expect("delete the WAL");
        },
        |_| {},
    )
    .await;
}

#[tokio::test]
async fn a_log_store_that_lost_commits_under_a_surviving_reservation_is_refused() {
    let small = |send_id: u64| Bytes::from(format!("message {send_id}"));
    let head = std::cell::RefCell::new((PathBuf::new(), 0));
    loses_commits_under_a_surviving_reservation(
        Engine::Log,
        &small,
        |_| {
            let (segment, len) = head.borrow().clone();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&segment)
                .and_then(|file| file.set_len(len))
                .expect("cut the last frame off");
        },
        |dir| *head.borrow_mut() = newest_segment(dir),
    )
    .await;
}

/// Alice sends bob message 1 and the broker stops cleanly. It starts again; alice sends messages
/// 2 to 19 (`body` gives each its body), the first commit carrying the broker's id reservation
/// (`noted` sees the data directory once they are accepted), then message 20, and the broker is
/// killed with SIGKILL. Then the store loses the commits after the reservation's (`lose`),
/// message 20 among them, while the reservation stays. Refused; accepted when asked, and bob gets
/// message 1 first.
async fn loses_commits_under_a_surviving_reservation(
    engine: Engine,
    body: &dyn Fn(u64) -> Bytes,
    lose: impl Fn(&Path),
    noted: impl Fn(&Path),
) {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("data");
    store_messages(engine, &dir, 1..=1).await;

    let broker = start(engine, &dir, false).await;
    let (mut alice, _) = Raw::hello(broker.addr(), "alice", 60).await;
    for send_id in 2..=19 {
        alice
            .send_accepted(send_id, "bob", body(send_id), Receipts::None)
            .await;
    }
    noted(&dir);
    send_all(&mut alice, 20..=20).await;
    broker.kill9().await;
    lose(&dir);
    refused_until_the_loss_is_accepted(engine, &dir).await;
}

/// Alice sends bob message 1 and the broker stops cleanly (the store is checkpointed, the identity
/// file's mark is 1). It starts again, with no maintenance pass due for an hour; alice sends
/// messages 2 and 3, each accepted, and the broker is killed with SIGKILL. Then the store loses
/// exactly those two commits (`lose`, given the newest log segment and its length before them).
/// The start is refused, saying what it found; with `--accept-store-loss` it starts, logging the
/// loss, and bob gets message 1.
async fn loses_newest_commits_after_a_crash(engine: Engine, lose: impl Fn(&Path, (PathBuf, u64))) {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("data");
    store_messages(engine, &dir, 1..=1).await;

    let broker = start(engine, &dir, false).await;
    let before = newest_segment(&dir);
    let (mut alice, _) = Raw::hello(broker.addr(), "alice", 60).await;
    send_all(&mut alice, 2..=3).await;
    broker.kill9().await;
    lose(&dir, before);
    refused_until_the_loss_is_accepted(engine, &dir).await;
}

/// A start on `dir`, whose store lost its newest commits, is refused saying so; with
/// `--accept-store-loss` it starts, logging the loss, and bob gets message 1.
async fn refused_until_the_loss_is_accepted(engine: Engine, dir: &Path) {
    let out = refused_start(engine, dir).await;
    assert!(
        out.contains("lost its newest commits") && out.contains("--accept-store-loss"),
        "{engine:?}: expected a refusal saying the store lost its newest commits, got:\n{out}"
    );
    let broker = start(engine, dir, true).await;
    broker
        .output()
        .wait_for(1, &["ACCEPTING STORE LOSS", "lost its newest commits"])
        .await;
    let (mut bob, _) = Raw::hello(broker.addr(), "bob", 60).await;
    match bob.recv().await {
        Some(BrokerFrame::Deliver { body, .. }) => assert_eq!(&body[..], b"message 1"),
        other => panic!("expected bob's stored message, got {other:?}"),
    }
    drop(bob);
    broker.terminate().await;
}

/// The log's segment files in `dir`, oldest first (none for another engine).
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir.join("log"))
        .into_iter()
        .flatten()
        .map(|item| item.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|x| x == "seg"))
        .collect();
    found.sort();
    found
}

/// The newest log segment and its length (an empty path for another engine).
fn newest_segment(dir: &Path) -> (PathBuf, u64) {
    match segments(dir).pop() {
        Some(path) => {
            let len = std::fs::metadata(&path).expect("segment length").len();
            (path, len)
        }
        None => (PathBuf::new(), 0),
    }
}

/// Starts a broker on `dir`, has alice send bob `send_ids` (each accepted), and stops it cleanly.
async fn store_messages(engine: Engine, dir: &Path, send_ids: std::ops::RangeInclusive<u64>) {
    let broker = start(engine, dir, false).await;
    let (mut alice, _) = Raw::hello(broker.addr(), "alice", 60).await;
    send_all(&mut alice, send_ids).await;
    drop(alice);
    broker.terminate().await;
}

/// Alice sends bob `send_ids`, each accepted.
async fn send_all(alice: &mut Raw, send_ids: std::ops::RangeInclusive<u64>) {
    for send_id in send_ids {
        let body = Bytes::from(format!("message {send_id}"));
        alice
            .send_accepted(send_id, "bob", body, Receipts::None)
            .await;
    }
}

async fn start(engine: Engine, dir: &Path, accept_loss: bool) -> BrokerProcess {
    BrokerProcess::start_configured(dir, |command| {
        command.env("SWITCHBOARD_BROKER_STORE", engine.env());
        // No maintenance pass while a test runs: only a clean close records the identity file.
        command.env("SWITCHBOARD_BROKER_DEDUPE__MAINTENANCE_MS", "3600000");
        if accept_loss {
            command.arg("--accept-store-loss");
        }
    })
    .await
}

/// Runs a broker on `dir` that must refuse to start: its exit is awaited (a broker that starts
/// fails the test by timing out) and everything it printed returned.
async fn refused_start(engine: Engine, dir: &Path) -> String {
    let program = tokio::task::spawn_blocking(|| binary("switchboard-broker"))
        .await
        .expect("find the broker binary");
    let output = tokio::process::Command::new(program)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .env("SWITCHBOARD_BROKER_LOG__FORMAT", "text")
        .env("SWITCHBOARD_BROKER_ADMIN__LISTEN", "127.0.0.1:0")
        .env("SWITCHBOARD_BROKER_STORE", engine.env())
        .kill_on_drop(true)
        .output();
    let output = within("a refused start to exit", output)
        .await
        .expect("run the broker");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "the broker exited 0:\n{text}");
    text
}

/// Every file of the store truncated to 0 bytes, the directories and names kept.
fn truncate_all(engine: Engine, dir: &Path) {
    for name in files(engine) {
        let path = dir.join(name);
        if path.is_dir() {
            for item in std::fs::read_dir(&path).expect("read the store directory") {
                let file = item.expect("entry").path();
                if file.extension().is_some_and(|x| x == "seg" || x == "snap") {
                    std::fs::File::create(&file).expect("truncate");
                }
            }
        } else if path.exists() {
            std::fs::File::create(&path).expect("truncate");
        }
    }
}

fn remove_store(engine: Engine, dir: &Path) {
    for name in files(engine) {
        let path = dir.join(name);
        if path.is_dir() {
            std::fs::remove_dir_all(&path).expect("remove the store directory");
        } else if path.exists() {
            std::fs::remove_file(&path).expect("remove the store file");
        }
    }
}

/// The store's files replaced by those in `from` (another data directory).
fn replace_store(engine: Engine, dir: &Path, from: &Path) {
    remove_store(engine, dir);
    for name in files(engine) {
        let source = from.join(name);
        if source.is_dir() {
            copy_dir(&source, &dir.join(name));
        } else if source.exists() {
            std::fs::copy(&source, dir.join(name)).expect("copy the store file");
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy");
    for item in std::fs::read_dir(from).expect("read the directory") {
        let item = item.expect("entry");
        let target = to.join(item.file_name());
        if item.path().is_dir() {
            copy_dir(&item.path(), &target);
        } else {
            std::fs::copy(item.path(), target).expect("copy a file");
        }
    }
}
