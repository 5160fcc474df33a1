//! The first open of a data directory that holds a SQLite store (`switchboard.db`) and no log:
//! every entry, every remembered send and the high-water mark are copied into a new log, and the
//! SQLite files are renamed to `*.migrated`. An old file is never ignored silently: a directory
//! with both a log and a `switchboard.db` is refused.
//!
//! Crash-safe in three steps: the log is written in `log.migrating/` and fsynced, with a marker
//! file saying where it came from; the directory is renamed to `log/`; the SQLite files are
//! renamed. A crash before the second step leaves the SQLite store as it was (the half-written
//! copy is removed on the next try); a crash after it leaves a marked log, and the next open only
//! finishes the renames.

use std::path::Path;

use super::frame::High;
use super::remembered::Cut;
use super::segment::sync_dir;
use super::{LogStore, LOG_DIR};
use crate::store::sqlite::{Dump, DB_FILE};
use crate::store::{DataDirLock, Durability, SqliteStore, StoreError};

/// Where the log is built during a migration.
pub(super) const MIGRATING_DIR: &str = "log.migrating";
/// In a log made by a migration: its presence says the SQLite files beside it are its source.
const MARKER: &str = "from-sqlite";
/// Records per frame while copying.
const CHUNK: usize = 1024;

/// Takes the data directory's lock; if there is a SQLite store to migrate, reads it out first.
pub(super) fn prepare(
    data_dir: &Path,
    durability: Durability,
) -> Result<(DataDirLock, Option<Dump>), StoreError> {
    let db = data_dir.join(DB_FILE);
    let log = data_dir.join(LOG_DIR);
    if !db.exists() {
        return Ok((DataDirLock::acquire(data_dir)?, None));
    }
    if log.exists() {
        if log.join(MARKER).exists() {
            let lock = DataDirLock::acquire(data_dir)?;
            retire_sqlite(data_dir)?;
            tracing::info!(db = %db.display(), "finished an interrupted migration from SQLite");
            return Ok((lock, None));
        }
        return Err(StoreError::Incompatible(format!(
            "{} and {} both exist: the log store will not ignore the SQLite one; keep one of them \
             (move the other away), or choose store = \"sqlite\"",
            log.display(),
            db.display()
        )));
    }
    let mut old = SqliteStore::open(data_dir, durability)?;
    let dump = old.dump()?;
    let lock = old.into_lock()?;
    let migrating = data_dir.join(MIGRATING_DIR);
    if migrating.exists() {
        std::fs::remove_dir_all(&migrating).map_err(|cause| StoreError::Io {
            path: migrating.clone(),
            cause,
        })?;
    }
    Ok((lock, Some(dump)))
}

/// Copies `dump` into `store` (open on `log.migrating/`), then puts the log in place, retires the
/// SQLite files and returns the store reopened on `log/`.
pub(super) fn finish(
    mut store: LogStore,
    dump: Dump,
    data_dir: &Path,
) -> Result<LogStore, StoreError> {
    let durability = store.durability;
    let options = store.options;
    // One fsync at the end instead of one per frame.
    store.durability = Durability::Os;
    let high = High {
        last_id: dump.last_id,
        written_id: dump.written_id,
    };
    for chunk in dump.sent.chunks(CHUNK) {
        store.frame.start_copy(high, Cut::NONE);
        store.frame.section();
        for r in chunk {
            store
                .frame
                .remembered(&r.sender, r.send_id, r.message_id, r.at_ms);
        }
        store.frame.section();
        store.frame.section();
        store.write_frame()?;
    }
    for chunk in dump.entries.chunks(CHUNK) {
        store.frame.start_copy(high, Cut::NONE);
        store.frame.section();
        store.frame.section();
        chunk.iter().for_each(|e| store.frame.append(e, 0));
        store.frame.section();
        store.write_frame()?;
    }
    if dump.last_id > store.index.last_id {
        store.frame.start_copy(high, Cut::NONE);
        (0..3).for_each(|_| store.frame.section());
        store.write_frame()?;
    }
    let migrating = store.dir();
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |cause| StoreError::Io { path, cause }
    };
    store.segments.sync_head().map_err(io(&migrating))?;
    let marker = format!(
        "entries {}\nremembered {}\nlast_id {}\n",
        dump.entries.len(),
        dump.sent.len(),
        dump.last_id
    );
    std::fs::write(migrating.join(MARKER), marker).map_err(io(&migrating))?;
    std::fs::File::open(migrating.join(MARKER))
        .and_then(|f| f.sync_all())
        .and_then(|()| sync_dir(&migrating))
        .map_err(io(&migrating))?;
    let lock = store.lock.take();
    store.since_snapshot = 0;
    drop(store);
    let log = data_dir.join(LOG_DIR);
    std::fs::rename(&migrating, &log).map_err(io(&log))?;
    sync_dir(data_dir).map_err(io(data_dir))?;
    retire_sqlite(data_dir)?;
    tracing::info!(
        entries = dump.entries.len(),
        remembered = dump.sent.len(),
        last_id = dump.last_id,
        "migrated the SQLite store into the log; its files are renamed to *.migrated"
    );
    let lock = lock.ok_or_else(|| StoreError::Failed("the migration lost its lock".into()))?;
    LogStore::open_dir(&log, durability, options, lock)
}

/// Renames `switchboard.db` and its `-wal`/`-shm` files to `*.migrated`.
fn retire_sqlite(data_dir: &Path) -> Result<(), StoreError> {
    for suffix in ["-wal", "-shm", ""] {
        let from = data_dir.join(format!("{DB_FILE}{suffix}"));
        if from.exists() {
            let to = data_dir.join(format!("{DB_FILE}{suffix}.migrated"));
            std::fs::rename(&from, &to).map_err(|cause| StoreError::Io { path: from, cause })?;
        }
    }
    // Its identity went into the log with it; a `switchboard.db` appearing later is a new store.
    let identity = data_dir.join(format!("IDENTITY.{}", crate::store::sqlite::ENGINE));
    if identity.exists() {
        let to = identity.with_extension("sqlite.migrated");
        std::fs::rename(&identity, &to).map_err(|cause| StoreError::Io {
            path: identity.clone(),
            cause,
        })?;
    }
    sync_dir(data_dir).map_err(|cause| StoreError::Io {
        path: data_dir.to_path_buf(),
        cause,
    })
}
