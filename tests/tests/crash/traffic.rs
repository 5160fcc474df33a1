//! The clients: senders and recipients, each a task with its own library client that reconnects by
//! itself after every crash, and the final drain of the mailboxes.
//!
//! The driver publishes the broker's current [`Incarnation`] on a watch channel. It bumps the
//! epoch *before* it kills a broker and publishes the new address once the next one listens. A
//! client that connected to an address and still sees the same epoch afterwards therefore knows
//! which incarnation it is talking to, even if a later broker happened to get the same port.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use switchboard_client::{
    Client, ClientError, ClientOptions, CloseReason, ErrorCode, Event, Events,
};
use switchboard_tests::within;
use tokio::sync::watch;

use crate::ledger::{body, recipient_id, sender_id, Delivery, Outcome, SendRecord};

/// The longest a client waits between two attempts to reach a broker that should be there.
const MAX_BACKOFF: Duration = Duration::from_millis(200);

/// How many times the drain reads a mailbox before it gives up on seeing it empty. With no traffic
/// left, the second round should already find nothing.
const DRAIN_ROUNDS: usize = 5;

/// How long the drain waits for an entry the broker announced in `pending` before it stops waiting.
const QUIET: Duration = Duration::from_secs(2);

/// Which broker is current: the number of kills so far, and its address once it listens.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Incarnation {
    pub epoch: u64,
    pub addr: Option<SocketAddr>,
}

/// Running totals, for the per-cycle lines.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    pub accepted: AtomicU64,
    pub unknown: AtomicU64,
    pub delivered: AtomicU64,
    pub receipts: AtomicU64,
}

