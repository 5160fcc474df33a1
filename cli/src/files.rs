//! Files that are either whole or absent, and directories that remember what happened in them.
//!
//! Every file the daemon hands on (a message in `--out-dir`, a dead letter, a spooled message, the
//! compacted journal) is written the same way: into a temporary file in the same directory, fsynced,
//! renamed over its final name, and then the directory is fsynced so the rename itself survives a
//! power loss. A reader therefore never sees half a file under a final name. Temporary files start
//! with a dot and end in `.tmp`; one left behind by a crash is overwritten by the next write of the
//! same name, and readers skip dot files.
//!
//! These are blocking calls; async code runs them with [`blocking`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Writes `contents` to `dir/name` atomically and durably; returns the final path.
pub(crate) fn write_atomic(dir: &Path, name: &str, contents: &[u8]) -> io::Result<PathBuf> {
    let temporary = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temporary)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temporary, &path)?;
    sync_dir(dir)?;
    Ok(path)
}

/// Removes `path` and makes the removal durable.
pub(crate) fn remove_durably(path: &Path) -> io::Result<()> {
    fs::remove_file(path)?;
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// Moves `from` to `to` (same file system) and makes the move durable in both directories.
pub(crate) fn rename_durably(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)?;
    for dir in [to.parent(), from.parent()].into_iter().flatten() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Fsyncs a directory, so that the names created, renamed or removed in it are on disk.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and its parents if missing, naming the directory in the error.
pub(crate) fn ensure_dir(dir: &Path, what: &str) -> anyhow::Result<()> {
    fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create the {what} {}: {e}", dir.display()))
}

/// Runs blocking file work on tokio's blocking pool, so the connection's task keeps running.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(format!("file task failed: {e}"))))
}

/// A lock on `dir/name`, held until dropped (or until the process dies: the kernel releases it).
/// The daemon holds its state directory's and its outbox's exclusively, so two daemons never share
/// one; `send --spool` holds an outbox's shared while it tries the broker itself.
#[derive(Debug)]
pub(crate) struct DirLock {
    file: File,
}

/// What trying to take a [`DirLock`] found.
pub(crate) enum Locked {
    /// The lock is ours now.
    Taken(DirLock),
    /// Another process holds it (exclusively, if we asked for it shared); the lock file says who,
    /// as its exclusive holder wrote it.
    Held(String),
}

impl DirLock {
    /// Tries to take the lock exclusively without waiting; on success writes `owner` into the file.
    pub(crate) fn try_exclusive(dir: &Path, name: &str, owner: &str) -> io::Result<Locked> {
        let (path, mut file) = Self::open(dir, name)?;
        match file.try_lock() {
            Ok(()) => {
                file.set_len(0)?;
                file.write_all(owner.as_bytes())?;
                Ok(Locked::Taken(DirLock { file }))
            }
            Err(fs::TryLockError::WouldBlock) => Ok(Locked::Held(holder(&path))),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// Tries to take the lock shared without waiting: fails only against an exclusive holder.
    pub(crate) fn try_shared(dir: &Path, name: &str) -> io::Result<Locked> {
        let (path, file) = Self::open(dir, name)?;
        match file.try_lock_shared() {
            Ok(()) => Ok(Locked::Taken(DirLock { file })),
            Err(fs::TryLockError::WouldBlock) => Ok(Locked::Held(holder(&path))),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }

    fn open(dir: &Path, name: &str) -> io::Result<(PathBuf, File)> {
        let path = dir.join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        Ok((path, file))
    }
}

fn holder(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_owned()
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_atomic_write_leaves_only_the_final_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_atomic(dir.path(), "00042.msg", b"hello").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"hello");
        write_atomic(dir.path(), "00042.msg", b"again").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"again");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["00042.msg"]);
    }

    #[test]
    fn a_held_lock_names_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let Locked::Taken(lock) = DirLock::try_exclusive(dir.path(), ".lock", "bob").unwrap()
        else {
            panic!("the first lock is free");
        };
        for again in [
            DirLock::try_exclusive(dir.path(), ".lock", "alice").unwrap(),
            DirLock::try_shared(dir.path(), ".lock").unwrap(),
        ] {
            match again {
                Locked::Held(holder) => assert_eq!(holder, "bob"),
                Locked::Taken(_) => panic!("taken twice"),
            }
        }
        drop(lock);
        let Locked::Taken(shared) = DirLock::try_shared(dir.path(), ".lock").unwrap() else {
            panic!("free again");
        };
        assert!(
            matches!(
                DirLock::try_shared(dir.path(), ".lock").unwrap(),
                Locked::Taken(_)
            ),
            "shared locks share"
        );
        assert!(matches!(
            DirLock::try_exclusive(dir.path(), ".lock", "carol").unwrap(),
            Locked::Held(_)
        ));
        drop(shared);
    }
}
