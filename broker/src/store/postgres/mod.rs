//! The shared engine (`store = "postgres"`): mailboxes in a PostgreSQL database, for brokers that
//! must outlive their machine.
//!
//! Every [`Batch`] is one transaction (`commit.rs`), written in a fixed handful of statements whatever
//! its size; what the database holds and how its schema is created and migrated is in `schema.rs`;
//! how an entry maps to a row, in `row.rs`; the statements prepared once per connection, in
//! `statements.rs`. The connection is the blocking `postgres` client: the
//! trait runs on the store's own thread, which may block on the network. Page reads have a
//! connection and a thread of their own ([`PostgresReader`]), so they do not wait behind commits. `url` is a libpq
//! connection string, so several hosts with `target_session_attrs=read-write` find the primary
//! after a failover. A call that finds the connection broken fails (the Router answers
//! `unavailable`) and later calls connect again with backoff (`connection.rs`), so service resumes
//! on its own when the database is back.
//!
//! One failure is not like the others: the connection breaking after `COMMIT` was sent and before
//! its answer came. The batch may or may not have committed; its senders hear `unavailable` all the
//! same, and a resend with the same `send_id` (through any broker) is recognised if it did: the
//! duplicate class GUARANTEES.md's cluster section names.
//!
//! Durability is the server's: with `durability = "fsync"` a commit waits for whatever
//! `synchronous_commit` the server is configured with (its WAL flushed, and with synchronous
//! standbys their confirmation); with `"os"` the session sets `synchronous_commit = off`, so a commit
//! survives a crash of the broker, not of the database server.

mod commit;
mod connection;
mod database;
mod expiry;
#[cfg(any(test, feature = "test-support"))]
pub mod harness;
mod limits;
mod row;
mod schema;
mod statements;
#[cfg(test)]
pub(crate) mod tests;

use postgres::Client;

pub use self::commit::WAKE_CHANNEL;
pub use self::database::Database;
pub use self::limits::MailboxLimits;

use self::connection::Connection;
use self::row::{from_sql, to_sql, COLUMNS};
use self::statements::Statements;
use super::{
    Batch, CommitOutcome, Durability, Entry, ExpiredEntry, MailboxStore, MailboxUsage, Maintenance,
    MaintenanceReport, PageReader, StoreError,
};

/// Mailboxes in a PostgreSQL database.
pub struct PostgresStore {
    connection: Connection,
    /// Mailbox limits checked in each commit (`limits.rs`); `None`: the Router's checks only.
    limits: Option<MailboxLimits>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The url may hold a password: never printed.
        f.debug_struct("PostgresStore")
            .field("connected", &self.connection.is_connected())
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to `url`, creates or migrates the schema, and refuses a database whose schema is
    /// newer than this broker's. Blocks on the network: call it off the actor threads.
    pub fn open(url: &str, durability: Durability) -> Result<Self, StoreError> {
        Self::open_on(Database::new(url, None)?, durability)
    }

    /// Like [`open`](Self::open), on `database` (its url and TLS, `database.rs`).
    pub fn open_on(database: Database, durability: Durability) -> Result<Self, StoreError> {
        let mut store = Self {
            connection: Connection::new(database, durability),
            limits: None,
        };
        // Connecting migrates the schema (`connection.rs`).
        store.connection.client()?;
        tracing::info!(?durability, "opened PostgreSQL store");
        Ok(store)
    }

    /// Checks `limits` in every commit, against the mailboxes' totals in the database: what a
    /// broker sharing the database with others needs, since its own counts see only its share.
    pub fn with_mailbox_limits(mut self, limits: MailboxLimits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Runs `f` on the connection; a failure that broke the connection drops it, so a later call
    /// connects again.
    fn with<T>(
        &mut self,
        f: impl FnOnce(&mut Client, &Statements) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.connection.with(f)
    }
}

/// Page reads of a [`PostgresStore`]'s mailboxes on a connection of their own, so a read does not
/// wait behind a commit that waits for the flushes ([`MailboxStore::page_reader`]). It connects on
/// its first read and again, with the same backoff, after its connection broke.
pub struct PostgresReader {
    connection: Connection,
}

impl std::fmt::Debug for PostgresReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresReader")
            .field("connected", &self.connection.is_connected())
            .finish_non_exhaustive()
    }
}

