//! The log engine: mailboxes as an append-only, segmented log on disk and an index in memory.
//!
//! Every commit is one frame appended to the newest segment in one write (and with
//! `durability = "fsync"`, one `fdatasync` before the commit returns); the frame records what the
//! batch did, deletes as tombstones. The index in memory ([`index`]) holds every live entry's
//! metadata and its body's place on disk, so a fetch is a lookup and a few positioned reads. On
//! open the index is rebuilt from a snapshot plus the frames after it, or from the whole log
//! ([`recover`]); a torn write at the very end is cut off, damage anywhere else is refused.
//! Housekeeping deletes segments nothing live needs and rewrites mostly-dead ones ([`compact`]).
//! The design is that of NATS JetStream's file store and of Kafka's log.

mod apply;
mod check;
mod commit;
mod compact;
mod frame;
mod guard;
mod index;
mod migrate;
mod recover;
mod remembered;
mod segment;
mod snapshot;
#[cfg(test)]
pub(crate) mod tests;
mod verify;

use std::path::{Path, PathBuf};

use bytes::Bytes;

use self::frame::{FrameBuilder, HEADER};
use self::index::{Index, Meta};
use self::segment::Segments;
use super::{
    Batch, CommitOutcome, Damaged, DataDirLock, Durability, Entry, ExpiredEntry, MailboxStore,
    MailboxUsage, Maintenance, MaintenanceReport, StoreError,
};

/// The directory inside the data directory that holds the segments and the snapshot.
pub use check::{check, CheckReport};
pub use recover::TornTail;

pub(crate) const LOG_DIR: &str = "log";

/// How the log opens: sizes that tests shrink (the defaults suit a server), and whether a store
/// that is not the one last committed to is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOptions {
    /// Roll to a new segment once the head would pass this many bytes.
    pub segment_bytes: u64,
    /// Write a snapshot from housekeeping once this many bytes were logged since the last one.
    pub snapshot_after_bytes: u64,
    /// Open a log that was emptied, replaced or lost its newest commits, logging the loss as an
    /// error, instead of refusing it (`accept_store_loss`).
    pub accept_loss: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
            snapshot_after_bytes: 64 << 20,
            accept_loss: false,
        }
    }
}

/// Mailboxes in a segmented log under `data_dir/log/`.
pub struct LogStore {
    segments: Segments,
    index: Index,
    /// The frame being built, reused so a commit allocates nothing for it.
    frame: FrameBuilder,
    durability: Durability,
    options: LogOptions,
    /// Bytes logged since the last snapshot.
    since_snapshot: u64,
    /// Which stretches of the segments this process did not write hold damaged frames.
    verified: verify::Verified,
    /// Set once an fsync (or a write that could not be cut off again) failed: the file's state is
    /// then unknown, so the store refuses further commits until a restart recovers it from disk. A
    /// write refused and cut off (a full disk) fails only its batch.
    failed: Option<String>,
    /// Held while the store is open: a second broker on the same directory is refused. Taken out
    /// only when a migration hands it to the store it reopens.
    lock: Option<DataDirLock>,
    /// The data directory's record of this log's id and high-water mark (`guard.rs`); set once
    /// the open has checked it.
    identity: Option<crate::store::identity::Identity>,
    /// The lock file and the log's directory as they were at open: a commit into a directory
    /// removed or replaced since is refused (`store/watch.rs`).
    watch: Option<crate::store::watch::Watch>,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("dir", &self.segments.dir())
            .field("entries", &self.index.len())
            .finish()
    }
}

impl LogStore {
    /// Opens (creating if needed) the log in `data_dir`, migrating a SQLite store found there on
    /// the first open. Blocks on disk: call it off the actor threads.
    pub fn open(data_dir: &Path, durability: Durability) -> Result<Self, StoreError> {
        Self::open_with(data_dir, durability, LogOptions::default())
    }

    /// [`LogStore::open`] with explicit sizes.
    pub fn open_with(
        data_dir: &Path,
        durability: Durability,
        options: LogOptions,
    ) -> Result<Self, StoreError> {
        let started = std::time::Instant::now();
        let (lock, dump) = migrate::prepare(data_dir, durability)?;
        let dir = data_dir.join(LOG_DIR);
        let target = match &dump {
            Some(_) => data_dir.join(migrate::MIGRATING_DIR),
            None => dir.clone(),
        };
        let mut store = Self::open_dir(&target, durability, options, lock)?;
        if let Some(dump) = dump {
            store = migrate::finish(store, dump, data_dir)?;
        }
        store.check_identity(data_dir)?;
        tracing::info!(
            dir = %dir.display(), ?durability, entries = store.index.len(),
            remembered = store.index.sent.len(), replayed_bytes = store.since_snapshot,
            millis = started.elapsed().as_millis() as u64, "opened log store"
        );
        Ok(store)
    }

