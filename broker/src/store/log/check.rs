//! Whether a log on disk is whole, without changing it: `switchboard-broker store check`.
//!
//! The check replays every segment from the first, as opening the store does after a lost snapshot,
//! so every frame's checksum is verified (bodies included) and every record decoded. It holds the data
//! directory's lock meanwhile (a running broker is refused), and unlike opening it writes nothing: a
//! torn write at the end is reported, not cut off.

use std::path::{Path, PathBuf};

use super::recover::{full_replay, Mode, TornTail};
use super::{segment, snapshot, LOG_DIR};
use crate::store::{DataDirLock, StoreError};

/// What a check of a whole log found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// The log's directory.
    pub dir: PathBuf,
    pub segments: usize,
    /// Bytes of frames read and verified.
    pub verified_bytes: u64,
    /// Entries live in the mailboxes, and remembered sends.
    pub entries: usize,
    pub remembered: usize,
    /// The high-water mark of broker ids.
    pub last_id: u64,
    /// Whether `index.snap` exists and reads back whole (if not, the next start replays the log).
    pub snapshot_usable: bool,
    /// A torn write at the end, which the next start cuts off (a crash during a write, no data of an
    /// `accepted` message).
    pub torn_tail: Option<TornTail>,
}

/// Checks the log store in `data_dir`. `Err` is damage (which file, which offset, what) or a store
/// that cannot be read; a torn tail is not damage.
pub fn check(data_dir: &Path) -> Result<CheckReport, StoreError> {
    let _lock = DataDirLock::acquire(data_dir)?;
    let dir = data_dir.join(LOG_DIR);
    let ids = segment::list(&dir).map_err(|cause| StoreError::Io {
        path: dir.clone(),
        cause,
    })?;
    if ids.is_empty() {
        return Err(StoreError::Incompatible(format!(
            "no log segments in {}: no log store here",
            dir.display()
        )));
    }
    let ((index, replayed), torn_tail) = full_replay(&dir, &ids, Mode::Check)?;
    Ok(CheckReport {
        segments: ids.len(),
        verified_bytes: replayed.bytes,
        entries: index.len(),
        remembered: index.sent.len(),
        last_id: index.last_id,
        snapshot_usable: snapshot::load(&dir).is_some(),
        torn_tail,
        dir,
    })
}
