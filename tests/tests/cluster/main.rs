//! Cluster mode end to end: several `switchboard-broker` processes sharing mailboxes in one
//! PostgreSQL database that the suite starts itself (`TestPostgres`). Skipped, saying why, where
//! PostgreSQL is not installed; failed instead when `CI` is set.

mod delivery;
mod support;
mod unreachable;