impl PageReader for PostgresReader {
    fn fetch(&mut self, mailbox: &str, after: u64, limit: usize) -> Result<Vec<Entry>, StoreError> {
        read_page(&mut self.connection, mailbox, after, limit)
    }

    fn entries_in(&mut self, mailbox: &str) -> Result<u64, StoreError> {
        count_entries(&mut self.connection, mailbox)
    }
}

/// What `mailbox` holds: appended less removed (`schema.rs`, version 3), as one snapshot sees them.
fn count_entries(connection: &mut Connection, mailbox: &str) -> Result<u64, StoreError> {
    connection.with(|client, statements| {
        let held: Option<i64> = match client.query_opt(&statements.entries_in, &[&mailbox])? {
            Some(row) => row.try_get(0)?,
            None => None, // Never written to, or emptied and tidied away.
        };
        Ok(held.map_or(0, |n| n.max(0) as u64))
    })
}

/// Up to `limit` entries of `mailbox` above `after`, in id order.
fn read_page(
    connection: &mut Connection,
    mailbox: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<Entry>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    connection.with(|client, statements| {
        let rows = client.query(&statements.fetch, &[&mailbox, &to_sql(after), &limit])?;
        rows.iter().map(|r| row::entry(r, true)).collect()
    })
}

impl MailboxStore for PostgresStore {
    fn commit(&mut self, batch: &Batch) -> Result<CommitOutcome, StoreError> {
        if batch.is_empty() {
            return Ok(CommitOutcome::default());
        }
        let limits = self.limits;
        self.with(|client, statements| {
            let mut tx = client.transaction()?;
            let mut grown = Vec::new();
            let outcome = commit::commit(&mut tx, statements, batch, limits.as_ref(), &mut grown)?;
            if let Err(error) = tx.commit() {
                if client.is_closed() {
                    tracing::warn!(
                        appends = batch.appends.len(),
                        deletes = batch.deletes.len(),
                        %error,
                        "the answer to COMMIT was lost: the batch may have committed; its senders \
                         hear unavailable and a resend with the same send id is recognised"
                    );
                }
                return Err(error.into());
            }
            commit::wake(client, statements, &grown);
            Ok(outcome)
        })
    }

    fn fetch(&mut self, mailbox: &str, after: u64, limit: usize) -> Result<Vec<Entry>, StoreError> {
        read_page(&mut self.connection, mailbox, after, limit)
    }

    fn entries_in(&mut self, mailbox: &str) -> Result<u64, StoreError> {
        count_entries(&mut self.connection, mailbox)
    }

    fn page_reader(&mut self) -> Option<Box<dyn PageReader>> {
        Some(Box::new(PostgresReader {
            connection: self.connection.another(),
        }))
    }

