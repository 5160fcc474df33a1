//! Is the store on disk the one this broker last committed to, and does it still hold everything it
//! last knew to be durable?
//!
//! An operator can empty, delete, replace or roll back a store's files behind the broker's back; the
//! store then opens cleanly and the broker would serve an empty or older store as if nothing had
//! happened (issue 12, finding 4). So each embedded store carries a random **store id**, made when
//! it is first opened and kept inside the files it protects, and the data directory carries a small
//! identity file beside them (`IDENTITY.log`, `IDENTITY.sqlite`) with that id and the **high-water
//! mark**: the highest id the store had durably *written* (an entry, a receipt or a remembered send)
//! when the file was last written. On open the two are compared, and a store whose id is missing or
//! different, or whose highest written id is below the mark, is refused with one message saying what
//! was found, what was expected and how to proceed.
//!
//! The mark is the highest id written, not the store's last id: the last id also covers the Router's
//! id reservations (`Batch::reserve_ids_through`, [`ID_RESERVATION`] ids ahead), so a mark that
//! followed it would stand still for a million commits, and a store losing those commits would
//! still reach it. Each engine keeps its highest written id inside the same commit that writes it
//! (SQLite a `meta` row, the log each frame's header), so a lost commit takes its id with it.
//!
//! The identity file is written at each maintenance pass (`dedupe.maintenance_ms`, only when the
//! mark moved) and at a clean close: one small file, fsynced and renamed, and the directory
//! fsynced. With `durability = "fsync"` the mark also follows every commit in a second, fixed-size
//! file (`MARK.log`, `MARK.sqlite`, see `store/mark.rs`), written without an fsync, so a store that
//! loses its newest commits after a `kill -9` is caught too; the expected mark is the higher of the
//! two. Neither runs ahead of the store (each is written only after what it names is durable), so
//! a crash cannot make a whole store look damaged; both may run behind, which is the window left:
//! after a machine crash (or with `durability = "os"`, where the mark does not follow commits),
//! losing only the commits made since the last mark written durably goes unnoticed.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::mark::{self, MarkFile};
use super::{Durability, StoreError, ID_RESERVATION};

/// What the identity file says, or what an engine found in its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Found {
    /// The id the store's own files carry; `None` for a store made before ids, or an empty one.
    pub store_id: Option<u64>,
    /// The highest id the store wrote (entries, receipts, remembered sends; never one only
    /// reserved), as its own files say.
    pub high_water: u64,
}

/// The identity file of one engine in one data directory, as last written.
#[derive(Debug)]
pub(crate) struct Identity {
    path: PathBuf,
    store_id: u64,
    /// The mark last written to the file; `None` until the file is written.
    written: Option<u64>,
    /// Where the mark that follows commits is kept (`MARK.<engine>`).
    mark_path: PathBuf,
    /// The highest mark known to be durable in the store when it was checked.
    durable: u64,
    /// The mark that follows commits, once [`Identity::follow_commits`] opened it.
    mark: Option<MarkFile>,
}

/// What an engine must do to its own files before the identity is recorded.
#[derive(Debug)]
pub(crate) struct Checked {
    pub identity: Identity,
    /// The store has no id yet (new, or made before ids, or accepted as lost): write this one.
    pub write_store_id: Option<u64>,
    /// A loss was accepted: raise the store's last id and its highest written id to this, so no
    /// id it lost, written or reserved, is ever handed out again.
    pub raise_last_id_to: Option<u64>,
}

/// The identity file's name for `engine` inside the data directory.
fn file_name(engine: &str) -> String {
    format!("IDENTITY.{engine}")
}

impl Checked {
    /// The identity to keep once the engine tried to write the store id it was told to
    /// (`written`): none if that failed (a full disk, say), since the store is checked only once
    /// it carries an id; the start goes on, with a warning. With `durability = "fsync"` its mark
    /// follows every commit from now on.
    pub(crate) fn kept<E: std::fmt::Display>(
        self,
        engine: &str,
        written: Result<(), E>,
        durability: Durability,
    ) -> Option<Identity> {
        match written {
            Ok(()) => {
                let mut identity = self.identity;
                if durability == Durability::Fsync {
                    identity.follow_commits();
                }
                Some(identity)
            }
            Err(error) => {
                tracing::warn!(
                    engine, %error,
                    "cannot give the store its id; it is checked once it has one"
                );
                None
            }
        }
    }
}