    fn open_dir(
        dir: &Path,
        durability: Durability,
        options: LogOptions,
        lock: DataDirLock,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|cause| StoreError::DataDir {
            path: dir.to_path_buf(),
            cause,
        })?;
        let recovered = recover::recover(dir, options.segment_bytes)?;
        Ok(Self {
            verified: verify::Verified::new(recovered.segments.head()),
            segments: recovered.segments,
            index: recovered.index,
            frame: FrameBuilder::default(),
            durability,
            options,
            since_snapshot: recovered.replayed_bytes,
            failed: None,
            lock: Some(lock),
            identity: None,
            watch: None,
        })
    }

    /// Writes the frame in `self.frame` and applies it to the index.
    fn write_frame(&mut self) -> Result<(), StoreError> {
        self.usable()?;
        let bytes = self.frame.finish();
        let sync = self.durability == Durability::Fsync;
        let (segment, at) = match self.segments.append(bytes, sync) {
            Ok(place) => place,
            // Refused and cut off (no space, say): this batch fails, the next may go through.
            Err(segment::AppendError::CutOff(cause)) => {
                return Err(StoreError::Io {
                    path: self.segments.path(self.segments.head()),
                    cause,
                })
            }
            Err(segment::AppendError::Unknown(cause)) => {
                let error = StoreError::Io {
                    path: self.segments.path(self.segments.head()),
                    cause,
                };
                self.failed = Some(format!(
                    "an earlier write failed ({error}); restart the broker"
                ));
                return Err(error);
            }
        };
        self.since_snapshot += bytes.len() as u64;
        let decoded = frame::decode(&bytes[HEADER..]).map_err(|what| StoreError::LogCorrupt {
            path: self.segments.path(segment),
            offset: at,
            what: format!("a frame just written does not decode: {what}"),
        })?;
        self.index.apply(&decoded, segment, at + HEADER as u64);
        if sync {
            // Fsynced: the mark may follow.
            if let Some(identity) = self.identity.as_mut() {
                identity.committed(self.index.written_id);
            }
        }
        Ok(())
    }

    fn io_error(&self, segment: segment::SegmentId, cause: std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.segments.path(segment),
            cause,
        }
    }

    /// Reads the bodies of `metas`, one positioned read per run of neighbouring bodies.
    fn bodies(&self, metas: &[&Meta]) -> Result<Vec<Bytes>, StoreError> {
        /// Bodies closer than this share a read; a run is at most `MAX_RUN` bytes.
        const GAP: u64 = 4096;
        const MAX_RUN: u64 = 1 << 20;
        let mut bodies = Vec::with_capacity(metas.len());
        let mut i = 0;
        while i < metas.len() {
            let first = metas[i];
            let start = u64::from(first.offset);
            let mut end = start + u64::from(first.body_len);
            let mut j = i + 1;
            while let Some(next) = metas.get(j) {
                let (at, len) = (u64::from(next.offset), u64::from(next.body_len));
                if next.segment != first.segment || at < end || at - end > GAP {
                    break;
                }
                if at + len - start > MAX_RUN {
                    break;
                }
                end = at + len;
                j += 1;
            }
            let run = self
                .segments
                .read(first.segment, start, (end - start) as usize)
                .map_err(|cause| self.io_error(first.segment, cause))?;
            let run = Bytes::from(run);
            for meta in &metas[i..j] {
                let at = (u64::from(meta.offset) - start) as usize;
                bodies.push(run.slice(at..at + meta.body_len as usize));
            }
            i = j;
        }
        Ok(bodies)
    }

    /// Writes a snapshot of the index covering everything logged so far.
    fn snapshot(&mut self) -> Result<(), StoreError> {
        snapshot::write(&self.segments, &self.index)?;
        self.since_snapshot = 0;
        Ok(())
    }

    /// The directory holding the segments.
    pub fn dir(&self) -> PathBuf {
        self.segments.dir().to_path_buf()
    }
}

fn entry(mailbox: &str, meta: &Meta, body: Bytes) -> Entry {
    Entry {
        id: meta.id,
        mailbox: mailbox.to_owned(),
        kind: meta.kind,
        peer: meta.peer.to_string(),
        send_id: meta.send_id,
        message_id: meta.message_id,
        sent_at_ms: meta.sent_at_ms,
        expires_at_ms: meta.expires_at_ms,
        receipts: meta.receipts,
        body,
    }
}

