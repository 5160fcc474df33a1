//! Durable mailboxes behind a trait.
//!
//! The Router decides *what* is stored; a [`MailboxStore`] only makes it durable and reads it back.
//! Every stored entry carries a broker-wide id, and within a mailbox ids increase in commit order, so
//! "a mailbox in order" is "its entries by id" and a reader paging `id > cursor` never skips an entry
//! that commits later. With a store of its own the Router assigns ids in strictly increasing order
//! and they are stored as given. Brokers sharing one store (PostgreSQL, cluster mode) cannot: their
//! Routers give out provisional ids ([`PROVISIONAL_IDS`]) and the store assigns each append the next
//! id in commit order inside the committing transaction, reporting it ([`Renumbered`]). Writes come as a [`Batch`] of appends and
//! deletes that must commit atomically and durably in one go: the Router groups everything that arrived
//! while the previous commit ran, so durability costs one transaction and one fsync per batch, not per
//! message.
//!
//! The trait is synchronous on purpose: an implementation runs on the store's own thread
//! ([`StoreHandle`]), never on an actor thread, so it may block on disk or on a network round trip. A
//! distributed engine plugs in by implementing this trait; nothing above it changes.

mod batch;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod entry;
mod error;
mod identity;
mod lock;
pub(crate) mod log;
mod mark;
mod memory;
mod oldest;
pub mod postgres;
pub(crate) mod sqlite;
mod watch;
mod worker;

pub use batch::{
    Batch, CommitOutcome, Duplicate, Remembered, Renumbered, ID_RESERVATION, PROVISIONAL_IDS,
};
pub use entry::{Entry, EntryKind, ExpiredEntry, MailboxUsage};
pub use error::{Damaged, StoreError};
pub use lock::DataDirLock;
pub use log::{check as check_log, CheckReport, LogOptions, LogStore, TornTail};
pub use memory::MemoryStore;
pub use postgres::{PostgresReader, PostgresStore};
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

/// Durable storage for mailboxes. See the module documentation for the contract.
pub trait MailboxStore: Send + 'static {
    /// Applies every append, then every delete, atomically, and remembers each appended message's
    /// `(peer, send_id)` so a resend is recognised. Returns only once the batch is as durable as
    /// the implementation promises (for SQLite: per the `durability` setting).
    fn commit(&mut self, batch: &Batch) -> Result<CommitOutcome, StoreError>;

    /// Up to `limit` entries of `mailbox` with an id greater than `after`, in id order.
    fn fetch(&mut self, mailbox: &str, after: u64, limit: usize) -> Result<Vec<Entry>, StoreError>;

    /// Usage of every non-empty mailbox; read once at start-up. Costs one row per mailbox, not per
    /// entry.
    fn usage(&mut self) -> Result<Vec<MailboxUsage>, StoreError>;

    /// Up to `limit` entries whose expiry time is at or before `now_ms`, soonest first, without their
    /// bodies: the caller only removes them and tells their senders.
    fn expired(&mut self, now_ms: u64, limit: usize) -> Result<Vec<ExpiredEntry>, StoreError>;

    /// The broker id a remembered send got, if `sender` sent `send_id` before.
    fn sent(&mut self, sender: &str, send_id: u64) -> Result<Option<u64>, StoreError>;

    /// Forgets old sends and hands free space back; see [`Maintenance`].
    fn maintain(&mut self, what: &Maintenance) -> Result<MaintenanceReport, StoreError>;

    /// The highest id ever committed, even if that entry has since been deleted; 0 for a new store.
    /// The Router continues numbering from here after a restart, so ids are never reused.
    fn last_id(&mut self) -> Result<u64, StoreError>;

    /// How many entries `mailbox` holds now, as [`usage`](Self::usage) counts them. A broker sharing
    /// the store asks it when a client attaches, since its own counts miss what other brokers
    /// appended and deleted; this default reads every mailbox's usage.
    fn entries_in(&mut self, mailbox: &str) -> Result<u64, StoreError> {
        Ok(self
            .usage()?
            .into_iter()
            .find(|u| u.mailbox == mailbox)
            .map_or(0, |u| u.entries))
    }

    /// A second way into the same mailboxes, for page reads on a thread of their own beside the
    /// commits ([`StoreHandle`]). An engine whose commit waits on the network and on a remote flush
    /// (PostgreSQL: the primary's WAL and a synchronous standby's) returns one, so that reading the
    /// next page of a backlog does not queue behind a commit. `None`, the default: reads share the
    /// commit thread (the embedded engines, whose page read costs less than the hand-off).
    ///
    /// A reader sees what has committed, no more: a page read may miss a commit that lands while it
    /// runs, and may still return an entry whose delete is committing. The Router allows for both
    /// (`router/deleting.rs` stamps every read; a window notes appends that land during a read).
    fn page_reader(&mut self) -> Option<Box<dyn PageReader>> {
        None
    }

    /// When the oldest entry waiting in any mailbox was accepted (ms since the epoch); `None` when
    /// every mailbox is empty. The admin listener asks once per scrape for its oldest-entry-age
    /// gauge. This default reads the first entry of every mailbox; an engine with an index in
    /// memory or an id-ordered table answers from that.
    fn oldest_sent_at_ms(&mut self) -> Result<Option<u64>, StoreError> {
        let mut oldest: Option<u64> = None;
        for usage in self.usage()? {
            if let Some(first) = self.fetch(&usage.mailbox, 0, 1)?.first() {
                oldest = Some(oldest.map_or(first.sent_at_ms, |o| o.min(first.sent_at_ms)));
            }
        }
        Ok(oldest)
    }
}

/// Page reads of a [`MailboxStore`] from a thread of their own; see [`MailboxStore::page_reader`].
pub trait PageReader: Send + 'static {
    /// As [`MailboxStore::fetch`].
    fn fetch(&mut self, mailbox: &str, after: u64, limit: usize) -> Result<Vec<Entry>, StoreError>;

    /// As [`MailboxStore::entries_in`].
    fn entries_in(&mut self, mailbox: &str) -> Result<u64, StoreError>;
}

#[cfg(test)]
mod engines {
    use super::*;

    crate::store_conformance! {
        memory => ((), MemoryStore::new());
        sqlite => crate::store::sqlite::tests::open_sqlite();
        log => crate::store::log::tests::open_log();
        // Against a PostgreSQL of the test's own; skipped where none is installed, unless `CI` is set.
        postgres => crate::store::postgres::tests::open_postgres();
    }

    #[test]
    fn the_cap_forgets_exactly_the_oldest_in_every_engine() {
        use crate::store::conformance::the_cap_forgets_exactly_the_oldest_even_within_one_millisecond as case;
        case(&mut MemoryStore::new());
        let (_dir, mut sqlite) = crate::store::sqlite::tests::open_sqlite();
        case(&mut sqlite);
        let (_dir, mut log) = crate::store::log::tests::open_log();
        case(&mut log);
        // Against a PostgreSQL of the test's own; skipped where none is installed, unless `CI` is set.
        if let Some((_db, mut postgres)) = crate::store::postgres::tests::open_postgres() {
            case(&mut postgres);
        }
    }
}