impl Identity {
    /// Compares what `engine` `found` in `data_dir` with its identity file. Refuses a store that is
    /// not the one recorded, unless `accept_loss`, in which case the loss is logged as an error and
    /// the store becomes the recorded one.
    pub(crate) fn check(
        data_dir: &Path,
        engine: &str,
        found: Found,
        accept_loss: bool,
    ) -> Result<Checked, StoreError> {
        let path = data_dir.join(file_name(engine));
        let mark_path = data_dir.join(mark::file_name(engine));
        let recorded = read(&path)?;
        let fresh = |store_id: Option<u64>, raise: Option<u64>| {
            let id = store_id.unwrap_or_else(rand::random);
            Checked {
                identity: Identity {
                    path: path.clone(),
                    store_id: id,
                    written: None,
                    mark_path: mark_path.clone(),
                    durable: raise.unwrap_or_default(),
                    mark: None,
                },
                write_store_id: store_id.is_none().then_some(id),
                raise_last_id_to: raise,
            }
        };
        let Some(expected) = recorded else {
            if found.store_id.is_some() {
                tracing::warn!(file = %path.display(), "the store's identity file is missing; taking the store's own id");
            }
            return Ok(fresh(found.store_id, None));
        };
        let in_file = expected.high_water;
        let expected = Found {
            high_water: expected
                .store_id
                .and_then(|id| mark::read(&mark_path, id))
                .map_or(in_file, |followed| followed.max(in_file)),
            ..expected
        };
        let Some(problem) = problem(found, expected) else {
            return Ok(Checked {
                identity: Identity {
                    path,
                    store_id: expected.store_id.unwrap_or_default(),
                    written: Some(in_file),
                    mark_path,
                    durable: expected.high_water,
                    mark: None,
                },
                write_store_id: None,
                raise_last_id_to: None,
            });
        };
        if !accept_loss {
            return Err(StoreError::NotTheStore {
                dir: data_dir.to_path_buf(),
                engine: engine.to_owned(),
                problem,
            });
        }
        tracing::error!(
            dir = %data_dir.display(), engine, %problem,
            "ACCEPTING STORE LOSS (accept_store_loss is set): starting on the store as found; \
             whatever it lost is gone. Unset accept_store_loss now"
        );
        let keep = found.store_id.filter(|id| Some(*id) == expected.store_id);
        // Ids past the mark may have gone out under a reservation that was lost with the commits,
        // at most one reservation ahead of the last id handed out, which the lost commits may
        // have moved on by up to one more.
        let past_anything_lost = expected.high_water.max(found.high_water) + 2 * ID_RESERVATION;
        Ok(fresh(keep, Some(past_anything_lost)))
    }

    /// Records `high_water` (the store's highest written id) as the mark, durably, if it moved (or
    /// was never written). The caller promises everything up to it is durable in the store.
    pub(crate) fn record(&mut self, high_water: u64) -> Result<(), StoreError> {
        if self.written.is_some_and(|w| w >= high_water) {
            return Ok(());
        }
        if let Some(mark) = &self.mark {
            mark.sync().map_err(|cause| StoreError::Io {
                path: self.mark_path.clone(),
                cause,
            })?;
        }
        write(&self.path, self.store_id, high_water)?;
        self.written = Some(high_water);
        Ok(())
    }

    /// Has the mark follow every commit from now on (`durability = "fsync"` only: the store must
    /// be fsynced at each commit, or the mark could run ahead of it after a power loss). A mark
    /// file that cannot be opened is logged; the identity file's mark still holds.
    fn follow_commits(&mut self) {
        match MarkFile::open(self.mark_path.clone(), self.store_id, self.durable) {
            Ok(file) => self.mark = Some(file),
            Err(error) => tracing::warn!(
                file = %self.mark_path.display(), %error,
                "cannot open the store's mark file; the mark is recorded only at maintenance"
            ),
        }
    }

