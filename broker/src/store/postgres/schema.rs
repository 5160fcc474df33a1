//! What the PostgreSQL database holds, and how a database of an older schema version becomes today's.
//!
//! The version is the row `schema_version` of `switchboard_meta`. Every broker that opens the
//! database runs [`migrate`] in one transaction under a transaction-level advisory lock, so brokers
//! starting together on one database migrate it once and never see a half-made schema; a database
//! with a newer version is refused rather than misread. Tables carry a `switchboard_` prefix, so the
//! broker can share a database (and its `search_path`) with other applications.
//!
//! Integers are `bigint`: ids, send ids and times are `u64`, stored as the same 64 bits reinterpreted
//! (`super::row`), so every value round-trips exactly and the order of ids below 2^63 holds.

use postgres::Client;

use crate::store::StoreError;

/// The schema this code writes.
pub(super) const SCHEMA_VERSION: i64 = 3;

/// The advisory lock key every broker takes while it migrates ("sb" in ASCII, then 1).
const MIGRATION_LOCK: i64 = 0x7362_0001;

/// The schema of a new database (version 1).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS switchboard_meta (
    key   text   PRIMARY KEY,
    value bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS switchboard_entries (
    id            bigint   PRIMARY KEY,
    mailbox       text     NOT NULL,
    kind          smallint NOT NULL,
    peer          text     NOT NULL,
    send_id       bigint   NOT NULL,
    message_id    bigint   NOT NULL,
    sent_at_ms    bigint   NOT NULL,
    expires_at_ms bigint   NOT NULL,
    receipts      smallint NOT NULL DEFAULT 0,
    body          bytea    NOT NULL
);
CREATE INDEX IF NOT EXISTS switchboard_entries_by_mailbox ON switchboard_entries (mailbox, id);
CREATE INDEX IF NOT EXISTS switchboard_entries_by_expiry ON switchboard_entries (expires_at_ms)
    WHERE expires_at_ms > 0;
CREATE TABLE IF NOT EXISTS switchboard_mailboxes (
    mailbox text   PRIMARY KEY,
    entries bigint NOT NULL,
    bytes   bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS switchboard_sent (
    sender     text   NOT NULL,
    send_id    bigint NOT NULL,
    message_id bigint NOT NULL,
    at_ms      bigint NOT NULL,
    PRIMARY KEY (sender, send_id)
);
CREATE INDEX IF NOT EXISTS switchboard_sent_by_time ON switchboard_sent (at_ms);
INSERT INTO switchboard_meta (key, value) VALUES ('last_id', 0), ('stored_id', 0)
    ON CONFLICT (key) DO NOTHING;
";

/// Version 2 adds who is connected where (`crate::cluster::presence`): one row per client id,
/// naming the broker (`node`) and its connection (`session`) that hold it, until `lease_until_ms`
/// (the database's clock) unless renewed.
const SESSIONS: &str = "
CREATE TABLE IF NOT EXISTS switchboard_sessions (
    client         text   PRIMARY KEY,
    node           text   NOT NULL,
    session        bigint NOT NULL,
    since_ms       bigint NOT NULL,
    lease_until_ms bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS switchboard_sessions_by_node ON switchboard_sessions (node);
CREATE INDEX IF NOT EXISTS switchboard_sessions_by_lease ON switchboard_sessions (lease_until_ms);
";

/// Version 3 draws ids from a sequence instead of the row `stored_id` of `switchboard_meta`, which
/// every commit had to lock (`commit.rs`): it starts above every id stored or reserved so far, and
/// `stored_id` goes. `CACHE 1` (each `nextval` from the shared sequence, none kept back in a session)
/// makes the values increase in the order they are drawn across every session. And what leaves a
/// mailbox is counted apart, in `switchboard_removed`, so a commit that only deletes from a mailbox
/// does not lock the row that commits appending to it lock: a mailbox holds its row of
/// `switchboard_mailboxes` (everything appended) less its row here (everything removed); the two
/// are deleted together once equal (maintenance, `super::PostgresStore::maintain`).
const V3: &str = "
CREATE TABLE IF NOT EXISTS switchboard_removed (
    mailbox text   PRIMARY KEY,
    entries bigint NOT NULL,
    bytes   bigint NOT NULL
);
CREATE SEQUENCE IF NOT EXISTS switchboard_ids AS bigint MINVALUE 1 CACHE 1;
SELECT setval('switchboard_ids', greatest(high, 1), high > 0) FROM (
    SELECT greatest(
        (SELECT max(value) FROM switchboard_meta WHERE key IN ('stored_id', 'last_id')),
        (SELECT max(id) FROM switchboard_entries), 0) AS high) AS h;
DELETE FROM switchboard_meta WHERE key = 'stored_id';
";

/// Brings the database behind `client` to [`SCHEMA_VERSION`], or refuses one that is newer.
pub(super) fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    let exists: bool = tx
        .query_one("SELECT to_regclass('switchboard_meta') IS NOT NULL", &[])?
        .get(0);
    let version: i64 = if exists {
        tx.query_opt(
            "SELECT value FROM switchboard_meta WHERE key = 'schema_version'",
            &[],
        )?
        .map_or(0, |row| row.get(0))
    } else {
        0
    };
    if version > SCHEMA_VERSION {
        return Err(StoreError::Incompatible(format!(
            "the PostgreSQL database has Switchboard schema version {version}; this broker \
             understands up to {SCHEMA_VERSION}"
        )));
    }
    if version < SCHEMA_VERSION {
        tracing::info!(
            from = version,
            to = SCHEMA_VERSION,
            "creating the PostgreSQL schema"
        );
        if version < 1 {
            tx.batch_execute(SCHEMA)?;
        }
        if version < 2 {
            tx.batch_execute(SESSIONS)?;
        }
        tx.batch_execute(V3)?;
        tx.execute(
            "INSERT INTO switchboard_meta (key, value) VALUES ('schema_version', $1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&SCHEMA_VERSION],
        )?;
    }
    tx.commit()?;
    Ok(())
}
