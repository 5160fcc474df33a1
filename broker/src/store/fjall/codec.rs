//! How the fjall engine lays entries, sends and counters out as keys and values.
//!
//! Keys sort as the store reads them: a mailbox's entries are `[len u16][mailbox][id u64]`, all
//! big-endian, so one range scan reads a mailbox in id order; a remembered send is
//! `[len u16][sender][send_id u64]`; the expiry index is `[expires_at u64][id u64]` and the sends by
//! time `[at_ms u64][send key]`, so the oldest come first. The length prefix keeps one name from
//! being a prefix of another's keys.

use bytes::Bytes;

use crate::store::{Entry, EntryKind, StoreError};

/// `[len u16][name]`, the prefix of every key of one mailbox (or sender).
pub(super) fn name_prefix(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + name.len() + 8);
    // Client ids are at most 128 bytes (`MAX_CLIENT_ID_LEN` in the protocol), far below what the
    // length field holds; the cut only keeps a name the broker never accepts from overflowing it.
    let len = u16::try_from(name.len()).unwrap_or(u16::MAX);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(&name.as_bytes()[..usize::from(len)]);
    key
}

/// `[len u16][name][n u64]`: an entry's key (mailbox, id) or a send's key (sender, send id).
pub(super) fn named_key(name: &str, n: u64) -> Vec<u8> {
    let mut key = name_prefix(name);
    key.extend_from_slice(&n.to_be_bytes());
    key
}

/// Two big-endian numbers: an expiry key (expires_at, id).
pub(super) fn pair_key(a: u64, b: u64) -> [u8; 16] {
    let mut key = [0; 16];
    key[..8].copy_from_slice(&a.to_be_bytes());
    key[8..].copy_from_slice(&b.to_be_bytes());
    key
}

/// A time followed by a send key: the index of sends by age.
pub(super) fn time_key(at_ms: u64, send_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + send_key.len());
    key.extend_from_slice(&at_ms.to_be_bytes());
    key.extend_from_slice(send_key);
    key
}

/// Reads a big-endian `u64` at `at`.
pub(super) fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let raw = bytes.get(at..at + 8)?;
    Some(u64::from_be_bytes(raw.try_into().ok()?))
}

/// Two numbers as one value: a send's (message id, time), a mailbox's (entries, bytes).
pub(super) fn pair_value(a: u64, b: u64) -> [u8; 16] {
    pair_key(a, b)
}

/// Reads what [`pair_value`] wrote.
pub(super) fn read_pair(bytes: &[u8]) -> Option<(u64, u64)> {
    Some((u64_at(bytes, 0)?, u64_at(bytes, 8)?))
}

fn kind_byte(kind: EntryKind) -> u8 {
    match kind {
        EntryKind::Message => 0,
        EntryKind::Delivered => 1,
        EntryKind::Expired => 2,
    }
}

/// Bytes of an entry value before the peer's name.
const FIXED: usize = 1 + 8 * 4 + 2;

/// An entry's value: `[kind u8][send_id][message_id][sent_at][expires_at][peer len u16][peer][body]`.
/// The mailbox and id are in the key.
pub(super) fn entry_value(e: &Entry) -> Vec<u8> {
    let peer = name_prefix(&e.peer);
    let mut value = Vec::with_capacity(FIXED + e.peer.len() + e.body.len());
    value.push(kind_byte(e.kind));
    for n in [e.send_id, e.message_id, e.sent_at_ms, e.expires_at_ms] {
        value.extend_from_slice(&n.to_be_bytes());
    }
    value.extend_from_slice(&peer);
    value.extend_from_slice(&e.body);
    value
}

/// Reads an entry back from its mailbox, id and value; with `with_body` false the body is left out
/// and its length returned instead.
pub(super) fn read_entry(
    mailbox: &str,
    id: u64,
    value: &[u8],
    with_body: bool,
) -> Result<(Entry, u64), StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt {
        id,
        what: what.to_owned(),
    };
    let kind = match value.first() {
        Some(0) => EntryKind::Message,
        Some(1) => EntryKind::Delivered,
        Some(2) => EntryKind::Expired,
        Some(other) => return Err(corrupt(&format!("unknown entry kind {other}"))),
        None => return Err(corrupt("empty value")),
    };
    let number = |at: usize| u64_at(value, 1 + 8 * at).ok_or_else(|| corrupt("value too short"));
    let peer_len = value
        .get(FIXED - 2..FIXED)
        .map(|raw| usize::from(u16::from_be_bytes([raw[0], raw[1]])))
        .ok_or_else(|| corrupt("value too short"))?;
    let peer = value
        .get(FIXED..FIXED + peer_len)
        .ok_or_else(|| corrupt("peer cut short"))?;
    let peer = std::str::from_utf8(peer).map_err(|_| corrupt("peer is not UTF-8"))?;
    let body = &value[FIXED + peer_len..];
    let entry = Entry {
        id,
        mailbox: mailbox.to_owned(),
        kind,
        peer: peer.to_owned(),
        send_id: number(0)?,
        message_id: number(1)?,
        sent_at_ms: number(2)?,
        expires_at_ms: number(3)?,
        body: if with_body {
            Bytes::copy_from_slice(body)
        } else {
            Bytes::new()
        },
    };
    Ok((entry, body.len() as u64))
}

/// Where an entry lives, by its id: `[body_len u64][expires_at u64][mailbox]`, so a delete by id
/// finds its key, its expiry key and what it frees without reading the entry.
pub(super) fn locator(e: &Entry) -> Vec<u8> {
    let mut value = Vec::with_capacity(16 + e.mailbox.len());
    value.extend_from_slice(&(e.body.len() as u64).to_be_bytes());
    value.extend_from_slice(&e.expires_at_ms.to_be_bytes());
    value.extend_from_slice(e.mailbox.as_bytes());
    value
}

/// What [`locator`] wrote: (mailbox, body length, expiry time).
pub(super) fn read_locator(id: u64, value: &[u8]) -> Result<(String, u64, u64), StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt {
        id,
        what: what.to_owned(),
    };
    let (len, expires) = read_pair(value).ok_or_else(|| corrupt("locator too short"))?;
    let mailbox = std::str::from_utf8(&value[16..]).map_err(|_| corrupt("mailbox is not UTF-8"))?;
    Ok((mailbox.to_owned(), len, expires))
}
