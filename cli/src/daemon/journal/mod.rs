//! The journal of handled entries: which messages and receipts the daemon has already handed to its
//! sink.
//!
//! The broker delivers at least once: an entry whose `Ack` did not reach it (the daemon crashed, the
//! connection broke) comes again. The daemon records each entry here, fsynced, after the sink has it
//! and *before* acknowledging it; a redelivered entry found here is acknowledged without running the
//! sink again. The only window left for a duplicate is between the sink finishing and this record
//! reaching the disk.
//!
//! An entry is known by its broker id and a second number that a redelivery repeats: a message's
//! `sent_at` in milliseconds, a receipt's send id (`Key`, in `entry.rs`). The id alone would do while
//! the broker keeps its data; but a broker started afresh counts from 1 again, and a new message
//! that happened to reuse a remembered id would be acknowledged without ever reaching the sink.
//!
//! A message is also known by its sender and the sender's send id (`Origin`: `from` and
//! `send_id`). A broker may hand a message out before it is on disk; if it crashes before writing
//! it, the sender (never told `accepted`) sends it again and the message comes a second time under a
//! **new** message id and `sent_at`, but with the same `from` and `send_id` (see "Early delivery" in
//! `PROTOCOL.md`). Its key is new; its origin is not, so it is acknowledged without running the sink
//! (`Seen::Resent`). A message without a `send_id` (0, from a broker older than the field), or
//! whose sender is not a valid client id, has no origin: only its key counts.
//!
//! The file, `STATE_DIR/handled`, is plain text, one entry per line, appended to: `<id> <check>` for
//! an entry known by its key alone (receipts, messages without an origin, and every line the
//! previous version of the daemon wrote, which is read as it always was), or `<id> <check> <send_id>
//! <from>` for a message with an origin (a client id holds no white space, so it is one field; all
//! numbers decimal). Only the last [`KEEP`] entries are remembered, keys and origins alike
//! (redeliveries of handled entries are at most one connection's window, 256 by default, behind the
//! newest, so this is far more than needed); when the file holds twice that many lines it is
//! rewritten with the last [`KEEP`], atomically. A torn last line (a crash mid-append) is dropped
//! when the journal is opened.

pub(crate) mod entry;
pub(crate) mod memory;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::daemon::journal::entry::{Entry, Seen};
use crate::daemon::journal::memory::Memory;
use crate::files::{blocking, write_atomic};

/// How many handled entries are remembered.
pub(crate) const KEEP: usize = 10_000;

/// The journal's file name in the state directory.
pub(crate) const FILE_NAME: &str = "handled";

/// The journal, shared between the tasks that consult it and the blocking pool that writes it.
#[derive(Clone)]
pub(crate) struct Journal {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    dir: PathBuf,
    file: File,
    memory: Memory,
    /// Lines in the file now; compaction is due at twice `keep`.
    lines: usize,
}

