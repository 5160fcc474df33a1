//! The statements the store runs on its hot paths, prepared once per connection.
//!
//! The `postgres` crate prepares a statement given as a string every time it runs it: a `Parse` and
//! a `Describe` round trip before the `Bind`/`Execute` one. Prepared here when the connection is made
//! (`connection.rs`; again after every reconnect, since a prepared statement lives as long as its
//! server session), each costs one round trip from then on. The periodic ones (usage at start, the
//! sweep, maintenance, the high-water mark) stay strings: they run seldom.

use postgres::{Client, Statement};

use super::row;
use crate::store::StoreError;

/// The sequence every appended entry's id is drawn from (schema version 3, `schema.rs`).
pub(super) const IDS: &str = "switchboard_ids";

/// One connection's prepared statements; see each field's SQL in [`Statements::prepare`].
pub(super) struct Statements {
    /// A commit's first statement: deletes the entries `$1` (ids, sorted), locks the usage rows
    /// of `$2` (mailboxes appended to, sorted; a row is made where there is none), adds the deletes
    /// to their mailboxes' rows of `switchboard_removed`, then draws `$3` ids from [`IDS`]. Rows
    /// of kind 0: a locked row's mailbox and what was appended to it; 1: a deleted entry's mailbox,
    /// id and body length; 3: what was removed from a mailbox of `$2` before; 2: an id drawn.
    pub open: Statement,
    /// Draws `$1` ids from [`IDS`].
    pub draw: Statement,
    /// The highest id [`IDS`] gave out (0 before the first).
    pub mark: Statement,
    /// Moves [`IDS`] on to `$1`.
    pub advance: Statement,
    /// Remembers sends not remembered yet (`ON CONFLICT DO NOTHING`).
    pub remember: Statement,
    /// What `switchboard_sent` holds for `$1` senders' `$2` send ids.
    pub originals: Statement,
    /// A commit's last statement: inserts entries (`row::INSERT`'s `$1`-`$10`) and adds `$12`
    /// entries and `$13` bytes to each of `$11` mailboxes' usage rows.
    pub write: Statement,
    /// Notifies [`super::WAKE_CHANNEL`] with each of `$1` mailboxes: after a commit, on its own.
    pub wake: Statement,
    /// Deletes the sends `(sender, send_id, message_id)` of refused messages (`limits.rs`).
    pub forget: Statement,
    /// Raises the high-water mark `last_id` to `$1`.
    pub raise_last_id: Statement,
    /// A mailbox's page: `$1` mailbox, entries with ids above `$2`, at most `$3`.
    pub fetch: Statement,
    /// The broker id of `$1` sender's `$2` send id, if remembered.
    pub sent: Statement,
    /// What mailbox `$1` holds (appended less removed); null for a mailbox without a usage row.
    pub entries_in: Statement,
}

impl Statements {
    /// Prepares every statement on `client`, whose database has today's schema.
    pub(super) fn prepare(client: &mut Client) -> Result<Self, StoreError> {
        let mut p = |sql: &str| client.prepare(sql);
        Ok(Self {
            // Branches run in order, so rows lock in one order in every commit: the entries
            // deleted, then the mailboxes' usage rows (sorted), then their removal counts (sorted).
            // The initplans read both upserts to their end, every row locked, before the first
            // `nextval`: ids are drawn under the locks (`commit.rs`).
            open: p(&format!(
                "WITH gone AS (
                     DELETE FROM switchboard_entries WHERE id = ANY($1::bigint[])
                     RETURNING id, mailbox, length(body)::bigint AS len),
                 locked AS (
                     INSERT INTO switchboard_mailboxes (mailbox, entries, bytes)
                     SELECT m, 0, 0 FROM unnest($2::text[]) AS m ORDER BY m
                     ON CONFLICT (mailbox) DO UPDATE SET entries = switchboard_mailboxes.entries
                     RETURNING mailbox, entries, bytes),
                 removed AS (
                     INSERT INTO switchboard_removed (mailbox, entries, bytes)
                     SELECT mailbox, count(*), sum(len)::bigint
                     FROM gone GROUP BY mailbox ORDER BY mailbox
                     ON CONFLICT (mailbox) DO UPDATE
                     SET entries = switchboard_removed.entries + excluded.entries,
                         bytes = switchboard_removed.bytes + excluded.bytes
                     RETURNING mailbox)
                 SELECT 1, mailbox, id, len FROM gone
                 UNION ALL SELECT 0, mailbox, entries, bytes FROM locked
                 UNION ALL SELECT 3, mailbox, entries, bytes FROM switchboard_removed
                     WHERE mailbox = ANY($2::text[])
                 UNION ALL SELECT 2, NULL, nextval('{IDS}'), NULL
                     FROM generate_series(1, $3::bigint)
                     WHERE (SELECT count(*) FROM locked) >= 0
                       AND (SELECT count(*) FROM removed) >= 0"
            ))?,
            draw: p(&format!(
                "SELECT nextval('{IDS}') FROM generate_series(1, $1::bigint)"
            ))?,
            mark: p(&format!(
                "SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM {IDS}"
            ))?,
            advance: p(&format!("SELECT setval('{IDS}', $1::bigint)"))?,
            remember: p(
                "INSERT INTO switchboard_sent (sender, send_id, message_id, at_ms)
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[])
                 ON CONFLICT (sender, send_id) DO NOTHING",
            )?,
            originals: p(
                "SELECT s.sender, s.send_id, s.message_id FROM switchboard_sent s
                          JOIN unnest($1::text[], $2::bigint[]) AS b (sender, send_id)
                            ON s.sender = b.sender AND s.send_id = b.send_id",
            )?,
            write: p(&format!(
                "WITH usage AS (
                     UPDATE switchboard_mailboxes m
                     SET entries = m.entries + d.entries, bytes = m.bytes + d.bytes
                     FROM unnest($11::text[], $12::bigint[], $13::bigint[])
                         AS d (mailbox, entries, bytes)
                     WHERE m.mailbox = d.mailbox)
                 {}",
                row::INSERT
            ))?,
            wake: p(&format!(
                "SELECT pg_notify('{}', m) FROM unnest($1::text[]) AS m",
                super::WAKE_CHANNEL
            ))?,
            forget: p("DELETE FROM switchboard_sent s
                       USING unnest($1::text[], $2::bigint[], $3::bigint[])
                           AS r (sender, send_id, message_id)
                       WHERE s.sender = r.sender AND s.send_id = r.send_id
                         AND s.message_id = r.message_id")?,
            raise_last_id: p(
                "UPDATE switchboard_meta SET value = greatest(value, $1::bigint)
                              WHERE key = 'last_id'",
            )?,
            fetch: p(&format!(
                "SELECT {}, body FROM switchboard_entries
                 WHERE mailbox = $1::text AND id > $2::bigint ORDER BY id LIMIT $3::bigint",
                row::COLUMNS
            ))?,
            sent: p("SELECT message_id FROM switchboard_sent
                     WHERE sender = $1::text AND send_id = $2::bigint")?,
            entries_in: p(
                "SELECT m.entries - coalesce(r.entries, 0) FROM switchboard_mailboxes m
                           LEFT JOIN switchboard_removed r ON r.mailbox = m.mailbox
                           WHERE m.mailbox = $1::text",
            )?,
        })
    }
}