impl MailboxStore for LogStore {
    fn commit(&mut self, batch: &Batch) -> Result<CommitOutcome, StoreError> {
        if batch.is_empty() {
            return Ok(CommitOutcome::default());
        }
        let encoded = commit::encode(&self.index, batch, &mut self.frame);
        if encoded.changes {
            self.write_frame()?;
        }
        Ok(encoded.outcome)
    }

    fn fetch(&mut self, mailbox: &str, after: u64, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let metas: Vec<&Meta> = self.index.page(mailbox, after, limit).collect();
        let mut damaged = Vec::new();
        for meta in &metas {
            let (offset, len) = (u64::from(meta.offset), u64::from(meta.body_len));
            if self
                .verified
                .is_damaged(&self.segments, meta.segment, offset, len)
                .map_err(|cause| self.io_error(meta.segment, cause))?
            {
                damaged.push(Damaged {
                    id: meta.id,
                    body_len: len,
                });
            }
        }
        let is_damaged = |id: u64| damaged.iter().any(|d| d.id == id);
        let readable: Vec<&Meta> = metas
            .iter()
            .copied()
            .filter(|m| !is_damaged(m.id))
            .collect();
        let mut bodies = self.bodies(&readable)?.into_iter();
        let page = metas
            .iter()
            .map(|meta| {
                let body = match is_damaged(meta.id) {
                    true => Bytes::new(),
                    false => bodies.next().unwrap_or_default(),
                };
                entry(mailbox, meta, body)
            })
            .collect();
        let what = "their log frames fail their checksum".to_owned();
        StoreError::unless_damaged(mailbox, page, damaged, what)
    }

    fn usage(&mut self) -> Result<Vec<MailboxUsage>, StoreError> {
        Ok(self.index.usage())
    }

    fn expired(&mut self, now_ms: u64, limit: usize) -> Result<Vec<ExpiredEntry>, StoreError> {
        Ok(self
            .index
            .due(now_ms, limit)
            .into_iter()
            .filter_map(|id| self.index.get(id))
            .map(|(mailbox, meta)| ExpiredEntry {
                entry: entry(mailbox, meta, Bytes::new()),
                body_len: u64::from(meta.body_len),
            })
            .collect())
    }

    fn oldest_sent_at_ms(&mut self) -> Result<Option<u64>, StoreError> {
        Ok(self
            .index
            .mailboxes
            .iter()
            .filter_map(|m| m.entries.front().map(|meta| meta.sent_at_ms))
            .min())
    }

    fn sent(&mut self, sender: &str, send_id: u64) -> Result<Option<u64>, StoreError> {
        Ok(self.index.sent.get(sender, send_id).map(|s| s.message_id))
    }

    fn maintain(&mut self, what: &Maintenance) -> Result<MaintenanceReport, StoreError> {
        let before = self.index.sent.len();
        let cutoff = self
            .index
            .sent
            .cutoff(what.forget_sent_before_ms, what.remember_at_most);
        if self.index.sent.any_before(cutoff) {
            self.frame.start(self.index.high(), cutoff);
            for _ in 0..3 {
                self.frame.section();
            }
            self.write_frame()?;
        }
        let forgotten = (before - self.index.sent.len()) as u64;
        let freed = compact::reclaim(self)?;
        self.index.prune_names();
        if self.since_snapshot >= self.options.snapshot_after_bytes {
            self.snapshot()?;
        }
        self.record_mark_or_warn();
        Ok(MaintenanceReport {
            forgotten,
            reclaimed_pages: freed / 4096,
        })
    }

    fn last_id(&mut self) -> Result<u64, StoreError> {
        // The readiness check asks this: a store that cannot commit is not ready.
        self.usable()?;
        Ok(self.index.last_id)
    }
}

impl Drop for LogStore {
    /// A clean close leaves a snapshot, so the next open skips the replay, and records the
    /// high-water mark.
    fn drop(&mut self) {
        if self.failed.is_some() {
            return;
        }
        self.record_mark_or_warn();
        if self.since_snapshot == 0 {
            return;
        }
        let started = std::time::Instant::now();
        match self.snapshot() {
            Ok(()) => tracing::info!(
                entries = self.index.len(),
                millis = started.elapsed().as_millis() as u64,
                "log store snapshot written at close"
            ),
            Err(error) => tracing::warn!(%error, "cannot write the log store snapshot at close"),
        }
    }
}
