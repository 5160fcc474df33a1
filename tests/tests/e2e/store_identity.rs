//! A store that checks itself (issue 12, finding 4): a store emptied, deleted, replaced by another
//! store's files or rolled back to an older copy behind the broker's back used to open as if
//! nothing had happened, and the broker served it empty or old without a word. Now each is refused
//! with a message saying what was found and how to proceed, and `--accept-store-loss` starts it.
//! Both embedded engines, as broker processes.

use std::path::Path;

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

/// Starts a broker on `dir`, has alice send bob `send_ids` (each accepted), and stops it cleanly.
async fn store_messages(engine: Engine, dir: &Path, send_ids: std::ops::RangeInclusive<u64>) {
    let broker = start(engine, dir, false).await;
    let (mut alice, _) = Raw::hello(broker.addr(), "alice", 60).await;
    for send_id in send_ids {
        let body = Bytes::from(format!("message {send_id}"));
        alice
            .send_accepted(send_id, "bob", body, Receipts::None)
            .await;
    }
    drop(alice);
    broker.terminate().await;
}

async fn start(engine: Engine, dir: &Path, accept_loss: bool) -> BrokerProcess {
    BrokerProcess::start_configured(dir, |command| {
        command.env("SWITCHBOARD_BROKER_STORE", engine.env());
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
