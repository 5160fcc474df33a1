//! What a mailbox holds: an [`Entry`] (a message or a receipt), and what the store reports about
//! entries without their bodies (usage per mailbox, entries whose time ran out).

use bytes::Bytes;
use switchboard_proto::Receipts;

/// What a mailbox entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A message from `peer` to the mailbox owner.
    Message,
    /// A receipt: `peer` acknowledged a message the mailbox owner sent.
    Delivered,
    /// A receipt: a message the mailbox owner sent to `peer` expired undelivered and was removed.
    Expired,
    /// A receipt: a message the mailbox owner sent to `peer` could not be delivered (its `deliver`
    /// frame no longer fits the frame limit) and was removed, so that it does not block the mailbox.
    Undeliverable,
    /// A receipt: an operator removed a message the mailbox owner sent to `peer`, undelivered
    /// (the admin API's remove or purge).
    Removed,
}

impl EntryKind {
    pub fn is_receipt(self) -> bool {
        !matches!(self, EntryKind::Message)
    }

    /// The status a receipt of this kind tells its owner; `None` for a message.
    pub fn receipt_status(self) -> Option<switchboard_proto::ReceiptStatus> {
        use switchboard_proto::ReceiptStatus;
        match self {
            EntryKind::Message => None,
            EntryKind::Delivered => Some(ReceiptStatus::Delivered),
            EntryKind::Expired => Some(ReceiptStatus::Expired),
            EntryKind::Undeliverable => Some(ReceiptStatus::Undeliverable),
            EntryKind::Removed => Some(ReceiptStatus::Removed),
        }
    }

    /// The kind's number on disk, the same in every engine (the log's kind byte, SQLite's and
    /// PostgreSQL's `kind` column), so a kind added here maps through all of them.
    pub(crate) fn code(self) -> u8 {
        match self {
            EntryKind::Message => 0,
            EntryKind::Delivered => 1,
            EntryKind::Expired => 2,
            EntryKind::Removed => 3,
            EntryKind::Undeliverable => 4,
        }
    }

    /// The kind numbered `code` on disk, if it is one.
    pub(crate) fn from_code(code: u8) -> Option<EntryKind> {
        [
            EntryKind::Message,
            EntryKind::Delivered,
            EntryKind::Expired,
            EntryKind::Removed,
            EntryKind::Undeliverable,
        ]
        .into_iter()
        .find(|kind| kind.code() == code)
    }
}

/// A message's receipt choice as every engine numbers it on disk: 0 all (so entries written before
/// the choice existed read as "all"), 1 delivered, 2 none.
pub(crate) fn receipts_code(receipts: Receipts) -> u8 {
    match receipts {
        Receipts::All => 0,
        Receipts::Delivered => 1,
        Receipts::None => 2,
    }
}

/// The receipt choice numbered `code` on disk, if it is one.
pub(crate) fn receipts_from_code(code: u8) -> Option<Receipts> {
    [Receipts::All, Receipts::Delivered, Receipts::None]
        .into_iter()
        .find(|receipts| receipts_code(*receipts) == code)
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
    /// The sender's send id for the message (`id` in its `Send`).
    pub send_id: u64,
    /// The broker id of the message this entry is about: `id` itself for a message, the original
    /// message's id for a receipt.
    pub message_id: u64,
    /// When the broker accepted the message, in milliseconds since the Unix epoch.
    pub sent_at_ms: u64,
    /// When an undelivered message expires, in milliseconds since the Unix epoch; 0 for never.
    pub expires_at_ms: u64,
    /// For a message, which receipts its sender asked for; [`Receipts::All`] for a receipt (it is
    /// not asked about).
    pub receipts: Receipts,
    /// The message body; empty for receipts.
    pub body: Bytes,
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

/// An entry whose time to live ran out, as [`MailboxStore::expired`](super::MailboxStore::expired) reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredEntry {
    /// The entry, with an empty body.
    pub entry: Entry,
    /// The size of the body that was left out.
    pub body_len: u64,
}
