//! The journal of handled entries: which broker ids the daemon has already handed to its sink.
//!
//! The broker delivers at least once: an entry whose `Ack` did not reach it (the daemon crashed, the
//! connection broke) comes again. The daemon records each entry's id here, fsynced, after the sink
//! has it and *before* acknowledging it; a redelivered id found here is acknowledged without running
//! the sink again. The only window left for a duplicate is between the sink finishing and this
//! record reaching the disk.
//!
//! An entry is known by its broker id and a second number that a redelivery repeats: a message's
//! `sent_at` in milliseconds, a receipt's client message id ([`Key`]). The id alone would do while
//! the broker keeps its data; but a broker started afresh counts from 1 again, and a new message
//! that happened to reuse a remembered id would be acknowledged without ever reaching the sink.
//!
//! The file, `STATE_DIR/handled`, is plain text, one entry per line (`<id> <check>`, decimal),
//! appended to. Only the last [`KEEP`] entries are remembered (redeliveries of handled entries are
//! at most one connection's window, 256 by default, behind the newest, so this is far more than
//! needed); when the file holds twice that many lines it is rewritten with the last [`KEEP`],
//! atomically. A torn last line (a crash mid-append) is dropped when the journal is opened.

use std::collections::{HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use std::time::UNIX_EPOCH;

use switchboard_client::{Message, Receipt};

use super::files::{blocking, write_atomic};

/// How many handled ids are remembered.
pub const KEEP: usize = 10_000;

/// The journal's file name in the state directory.
pub const FILE_NAME: &str = "handled";

/// What the journal knows an entry by: its broker id, and a number its redelivery repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    /// The message id or receipt id.
    pub id: u64,
    /// A message's `sent_at` in milliseconds since 1970, a receipt's client message id.
    pub check: u64,
}

impl Key {
    pub fn message(message: &Message) -> Key {
        let sent_at = message
            .sent_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Key {
            id: message.message_id,
            check: sent_at,
        }
    }

    pub fn receipt(receipt: &Receipt) -> Key {
        Key {
            id: receipt.receipt_id,
            check: receipt.id,
        }
    }

    fn line(&self) -> String {
        format!("{} {}\n", self.id, self.check)
    }

    fn parse(line: &[u8]) -> Option<Key> {
        let text = std::str::from_utf8(line).ok()?;
        let (id, check) = text.split_once(' ')?;
        Some(Key {
            id: id.parse().ok()?,
            check: check.parse().ok()?,
        })
    }
}

/// The journal, shared between the tasks that consult it and the blocking pool that writes it.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    dir: PathBuf,
    file: File,
    keep: usize,
    keys: HashSet<Key>,
    order: VecDeque<Key>,
    /// Lines in the file now; compaction is due at twice `keep`.
    lines: usize,
}

impl Journal {
    /// Opens (or creates) the journal in `dir`, remembering at most `keep` ids.
    pub fn open(dir: &Path, keep: usize) -> io::Result<Journal> {
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
        let mut order = VecDeque::new();
        let mut lines = 0;
        for line in whole.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            lines += 1;
            match Key::parse(line) {
                Some(key) => order.push_back(key),
                None => {
                    tracing::warn!(line = %String::from_utf8_lossy(line), "ignoring a line of the journal that is not an entry")
                }
            }
        }
        while order.len() > keep {
            order.pop_front();
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let mut inner = Inner {
            dir: dir.to_path_buf(),
            file,
            keep,
            keys: order.iter().copied().collect(),
            order,
            lines,
        };
        if torn || lines > 2 * keep {
            inner.compact()?;
        }
        Ok(Journal {
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    /// Whether the entry was handled.
    pub fn contains(&self, key: Key) -> bool {
        match self.inner.lock() {
            Ok(inner) => inner.keys.contains(&key),
            Err(poisoned) => poisoned.into_inner().keys.contains(&key),
        }
    }

    /// Records the entry as handled, durably; returns once it is on disk.
    pub async fn record(&self, key: Key) -> io::Result<()> {
        let inner = Arc::clone(&self.inner);
        blocking(move || {
            let mut inner = inner
                .lock()
                .map_err(|_| io::Error::other("the journal lock is poisoned"))?;
            inner.record(key)
        })
        .await
    }
}

impl Inner {
    fn record(&mut self, key: Key) -> io::Result<()> {
        if !self.keys.insert(key) {
            return Ok(());
        }
        self.file.write_all(key.line().as_bytes())?;
        self.file.sync_data()?;
        self.lines += 1;
        self.order.push_back(key);
        while self.order.len() > self.keep {
            if let Some(old) = self.order.pop_front() {
                self.keys.remove(&old);
            }
        }
        if self.lines > 2 * self.keep {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites the file with the remembered ids only, atomically, and appends to the new file.
    fn compact(&mut self) -> io::Result<()> {
        let text: String = self.order.iter().map(Key::line).collect();
        let path = write_atomic(&self.dir, FILE_NAME, text.as_bytes())?;
        self.file = OpenOptions::new().append(true).open(path)?;
        self.lines = self.order.len();
        tracing::debug!(kept = self.lines, "journal compacted");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u64) -> Key {
        Key {
            id,
            check: 1_000 + id,
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
        assert!(!journal.contains(key(42)));
        journal.record(key(42)).await.unwrap();
        journal.record(key(42)).await.unwrap();
        assert!(journal.contains(key(42)));
        let reopened = Journal::open(dir.path(), KEEP).unwrap();
        assert!(reopened.contains(key(42)));
        assert_eq!(lines(dir.path()), ["42 1042"], "recorded once");
    }

    #[tokio::test]
    async fn the_same_id_with_another_check_is_another_entry() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path(), KEEP).unwrap();
        journal.record(Key { id: 1, check: 500 }).await.unwrap();
        assert!(
            !journal.contains(Key { id: 1, check: 900 }),
            "a broker counting from 1 again"
        );
    }

    #[tokio::test]
    async fn only_the_last_entries_are_kept_and_the_file_is_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path(), 3).unwrap();
        for id in 1..=7 {
            journal.record(key(id)).await.unwrap();
        }
        assert!(!journal.contains(key(4)));
        assert!((5..=7).all(|id| journal.contains(key(id))));
        assert_eq!(
            lines(dir.path()),
            ["5 1005", "6 1006", "7 1007"],
            "compacted at 7 > 2 × 3"
        );
        let reopened = Journal::open(dir.path(), 3).unwrap();
        assert!(!reopened.contains(key(4)) && reopened.contains(key(5)));
    }

    #[tokio::test]
    async fn a_torn_last_line_is_dropped_and_appends_stay_whole() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), "10 1010\n11 1011\n12 10").unwrap();
        let journal = Journal::open(dir.path(), KEEP).unwrap();
        assert!(journal.contains(key(11)));
        assert!(
            !journal.contains(Key { id: 12, check: 10 }),
            "the torn line may be half an entry"
        );
        journal.record(key(13)).await.unwrap();
        assert_eq!(lines(dir.path()), ["10 1010", "11 1011", "13 1013"]);
    }
}
