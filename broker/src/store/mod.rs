//! Durable mailboxes behind a trait.
//!
//! The Router decides *what* is stored and in which order; a [`MailboxStore`] only makes it durable and
//! reads it back. Every entry carries a broker-wide id assigned by the Router in strictly increasing
//! order, so "a mailbox in order" is "its entries by id". Writes come as a [`Batch`] of appends and
//! deletes that must commit atomically and durably in one go: the Router groups everything that arrived
//! while the previous commit ran, so durability costs one transaction and one fsync per batch, not per
//! message.
//!
//! The trait is synchronous on purpose: an implementation runs on the store's own thread
//! ([`StoreHandle`]), never on an actor thread, so it may block on disk or on a network round trip. A
//! distributed engine plugs in by implementing this trait; nothing above it changes.

mod memory;
pub(crate) mod sqlite;
mod worker;

pub use memory::MemoryStore;
pub use sqlite::SqliteStore;
pub use worker::{StoreHandle, StoreThread};

use bytes::Bytes;

/// What a mailbox entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A message from `peer` to the mailbox owner.
    Message,
    /// News for the mailbox owner about a message it sent to `peer`: the recipient acknowledged it.
    Receipt,
}

/// One entry in one mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Broker-wide, strictly increasing in the order the Router accepted entries.
    pub id: u64,
    /// The client id that owns the mailbox.
    pub mailbox: String,
    pub kind: EntryKind,
    /// For a message, its sender; for a receipt, the recipient of the original message.
    pub peer: String,
    /// The sender's own id for the message (`Send.id`).
    pub client_msg_id: u64,
    /// The broker id of the message this entry is about: `id` itself for a message, the original
    /// message's id for a receipt.
    pub message_id: u64,
    /// When the broker accepted the message, in milliseconds since the Unix epoch.
    pub sent_at_ms: u64,
    /// The message body; empty for receipts.
    pub body: Bytes,
}

/// Writes that must become durable together.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    /// New entries, in id order.
    pub appends: Vec<Entry>,
    /// Ids of entries to remove. An id may name an entry appended in this same batch.
    pub deletes: Vec<u64>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.appends.is_empty() && self.deletes.is_empty()
    }
}

/// How a store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    // Causes are part of the message and deliberately not `source()`, so an error chain printed with
    // `{:#}` does not repeat them.
    #[error("sqlite: {0}")]
    Sqlite(rusqlite::Error),
    #[error("cannot prepare data directory {path}: {cause}")]
    DataDir {
        path: std::path::PathBuf,
        cause: std::io::Error,
    },
    #[error("stored entry {id} is corrupt: {what}")]
    Corrupt { id: u64, what: String },
    #[error("the store thread has stopped")]
    Stopped,
    #[error("cannot start the store thread: {0}")]
    Thread(std::io::Error),
    /// A merged commit failed; every caller whose writes were in it gets the cause as text.
    #[error("commit failed: {0}")]
    Failed(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        StoreError::Sqlite(error)
    }
}

/// Durable storage for mailboxes. See the module documentation for the contract.
pub trait MailboxStore: Send + 'static {
    /// Applies every append, then every delete, atomically. Returns only once the batch is as durable
    /// as the implementation promises (for SQLite: committed with `synchronous=FULL`).
    fn commit(&mut self, batch: &Batch) -> Result<(), StoreError>;

    /// Up to `limit` entries of `mailbox` with an id greater than `after`, in id order.
    fn fetch(&mut self, mailbox: &str, after: u64, limit: usize) -> Result<Vec<Entry>, StoreError>;

    /// How many entries `mailbox` holds.
    fn count(&mut self, mailbox: &str) -> Result<u64, StoreError>;

    /// The highest id ever committed, even if that entry has since been deleted; 0 for a new store.
    /// The Router continues numbering from here after a restart, so ids are never reused.
    fn last_id(&mut self) -> Result<u64, StoreError>;
}

/// The contract every [`MailboxStore`] must keep, run against each implementation. A new engine
/// adds one line to the `conformance!` list at the bottom.
#[cfg(test)]
mod conformance {
    use super::*;

    fn entry(id: u64, mailbox: &str, body: &str) -> Entry {
        Entry {
            id,
            mailbox: mailbox.into(),
            kind: EntryKind::Message,
            peer: "alice".into(),
            client_msg_id: id.wrapping_mul(10),
            message_id: id,
            sent_at_ms: 1_700_000_000_000 + id,
            body: Bytes::copy_from_slice(body.as_bytes()),
        }
    }

    fn append(store: &mut dyn MailboxStore, entries: Vec<Entry>) {
        store
            .commit(&Batch {
                appends: entries,
                deletes: vec![],
            })
            .expect("commit");
    }

