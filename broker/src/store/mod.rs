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

/// How hard a commit works before it counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Written and fsynced: survives a crash of the machine (power loss), not only of the broker.
    Fsync,
    /// Handed to the operating system: survives a crash of the broker process, not of the machine.
    Os,
}

use bytes::Bytes;

/// What a mailbox entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A message from `peer` to the mailbox owner.
    Message,
    /// A receipt: `peer` acknowledged a message the mailbox owner sent.
    Delivered,
    /// A receipt: a message the mailbox owner sent to `peer` expired undelivered and was removed.
    Expired,
}

impl EntryKind {
    pub fn is_receipt(self) -> bool {
        !matches!(self, EntryKind::Message)
    }
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
    /// When an undelivered message expires, in milliseconds since the Unix epoch; 0 for never.
    pub expires_at_ms: u64,
    /// The message body; empty for receipts.
    pub body: Bytes,
}

/// Writes that must become durable together.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    /// New entries, in id order. A message whose sender already sent the same `client_msg_id`
    /// (within the store's memory of sends, see [`MailboxStore::maintain`]) is not stored again: the
    /// commit reports it as a [`Duplicate`].
    pub appends: Vec<Entry>,
    /// Ids of entries to remove. An id may name an entry appended in this same batch.
    pub deletes: Vec<u64>,
    /// Sends to remember without storing their message: it was delivered and acknowledged before
    /// it reached the store. Applied before the appends, so a resend of one of these in the same
    /// batch is recognised as a [`Duplicate`].
    pub remembered: Vec<Remembered>,
    /// Ids up to this one may already be in use outside the store (handed out before their commit):
    /// the store's high-water mark ([`MailboxStore::last_id`]) must cover them once the batch commits,
    /// so they are never given out again after a restart. 0 for none.
    pub reserve_ids_through: u64,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.appends.is_empty()
            && self.deletes.is_empty()
            && self.remembered.is_empty()
            && self.reserve_ids_through == 0
    }

    /// Adds `other`'s writes after this batch's own.
    pub fn merge(&mut self, other: Batch) {
        self.appends.extend(other.appends);
        self.deletes.extend(other.deletes);
        self.remembered.extend(other.remembered);
        self.reserve_ids_through = self.reserve_ids_through.max(other.reserve_ids_through);
    }
}

/// A send the store remembers, so a resend of it is recognised, though its message is not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remembered {
    pub sender: String,
    pub client_msg_id: u64,
    /// The broker id the message had.
    pub message_id: u64,
    /// When the broker accepted it, ms since the epoch (for [`Maintenance`]).
    pub at_ms: u64,
}

/// A message append that was a resend of one already stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duplicate {
    /// The id the Router gave the resend; nothing was stored under it.
    pub id: u64,
    /// The broker id of the original message, which is what the sender is told again.
    pub original: u64,
}

/// What a commit did beyond what the batch asked.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CommitOutcome {
    pub duplicates: Vec<Duplicate>,
}

/// How full one mailbox is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxUsage {
    pub mailbox: String,
    /// Entries of every kind.
    pub entries: u64,
    /// Sum of the body sizes.
    pub bytes: u64,
}

/// An entry whose time to live ran out, as [`MailboxStore::expired`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredEntry {
    /// The entry, with an empty body.
    pub entry: Entry,
    /// The size of the body that was left out.
    pub body_len: u64,
}

/// Housekeeping the Router asks for now and then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Maintenance {
    /// Forget sends accepted before this time (ms since the epoch): a resend after that is new.
    pub forget_sent_before_ms: u64,
    /// Remember at most this many sends; the oldest go first.
    pub remember_at_most: u64,
}

