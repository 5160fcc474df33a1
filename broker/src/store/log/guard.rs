//! The log's side of a store that checks itself (`store/identity.rs`): its store id in
//! `log/STORE_ID`, compared at open with the data directory's `IDENTITY.log`, and the high-water
//! mark recorded after a maintenance pass and at a clean close, and after every commit in
//! `MARK.log` with `durability = "fsync"` (`store/mark.rs`).
//!
//! The id lives in the log's own directory, so a log deleted, or replaced by another store's
//! directory, takes its id with it; the mark catches a log cut short or restored from an older copy.
//! The mark is the highest id written, which every frame's header carries (`frame.rs`), so a frame
//! lost takes its ids with it while the last id may stand at a reservation that survived.

use std::path::Path;

use super::frame::High;
use super::remembered::Cut;
use super::LogStore;
use crate::store::identity::{self, Found, Identity};
use crate::store::watch::Watch;
use crate::store::{Durability, StoreError};

/// The file in the log's directory holding its store id.
pub(super) const STORE_ID_FILE: &str = "STORE_ID";

/// The engine's name in the identity file's name and in messages.
const ENGINE: &str = "log";

impl LogStore {
    /// Compares the opened log with `data_dir`'s identity file; refuses a log that is not the one
    /// recorded unless the options accept the loss. A refused store writes nothing at close.
    pub(super) fn check_identity(&mut self, data_dir: &Path) -> Result<(), StoreError> {
        let checked = self.compare_identity(data_dir);
        if let Err(error) = &checked {
            self.failed = Some(format!("not opened: {error}"));
        }
        checked
    }

    fn compare_identity(&mut self, data_dir: &Path) -> Result<(), StoreError> {
        let id_file = self.segments.dir().join(STORE_ID_FILE);
        let found = Found {
            store_id: identity::read_id_file(&id_file)?,
            high_water: self.index.written_id,
        };
        let checked = Identity::check(data_dir, ENGINE, found, self.options.accept_loss)?;
        if let Some(mark) = checked
            .raise_last_id_to
            .filter(|m| *m > self.index.written_id)
        {
            // An empty frame carrying the new high-water marks: ids the lost commits used or
            // reserved are never handed out again.
            let high = High {
                last_id: mark.max(self.index.last_id),
                written_id: mark,
            };
            self.frame.start(high, Cut::NONE);
            for _ in 0..3 {
                self.frame.section();
            }
            self.write_frame()?;
        }
        // On a full disk the store must still start and deliver what it holds: the id and the
        // mark are written when there is room (the mark at the next pass that finds some).
        let written = match checked.write_store_id {
            Some(id) => identity::write_id_file(&id_file, id),
            None => Ok(()),
        };
        self.identity = checked.kept(ENGINE, written, self.durability);
        self.record_mark_or_warn();
        let lock = data_dir.join(crate::store::lock::LOCK_FILE);
        self.watch = Some(Watch::new(&[&lock, self.segments.dir()])?);
        Ok(())
    }

    /// [`LogStore::record_mark`], a failure (no space, say) only logged: the next pass retries.
    pub(super) fn record_mark_or_warn(&mut self) {
        if let Err(error) = self.record_mark() {
            tracing::warn!(%error, "cannot record the log store's high-water mark; retrying at the next pass");
        }
    }

    /// Fails if an earlier write failed or the data directory is gone; the store then refuses
    /// every commit until a restart.
    pub(super) fn usable(&mut self) -> Result<(), StoreError> {
        if let Some(failed) = &self.failed {
            return Err(StoreError::Failed(failed.clone()));
        }
        if let Some(watch) = self.watch.as_mut() {
            if let Err(error) = watch.check() {
                self.failed = Some(error.to_string());
                return Err(error);
            }
        }
        Ok(())
    }

    /// Records the log's highest written id as the high-water mark if it moved, after making
    /// sure it is on disk (with `durability = "os"` the head may not be fsynced yet).
    pub(super) fn record_mark(&mut self) -> Result<(), StoreError> {
        let high_water = self.index.written_id;
        let Some(identity) = self.identity.as_mut() else {
            return Ok(());
        };
        if !identity.behind(high_water) {
            return Ok(());
        }
        if self.durability == Durability::Os {
            self.segments.sync_head().map_err(|cause| StoreError::Io {
                path: self.segments.path(self.segments.head()),
                cause,
            })?;
        }
        identity.record(high_water)
    }
}
