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
    #[error("stored entry {id} is corrupt: {what}")]
    Corrupt { id: u64, what: String },
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