    fn ids(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.id).collect()
    }

    pub fn reads_back_in_order_with_paging(store: &mut dyn MailboxStore) {
        append(store, (1..=5).map(|i| entry(i, "bob", "x")).collect());
        append(store, vec![entry(6, "carol", "y"), entry(7, "bob", "z")]);
        assert_eq!(ids(&store.fetch("bob", 0, 3).expect("fetch")), [1, 2, 3]);
        assert_eq!(ids(&store.fetch("bob", 3, 10).expect("fetch")), [4, 5, 7]);
        assert_eq!(
            ids(&store.fetch("bob", 7, 10).expect("fetch")),
            Vec::<u64>::new()
        );
        assert_eq!(store.fetch("nobody", 0, 10).expect("fetch"), vec![]);
        assert_eq!(store.count("bob").expect("count"), 6);
        assert_eq!(store.count("carol").expect("count"), 1);
        assert_eq!(store.count("nobody").expect("count"), 0);
    }

    pub fn keeps_every_field(store: &mut dyn MailboxStore) {
        let mut receipt = entry(1 << 62, "alice", "");
        receipt.kind = EntryKind::Receipt;
        receipt.peer = "bob".into();
        receipt.client_msg_id = u64::MAX;
        receipt.message_id = 42;
        receipt.sent_at_ms = u64::MAX;
        let mut binary = entry(3, "alice", "");
        binary.body = Bytes::from_static(&[0, 0xff, 0xfe, b'x']);
        append(store, vec![binary.clone(), receipt.clone()]);
        assert_eq!(
            store.fetch("alice", 0, 10).expect("fetch"),
            vec![binary, receipt]
        );
    }

    pub fn deletes_including_within_the_same_batch(store: &mut dyn MailboxStore) {
        append(store, (1..=3).map(|i| entry(i, "bob", "x")).collect());
        store
            .commit(&Batch {
                appends: vec![entry(4, "bob", "x"), entry(5, "bob", "x")],
                deletes: vec![2, 4, 99],
            })
            .expect("commit");
        assert_eq!(ids(&store.fetch("bob", 0, 10).expect("fetch")), [1, 3, 5]);
        assert_eq!(store.count("bob").expect("count"), 3);
    }

    pub fn last_id_survives_deleting_everything(store: &mut dyn MailboxStore) {
        assert_eq!(store.last_id().expect("last id"), 0);
        append(store, vec![entry(7, "bob", "x"), entry(9, "bob", "x")]);
        store
            .commit(&Batch {
                appends: vec![],
                deletes: vec![7, 9],
            })
            .expect("commit");
        assert_eq!(store.count("bob").expect("count"), 0);
        assert_eq!(store.last_id().expect("last id"), 9);
    }

    macro_rules! conformance {
        ($($engine:ident => $make:expr;)*) => {$(
            mod $engine {
                use super::*;

                #[test]
                fn reads_back_in_order_with_paging() {
                    let (_dir, mut store) = $make;
                    super::reads_back_in_order_with_paging(&mut store);
                }

                #[test]
                fn keeps_every_field() {
                    let (_dir, mut store) = $make;
                    super::keeps_every_field(&mut store);
                }

                #[test]
                fn deletes_including_within_the_same_batch() {
                    let (_dir, mut store) = $make;
                    super::deletes_including_within_the_same_batch(&mut store);
                }

                #[test]
                fn last_id_survives_deleting_everything() {
                    let (_dir, mut store) = $make;
                    super::last_id_survives_deleting_everything(&mut store);
                }
            }
        )*};
    }

    fn open_sqlite() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path()).expect("open");
        (dir, store)
    }

    conformance! {
        memory => ((), MemoryStore::new());
        sqlite => open_sqlite();
    }

    #[test]
    fn sqlite_keeps_entries_and_last_id_across_reopen() {
        let (dir, mut store) = open_sqlite();
        append(
            &mut store,
            vec![entry(1, "bob", "one"), entry(2, "bob", "two")],
        );
        store
            .commit(&Batch {
                appends: vec![],
                deletes: vec![2],
            })
            .expect("commit");
        drop(store);
        let mut store = SqliteStore::open(dir.path()).expect("reopen");
        assert_eq!(
            store.fetch("bob", 0, 10).expect("fetch"),
            vec![entry(1, "bob", "one")]
        );
        assert_eq!(store.last_id().expect("last id"), 2);
    }

    #[test]
    fn sqlite_refuses_a_file_from_a_newer_version() {
        let (dir, store) = open_sqlite();
        drop(store);
        let conn =
            rusqlite::Connection::open(dir.path().join(super::sqlite::DB_FILE)).expect("open");
        conn.execute_batch("PRAGMA user_version = 99")
            .expect("pragma");
        drop(conn);
        let err = SqliteStore::open(dir.path()).expect_err("refused");
        assert!(err.to_string().contains("schema version 99"), "{err}");
    }

    #[test]
    fn the_store_thread_serves_and_merges_commits() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let (handle, thread) = StoreHandle::spawn(Box::new(MemoryStore::new()), 64).expect("spawn");
        rt.block_on(async {
            let commits = (1..=20).map(|i| {
                let handle = handle.clone();
                async move {
                    handle
                        .commit(Batch {
                            appends: vec![entry(i, "bob", "x")],
                            deletes: vec![],
                        })
                        .await
                }
            });
            for result in futures_util::future::join_all(commits).await {
                result.expect("commit");
            }
            let page = handle.fetch("bob".into(), 0, 100).await.expect("fetch");
            assert_eq!(ids(&page), (1..=20).collect::<Vec<_>>());
            assert_eq!(handle.count("bob".into()).await.expect("count"), 20);
            assert_eq!(handle.last_id().await.expect("last id"), 20);
        });
        drop(handle);
        thread.join();
    }
}