/// What housekeeping did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Remembered sends that were forgotten.
    pub forgotten: u64,
    /// Free pages handed back to the file system.
    pub reclaimed_pages: u64,
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
    #[error("{0}")]
    Incompatible(String),
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
    /// Applies every append, then every delete, atomically, and remembers each appended message's
    /// `(peer, client_msg_id)` so a resend is recognised. Returns only once the batch is as durable as
    /// the implementation promises (for SQLite: per the `durability` setting).
    fn commit(&mut self, batch: &Batch) -> Result<CommitOutcome, StoreError>;

    /// Up to `limit` entries of `mailbox` with an id greater than `after`, in id order.
    fn fetch(&mut self, mailbox: &str, after: u64, limit: usize) -> Result<Vec<Entry>, StoreError>;

    /// How many entries `mailbox` holds.
    fn count(&mut self, mailbox: &str) -> Result<u64, StoreError>;

    /// Usage of every non-empty mailbox; read once at start-up. Costs one row per mailbox, not per
    /// entry.
    fn usage(&mut self) -> Result<Vec<MailboxUsage>, StoreError>;

    /// Up to `limit` entries whose expiry time is at or before `now_ms`, soonest first, without their
    /// bodies: the caller only removes them and tells their senders.
    fn expired(&mut self, now_ms: u64, limit: usize) -> Result<Vec<ExpiredEntry>, StoreError>;

    /// The broker id a remembered send got, if `sender` sent `client_msg_id` before.
    fn sent(&mut self, sender: &str, client_msg_id: u64) -> Result<Option<u64>, StoreError>;

    /// Forgets old sends and hands free space back; see [`Maintenance`].
    fn maintain(&mut self, what: &Maintenance) -> Result<MaintenanceReport, StoreError>;

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
            expires_at_ms: 0,
            body: Bytes::copy_from_slice(body.as_bytes()),
        }
    }

    fn append(store: &mut dyn MailboxStore, entries: Vec<Entry>) {
        store
            .commit(&Batch {
                appends: entries,
                deletes: vec![],
                ..Default::default()
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
        receipt.kind = EntryKind::Expired;
        receipt.peer = "bob".into();
        receipt.client_msg_id = u64::MAX;
        receipt.message_id = 42;
        receipt.sent_at_ms = u64::MAX;
        receipt.expires_at_ms = u64::MAX - 1;
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
                ..Default::default()
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
                ..Default::default()
            })
            .expect("commit");
        assert_eq!(store.count("bob").expect("count"), 0);
        assert_eq!(store.last_id().expect("last id"), 9);
    }

    pub fn recognises_resends_across_and_within_batches(store: &mut dyn MailboxStore) {
        let first = store
            .commit(&Batch {
                appends: vec![entry(1, "bob", "x")],
                deletes: vec![],
                ..Default::default()
            })
            .expect("commit");
        assert_eq!(first, CommitOutcome::default());
        // Same sender, same client id: a resend, whatever the recipient or body.
        let mut resend = entry(2, "carol", "y");
        resend.client_msg_id = 10;
        let mut other = entry(3, "bob", "z");
        other.peer = "dave".into();
        other.client_msg_id = 10;
        let mut again = entry(4, "bob", "z");
        again.peer = "dave".into();
        again.client_msg_id = 10;
        let outcome = store
            .commit(&Batch {
                appends: vec![resend, other, again],
                deletes: vec![1],
                ..Default::default()
            })
            .expect("commit");
        assert_eq!(
            outcome.duplicates,
            [
                Duplicate { id: 2, original: 1 },
                Duplicate { id: 4, original: 3 }
            ]
        );
        assert_eq!(ids(&store.fetch("bob", 0, 10).expect("fetch")), [3]);
        assert_eq!(store.count("carol").expect("count"), 0);
        // Remembered even after the original was delivered and deleted.
        assert_eq!(store.sent("alice", 10).expect("sent"), Some(1));
        assert_eq!(store.sent("alice", 11).expect("sent"), None);
        assert_eq!(store.last_id().expect("last id"), 4);
    }

    pub fn remembers_sends_it_does_not_store(store: &mut dyn MailboxStore) {
        let remembered = |client_msg_id, message_id| Remembered {
            sender: "alice".into(),
            client_msg_id,
            message_id,
            at_ms: 1_700_000_000_000,
        };
        let outcome = store
            .commit(&Batch {
                remembered: vec![remembered(70, 5)],
                reserve_ids_through: 100,
                ..Default::default()
            })
            .expect("commit");
        assert_eq!(outcome, CommitOutcome::default());
        assert_eq!(store.sent("alice", 70).expect("sent"), Some(5));
        assert_eq!(store.count("bob").expect("count"), 0);
        // Ids up to the reservation are never given out again.
        assert_eq!(store.last_id().expect("last id"), 100);
        // A resend of a remembered send, in a later batch and in the same batch.
        let mut later = entry(101, "bob", "x");
        later.client_msg_id = 70;
        let mut same = entry(103, "bob", "y");
        same.client_msg_id = 71;
        let outcome = store
            .commit(&Batch {
                appends: vec![later, same],
                remembered: vec![remembered(71, 102)],
                ..Default::default()
            })
            .expect("commit");
        assert_eq!(
            outcome.duplicates,
            [
                Duplicate {
                    id: 101,
                    original: 5
                },
                Duplicate {
                    id: 103,
                    original: 102
                }
            ]
        );
        assert_eq!(store.count("bob").expect("count"), 0);
        assert_eq!(store.last_id().expect("last id"), 103);
    }

    pub fn tracks_usage(store: &mut dyn MailboxStore) {
        append(store, vec![entry(1, "bob", "abc"), entry(2, "bob", "de")]);
        append(store, vec![entry(3, "carol", "f")]);
        let mut usage = store.usage().expect("usage");
        usage.sort_by(|a, b| a.mailbox.cmp(&b.mailbox));
        let of = |mailbox: &str, entries, bytes| MailboxUsage {
            mailbox: mailbox.into(),
            entries,
            bytes,
        };
        assert_eq!(usage, [of("bob", 2, 5), of("carol", 1, 1)]);
        store
            .commit(&Batch {
                appends: vec![entry(4, "bob", "ghij")],
                deletes: vec![1, 3, 4],
                ..Default::default()
            })
            .expect("commit");
        assert_eq!(store.usage().expect("usage"), [of("bob", 1, 2)]);
        assert_eq!(store.count("bob").expect("count"), 1);
        assert_eq!(store.count("carol").expect("count"), 0);
    }

    pub fn lists_expired_entries_without_bodies(store: &mut dyn MailboxStore) {
        let mut soon = entry(1, "bob", "soon");
        soon.expires_at_ms = 1_000;
        let never = entry(2, "bob", "never");
        let mut later = entry(3, "carol", "later!");
        later.expires_at_ms = 2_000;
        let mut sooner = entry(4, "carol", "x");
        sooner.expires_at_ms = 500;
        append(store, vec![soon, never, later, sooner]);
        let due = store.expired(1_500, 10).expect("expired");
        let got: Vec<(u64, u64, usize)> = due
            .iter()
            .map(|e| (e.entry.id, e.body_len, e.entry.body.len()))
            .collect();
        assert_eq!(got, [(4, 1, 0), (1, 4, 0)]);
        assert_eq!(store.expired(5_000, 1).expect("expired").len(), 1);
        assert_eq!(store.expired(5_000, 10).expect("expired").len(), 3);
    }

    pub fn forgets_old_sends(store: &mut dyn MailboxStore) {
        let sends: Vec<Entry> = (1..=5)
            .map(|i| {
                let mut e = entry(i, "bob", "x");
                e.sent_at_ms = i * 100;
                e
            })
            .collect();
        append(store, sends);
        let report = store
            .maintain(&Maintenance {
                forget_sent_before_ms: 200,
                remember_at_most: 3,
            })
            .expect("maintain");
        assert_eq!(report.forgotten, 2);
        let remembered: Vec<u64> = (1..=5)
            .filter(|i| store.sent("alice", i * 10).expect("sent").is_some())
            .collect();
        assert_eq!(remembered, [3, 4, 5]);
        // Forgotten means a resend is stored as new.
        let mut resend = entry(6, "bob", "x");
        resend.client_msg_id = 10;
        append(store, vec![resend]);
        assert_eq!(store.count("bob").expect("count"), 6);
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

                #[test]
                fn recognises_resends_across_and_within_batches() {
                    let (_dir, mut store) = $make;
                    super::recognises_resends_across_and_within_batches(&mut store);
                }

                #[test]
                fn remembers_sends_it_does_not_store() {
                    let (_dir, mut store) = $make;
                    super::remembers_sends_it_does_not_store(&mut store);
                }

                #[test]
                fn tracks_usage() {
                    let (_dir, mut store) = $make;
                    super::tracks_usage(&mut store);
                }

                #[test]
                fn lists_expired_entries_without_bodies() {
                    let (_dir, mut store) = $make;
                    super::lists_expired_entries_without_bodies(&mut store);
                }

                #[test]
                fn forgets_old_sends() {
                    let (_dir, mut store) = $make;
                    super::forgets_old_sends(&mut store);
                }
            }
        )*};
    }

    fn open_sqlite() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path(), Durability::Fsync).expect("open");
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
                ..Default::default()
            })
            .expect("commit");
        drop(store);
        let mut store = SqliteStore::open(dir.path(), Durability::Fsync).expect("reopen");
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
        let err = SqliteStore::open(dir.path(), Durability::Fsync).expect_err("refused");
        assert!(err.to_string().contains("schema version 99"), "{err}");
    }

    #[test]
    fn sqlite_migrates_a_version_1_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let conn =
            rusqlite::Connection::open(dir.path().join(super::sqlite::DB_FILE)).expect("open");
        conn.execute_batch(
            "CREATE TABLE entries (id INTEGER PRIMARY KEY, mailbox TEXT NOT NULL, kind INTEGER NOT NULL,
                 peer TEXT NOT NULL, client_msg_id INTEGER NOT NULL, message_id INTEGER NOT NULL,
                 sent_at_ms INTEGER NOT NULL, body BLOB NOT NULL);
             CREATE INDEX entries_by_mailbox ON entries (mailbox, id);
             CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             INSERT INTO entries VALUES (1, 'bob', 0, 'alice', 10, 1, 1700000000001, x'6f6e65');
             INSERT INTO entries VALUES (2, 'alice', 1, 'bob', 10, 1, 1700000000002, x'');
             INSERT INTO meta VALUES ('last_id', 2);
             PRAGMA user_version = 1;",
        )
        .expect("version 1 file");
        drop(conn);
        let mut store = SqliteStore::open(dir.path(), Durability::Fsync).expect("migrated");
        assert_eq!(
            store.fetch("bob", 0, 10).expect("fetch"),
            vec![entry(1, "bob", "one")]
        );
        assert_eq!(store.count("alice").expect("count"), 1);
        assert_eq!(store.last_id().expect("last id"), 2);
        let mut usage = store.usage().expect("usage");
        usage.sort_by(|a, b| a.mailbox.cmp(&b.mailbox));
        assert_eq!(
            usage
                .iter()
                .map(|u| (u.entries, u.bytes))
                .collect::<Vec<_>>(),
            [(1, 0), (1, 3)]
        );
    }

    /// Under steady append/delete churn the file stops growing: freed pages are reused.
    #[test]
    fn sqlite_file_stops_growing_under_churn() {
        let (dir, mut store) = open_sqlite();
        let on_disk = || {
            ["switchboard.db", "switchboard.db-wal"]
                .iter()
                .filter_map(|f| std::fs::metadata(dir.path().join(f)).ok())
                .map(|m| m.len())
                .sum::<u64>()
        };
        let mut next = 1;
        let mut sizes = Vec::new();
        for _round in 0..8 {
            let first = next;
            for _ in 0..10 {
                let appends = (next..next + 200)
                    .map(|i| entry(i, "bob", &"x".repeat(512)))
                    .collect();
                next += 200;
                append(&mut store, appends);
            }
            for chunk in (first..next).collect::<Vec<_>>().chunks(200) {
                store
                    .commit(&Batch {
                        appends: vec![],
                        deletes: chunk.to_vec(),
                        ..Default::default()
                    })
                    .expect("commit");
            }
            store
                .maintain(&Maintenance {
                    forget_sent_before_ms: 2_000_000_000_000,
                    remember_at_most: 1,
                })
                .expect("maintain");
            sizes.push(on_disk());
        }
        let settled = sizes[2];
        assert!(
            sizes[3..]
                .iter()
                .all(|&size| size <= settled + settled / 10),
            "file keeps growing: {sizes:?}"
        );
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
                            ..Default::default()
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