    /// Moves the mark that follows commits to `high_water`, the store's highest written id once a
    /// commit just made durable: one write, no fsync. Nothing if the mark does not follow commits.
    pub(crate) fn committed(&mut self, high_water: u64) {
        if let Some(mark) = self.mark.as_mut() {
            mark.advance(high_water);
        }
    }

    /// Whether `high_water` is past the mark written, so recording it would write the file.
    pub(crate) fn behind(&self, high_water: u64) -> bool {
        self.written.is_none_or(|w| w < high_water)
    }
}

/// Why `found` is not the store the identity file describes, if it is not.
fn problem(found: Found, expected: Found) -> Option<String> {
    let want = expected.store_id.map(hex).unwrap_or_default();
    match found.store_id {
        None if found.high_water == 0 => Some(format!(
            "found an empty store with no id; expected store {want} holding entries up to id {}: \
             the store's files were emptied or deleted",
            expected.high_water
        )),
        None => Some(format!(
            "found a store with no id holding entries up to id {}; expected store {want}: the \
             store's files were replaced by another store's",
            found.high_water
        )),
        Some(id) if Some(id) != expected.store_id => Some(format!(
            "found store {} holding entries up to id {}; expected store {want}: the store's \
             files were replaced by another store's",
            hex(id),
            found.high_water
        )),
        Some(_) if found.high_water < expected.high_water => Some(format!(
            "found store {want} holding entries up to id {}; expected entries up to id {} at \
             least: the store lost its newest commits (files restored from an older copy, cut \
             short, or a WAL deleted)",
            found.high_water, expected.high_water
        )),
        Some(_) => None,
    }
}

fn hex(id: u64) -> String {
    format!("{id:016x}")
}

/// Reads an identity file: `None` if there is none.
fn read(path: &Path) -> Result<Option<Found>, StoreError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(cause) => {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                cause,
            })
        }
    };
    let field = |key: &str| {
        text.lines()
            .filter_map(|line| line.split_once('='))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().to_owned())
    };
    let store_id = field("store_id").and_then(|v| u64::from_str_radix(&v, 16).ok());
    let high_water = field("high_water").and_then(|v| v.parse().ok());
    match (store_id, high_water) {
        (Some(store_id), Some(high_water)) => Ok(Some(Found {
            store_id: Some(store_id),
            high_water,
        })),
        _ => Err(StoreError::Incompatible(format!(
            "{} is not a store identity file (it needs store_id and high_water); if it is \
             damaged, remove it and the store's own id is taken on the next start",
            path.display()
        ))),
    }
}

/// Writes the identity file, durably.
fn write(path: &Path, store_id: u64, high_water: u64) -> Result<(), StoreError> {
    let text = format!(
        "# The identity of the store beside this file and the highest id it had written durably.\n\
         # Written by the broker; see GUARANTEES.md, \"A store that checks itself\". Do not copy it.\n\
         store_id = {}\nhigh_water = {high_water}\n",
        hex(store_id)
    );
    write_durably(path, &text)
}

/// Writes `text` to `path` through a temporary file, fsynced and renamed, then fsyncs the
/// directory: a crash leaves the old file or the new one.
fn write_durably(path: &Path, text: &str) -> Result<(), StoreError> {
    let io = |cause| StoreError::Io {
        path: path.to_path_buf(),
        cause,
    };
    let temp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temp).map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&temp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok(())
}