    fn usage(&mut self) -> Result<Vec<MailboxUsage>, StoreError> {
        self.with(|client, _| {
            // Appended less removed (`schema.rs`, version 3).
            let rows = client.query(
                "SELECT * FROM (
                     SELECT m.mailbox, m.entries - coalesce(r.entries, 0) AS entries,
                            m.bytes - coalesce(r.bytes, 0) AS bytes
                     FROM switchboard_mailboxes m
                     LEFT JOIN switchboard_removed r ON r.mailbox = m.mailbox) AS u
                 WHERE entries > 0",
                &[],
            )?;
            rows.iter()
                .map(|r| {
                    Ok(MailboxUsage {
                        mailbox: r.try_get(0)?,
                        entries: r.try_get::<_, i64>(1)?.max(0) as u64,
                        bytes: r.try_get::<_, i64>(2)?.max(0) as u64,
                    })
                })
                .collect()
        })
    }

    fn expired(&mut self, now_ms: u64, limit: usize) -> Result<Vec<ExpiredEntry>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(|client, _| {
            // One broker sweeps at a time (`expiry.rs`); the others find nothing due.
            if !expiry::may_sweep(client)? {
                return Ok(Vec::new());
            }
            let rows = client.query(
                &format!(
                    "SELECT {COLUMNS}, length(body) FROM switchboard_entries
                     WHERE expires_at_ms > 0 AND expires_at_ms <= $1
                     ORDER BY expires_at_ms LIMIT $2"
                ),
                &[&to_sql(now_ms), &limit],
            )?;
            rows.iter().map(row::expired).collect()
        })
    }

    fn sent(&mut self, sender: &str, send_id: u64) -> Result<Option<u64>, StoreError> {
        self.with(|client, statements| {
            let row = client.query_opt(&statements.sent, &[&sender, &to_sql(send_id)])?;
            row.map(|r| Ok(from_sql(r.try_get(0)?))).transpose()
        })
    }

    fn maintain(&mut self, what: &Maintenance) -> Result<MaintenanceReport, StoreError> {
        self.with(|client, _| {
            let mut tx = client.transaction()?;
            let mut forgotten = tx.execute(
                "DELETE FROM switchboard_sent WHERE at_ms < $1",
                &[&to_sql(what.forget_sent_before_ms)],
            )?;
            let remembered: i64 = tx
                .query_one("SELECT count(*) FROM switchboard_sent", &[])?
                .try_get(0)?;
            let excess = (remembered.max(0) as u64).saturating_sub(what.remember_at_most);
            if excess > 0 {
                // Keeps exactly the newest, in acceptance order (time, then broker id: the sends
                // of one batch share a millisecond), in one statement, so that two brokers
                // maintaining at once each keep the same newest ones and never forget more.
                forgotten += tx.execute(
                    "DELETE FROM switchboard_sent WHERE (sender, send_id) IN (
                         SELECT sender, send_id FROM switchboard_sent
                         ORDER BY at_ms DESC, message_id DESC OFFSET $1)",
                    &[&to_sql(what.remember_at_most)],
                )?;
            }
            // Mailboxes left empty lose both usage rows (appended, removed). Their rows of
            // `switchboard_mailboxes` lock in name order, as commits lock them; a commit appending
            // to one holds its row, so this waits for it and then finds it no longer empty.
            tx.execute(
                "WITH empty AS (
                     SELECT m.mailbox FROM switchboard_mailboxes m
                     JOIN switchboard_removed r ON r.mailbox = m.mailbox
                     WHERE m.entries <= r.entries ORDER BY m.mailbox FOR UPDATE OF m),
                 gone AS (
                     DELETE FROM switchboard_mailboxes m USING switchboard_removed r
                     WHERE m.mailbox IN (SELECT mailbox FROM empty)
                       AND r.mailbox = m.mailbox AND m.entries <= r.entries
                     RETURNING m.mailbox)
                 DELETE FROM switchboard_removed WHERE mailbox IN (SELECT mailbox FROM gone)",
                &[],
            )?;
            tx.commit()?;
            // Free space is PostgreSQL's autovacuum's business.
            Ok(MaintenanceReport {
                forgotten,
                reclaimed_pages: 0,
            })
        })
    }

    fn last_id(&mut self) -> Result<u64, StoreError> {
        self.with(|client, _| {
            // The sequence's value covers every id drawn, committed or not.
            let row = client.query_one(
                "SELECT greatest(
                     (SELECT value FROM switchboard_meta WHERE key = 'last_id'),
                     (SELECT max(id) FROM switchboard_entries),
                     (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END
                      FROM switchboard_ids))",
                &[],
            )?;
            Ok(row.try_get::<_, Option<i64>>(0)?.map_or(0, from_sql))
        })
    }
}