impl Journal {
    /// Opens (or creates) the journal in `dir`, remembering at most `keep` entries. Reads the lines
    /// of every version of the daemon.
    pub(crate) fn open(dir: &Path, keep: usize) -> io::Result<Journal> {
        let path = dir.join(FILE_NAME);
        let text = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        // Only whole lines count; what follows the last newline is a torn append.
        let whole = text
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(&text[..0], |end| &text[..=end]);
        let torn = whole.len() < text.len();
        let mut memory = Memory::new(keep);
        let mut lines = 0;
        for line in whole.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            lines += 1;
            match Entry::parse(line) {
                Some(entry) => {
                    memory.remember(entry);
                }
                None => {
                    tracing::warn!(line = %String::from_utf8_lossy(line), "ignoring a line of the journal that is not an entry")
                }
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let mut inner = Inner {
            dir: dir.to_path_buf(),
            file,
            memory,
            lines,
        };
        if torn || lines > 2 * keep {
            inner.compact()?;
        }
        Ok(Journal {
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    /// Whether, and how, the entry was handled.
    pub(crate) fn seen(&self, entry: &Entry) -> Option<Seen> {
        match self.inner.lock() {
            Ok(inner) => inner.memory.seen(entry),
            Err(poisoned) => poisoned.into_inner().memory.seen(entry),
        }
    }

    /// Records the entry as handled, durably; returns once it is on disk.
    pub(crate) async fn record(&self, entry: Entry) -> io::Result<()> {
        let inner = Arc::clone(&self.inner);
        blocking(move || {
            let mut inner = inner
                .lock()
                .map_err(|_| io::Error::other("the journal lock is poisoned"))?;
            inner.record(entry)
        })
        .await
    }
}

impl Inner {
    fn record(&mut self, entry: Entry) -> io::Result<()> {
        let line = entry.line();
        if !self.memory.remember(entry) {
            return Ok(());
        }
        self.file.write_all(line.as_bytes())?;
        self.file.sync_data()?;
        self.lines += 1;
        if self.lines > 2 * self.memory.keep {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites the file with the remembered entries only, atomically, and appends to the new file.
    fn compact(&mut self) -> io::Result<()> {
        let text: String = self.memory.order.iter().map(Entry::line).collect();
        let path = write_atomic(&self.dir, FILE_NAME, text.as_bytes())?;
        self.file = OpenOptions::new().append(true).open(path)?;
        self.lines = self.memory.order.len();
        tracing::debug!(kept = self.lines, "journal compacted");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::journal::entry::{Key, Origin};

    /// An entry known by its key alone, as a receipt is (and as every entry of the previous version).
    fn key(id: u64) -> Entry {
        Entry {
            key: Key {
                id,
                check: 1_000 + id,
            },
            origin: None,
        }
    }

    /// A message entry with an origin.
    fn sent(id: u64, from: &str, send_id: u64) -> Entry {
        Entry {
            key: Key {
                id,
                check: 1_000 + id,
            },
            origin: Some(Origin {
                from: from.into(),
                send_id,
            }),
        }
    }

    fn lines(dir: &Path) -> Vec<String> {
        fs::read_to_string(dir.join(FILE_NAME))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[tokio::test]
    async fn recorded_entries_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path(), KEEP).unwrap();
        assert_eq!(journal.seen(&key(42)), None);
        journal.record(key(42)).await.unwrap();
        journal.record(key(42)).await.unwrap();
        assert_eq!(journal.seen(&key(42)), Some(Seen::Redelivered));
        let reopened = Journal::open(dir.path(), KEEP).unwrap();
        assert_eq!(reopened.seen(&key(42)), Some(Seen::Redelivered));
        assert_eq!(lines(dir.path()), ["42 1042"], "recorded once");
    }

    #[tokio::test]
    async fn the_same_id_with_another_check_is_another_entry() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path(), KEEP).unwrap();
        let entry = |check| Entry {
            key: Key { id: 1, check },
            origin: None,
        };
        journal.record(entry(500)).await.unwrap();
        assert_eq!(
            journal.seen(&entry(900)),
            None,
            "a broker counting from 1 again"
        );
    }

    #[tokio::test]
    async fn a_message_resent_under_a_new_id_is_known_by_its_sender_and_send_id() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path(), KEEP).unwrap();
        journal.record(sent(42, "alice", 7)).await.unwrap();
        assert_eq!(journal.seen(&sent(42, "alice", 7)), Some(Seen::Redelivered));
        assert_eq!(journal.seen(&key(42)), Some(Seen::Redelivered));
        assert_eq!(journal.seen(&sent(57, "alice", 7)), Some(Seen::Resent));
        assert_eq!(journal.seen(&sent(57, "bob", 7)), None, "another sender");
        assert_eq!(journal.seen(&sent(57, "alice", 8)), None, "another send");
        assert_eq!(
            journal.seen(&key(57)),
            None,
            "no origin, no match by origin"
        );
        // A resent copy is only acknowledged, not recorded; recording it anyway changes nothing.
        journal.record(sent(57, "alice", 7)).await.unwrap();
        assert_eq!(lines(dir.path()), ["42 1042 7 alice"]);
        let reopened = Journal::open(dir.path(), KEEP).unwrap();
        assert_eq!(reopened.seen(&sent(57, "alice", 7)), Some(Seen::Resent));
        assert_eq!(
            reopened.seen(&sent(42, "alice", 7)),
            Some(Seen::Redelivered)
        );
    }

    #[tokio::test]
    async fn a_journal_written_by_the_previous_version_still_opens() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), "10 1010\n11 1011\n").unwrap();
        let journal = Journal::open(dir.path(), KEEP).unwrap();
        assert_eq!(journal.seen(&key(10)), Some(Seen::Redelivered));
        assert_eq!(
            journal.seen(&sent(11, "alice", 7)),
            Some(Seen::Redelivered),
            "a message handled before the upgrade, redelivered after it"
        );
        journal.record(sent(12, "alice", 7)).await.unwrap();
        assert_eq!(lines(dir.path()), ["10 1010", "11 1011", "12 1012 7 alice"]);
        let reopened = Journal::open(dir.path(), KEEP).unwrap();
        assert_eq!(reopened.seen(&key(11)), Some(Seen::Redelivered));
        assert_eq!(reopened.seen(&sent(13, "alice", 7)), Some(Seen::Resent));
    }

    #[tokio::test]
    async fn lines_that_are_not_entries_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let text = [
            "1 1001 7",         // an origin without a sender
            "2 1002 0 alice",   // no send id is no origin
            "3 1003 7 alice x", // a field too many
            "4 x",
            "5 1005 7 carol",
        ]
        .map(|line| format!("{line}\n"))
        .concat();
        fs::write(dir.path().join(FILE_NAME), text).unwrap();
        let journal = Journal::open(dir.path(), KEEP).unwrap();
        for id in 1..=4 {
            assert_eq!(journal.seen(&key(id)), None, "line {id}");
        }
        assert_eq!(journal.seen(&sent(9, "carol", 7)), Some(Seen::Resent));
        assert_eq!(journal.seen(&sent(9, "alice", 7)), None);
    }

    #[tokio::test]
    async fn only_the_last_entries_are_kept_and_the_file_is_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path(), 3).unwrap();
        for id in 1..=7 {
            journal.record(sent(id, "alice", 100 + id)).await.unwrap();
        }
        assert_eq!(journal.seen(&key(4)), None);
        assert_eq!(
            journal.seen(&sent(40, "alice", 104)),
            None,
            "the origin is forgotten with its entry"
        );
        assert!((5..=7).all(|id| journal.seen(&key(id)).is_some()));
        assert_eq!(journal.seen(&sent(50, "alice", 105)), Some(Seen::Resent));
        assert_eq!(
            lines(dir.path()),
            ["5 1005 105 alice", "6 1006 106 alice", "7 1007 107 alice"],
            "compacted at 7 > 2 × 3"
        );
        let reopened = Journal::open(dir.path(), 3).unwrap();
        assert!(reopened.seen(&key(4)).is_none() && reopened.seen(&key(5)).is_some());
        assert_eq!(reopened.seen(&sent(60, "alice", 106)), Some(Seen::Resent));
    }

    #[tokio::test]
    async fn a_longer_file_of_either_form_is_cut_to_the_last_entries_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let text: String = (1..=4)
            .map(|id| format!("{id} {}\n", 1_000 + id))
            .chain((5..=8).map(|id| format!("{id} {} {} bob\n", 1_000 + id, 100 + id)))
            .collect();
        fs::write(dir.path().join(FILE_NAME), text).unwrap();
        let journal = Journal::open(dir.path(), 3).unwrap();
        assert_eq!(
            lines(dir.path()),
            ["6 1006 106 bob", "7 1007 107 bob", "8 1008 108 bob"],
            "8 lines > 2 × 3: compacted at once"
        );
        assert_eq!(journal.seen(&sent(50, "bob", 105)), None);
        assert_eq!(journal.seen(&sent(60, "bob", 106)), Some(Seen::Resent));
    }

    #[tokio::test]
    async fn a_torn_last_line_is_dropped_and_appends_stay_whole() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(FILE_NAME),
            "10 1010\n11 1011 7 alice\n12 1012 8 al",
        )
        .unwrap();
        let journal = Journal::open(dir.path(), KEEP).unwrap();
        assert_eq!(journal.seen(&sent(20, "alice", 7)), Some(Seen::Resent));
        assert_eq!(
            journal.seen(&sent(12, "al", 8)),
            None,
            "the torn line may be half an entry"
        );
        journal.record(key(13)).await.unwrap();
        assert_eq!(lines(dir.path()), ["10 1010", "11 1011 7 alice", "13 1013"]);
    }
}
