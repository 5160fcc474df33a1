//! What a SQLite data file holds, and how a file of an older schema version becomes today's.
//!
//! The version lives in `PRAGMA user_version`. A file from an older broker is migrated in one
//! exclusive transaction on first open, so a crash during the migration leaves the old file intact;
//! a file with a newer version is refused rather than misread. Schema 3 added the receipt choice of
//! each message; `entries` clustered by `(mailbox, id)` (`WITHOUT ROWID`) was measured and lost
//! (ARCHITECTURE.md, "Choosing the store engine").

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use crate::store::StoreError;

/// The schema this code writes.
pub(super) const SCHEMA_VERSION: i64 = 3;

/// Version 1 → 2: expiry times, per-mailbox usage and remembered sends.
const MIGRATE_1_TO_2: &str = "
ALTER TABLE entries ADD COLUMN expires_at_ms INTEGER NOT NULL DEFAULT 0;
CREATE TABLE mailboxes (
    mailbox TEXT PRIMARY KEY,
    entries INTEGER NOT NULL,
    bytes   INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO mailboxes (mailbox, entries, bytes)
    SELECT mailbox, count(*), coalesce(sum(length(body)), 0) FROM entries GROUP BY mailbox;
";

/// Version 2 → 3: which receipts each message's sender asked for (0: all, what every message before
/// had).
const MIGRATE_2_TO_3: &str = "
ALTER TABLE entries ADD COLUMN receipts INTEGER NOT NULL DEFAULT 0;
";

/// The schema of a new file. The column `client_msg_id` (in `entries` and `sent`) holds the sender's
/// send id; it keeps its old name because renaming it would take a migration.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS entries (
    id            INTEGER PRIMARY KEY,
    mailbox       TEXT    NOT NULL,
    kind          INTEGER NOT NULL,
    peer          TEXT    NOT NULL,
    client_msg_id INTEGER NOT NULL,
    message_id    INTEGER NOT NULL,
    sent_at_ms    INTEGER NOT NULL,
    body          BLOB    NOT NULL,
    expires_at_ms INTEGER NOT NULL DEFAULT 0,
    receipts      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS entries_by_mailbox ON entries (mailbox, id);
CREATE INDEX IF NOT EXISTS entries_by_expiry ON entries (expires_at_ms) WHERE expires_at_ms > 0;
CREATE TABLE IF NOT EXISTS mailboxes (
    mailbox TEXT PRIMARY KEY,
    entries INTEGER NOT NULL,
    bytes   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sent (
    sender        TEXT    NOT NULL,
    client_msg_id INTEGER NOT NULL,
    message_id    INTEGER NOT NULL,
    at_ms         INTEGER NOT NULL,
    PRIMARY KEY (sender, client_msg_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sent_by_time ON sent (at_ms);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
";

/// Brings the file at `path` (open as `conn`) to [`SCHEMA_VERSION`].
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Incompatible(format!(
            "{} has schema version {version}; this broker understands up to {SCHEMA_VERSION}",
            path.display()
        )));
    }
    if version == SCHEMA_VERSION {
        // Nothing to write: a start on a full disk must not need a free byte here.
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
    if version == 1 {
        tracing::info!("migrating the store from schema 1 to 2");
        tx.execute_batch(MIGRATE_1_TO_2)?;
    }
    if (1..=2).contains(&version) {
        tracing::info!("migrating the store from schema {version} to 3");
        tx.execute_batch(MIGRATE_2_TO_3)?;
    }
    tx.execute_batch(SCHEMA)?;
    tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))?;
    tx.commit()?;
    Ok(())
}
