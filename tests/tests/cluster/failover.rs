//! The primary database killed under load and its synchronous standby promoted: the brokers find
//! the new primary by themselves (both hosts in `postgres.url`, `target_session_attrs=read-write`)
//! and the crash test's ledger shows every accepted message delivered.
//!
//! ```sh
//! # One failover (CI), or SWITCHBOARD_FAILOVERS.
//! cargo test -p switchboard-tests --test cluster failover -- --nocapture
//! ```

use switchboard_broker::store::postgres::harness::TestReplicated;

use crate::load::Load;
use crate::support::*;

/// Failovers in the default run, unless `SWITCHBOARD_FAILOVERS` says otherwise.
const DEFAULT_FAILOVERS: u32 = 1;

/// Messages accepted between two incidents, and after the last: traffic really flowed.
const BETWEEN: u64 = 50;

/// Four senders on one node send to three recipients on the other, each send retried with its
/// send id while the database is unreachable. The primary is killed (`pg_ctl stop -m immediate`)
/// and the standby promoted, `SWITCHBOARD_FAILOVERS` times (a new standby is made each time):
/// traffic flows again after each without touching the brokers; nothing accepted is lost, and a
/// message is delivered twice only across a failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_killed_and_its_standby_promoted_under_load_loses_no_accepted_message() {
    let failovers = std::env::var("SWITCHBOARD_FAILOVERS").map_or(DEFAULT_FAILOVERS, |v| {
        v.parse().expect("SWITCHBOARD_FAILOVERS: a number")
    });
    let Some(mut replicated) = blocking(|| TestReplicated::start_or_skip("primary failover")).await
    else {
        return;
    };
    let cluster = Cluster::on(replicated.url(), 2, Box::new(())).await;
    let load = Load::start(&cluster);
    for failover in 1..=failovers {
        load.flows(BETWEEN).await;
        for node in &load.nodes {
            node.send_modify(|b| b.epoch = failover.into());
        }
        let before = load.accepted();
        replicated = blocking(move || replicated.fail_over().map(|()| replicated))
            .await
            .expect("fail over");
        println!("failover {failover}/{failovers}: {before} accepted before it");
    }
    load.flows(BETWEEN).await;
    for node in &cluster.nodes {
        node.output()
            .wait_for(1, &["reconnected to PostgreSQL"])
            .await;
    }
    load.finish(&format!("{failovers} failovers"), &replicated.url())
        .await;
    drop(cluster);
    drop(replicated);
}
