//! Is the data directory still the one the store opened, or was it removed or replaced while the
//! broker runs?
//!
//! Files a process holds open survive `rm -rf`: without a look at the paths, a store keeps
//! committing into deleted files and the broker keeps answering `accepted` for messages no restart
//! will find (issue 12, finding 4). So the store notes the device and inode of a few paths when it
//! opens (the lock file, and the log's directory or SQLite's database file) and compares them
//! before each commit and each readiness check: one `stat` per path, no fsync. Once a path is gone
//! or is another file, the store refuses every commit from then on (senders hear `unavailable`,
//! `/readyz` answers 503) until the broker is restarted on a directory that is really there.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use super::StoreError;

/// The paths a store watches and what they were at open.
#[derive(Debug)]
pub(crate) struct Watch {
    places: Vec<Place>,
    /// Set once a check failed; the directory never comes back for this process.
    gone: Option<String>,
}

#[derive(Debug)]
struct Place {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Watch {
    /// Notes what each of `paths` is now.
    pub(crate) fn new(paths: &[&Path]) -> Result<Self, StoreError> {
        let places = paths
            .iter()
            .map(|path| {
                let meta = std::fs::metadata(path).map_err(|cause| StoreError::Io {
                    path: path.to_path_buf(),
                    cause,
                })?;
                Ok(Place {
                    path: path.to_path_buf(),
                    dev: meta.dev(),
                    ino: meta.ino(),
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(Self { places, gone: None })
    }

    /// Fails if any watched path is gone or is another file than at open; the first failure is
    /// logged as an error and every later call fails the same way.
    pub(crate) fn check(&mut self) -> Result<(), StoreError> {
        if self.gone.is_none() {
            self.gone = self.places.iter().find_map(Place::changed);
            if let Some(what) = &self.gone {
                tracing::error!(
                    what,
                    "the data directory was removed or replaced under the running broker; \
                    refusing every commit (sends are answered unavailable) until it is restarted"
                );
            }
        }
        match &self.gone {
            None => Ok(()),
            Some(what) => Err(StoreError::Vanished(what.clone())),
        }
    }
}

impl Place {
    /// What happened to this path, if it is not the file it was.
    fn changed(&self) -> Option<String> {
        match std::fs::metadata(&self.path) {
            Ok(meta) if meta.dev() == self.dev && meta.ino() == self.ino => None,
            Ok(_) => Some(format!(
                "{} is another file than at start",
                self.path.display()
            )),
            Err(cause) => Some(format!("{}: {cause}", self.path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_removed_or_replaced_fails_the_check_for_good() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (kept, replaced) = (dir.path().join("kept"), dir.path().join("replaced"));
        std::fs::write(&kept, "k").expect("write");
        std::fs::write(&replaced, "r").expect("write");
        let mut watch = Watch::new(&[&kept, &replaced]).expect("watch");
        watch.check().expect("unchanged");
        // The new file exists before the old one goes, so it cannot reuse the old inode.
        std::fs::write(dir.path().join("new"), "n").expect("write");
        std::fs::rename(dir.path().join("new"), &replaced).expect("replace");
        let text = watch.check().expect_err("replaced").to_string();
        assert!(text.contains("another file"), "{text}");
        watch.check().expect_err("and it stays failed");
    }
}
