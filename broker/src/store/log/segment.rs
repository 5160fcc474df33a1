//! The segment files in `data_dir/log/`: which exist, which one is the head that frames are
//! appended to, rolling to a new head at the size limit, positioned reads of bodies, and removal.
//!
//! Files are named by a sequence number (`0000000001.seg`), so their order is the log's order. Every
//! file stays open for the store's lifetime: a fetch is a `pread`, never an `open`. A new file and a
//! removed one are made durable by fsyncing the directory; a sealed segment is fsynced before the
//! head moves on, so only the newest segment can ever end in a torn write.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Which segment; part of every entry's location.
pub(super) type SegmentId = u32;

/// The name of segment `id`.
pub(super) fn file_name(id: SegmentId) -> String {
    format!("{id:010}.seg")
}

/// The segment id a file name stands for, if it is a segment's.
fn parse_name(name: &str) -> Option<SegmentId> {
    name.strip_suffix(".seg")?.parse().ok()
}

/// The ids of the segments in `dir`, oldest first.
pub(super) fn list(dir: &Path) -> io::Result<Vec<SegmentId>> {
    let mut ids = Vec::new();
    for item in std::fs::read_dir(dir)? {
        if let Some(id) = item?.file_name().to_str().and_then(parse_name) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// How an append failed.
#[derive(Debug)]
pub(super) enum AppendError {
    /// Nothing of the frame is left in the file (a write refused, on a full disk say, and cut off
    /// again): the log is as before and may take the next frame.
    CutOff(io::Error),
    /// The file's state is unknown (a failed fsync, a failed roll, a cut that failed).
    Unknown(io::Error),
}

/// Fsyncs a directory, so a file created, renamed or removed in it stays so after a crash.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The open segment files.
#[derive(Debug)]
pub(super) struct Segments {
    dir: PathBuf,
    files: BTreeMap<SegmentId, File>,
    /// The segment frames are appended to: the newest.
    head: SegmentId,
    /// Bytes in the head, which is where the next frame goes.
    head_len: u64,
    /// Roll to a new head before a frame would take the head past this.
    limit: u64,
    /// Where the head's last frame starts and its checksum: a snapshot names it, so a later open
    /// can tell that the log it replays on top of is the one the snapshot covered.
    last_frame: Option<(u64, u32)>,
}

impl Segments {
    /// Opens every segment in `ids` (oldest first, at least one); the last is the head, `head_len`
    /// long (recovery has already cut off any torn tail).
    pub(super) fn open(
        dir: &Path,
        ids: &[SegmentId],
        head_len: u64,
        last_frame: Option<(u64, u32)>,
        limit: u64,
    ) -> io::Result<Self> {
        let mut files = BTreeMap::new();
        for &id in ids {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(dir.join(file_name(id)))?;
            files.insert(id, file);
        }
        let head = ids.last().copied().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "no segment to open as the head")
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            files,
            head,
            head_len,
            limit: limit.min(u64::from(u32::MAX)),
            last_frame,
        })
    }

    /// Creates segment `id` (empty) in `dir` and fsyncs the directory.
    pub(super) fn create(dir: &Path, id: SegmentId) -> io::Result<()> {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dir.join(file_name(id)))?;
        sync_dir(dir)
    }

    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(super) fn head(&self) -> SegmentId {
        self.head
    }

    pub(super) fn head_len(&self) -> u64 {
        self.head_len
    }

    pub(super) fn last_frame(&self) -> Option<(u64, u32)> {
        self.last_frame
    }

    pub(super) fn path(&self, id: SegmentId) -> PathBuf {
        self.dir.join(file_name(id))
    }

    pub(super) fn contains(&self, id: SegmentId) -> bool {
        self.files.contains_key(&id)
    }

    /// Every segment, oldest first.
    pub(super) fn ids(&self) -> impl Iterator<Item = SegmentId> + '_ {
        self.files.keys().copied()
    }

    /// Bytes in segment `id` (0 if there is no such segment).
    pub(super) fn len(&self, id: SegmentId) -> u64 {
        if id == self.head {
            return self.head_len;
        }
        self.files
            .get(&id)
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len())
    }

    /// Appends `frame` in one write, rolling first if it would not fit, and fsyncs it if `sync`.
    /// Returns where the frame starts. A failed write is cut off again, so the file never holds a
    /// partial frame that later frames would sit behind.
    pub(super) fn append(
        &mut self,
        frame: &[u8],
        sync: bool,
    ) -> Result<(SegmentId, u64), AppendError> {
        let size = frame.len() as u64;
        if u64::from(u32::MAX) < size {
            return Err(AppendError::CutOff(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a batch of {size} bytes is larger than a segment can be"),
            )));
        }
        if self.head_len > 0 && self.head_len + size > self.limit {
            self.roll().map_err(AppendError::Unknown)?;
        }
        let at = self.head_len;
        let file = self.head_file().map_err(AppendError::Unknown)?;
        if let Err(error) = file.write_all_at(frame, at) {
            // If even this fails, recovery treats the partial frame as a torn tail.
            return Err(match file.set_len(at) {
                Ok(()) => AppendError::CutOff(error),
                Err(_) => AppendError::Unknown(error),
            });
        }
        if sync {
            file.sync_data().map_err(AppendError::Unknown)?;
        }
        self.head_len = at + size;
        let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
        self.last_frame = Some((at, crc));
        Ok((self.head, at))
    }

    /// Seals the head (fsynced) and starts the next segment.
    fn roll(&mut self) -> io::Result<()> {
        self.head_file()?.sync_data()?;
        let next = self.head + 1;
        Self::create(&self.dir, next)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path(next))?;
        self.files.insert(next, file);
        self.head = next;
        self.head_len = 0;
        self.last_frame = None;
        tracing::debug!(segment = next, "log rolled to a new segment");
        Ok(())
    }

    /// Fsyncs the head (before a snapshot claims to cover it).
    pub(super) fn sync_head(&self) -> io::Result<()> {
        self.head_file()?.sync_data()
    }

    fn head_file(&self) -> io::Result<&File> {
        self.file(self.head)
    }

    fn file(&self, id: SegmentId) -> io::Result<&File> {
        self.files.get(&id).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("segment {} is not open", self.path(id).display()),
            )
        })
    }

    /// Reads `len` bytes of segment `id` at `offset`.
    pub(super) fn read(&self, id: SegmentId, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; len];
        self.file(id)?.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    /// Removes a sealed segment (never the head) and fsyncs the directory.
    pub(super) fn remove(&mut self, id: SegmentId) -> io::Result<()> {
        if id == self.head {
            return Ok(());
        }
        self.files.remove(&id);
        std::fs::remove_file(self.path(id))?;
        sync_dir(&self.dir)
    }
}
