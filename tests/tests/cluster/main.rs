//! Cluster mode end to end: several `switchboard-broker` processes sharing mailboxes in one
//! PostgreSQL database that the suite starts itself (`TestPostgres`). Skipped, saying why, where
//! PostgreSQL is not installed; failed instead when `CI` is set.

// The crash test's ledger and clients, shared rather than copied.
#[path = "../crash/ledger.rs"]
mod ledger;
// Its own sender is not used here: the cluster's sends again on `unavailable` (`load.rs`).
#[allow(dead_code)]
#[path = "../crash/traffic.rs"]
mod traffic;

mod delivery;
mod expiry;
mod failover;
mod limits;
mod load;
mod presence;
mod soak;
mod support;
mod tls;
mod unreachable;
