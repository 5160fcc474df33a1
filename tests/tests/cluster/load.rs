//! The traffic the cluster's failure tests run under, on the crash test's ledger
//! (`tests/tests/crash/`): recipients and the final drain are the crash test's own, one watch
//! channel per node saying where that node's broker is; the senders here are the cluster's, which
//! ride out an unreachable database by sending again with the same send id.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_broker::store::{Durability, MailboxStore, PostgresStore};
use switchboard_client::{ClientError, Event, Receipts, RejectReason, SendOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::ledger::{self, body, recipient_id, sender_id, Counts, Delivery, Outcome, SendRecord};
use crate::support::*;
use crate::traffic::{self, Incarnation, Progress};

/// Clients of each kind, as in the crash test.
pub(crate) const SENDERS: usize = 4;
pub(crate) const RECIPIENTS: usize = 3;

/// How long a sender waits before sending again what was answered `unavailable`.
const RESEND_AFTER: Duration = Duration::from_millis(20);

/// The node recipient `r` uses; senders use the other one, so every message crosses nodes.
pub(crate) fn recipient_node(r: usize, nodes: usize) -> usize {
    r % nodes
}

/// Traffic running over a cluster until [`Load::finish`].
pub(crate) struct Load {
    pub progress: Arc<Progress>,
    /// Per node, where its broker is now; the epoch counts the incidents so far.
    pub nodes: Vec<watch::Sender<Incarnation>>,
    stop: watch::Sender<bool>,
    senders: Vec<JoinHandle<Vec<SendRecord>>>,
    recipients: Vec<JoinHandle<Vec<Delivery>>>,
    started: Instant,
}

impl Load {
    /// Starts [`SENDERS`] senders and [`RECIPIENTS`] recipients over `cluster`'s nodes.
    pub(crate) fn start(cluster: &Cluster) -> Load {
        let n = cluster.nodes.len();
        let nodes: Vec<watch::Sender<Incarnation>> = cluster
            .nodes
            .iter()
            .map(|node| {
                watch::channel(Incarnation {
                    epoch: 0,
                    addr: Some(node.addr()),
                })
                .0
            })
            .collect();
        let (stop, stopped) = watch::channel(false);
        let progress = Arc::new(Progress::default());
        let recipients = (0..RECIPIENTS)
            .map(|r| {
                let node = nodes[recipient_node(r, n)].subscribe();
                tokio::spawn(traffic::recipient(
                    r,
                    node,
                    stopped.clone(),
                    progress.clone(),
                ))
            })
            .collect();
        let senders = (0..SENDERS)
            .map(|s| {
                let node = nodes[(s + 1) % n].subscribe();
                tokio::spawn(sender(s, node, stopped.clone(), progress.clone()))
            })
            .collect();
        Load {
            progress,
            nodes,
            stop,
            senders,
            recipients,
            started: Instant::now(),
        }
    }

    /// Messages accepted so far.
    pub(crate) fn accepted(&self) -> u64 {
        Progress::get(&self.progress.accepted)
    }

    /// Waits until `more` messages beyond those accepted so far are: traffic flows.
    pub(crate) async fn flows(&self, more: u64) {
        let target = self.accepted() + more;
        within("traffic to flow", async {
            while self.accepted() < target {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }

    /// Stops the traffic, drains every mailbox, checks the ledger; panics on any broken promise.
    pub(crate) async fn finish(self, what: &str, url: &str) -> Counts {
        self.stop.send(true).expect("the clients are listening");
        let mut sends = Vec::new();
        for sender in self.senders {
            sends.extend(within("a sender to stop", sender).await.expect("sender"));
        }
        let mut deliveries = Vec::new();
        for recipient in self.recipients {
            deliveries.push(
                within("a recipient to stop", recipient)
                    .await
                    .expect("task"),
            );
        }
        let n = self.nodes.len();
        for (r, got) in deliveries.iter_mut().enumerate() {
            let node = *self.nodes[recipient_node(r, n)].borrow();
            got.extend(drain(r, node, url).await);
        }
        let (counts, violations) = ledger::check(&sends, &deliveries);
        println!(
            "{what}: after {:.1} s: {counts}; sends answered unavailable and sent again: {}",
            self.started.elapsed().as_secs_f64(),
            Progress::get(&self.progress.unknown)
        );
        assert!(
            violations.is_empty(),
            "{what}: {} violations; {counts}\n{}",
            violations.len(),
            violations
                .iter()
                .take(30)
                .map(|v| format!("  {v}\n"))
                .collect::<String>()
        );
        assert!(counts.accepted > 0, "no message was ever accepted");
        counts
    }
}

/// Empties recipient `index`'s mailbox through its node once the traffic has stopped, until the
/// database (at `url`) holds nothing for it. Not by `Hi.pending` as the crash test's drain does: in
/// cluster mode a node counts only what it stored itself.
async fn drain(index: usize, node: Incarnation, url: &str) -> Vec<Delivery> {
    let id = recipient_id(index);
    let addr = node.addr.expect("the node runs").to_string();
    let (client, mut events) = within(
        "a drain to connect",
        switchboard_client::Client::connect(switchboard_client::ClientOptions::new(addr, &id)),
    )
    .await
    .expect("connect");
    let mut got = Vec::new();
    within(&format!("{id}'s mailbox to empty"), async {
        loop {
            match tokio::time::timeout(Duration::from_millis(200), events.next()).await {
                Ok(Some(Event::Message(m))) => {
                    let message_id = m.message_id;
                    got.push(Delivery {
                        from: m.from,
                        body: String::from_utf8_lossy(&m.body).into_owned(),
                        message_id,
                        epoch: node.epoch,
                        on: "the drain".to_owned(),
                    });
                    client.ack(message_id).await.expect("ack");
                }
                Ok(Some(Event::Receipt(r))) => client.ack(r.receipt_id).await.expect("ack"),
                Ok(other) => panic!("{id}'s drain ended: {other:?}"),
                // Quiet: done if the database agrees (the acks' deletes may still be committing).
                Err(_) if stored(url, &id).await == 0 => return,
                Err(_) => {}
            }
        }
    })
    .await;
    within("a drain to close", client.close())
        .await
        .expect("close");
    got
}

/// How many entries the database holds in `mailbox`, read through a store of the test's own.
async fn stored(url: &str, mailbox: &str) -> usize {
    let (url, mailbox) = (url.to_owned(), mailbox.to_owned());
    blocking(move || {
        let mut store = PostgresStore::open(&url, Durability::Fsync).expect("open the database");
        store
            .fetch(&mailbox, 0, 10_000)
            .expect("read the mailbox")
            .len()
    })
    .await
}

/// Sender `index`: sends `s{index}:{r}:{seq}` with send id `seq + 1` to recipient `seq mod
/// RECIPIENTS`, one at a time, until `stop`. A send answered `unavailable` is sent again with the
/// same send id (the documented way: if its commit's answer was lost, the database's memory of
/// sends recognises it); one still unanswered at the stop, or whose connection ended (its node was
/// killed), is of unknown outcome, and the sender reconnects and goes on with the next seq. Counts
/// the `unavailable` answers in `progress.unknown`.
async fn sender(
    index: usize,
    mut node: watch::Receiver<Incarnation>,
    stop: watch::Receiver<bool>,
    progress: Arc<Progress>,
) -> Vec<SendRecord> {
    let id = sender_id(index);
    let mut records = Vec::new();
    let mut client = None;
    while !*stop.borrow() {
        let current = match &client {
            Some(c) => Clone::clone(c),
            None => {
                let mut connected = traffic::connect(&mut node, &id).await;
                // No receipts are asked for; whatever comes is read, so nothing backs up.
                tokio::spawn(async move { while connected.events.next().await.is_some() {} });
                client.insert(connected.client).clone()
            }
        };
        let seq = records.len() as u64;
        let to = (seq % RECIPIENTS as u64) as usize;
        let body = body(index, to, seq);
        let outcome =
            until_answered(&current, &recipient_id(to), body, seq + 1, &stop, &progress).await;
        if outcome == Outcome::Unknown && !*stop.borrow() {
            client = None;
        }
        records.push(SendRecord {
            sender: index,
            seq,
            to,
            outcome,
        });
    }
    if let Some(client) = client {
        // Its connection may have ended with the last send: nothing left to close then.
        let _ = within("a sender to close", client.close()).await;
    }
    records
}

/// Sends one message with `send_id` until it is answered other than `unavailable`, the connection
/// ends, or `stop`; what the sender knows of it then.
async fn until_answered(
    client: &switchboard_client::Client,
    to: &str,
    body: String,
    send_id: u64,
    stop: &watch::Receiver<bool>,
    progress: &Progress,
) -> Outcome {
    let options = SendOptions {
        receipts: Receipts::None,
        ..SendOptions::default()
    };
    loop {
        let answer = client.send_with_id(to, body.clone(), send_id, options);
        match within("an answer to a send", answer).await {
            Ok(sent) => {
                progress.accepted.fetch_add(1, Ordering::Relaxed);
                return Outcome::Accepted {
                    message_id: sent.message_id,
                };
            }
            Err(ClientError::Rejected {
                reason: RejectReason::Unavailable,
                ..
            }) if !*stop.borrow() => {
                progress.unknown.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(RESEND_AFTER).await;
            }
            // At the stop, a send still answered `unavailable` may yet have been stored.
            Err(ClientError::Rejected {
                reason: RejectReason::Unavailable,
                ..
            }) => return Outcome::Unknown,
            Err(ClientError::Rejected { reason, text }) => {
                return Outcome::Rejected(format!("{reason}: {text}"))
            }
            Err(_) => return Outcome::Unknown,
        }
    }
}
