//! Crash safety: no message whose `Accepted` reached its sender is ever lost to a `kill -9`.
//!
//! A real `switchboard-broker` process runs on a temporary data directory. Four senders and three
//! recipients, each with its own library client, keep messages flowing while the driver kills the
//! broker with SIGKILL at random moments and starts it again on the same directory. Every client
//! reconnects by itself. Once the last broker has carried traffic for a while, the senders stop,
//! every mailbox is drained, and the run is checked:
//!
//! - (a) every message that was `Accepted` was delivered;
//! - (b) every message delivered was sent, and not rejected (a send cut off by a crash may or may
//!   not have been stored, so it may or may not be delivered);
//! - (c) a message delivered more than once was delivered at most once per broker incarnation:
//!   redelivery happens only across a crash;
//! - (d) per sender and recipient, messages arrive for the first time in the order they were sent.
//!
//! The seed printed first fixes the kill delays; `SWITCHBOARD_CRASH_SEED` replays them.
//!
//! ```sh
//! # The default run: 10 kills, or SWITCHBOARD_CRASH_KILLS.
//! cargo test -p switchboard-tests --test crash -- --nocapture
//! # The soak: 100 kills, or SWITCHBOARD_SOAK_CYCLES, with a line per kill.
//! cargo test --release -p switchboard-tests --test crash -- --ignored --nocapture soak
//! ```

#[path = "crash/config.rs"]
mod config;
#[path = "crash/ledger.rs"]
mod ledger;
#[path = "crash/traffic.rs"]
mod traffic;

use std::sync::Arc;
use std::time::Instant;

use switchboard_tests::{within, BrokerProcess};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use config::{Config, Rng, DEFAULT_KILLS, DEFAULT_SOAK_CYCLES};
use traffic::{Incarnation, Progress};

/// How many violations a failed run prints; the first ones tell the story.
const SHOWN_VIOLATIONS: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_never_loses_an_accepted_message() {
    run(Config::from_env("SWITCHBOARD_CRASH_KILLS", DEFAULT_KILLS)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a soak of 100 kills; run it with --ignored (see the module documentation)"]
async fn soak_kill_nine_cycles() {
    run(Config::from_env(
        "SWITCHBOARD_SOAK_CYCLES",
        DEFAULT_SOAK_CYCLES,
    ))
    .await;
}

/// One run: traffic, `config.kills` crashes and restarts, the drain, and the checks.
async fn run(config: Config) {
    println!(
        "seed {seed} (replay the kill delays with SWITCHBOARD_CRASH_SEED={seed}); {} kills, {} \
         senders, {} recipients",
        config.kills,
        config.senders,
        config.recipients,
        seed = config.seed
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = Rng::new(config.seed);
    let mut broker = BrokerProcess::start(dir.path()).await;
    // From here on: the first start may have built the broker.
    let started = Instant::now();
    let (incarnation, current) = watch::channel(Incarnation {
        epoch: 0,
        addr: Some(broker.addr()),
    });
    let (stop, stopped) = watch::channel(false);
    let progress = Arc::new(Progress::default());

    let recipients: Vec<JoinHandle<_>> = (0..config.recipients)
        .map(|r| {
            tokio::spawn(traffic::recipient(
                r,
                current.clone(),
                stopped.clone(),
                progress.clone(),
            ))
        })
        .collect();
    let senders: Vec<JoinHandle<_>> = (0..config.senders)
        .map(|s| {
            tokio::spawn(traffic::sender(
                s,
                config.recipients,
                current.clone(),
                stopped.clone(),
                progress.clone(),
            ))
        })
        .collect();

    let mut accepted_before = 0;
    for cycle in 1..=config.kills {
        let traffic = rng.millis(config.traffic_ms);
        tokio::time::sleep(traffic).await;
        // The epoch moves before the kill, so no client can take the dying broker for the next one.
        incarnation.send_modify(|b| {
            b.epoch = cycle.into();
            b.addr = None;
        });
        broker.kill9().await;
        let down = Instant::now();
        broker = BrokerProcess::start(dir.path()).await;
        let restart = down.elapsed();
        incarnation.send_modify(|b| b.addr = Some(broker.addr()));

        let accepted = Progress::get(&progress.accepted);
        println!(
            "cycle {cycle}/{}: killed after {} ms of traffic, {} accepted in it; so far {accepted} \
             accepted, {} unknown, {} delivered; restarted in {} ms",
            config.kills,
            traffic.as_millis(),
            accepted - accepted_before,
            Progress::get(&progress.unknown),
            Progress::get(&progress.delivered),
            restart.as_millis()
        );
        accepted_before = accepted;
    }
    // The last broker carries traffic too, before the senders stop.
    tokio::time::sleep(rng.millis(config.traffic_ms)).await;
    stop.send(true).expect("the clients are listening");

    let mut sends = Vec::new();
    for sender in senders {
        sends.extend(
            within("a sender to stop", sender)
                .await
                .expect("sender task"),
        );
    }
    let mut deliveries = Vec::new();
    for recipient in recipients {
        deliveries.push(
            within("a recipient to stop", recipient)
                .await
                .expect("recipient task"),
        );
    }
    let mut drained = 0;
    for (r, got) in deliveries.iter_mut().enumerate() {
        let left = traffic::drain(r, current.clone()).await;
        for note in &left.overstated {
            println!("note: the broker announced more than it delivered: {note}");
        }
        drained += left.deliveries.len();
        got.extend(left.deliveries);
    }
    let (counts, violations) = ledger::check(&sends, &deliveries);
    println!(
        "after {} kills in {:.1} s: {counts} ({drained} in the final drain); receipts {}",
        config.kills,
        started.elapsed().as_secs_f64(),
        Progress::get(&progress.receipts)
    );
    assert!(
        violations.is_empty(),
        "seed {}: {} violations of the promise (the first {SHOWN_VIOLATIONS} follow); {counts}\n{}",
        config.seed,
        violations.len(),
        violations
            .iter()
            .take(SHOWN_VIOLATIONS)
            .map(|v| format!("  {v}\n"))
            .collect::<String>()
    );
    assert!(counts.accepted > 0, "no message was ever accepted");
    // A clean stop after all those crashes.
    broker.terminate().await;
}