/// Reads a store id an engine keeps in a file of its own (the log's `log/STORE_ID`).
pub(crate) fn read_id_file(path: &Path) -> Result<Option<u64>, StoreError> {
    match std::fs::read_to_string(path) {
        Ok(text) => u64::from_str_radix(text.trim(), 16)
            .map(Some)
            .map_err(|_| StoreError::Incompatible(format!("{} is not a store id", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(cause) => Err(StoreError::Io {
            path: path.to_path_buf(),
            cause,
        }),
    }
}

/// Writes a store id into a file of the engine's own, durably.
pub(crate) fn write_id_file(path: &Path, store_id: u64) -> Result<(), StoreError> {
    write_durably(path, &format!("{}\n", hex(store_id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(store_id: Option<u64>, high_water: u64) -> Found {
        Found {
            store_id,
            high_water,
        }
    }

    fn open(dir: &Path, what: Found, accept: bool) -> Result<Checked, StoreError> {
        let mut checked = Identity::check(dir, "log", what, accept)?;
        checked.identity.record(what.high_water)?;
        Ok(checked)
    }

    /// A new store's directory, grown to entry id 10 and recorded, and its id.
    fn a_store_holding_ten() -> (tempfile::TempDir, u64) {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = open(dir.path(), found(None, 0), false)
            .expect("new")
            .write_store_id
            .expect("id");
        open(dir.path(), found(Some(id), 10), false).expect("grown");
        (dir, id)
    }

    #[test]
    fn a_new_store_gets_an_id_and_the_same_store_opens_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let checked = open(dir.path(), found(None, 0), false).expect("new");
        let id = checked.write_store_id.expect("a new store gets an id");
        open(dir.path(), found(Some(id), 5), false).expect("grown");
        open(dir.path(), found(Some(id), 5), false).expect("same");
    }

    #[test]
    fn emptied_replaced_and_rolled_back_stores_are_refused_unless_accepted() {
        let (dir, id) = a_store_holding_ten();
        for (what, needle) in [
            (found(None, 0), "emptied or deleted"),
            (found(None, 10), "replaced"),
            (found(Some(id ^ 1), 10), "replaced"),
            (found(Some(id), 9), "lost its newest commits"),
        ] {
            let text = open(dir.path(), what, false)
                .expect_err("refused")
                .to_string();
            assert!(
                text.contains(needle) && text.contains("--accept-store-loss"),
                "{text}"
            );
        }
        let accepted = open(dir.path(), found(Some(id), 9), true).expect("accepted");
        assert_eq!(
            accepted.raise_last_id_to,
            Some(10 + 2 * ID_RESERVATION),
            "past the mark by more than any reservation lost with the commits"
        );
        assert_eq!(accepted.write_store_id, None, "the same store keeps its id");
        open(dir.path(), found(Some(id), 9), false).expect("accepted once, then it is the store");
    }

    #[test]
    fn the_mark_that_follows_commits_raises_the_expected_mark_unless_torn_or_foreign() {
        let (dir, id) = a_store_holding_ten();
        let mut checked =
            Identity::check(dir.path(), "log", found(Some(id), 10), false).expect("same");
        checked.identity.follow_commits();
        checked.identity.committed(12);
        let text = Identity::check(dir.path(), "log", found(Some(id), 10), false)
            .expect_err("two commits past the identity file's mark were lost")
            .to_string();
        assert!(text.contains("expected entries up to id 12"), "{text}");
        Identity::check(dir.path(), "log", found(Some(id), 12), false).expect("all there");

        let path = dir.path().join(mark::file_name("log"));
        let mut torn = std::fs::read(&path).expect("read the mark file");
        torn[20] ^= 0xff;
        std::fs::write(&path, &torn).expect("tear it");
        Identity::check(dir.path(), "log", found(Some(id), 10), false)
            .expect("a torn mark is ignored");

        let mut foreign = Identity::check(dir.path(), "log", found(Some(id ^ 1), 0), true)
            .expect("another store, accepted")
            .identity;
        foreign.follow_commits();
        foreign.committed(99);
        std::fs::write(
            dir.path().join(file_name("log")),
            format!("store_id = {}\nhigh_water = 10\n", hex(id)),
        )
        .expect("the identity file back");
        Identity::check(dir.path(), "log", found(Some(id), 10), false)
            .expect("another store's mark is ignored");
    }
}
