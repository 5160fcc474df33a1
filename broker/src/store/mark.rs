//! The high-water mark that follows every commit (`MARK.log`, `MARK.sqlite`), beside the identity
//! file (`store/identity.rs`), which is written only at a maintenance pass and a clean close.
//!
//! With `durability = "fsync"`, after each group commit whose fsync succeeded and moved the
//! store's highest written id (never a reservation: `store/identity.rs`), the new one is written
//! into this small fixed-size file: one `pwrite` at offset 0 of a file kept open, no fsync, so it
//! costs at most one syscall per batch. A `kill -9` keeps it (it is in the page cache), so a store
//! that then loses its newest commits (the SQLite WAL deleted, the log's newest segment cut short)
//! is caught at the next start. A machine crash may leave it older than the store,
//! which is safe; it is never ahead of the store, since it is written after the fsync. It is
//! fsynced where the identity file is written. A torn file (the checksum fails) or one naming another store is
//! ignored with a warning: the identity file's mark still holds.
//!
//! Layout, 32 bytes, little-endian: `SBMARK01`, the store id (u64), the mark (u64), the CRC-32C of
//! the first 24 bytes (u32), 4 zero bytes.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"SBMARK01";
const LEN: usize = 32;

/// The mark file's name for `engine` inside the data directory.
pub(crate) fn file_name(engine: &str) -> String {
    format!("MARK.{engine}")
}

fn encode(store_id: u64, mark: u64) -> [u8; LEN] {
    let mut bytes = [0u8; LEN];
    bytes[..8].copy_from_slice(MAGIC);
    bytes[8..16].copy_from_slice(&store_id.to_le_bytes());
    bytes[16..24].copy_from_slice(&mark.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[..24]);
    bytes[24..28].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// The (store id, mark) a mark file holds, or why it is not one.
fn decode(bytes: &[u8]) -> Result<(u64, u64), &'static str> {
    if bytes.len() != LEN || &bytes[..8] != MAGIC {
        return Err("it is not a mark file (wrong size or magic)");
    }
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
    let crc = u32::from_le_bytes(bytes[24..28].try_into().unwrap_or_default());
    if crc32c::crc32c(&bytes[..24]) != crc {
        return Err("its checksum fails (torn or damaged)");
    }
    Ok((word(8), word(16)))
}

/// The mark `path` holds for `store_id`, if it is a valid mark file of that store; a torn file or
/// another store's is ignored with a warning, a missing one silently.
pub(crate) fn read(path: &Path, store_id: u64) -> Option<u64> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            tracing::warn!(file = %path.display(), %error, "cannot read the store's mark file; ignoring it");
            return None;
        }
    };
    match decode(&bytes) {
        Ok((id, mark)) if id == store_id => Some(mark),
        Ok((id, _)) => {
            tracing::warn!(
                file = %path.display(), found = format!("{id:016x}"), expected = format!("{store_id:016x}"),
                "the store's mark file names another store; ignoring it"
            );
            None
        }
        Err(what) => {
            tracing::warn!(file = %path.display(), what, "ignoring the store's mark file");
            None
        }
    }
}

/// The mark file of one store, kept open and written after every durable commit.
#[derive(Debug)]
pub(crate) struct MarkFile {
    path: PathBuf,
    file: File,
    store_id: u64,
    /// The mark last written.
    written: u64,
    /// The last write failed (warned once until one succeeds again).
    failing: bool,
}

impl MarkFile {
    /// Opens (or makes) the mark file at `path` and writes `mark` into it, which must be durable
    /// in the store already.
    pub(crate) fn open(path: PathBuf, store_id: u64, mark: u64) -> std::io::Result<MarkFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        file.write_all_at(&encode(store_id, mark), 0)?;
        Ok(MarkFile {
            path,
            file,
            store_id,
            written: mark,
            failing: false,
        })
    }

    /// Writes `mark` if it is past the one written: one `pwrite`, no fsync. The caller promises
    /// everything up to `mark` is durable in the store. A failure is logged (once) and the next
    /// commit tries again; the identity file's mark still holds meanwhile.
    pub(crate) fn advance(&mut self, mark: u64) {
        if mark <= self.written {
            return;
        }
        match self.file.write_all_at(&encode(self.store_id, mark), 0) {
            Ok(()) => {
                self.written = mark;
                self.failing = false;
            }
            Err(error) if !self.failing => {
                self.failing = true;
                tracing::warn!(file = %self.path.display(), %error, "cannot write the store's mark file; retrying at the next commit");
            }
            Err(_) => {}
        }
    }

    /// Makes what was written durable.
    pub(crate) fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_file_reads_back_and_a_torn_or_foreign_one_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(file_name("log"));
        assert_eq!(read(&path, 7), None, "none yet");
        let mut file = MarkFile::open(path.clone(), 7, 3).expect("open");
        assert_eq!(read(&path, 7), Some(3));
        file.advance(9);
        file.advance(5);
        assert_eq!(read(&path, 7), Some(9), "it only moves forward");
        assert_eq!(read(&path, 8), None, "another store's");
        let mut torn = std::fs::read(&path).expect("read");
        torn[17] ^= 1;
        std::fs::write(&path, &torn).expect("tear");
        assert_eq!(read(&path, 7), None, "torn");
        std::fs::write(&path, &torn[..20]).expect("cut short");
        assert_eq!(read(&path, 7), None, "cut short");
    }
}
