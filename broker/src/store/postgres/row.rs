//! How an [`Entry`] becomes a row of `switchboard_entries` and back: the one place that knows the
//! columns, so a field added to `Entry` is added here and nowhere else in this engine.
//!
//! PostgreSQL has no unsigned integers; every `u64` is stored in a `bigint` as the same 64 bits
//! reinterpreted ([`to_sql`], [`from_sql`]). The kind and the receipt choice are `smallint`s holding
//! SQLite's numbers for them (the kind's are the log's kind byte), so values added there map through
//! unchanged.

use bytes::Bytes;
use postgres::Row;

use crate::store::{sqlite, Entry, EntryKind, ExpiredEntry, StoreError};
use switchboard_proto::Receipts;

/// The columns every entry query selects, in the order [`entry`] reads them; the body (or its
/// length, for [`expired`]) comes next.
pub(super) const COLUMNS: &str =
    "id, mailbox, kind, peer, send_id, message_id, sent_at_ms, expires_at_ms, receipts";

/// The `INSERT` of many entries at once, one array parameter per column (see [`Columns`]).
pub(super) const INSERT: &str = "
INSERT INTO switchboard_entries
    (id, mailbox, kind, peer, send_id, message_id, sent_at_ms, expires_at_ms, receipts, body)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::smallint[], $4::text[], $5::bigint[],
                     $6::bigint[], $7::bigint[], $8::bigint[], $9::smallint[], $10::bytea[])";

/// Stores a `u64` in a `bigint`, bit for bit.
pub(super) fn to_sql(value: u64) -> i64 {
    value as i64
}

/// Reads back what [`to_sql`] stored.
pub(super) fn from_sql(value: i64) -> u64 {
    value as u64
}

/// The kind as SQLite stores it (one numbering for every SQL engine, so a kind added there maps
/// through here), in a `smallint`.
fn kind_to_sql(kind: EntryKind) -> i16 {
    i16::try_from(sqlite::kind_to_sql(kind)).unwrap_or(i16::MAX)
}

fn kind_from_sql(id: u64, kind: i16) -> Result<EntryKind, StoreError> {
    sqlite::kind_from_sql(id, i64::from(kind))
}

fn receipts_to_sql(receipts: Receipts) -> i16 {
    i16::try_from(sqlite::receipts_to_sql(receipts)).unwrap_or(i16::MAX)
}

/// Reads [`COLUMNS`] and, with `with_body`, the body in the column after them.
pub(super) fn entry(row: &Row, with_body: bool) -> Result<Entry, StoreError> {
    let id = from_sql(row.try_get(0)?);
    let body: Vec<u8> = if with_body {
        row.try_get(9)?
    } else {
        Vec::new()
    };
    Ok(Entry {
        id,
        mailbox: row.try_get(1)?,
        kind: kind_from_sql(id, row.try_get(2)?)?,
        peer: row.try_get(3)?,
        send_id: from_sql(row.try_get(4)?),
        message_id: from_sql(row.try_get(5)?),
        sent_at_ms: from_sql(row.try_get(6)?),
        expires_at_ms: from_sql(row.try_get(7)?),
        receipts: sqlite::receipts_from_sql(id, i64::from(row.try_get::<_, i16>(8)?))?,
        body: Bytes::from(body),
    })
}

/// Reads [`COLUMNS`] and the body's length in the column after them.
pub(super) fn expired(row: &Row) -> Result<ExpiredEntry, StoreError> {
    let body_len: i32 = row.try_get(9)?;
    Ok(ExpiredEntry {
        entry: entry(row, false)?,
        body_len: u64::try_from(body_len).unwrap_or(0),
    })
}

/// Entries as one array per column: [`INSERT`]'s parameters, so a batch of any size is one
/// statement and one round trip.
#[derive(Default)]
pub(super) struct Columns<'a> {
    id: Vec<i64>,
    mailbox: Vec<&'a str>,
    kind: Vec<i16>,
    peer: Vec<&'a str>,
    send_id: Vec<i64>,
    message_id: Vec<i64>,
    sent_at_ms: Vec<i64>,
    expires_at_ms: Vec<i64>,
    receipts: Vec<i16>,
    body: Vec<&'a [u8]>,
}

impl<'a> Columns<'a> {
    pub(super) fn push(&mut self, e: &'a Entry) {
        self.id.push(to_sql(e.id));
        self.mailbox.push(&e.mailbox);
        self.kind.push(kind_to_sql(e.kind));
        self.peer.push(&e.peer);
        self.send_id.push(to_sql(e.send_id));
        self.message_id.push(to_sql(e.message_id));
        self.sent_at_ms.push(to_sql(e.sent_at_ms));
        self.expires_at_ms.push(to_sql(e.expires_at_ms));
        self.receipts.push(receipts_to_sql(e.receipts));
        self.body.push(&e.body);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.id.is_empty()
    }

    /// The parameters of [`INSERT`], in its order.
    pub(super) fn params(&self) -> [&(dyn postgres::types::ToSql + Sync); 10] {
        [
            &self.id,
            &self.mailbox,
            &self.kind,
            &self.peer,
            &self.send_id,
            &self.message_id,
            &self.sent_at_ms,
            &self.expires_at_ms,
            &self.receipts,
            &self.body,
        ]
    }
}
