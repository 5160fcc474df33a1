//! What the journal knows an entry by, and the line it writes for one.
//!
//! An entry is known by its [`Key`] (the broker id and a number a redelivery repeats) and, for a
//! message that has one, by its [`Origin`] (the sender and its send id, which a copy resent after a
//! broker crash repeats under a new message id); see `mod.rs` for why both. A line is
//! `<id> <check>` or `<id> <check> <send_id> <from>`.

use std::time::UNIX_EPOCH;

use switchboard_client::{Message, Receipt};
use switchboard_proto::client_id;

/// What the journal knows an entry by: its broker id, and a number its redelivery repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    /// The message id or receipt id.
    pub id: u64,
    /// A message's `sent_at` in milliseconds since 1970, a receipt's send id.
    pub check: u64,
}

/// What the journal also knows a message by: the sender and its send id, which a copy
/// resent after a broker crash repeats under a new message id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Origin {
    /// The sender, a valid client id (so one field of a line).
    pub from: String,
    /// The sender's send id; never 0.
    pub send_id: u64,
}

/// One handled entry: its key, and for a message that has one, its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// What a redelivery of the same entry repeats.
    pub key: Key,
    /// What a copy resent under a new message id repeats; `None` when that cannot be told.
    pub origin: Option<Origin>,
}

/// How the journal knows an entry it has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// The same entry again (same key): a redelivery.
    Redelivered,
    /// The same message under another key (same origin): resent by its sender after a broker crash.
    Resent,
}

impl Entry {
    /// A delivered message's entry: its key, and its origin when it has one.
    pub(crate) fn message(message: &Message) -> Entry {
        let sent_at = message
            .sent_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let origin = if message.send_id == 0 {
            None
        } else if client_id::validate(&message.from).is_err() {
            tracing::warn!(
                message_id = message.message_id,
                "the sender is not a valid client id; only the message id guards against handling it twice"
            );
            None
        } else {
            Some(Origin {
                from: message.from.clone(),
                send_id: message.send_id,
            })
        };
        Entry {
            key: Key {
                id: message.message_id,
                check: sent_at,
            },
            origin,
        }
    }

    /// A receipt's entry, known by its key alone.
    pub(crate) fn receipt(receipt: &Receipt) -> Entry {
        Entry {
            key: Key {
                id: receipt.receipt_id,
                check: receipt.send_id,
            },
            origin: None,
        }
    }

    /// The entry as a line of the journal file, newline included.
    pub(crate) fn line(&self) -> String {
        let Key { id, check } = self.key;
        match &self.origin {
            None => format!("{id} {check}\n"),
            Some(Origin { from, send_id }) => format!("{id} {check} {send_id} {from}\n"),
        }
    }

    /// A line without its newline; `None` unless it is exactly one of the two forms.
    pub(crate) fn parse(line: &[u8]) -> Option<Entry> {
        let text = std::str::from_utf8(line).ok()?;
        let mut fields = text.split(' ');
        let key = Key {
            id: fields.next()?.parse().ok()?,
            check: fields.next()?.parse().ok()?,
        };
        let origin = match (fields.next(), fields.next()) {
            (None, _) => None,
            (Some(send_id), Some(from)) => {
                let send_id = send_id.parse().ok().filter(|&id| id != 0)?;
                client_id::validate(from).ok()?;
                Some(Origin {
                    from: from.to_owned(),
                    send_id,
                })
            }
            (Some(_), None) => return None,
        };
        if fields.next().is_some() {
            return None;
        }
        Some(Entry { key, origin })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;

    #[test]
    fn a_message_has_an_origin_only_with_a_send_id_and_a_valid_sender() {
        let message = |from: &str, send_id| Message {
            message_id: 42,
            from: from.into(),
            send_id,
            sent_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            body: Bytes::from_static(b"hi"),
        };
        let entry = Entry::message(&message("alice", 7));
        assert_eq!(
            entry.key,
            Key {
                id: 42,
                check: 1_700_000_000_123
            }
        );
        assert_eq!(
            entry.origin,
            Some(Origin {
                from: "alice".into(),
                send_id: 7
            })
        );
        assert_eq!(entry.line(), "42 1700000000123 7 alice\n");
        let older_broker = Entry::message(&message("alice", 0));
        assert_eq!(older_broker.origin, None);
        assert_eq!(older_broker.line(), "42 1700000000123\n");
        for bad in ["has space", "new\nline", ""] {
            assert_eq!(Entry::message(&message(bad, 7)).origin, None, "{bad:?}");
        }
    }

    #[test]
    fn a_line_reads_back_as_the_entry_it_was_written_for() {
        let message = Entry {
            key: Key {
                id: 42,
                check: 1_042,
            },
            origin: Some(Origin {
                from: "alice".into(),
                send_id: 7,
            }),
        };
        let receipt = Entry {
            key: Key { id: 43, check: 7 },
            origin: None,
        };
        for entry in [message, receipt] {
            let line = entry.line();
            let bare = line.strip_suffix('\n').unwrap();
            assert_eq!(Entry::parse(bare.as_bytes()), Some(entry));
        }
    }
}