impl Progress {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// A connection to the current broker, and the epoch it belongs to.
pub(crate) struct Connected {
    pub client: Client,
    pub events: Events,
    pub epoch: u64,
}

/// Connects as `id` to the current broker, waiting for one to listen and retrying with a short
/// backoff while the attempts fail.
pub(crate) async fn connect(broker: &mut watch::Receiver<Incarnation>, id: &str) -> Connected {
    let what = format!("{id} to reconnect");
    within(&what, async {
        let mut backoff = Duration::from_millis(5);
        loop {
            let current = *broker
                .wait_for(|b| b.addr.is_some())
                .await
                .expect("the driver is gone");
            let addr = current.addr.expect("an address");
            match Client::connect(ClientOptions::new(addr.to_string(), id)).await {
                Ok((client, events)) if broker.borrow().epoch == current.epoch => {
                    return Connected {
                        client,
                        events,
                        epoch: current.epoch,
                    };
                }
                // Connected, but that broker has been killed meanwhile; dropping the client closes.
                Ok(_) => {}
                Err(_) => {
                    // Whichever comes first: a new broker, or the next attempt at this one.
                    tokio::select! {
                        _ = broker.changed() => {}
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    })
    .await
}

/// Sender `index`: sends `s{index}:{r}:{seq}` for seq = 0, 1, 2, ... to recipient
/// `r = seq mod recipients`, one at a time, until `stop`. A send whose connection fails is recorded
/// as of unknown outcome and never sent again; the sender reconnects and goes on with the next seq.
pub(crate) async fn sender(
    index: usize,
    recipients: usize,
    mut broker: watch::Receiver<Incarnation>,
    stop: watch::Receiver<bool>,
    progress: Arc<Progress>,
) -> Vec<SendRecord> {
    let id = sender_id(index);
    let to_id: Vec<String> = (0..recipients).map(recipient_id).collect();
    let mut records = Vec::new();
    let mut client: Option<Client> = None;
    let mut seq = 0;
    while !*stop.borrow() {
        let current = match &client {
            Some(c) => c.clone(),
            None => {
                let connected = connect(&mut broker, &id).await;
                tokio::spawn(acknowledge_receipts(
                    connected.client.clone(),
                    connected.events,
                    progress.clone(),
                ));
                client.insert(connected.client).clone()
            }
        };
        let to = (seq % recipients as u64) as usize;
        let answer = current.send(&to_id[to], body(index, to, seq));
        let outcome = match within("an answer to a send", answer).await {
            Ok(sent) => {
                Progress::add(&progress.accepted);
                Outcome::Accepted {
                    message_id: sent.message_id,
                }
            }
            Err(ClientError::Rejected { reason, text }) => {
                Outcome::Rejected(format!("{reason}: {text}"))
            }
            Err(_) => {
                Progress::add(&progress.unknown);
                client = None;
                Outcome::Unknown
            }
        };
        records.push(SendRecord {
            sender: index,
            seq,
            to,
            outcome,
        });
        seq += 1;
    }
    if let Some(client) = client {
        within("a sender to close", client.close())
            .await
            .expect("close");
    }
    records
}

/// Acknowledges the receipts a sender gets, until its connection ends.
async fn acknowledge_receipts(client: Client, mut events: Events, progress: Arc<Progress>) {
    while let Some(event) = events.next().await {
        if let Event::Receipt(receipt) = event {
            Progress::add(&progress.receipts);
            // A failed ack means the connection is gone; the receipt comes back next time.
            let _ = client.ack(receipt.receipt_id).await;
        }
    }
}

/// Recipient `index`: records and acknowledges every message, reconnecting after each crash, until
/// `stop`. Returns what it got, in order, each with the epoch of the connection that brought it.
pub(crate) async fn recipient(
    index: usize,
    mut broker: watch::Receiver<Incarnation>,
    mut stop: watch::Receiver<bool>,
    progress: Arc<Progress>,
) -> Vec<Delivery> {
    let id = recipient_id(index);
    let mut log = Vec::new();
    let mut serial = 0;
    while !*stop.borrow() {
        let Connected {
            client,
            mut events,
            epoch,
        } = connect(&mut broker, &id).await;
        serial += 1;
        let on = format!("connection {serial}");
        loop {
            let event = tokio::select! {
                event = events.next() => event,
                () = stopping(&mut stop) => {
                    within("a recipient to close", client.close()).await.expect("close");
                    return log;
                }
            };
            match event {
                Some(Event::Message(m)) => {
                    let message_id = m.message_id;
                    log.push(delivery(m, epoch, &on));
                    Progress::add(&progress.delivered);
                    // A failed ack means the connection is gone; the message comes back next time.
                    let _ = client.ack(message_id).await;
                }
                Some(Event::Receipt(r)) => {
                    let _ = client.ack(r.receipt_id).await;
                }
                Some(Event::Closed(CloseReason::Broker {
                    code: ErrorCode::SessionTakenOver,
                    text,
                })) => panic!("{id} was taken over: {text}"),
                // The connection is over (without the reconnect option, nothing else comes). Only
                // a kill should end it: say so if something else did, for the ledger's sake.
                other => {
                    if broker.borrow().epoch == epoch {
                        println!(
                            "note: {id}'s {on} (epoch {epoch}) ended without a kill: {other:?}"
                        );
                    }
                    break;
                }
            }
        }
    }
    log
}

/// Resolves once the driver says stop.
async fn stopping(stop: &mut watch::Receiver<bool>) {
    // An error means the driver is gone, which is a stop too.
    let _ = stop.wait_for(|stop| *stop).await;
}

/// What the drain of one mailbox found.
#[derive(Debug, Default)]
pub(crate) struct Drained {
    pub deliveries: Vec<Delivery>,
    /// Rounds in which the broker announced more `pending` entries than it then delivered.
    pub overstated: Vec<String>,
}

/// Empties recipient `index`'s mailbox once the traffic has stopped: connects, reads and
/// acknowledges the `pending` entries the broker announces, and again until it announces none.
///
/// If fewer than `pending` entries come, the round ends after [`QUIET`] without any, and the
/// shortfall is noted rather than waited for: the next round's `pending` says whether anything is
/// really left.
pub(crate) async fn drain(index: usize, mut broker: watch::Receiver<Incarnation>) -> Drained {
    let id = recipient_id(index);
    let mut drained = Drained::default();
    for round in 1..=DRAIN_ROUNDS {
        let on = format!("drain round {round}");
        let Connected {
            client,
            mut events,
            epoch,
        } = connect(&mut broker, &id).await;
        let pending = client.welcome().pending;
        let mut got = 0;
        while got < pending {
            let event = match tokio::time::timeout(QUIET, events.next()).await {
                Ok(event) => event,
                Err(_) => {
                    drained.overstated.push(format!(
                        "{id}: pending {pending}, then {got} entries and {} ms of silence",
                        QUIET.as_millis()
                    ));
                    break;
                }
            };
            let ack = match event {
                Some(Event::Message(m)) => {
                    let message_id = m.message_id;
                    drained.deliveries.push(delivery(m, epoch, &on));
                    message_id
                }
                Some(Event::Receipt(r)) => r.receipt_id,
                other => panic!("{id}'s drain ended: {other:?}"),
            };
            within("an ack", client.ack(ack)).await.expect("ack");
            got += 1;
        }
        within("a drain to close", client.close())
            .await
            .expect("close");
        if pending == 0 {
            return drained;
        }
    }
    panic!("{id}'s mailbox was not empty after {DRAIN_ROUNDS} rounds of reading it");
}

fn delivery(m: switchboard_client::Message, epoch: u64, on: &str) -> Delivery {
    Delivery {
        from: m.from,
        body: String::from_utf8_lossy(&m.body).into_owned(),
        message_id: m.message_id,
        epoch,
        on: on.to_owned(),
    }
}
