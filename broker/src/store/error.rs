//! How a store fails, as one typed enum for every engine.

/// How a store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    // Causes are part of the message and deliberately not `source()`, so an error chain printed with
    // `{:#}` does not repeat them.
    #[error("sqlite: {0}")]
    Sqlite(rusqlite::Error),
    /// PostgreSQL refused a statement or the connection to it failed; the store reconnects on
    /// its next call.
    #[error("postgres: {}", postgres_cause(.0))]
    Postgres(postgres::Error),
    /// The last attempt to reach PostgreSQL failed and the next is not due yet: the call fails at
    /// once instead of blocking the store's thread on a dead database.
    #[error("PostgreSQL is unreachable; the next connection attempt is in {retry_in_ms} ms")]
    Unreachable { retry_in_ms: u64 },
    #[error("cannot prepare data directory {path}: {cause}")]
    DataDir {
        path: std::path::PathBuf,
        cause: std::io::Error,
    },
    #[error(
        "data directory {path} is in use by another broker ({holder}); one broker per directory"
    )]
    Locked {
        path: std::path::PathBuf,
        holder: String,
    },
    #[error("{path}: {cause}")]
    Io {
        path: std::path::PathBuf,
        cause: std::io::Error,
    },
    /// A log segment holds a damaged frame where no torn write can be: refused, never skipped.
    #[error("log segment {path} is corrupt at byte {offset}: {what}")]
    LogCorrupt {
        path: std::path::PathBuf,
        offset: u64,
        what: String,
    },
    /// The store's files are not the ones this broker last committed to (`identity.rs`).
    #[error(
        "refusing to start on the {engine} store in {dir}: {problem}. Put \
         the right files back, or, if what is missing is accepted as lost, start once with \
         --accept-store-loss (setting accept_store_loss = true)"
    )]
    NotTheStore {
        dir: std::path::PathBuf,
        engine: String,
        problem: String,
    },
    /// The data directory was removed or replaced while the store ran (`watch.rs`).
    #[error("the data directory is gone ({0}); restart the broker on a directory that exists")]
    Vanished(String),
    #[error("stored entry {id} is corrupt: {what}")]
    Corrupt { id: u64, what: String },
    /// A page read found entries of `mailbox` whose bodies are damaged on disk, though what they
    /// are (ids, sender) is known: `page` is the page read, those entries in it with empty bodies,
    /// and `damaged` which they are. The caller sets them aside so that the rest of the mailbox
    /// flows.
    #[error("mailbox {mailbox}: the stored bodies of entries {damaged:?} are damaged: {what}")]
    DamagedEntries {
        mailbox: String,
        page: Vec<crate::store::Entry>,
        damaged: Vec<Damaged>,
        what: String,
    },
    #[error("{0}")]
    Incompatible(String),
    #[error("the store thread has stopped")]
    Stopped,
    #[error("cannot start the store thread: {0}")]
    Thread(std::io::Error),
    /// A merged commit failed; every caller whose writes were in it gets the cause as text.
    #[error("commit failed: {0}")]
    Failed(String),
}

/// An entry whose stored body cannot be read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damaged {
    pub id: u64,
    /// The body's length as stored (0 if not even that can be read), so the mailbox's byte count
    /// drops by it when the entry is set aside.
    pub body_len: u64,
}

impl StoreError {
    /// A page read's answer: `page` itself if no entry in it is `damaged`, else
    /// [`StoreError::DamagedEntries`] naming them (`what` says how they were found).
    pub(crate) fn unless_damaged(
        mailbox: &str,
        page: Vec<crate::store::Entry>,
        damaged: Vec<Damaged>,
        what: String,
    ) -> Result<Vec<crate::store::Entry>, StoreError> {
        if damaged.is_empty() {
            return Ok(page);
        }
        Err(StoreError::DamagedEntries {
            mailbox: mailbox.to_owned(),
            page,
            damaged,
            what,
        })
    }

    /// Whether this is damage to what is stored (a corrupt file, a disk that cannot read it back)
    /// rather than a failure that may pass by itself (the database down, a full disk): retrying
    /// the same read cannot help.
    pub fn is_damage(&self) -> bool {
        use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
        match self {
            StoreError::Sqlite(error) => {
                matches!(
                    error.sqlite_error_code(),
                    Some(DatabaseCorrupt | NotADatabase)
                )
            }
            StoreError::LogCorrupt { .. }
            | StoreError::Corrupt { .. }
            | StoreError::DamagedEntries { .. } => true,
            // EIO: the disk could not read the bytes back; end of file: the file lost bytes the
            // store wrote.
            StoreError::Io { cause, .. } => {
                cause.raw_os_error() == Some(5) || cause.kind() == std::io::ErrorKind::UnexpectedEof
            }
            _ => false,
        }
    }
}

/// Whether SQLite found its file damaged.
pub(crate) fn sqlite_damage(error: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    matches!(
        error.sqlite_error_code(),
        Some(DatabaseCorrupt | NotADatabase)
    )
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        StoreError::Sqlite(error)
    }
}

impl From<postgres::Error> for StoreError {
    fn from(error: postgres::Error) -> Self {
        StoreError::Postgres(error)
    }
}

/// The client's error with its cause: `postgres::Error` alone prints only "db error" and keeps
/// what the server said in `source()`.
fn postgres_cause(error: &postgres::Error) -> String {
    match std::error::Error::source(error) {
        Some(cause) => format!("{error}: {cause}"),
        None => error.to_string(),
    }
}
