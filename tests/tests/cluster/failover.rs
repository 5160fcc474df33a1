//! The primary database killed under load and its synchronous standby promoted: the brokers find
//! the new primary by themselves (both hosts in `postgres.url`, `target_session_attrs=read-write`)
//! and the crash test's ledger shows every accepted message delivered.
//!
//! ```sh
//! # One failover (CI), or SWITCHBOARD_FAILOVERS.
//! cargo test -p switchboard-tests --test cluster failover -- --nocapture
//! ```

use switchboard_broker::store::postgres::harness::TestReplicated;

use crate::soak::{from_env, run};
use crate::support::*;

/// Four senders on one node send to three recipients on the other, each send retried with its
/// send id while the database is unreachable. The primary is killed (`pg_ctl stop -m immediate`)
/// and the standby promoted, once (or `SWITCHBOARD_FAILOVERS` times; a new standby is made each
/// time): traffic flows again after each without touching the brokers, which log that they
/// reconnected; nothing accepted is lost, and a message is delivered twice only across a failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_killed_and_its_standby_promoted_under_load_loses_no_accepted_message() {
    let Some(replicated) = blocking(|| TestReplicated::start_or_skip("primary failover")).await
    else {
        return;
    };
    let cluster = Cluster::on(replicated.url(), 2, &[], Box::new(())).await;
    let logs: Vec<_> = cluster.nodes.iter().map(|n| n.output().clone()).collect();
    run(
        cluster,
        Some(replicated),
        0,
        from_env("SWITCHBOARD_FAILOVERS", 1),
    )
    .await;
    for log in logs {
        assert!(log.count(&["reconnected to PostgreSQL", "down_ms="]) > 0);
    }
}
