//! One broker per data directory: an exclusive lock held for as long as the store is open.
//!
//! Two brokers on one directory both number entries from the same high-water mark and delete each
//! other's rows, so accepted messages are lost. The lock is `flock` on `data_dir/LOCK` (through
//! `std::fs::File::try_lock`): the kernel drops it when the holder exits, `kill -9` included, so a
//! crash never leaves a stale lock behind. The file holds the holder's pid, only to name it in the
//! refusal; its presence alone means nothing.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use super::StoreError;

/// The lock file's name inside the data directory.
pub(crate) const LOCK_FILE: &str = "LOCK";

/// How long a lock that this process itself held may take to come free: a child forked just before
/// it was released holds it until the child's `exec` closes the file.
const OWN_RELEASE_WAIT: Duration = Duration::from_secs(2);

/// The held lock; dropping it (closing the file) releases it.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the lock on `data_dir`, creating the directory if needed, or says who holds it.
    pub fn acquire(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join(LOCK_FILE);
        let io_error = |cause| StoreError::DataDir {
            path: path.clone(),
            cause,
        };
        std::fs::create_dir_all(data_dir).map_err(|cause| StoreError::DataDir {
            path: data_dir.to_path_buf(),
            cause,
        })?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_error)?;
        let mut own_since = None;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    let holder = holder(&mut file);
                    // This process wrote the pid: the lock was ours and is being let go. A child
                    // forked meanwhile (a test spawning a server) shares the locked file until it
                    // execs, so wait a moment for that, and only for that.
                    let ours = holder == format!("pid {}", std::process::id());
                    let waited = own_since.get_or_insert_with(Instant::now).elapsed();
                    if !ours || waited >= OWN_RELEASE_WAIT {
                        return Err(StoreError::Locked {
                            path: data_dir.to_path_buf(),
                            holder,
                        });
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(TryLockError::Error(cause)) => return Err(io_error(cause)),
            }
        }
        let pid = format!("{}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(pid.as_bytes()))
            .map_err(io_error)?;
        Ok(Self { _file: file })
    }
}

/// Who holds the lock, as the file says ("pid 1234"), or that it does not say.
fn holder(file: &mut File) -> String {
    let mut text = String::new();
    match file
        .seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_string(&mut text))
    {
        Ok(_) if !text.trim().is_empty() => format!("pid {}", text.trim()),
        _ => "a process that did not write its pid".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_told_who_holds_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = DataDirLock::acquire(dir.path()).expect("first");
        let err = DataDirLock::acquire(dir.path()).expect_err("second refused");
        let text = err.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        drop(first);
        DataDirLock::acquire(dir.path()).expect("free again once released");
    }

    #[test]
    fn a_lock_file_left_behind_is_not_a_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(LOCK_FILE), "999999\n").expect("stale file");
        DataDirLock::acquire(dir.path()).expect("a file without a holder does not lock");
    }
}
