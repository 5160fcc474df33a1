//! What one commit writes (a [`Batch`]) and what it reports back beyond that ([`CommitOutcome`]).

use super::Entry;

/// Writes that must become durable together.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    /// New entries, in id order. A message whose sender already sent the same `send_id`
    /// (within the store's memory of sends, see [`MailboxStore::maintain`](super::MailboxStore::maintain)) is not stored again: the
    /// commit reports it as a [`Duplicate`].
    pub appends: Vec<Entry>,
    /// Ids of entries to remove. An id may name an entry appended in this same batch.
    pub deletes: Vec<u64>,
    /// Sends to remember without storing their message: it was delivered and acknowledged before
    /// it reached the store. Applied before the appends, so a resend of one of these in the same
    /// batch is recognised as a [`Duplicate`].
    pub remembered: Vec<Remembered>,
    /// Ids up to this one may already be in use outside the store (handed out before their commit):
    /// the store's high-water mark ([`MailboxStore::last_id`](super::MailboxStore::last_id)) must cover them once the batch commits,
    /// so they are never given out again after a restart. 0 for none; never more than
    /// [`ID_RESERVATION`] past the last id handed out.
    pub reserve_ids_through: u64,
}

/// How many ids one reservation ([`Batch::reserve_ids_through`]) covers beyond the last id the
/// Router handed out. A restart after a crash skips at most this many ids, and a store that lost
/// commits and is accepted as found (`--accept-store-loss`) skips twice this past its high-water
/// mark, so no id a lost reservation covered is given out again.
pub const ID_RESERVATION: u64 = 1 << 20;

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.appends.is_empty()
            && self.deletes.is_empty()
            && self.remembered.is_empty()
            && self.reserve_ids_through == 0
    }

    /// The highest entry id this batch writes or reserves: the store's last id covers it once the
    /// batch commits. 0 for a batch of deletes only.
    pub fn highest_id(&self) -> u64 {
        self.highest_written_id().max(self.reserve_ids_through)
    }

    /// The highest id this batch writes (an append or a remembered send), leaving its reservation
    /// out: what the store's high-water mark for its identity check follows
    /// (`store/identity.rs`). 0 for a batch that writes no id.
    pub fn highest_written_id(&self) -> u64 {
        self.remembered
            .iter()
            .map(|r| r.message_id)
            .chain(self.appends.iter().map(|e| e.id))
            .max()
            .unwrap_or(0)
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
    pub send_id: u64,
    /// The broker id the message had.
    pub message_id: u64,
    /// When the broker accepted it, ms since the epoch (for [`Maintenance`](super::Maintenance)).
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

/// Ids at or above this are provisional: given out by a Router whose store is shared with other
/// brokers, where no broker can know which id comes next in a mailbox. A shared store gives each
/// such append the next id in commit order and reports it as [`Renumbered`]; a Router with a store
/// of its own never gives out one (its ids already increase in commit order), so single-writer
/// engines never see them.
pub const PROVISIONAL_IDS: u64 = 3 << 61;

/// An append the store stored under another id than the Router gave it: its id in commit order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Renumbered {
    /// The id the Router gave the entry.
    pub id: u64,
    /// The id it is stored and delivered under (for a message, also its `message_id`).
    pub stored_as: u64,
}

/// What a commit did beyond what the batch asked.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CommitOutcome {
    pub duplicates: Vec<Duplicate>,
    /// Appends stored under an id of the store's choosing (see [`PROVISIONAL_IDS`]).
    pub renumbered: Vec<Renumbered>,
    /// Appends a shared store did not store, by the id the Router gave them: a message whose
    /// mailbox was at its limit when the transaction counted it (what other brokers stored included;
    /// its send is not remembered and its sender hears `mailbox-full`), or a receipt about an entry
    /// another broker had removed already (that broker stored the receipt). Engines with one writer
    /// leave it empty: their Router's own counts are exact, and only it removes entries.
    pub not_stored: Vec<u64>,
}
