//! A connection of the PostgreSQL store (it has two: commits, and page reads): when to connect again after it broke, and how the broker
//! says so.
//!
//! The store runs on its own thread and blocks on the network, so a dead database must not make
//! every call wait for a connection attempt. After a failed attempt the next waits a backoff that
//! doubles from [`FIRST_RETRY`] to [`LAST_RETRY`]; a call in between fails at once
//! ([`StoreError::Unreachable`]: the Router answers `unavailable`, `/readyz` says 503). The Router's
//! periodic work (sweeps, reads, the readiness probe) keeps calling, so the connection comes back by
//! itself, without a client having to send. Every attempt, failure and recovery is logged with
//! structured fields (`attempt`, `retry_in_ms`, `down_ms`). A url with several hosts and
//! `target_session_attrs=read-write` finds whichever is the primary now, so after a failover the
//! same loop connects to the promoted standby. Every connection made brings the schema up to date
//! (`schema.rs`, a no-op once it is) and then prepares the hot statements (`statements.rs`), which
//! live as long as their server session.

use std::time::{Duration, Instant};

use postgres::Client;

use super::database::Database;
use super::schema;
use super::statements::Statements;
use crate::store::{Durability, StoreError};

/// The wait after the first failed attempt: short, so a database restarted at once is found at once.
const FIRST_RETRY: Duration = Duration::from_millis(50);

/// The longest wait between two attempts: the bound on how late service resumes after the
/// database is back.
const LAST_RETRY: Duration = Duration::from_secs(2);

/// A connection to the database, connected again with backoff when it breaks.
pub(super) struct Connection {
    /// Where the database is and how to reach it. Never logged: its url may hold a password.
    database: Database,
    durability: Durability,
    /// `None` while there is no usable connection.
    client: Option<(Client, Statements)>,
    backoff: Backoff,
}

impl Connection {
    /// Not connected yet: the first [`client`](Self::client) call connects.
    pub(super) fn new(database: Database, durability: Durability) -> Self {
        Self {
            database,
            durability,
            client: None,
            backoff: Backoff::default(),
        }
    }

    /// A second connection to the same database with the same settings, not connected yet.
    pub(super) fn another(&self) -> Self {
        Self::new(self.database.clone(), self.durability)
    }

    /// Runs `f` on the connection; a failure that broke the connection drops it, so a later call
    /// connects again.
    pub(super) fn with<T>(
        &mut self,
        f: impl FnOnce(&mut Client, &Statements) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let (client, statements) = self.client()?;
        let result = f(client, statements);
        if result.is_err() {
            self.check();
        }
        result
    }

    pub(super) fn is_connected(&self) -> bool {
        self.client.is_some()
    }

    /// The connection and its prepared statements, connecting first if there is none and the
    /// backoff allows an attempt.
    pub(super) fn client(&mut self) -> Result<(&mut Client, &Statements), StoreError> {
        if self.closed() {
            self.lost();
        }
        if self.client.is_none() {
            let now = Instant::now();
            if let Some(retry_in) = self.backoff.wait(now) {
                return Err(StoreError::Unreachable {
                    retry_in_ms: millis(retry_in),
                });
            }
            match self.connect() {
                Ok(client) => {
                    if let Some(down) = self.backoff.succeeded(now) {
                        tracing::info!(
                            down_ms = millis(down),
                            "reconnected to PostgreSQL; serving again"
                        );
                    }
                    self.client = Some(client);
                }
                Err(error) => {
                    let (attempt, retry_in) = self.backoff.failed(now);
                    tracing::warn!(
                        attempt,
                        retry_in_ms = millis(retry_in),
                        %error,
                        "cannot connect to PostgreSQL; sends are answered unavailable until it is back"
                    );
                    return Err(error);
                }
            }
        }
        let (client, statements) = self.client.as_mut().ok_or(StoreError::Stopped)?;
        Ok((client, statements))
    }

    /// After a call failed: if the connection broke, drops it (the next call connects again).
    pub(super) fn check(&mut self) {
        if self.closed() {
            self.lost();
        }
    }

    fn closed(&self) -> bool {
        self.client.as_ref().is_some_and(|(c, _)| c.is_closed())
    }

    fn lost(&mut self) {
        tracing::warn!("lost the connection to PostgreSQL; connecting again");
        self.client = None;
        self.backoff.lost(Instant::now());
    }

    fn connect(&self) -> Result<(Client, Statements), StoreError> {
        let mut client = self.database.connect()?;
        if self.durability == Durability::Os {
            client.batch_execute("SET synchronous_commit = off")?;
        }
        schema::migrate(&mut client)?;
        let statements = Statements::prepare(&mut client)?;
        tracing::debug!("connected to PostgreSQL");
        Ok((client, statements))
    }
}

/// When the next connection attempt may be made: plain state, tested without a database.
#[derive(Debug, Default)]
struct Backoff {
    /// Failed attempts since the connection was last good.
    failures: u32,
    /// No attempt before this.
    next_attempt: Option<Instant>,
    /// When the connection was lost or first failed, for the recovery's `down_ms`.
    down_since: Option<Instant>,
}

impl Backoff {
    /// How long until an attempt is allowed, or `None` if one may be made now.
    fn wait(&self, now: Instant) -> Option<Duration> {
        self.next_attempt
            .and_then(|at| at.checked_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    /// A good connection broke: the first attempt is immediate.
    fn lost(&mut self, now: Instant) {
        self.down_since.get_or_insert(now);
    }

    /// An attempt failed: its number, and how long until the next.
    fn failed(&mut self, now: Instant) -> (u32, Duration) {
        self.down_since.get_or_insert(now);
        self.failures = self.failures.saturating_add(1);
        let doublings = self.failures.saturating_sub(1).min(16);
        let retry_in = FIRST_RETRY.saturating_mul(1 << doublings).min(LAST_RETRY);
        self.next_attempt = Some(now + retry_in);
        (self.failures, retry_in)
    }

    /// An attempt succeeded: how long the database was gone, if it was.
    fn succeeded(&mut self, now: Instant) -> Option<Duration> {
        let down = self.down_since.take().map(|since| now - since);
        *self = Self::default();
        down
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_back_off_doubling_to_the_cap_and_start_over_once_connected() {
        let start = Instant::now();
        let mut backoff = Backoff::default();
        assert_eq!(backoff.wait(start), None, "the first attempt is immediate");
        let waits: Vec<Duration> = (0..8).map(|_| backoff.failed(start).1).collect();
        assert_eq!(waits[0], FIRST_RETRY);
        assert_eq!(waits[1], FIRST_RETRY * 2);
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*waits.last().unwrap(), LAST_RETRY);
        assert_eq!(backoff.wait(start), Some(LAST_RETRY));
        assert_eq!(backoff.wait(start + LAST_RETRY), None);
        let later = start + Duration::from_secs(3);
        assert_eq!(backoff.succeeded(later), Some(Duration::from_secs(3)));
        assert_eq!(
            backoff.failed(later).1,
            FIRST_RETRY,
            "a new outage starts short"
        );
    }

    #[test]
    fn a_lost_connection_is_retried_at_once_and_counted_from_the_loss() {
        let start = Instant::now();
        let mut backoff = Backoff::default();
        backoff.lost(start);
        assert_eq!(backoff.wait(start), None);
        let back = start + Duration::from_millis(700);
        assert_eq!(backoff.succeeded(back), Some(Duration::from_millis(700)));
        assert_eq!(
            backoff.succeeded(back),
            None,
            "no outage, nothing to report"
        );
    }
}
