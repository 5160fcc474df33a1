//! What the senders and recipients saw, and the promise checked against it.
//!
//! A message is named by its sender and sequence number, which its body spells out:
//! `s{sender}:{recipient}:{seq}`. A sender never sends a sequence number twice, so every copy of a
//! body that a recipient gets is a redelivery of one message.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// One send and how it ended, as the sender saw it.
#[derive(Debug, Clone)]
pub(crate) struct SendRecord {
    pub sender: usize,
    pub seq: u64,
    /// The recipient's index.
    pub to: usize,
    pub outcome: Outcome,
}

/// What the sender heard back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// `Accepted`: the broker has promised to deliver it.
    Accepted { message_id: u64 },
    /// The connection ended first: the message may or may not be stored.
    Unknown,
    /// `Rejected`: nothing was stored.
    Rejected(String),
}

/// One message a recipient received (and then acknowledged).
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub from: String,
    pub body: String,
    pub message_id: u64,
    /// The broker incarnation that delivered it: how many times the broker had been killed.
    pub epoch: u64,
    /// Which of the recipient's connections brought it (`connection 3`, `drain round 1`), so a
    /// violation says whether the copies came on one connection or across a reconnect.
    pub on: String,
}

/// The numbers a run ends with.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Counts {
    pub accepted: u64,
    pub unknown: u64,
    /// Unknown-outcome sends that turned out to be stored: they were delivered.
    pub unknown_delivered: u64,
    pub rejected: u64,
    /// Distinct messages delivered.
    pub delivered: u64,
    /// Deliveries, copies included.
    pub deliveries: u64,
    /// Deliveries beyond the first of each message.
    pub duplicates: u64,
    /// Accepted messages never delivered.
    pub lost: u64,
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "accepted {}, unknown outcome {} (stored after all: {}), rejected {}; \
             delivered {} in {} deliveries, duplicates {}, lost {}",
            self.accepted,
            self.unknown,
            self.unknown_delivered,
            self.rejected,
            self.delivered,
            self.deliveries,
            self.duplicates,
            self.lost
        )
    }
}

/// The client id of sender `index`.
pub(crate) fn sender_id(index: usize) -> String {
    format!("s{index}")
}

/// The client id of recipient `index`.
pub(crate) fn recipient_id(index: usize) -> String {
    format!("r{index}")
}

/// The body of message `seq` from `sender` to `recipient`.
pub(crate) fn body(sender: usize, recipient: usize, seq: u64) -> String {
    format!("s{sender}:{recipient}:{seq}")
}

/// Reads back what [`body`] wrote: `(sender, recipient, seq)`.
fn parse_body(body: &str) -> Option<(usize, usize, u64)> {
    let mut parts = body.strip_prefix('s')?.split(':');
    let sender = parts.next()?.parse().ok()?;
    let recipient = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((sender, recipient, seq))
}

/// Checks the promise against what every sender sent and what every recipient got, in the order it
/// got it (`deliveries[r]` is recipient `r`'s). Returns the counts and every violation found.
pub(crate) fn check(sends: &[SendRecord], deliveries: &[Vec<Delivery>]) -> (Counts, Vec<String>) {
    let mut counts = Counts::default();
    let mut violations = Vec::new();
    let sent: HashMap<(usize, u64), &SendRecord> =
        sends.iter().map(|s| ((s.sender, s.seq), s)).collect();
    for send in sends {
        match send.outcome {
            Outcome::Accepted { .. } => counts.accepted += 1,
            Outcome::Unknown => counts.unknown += 1,
            Outcome::Rejected(_) => counts.rejected += 1,
        }
    }

    // Every copy of each message, in the order its recipient got them.
    let mut copies: HashMap<(usize, u64), Vec<&Delivery>> = HashMap::new();
    let mut bodies_by_id: HashMap<u64, &str> = HashMap::new();
    for (recipient, got) in deliveries.iter().enumerate() {
        // Per sender, the seq of the last message this recipient got for the first time.
        let mut last_first: BTreeMap<usize, u64> = BTreeMap::new();
        let mut seen: HashSet<(usize, u64)> = HashSet::new();
        for d in got {
            counts.deliveries += 1;
            let r = recipient_id(recipient);
            if let Some(other) = bodies_by_id.insert(d.message_id, &d.body) {
                if other != d.body {
                    violations.push(format!(
                        "message id {} named two messages: {other:?} and {:?}",
                        d.message_id, d.body
                    ));
                }
            }
            let Some((sender, to, seq)) = parse_body(&d.body) else {
                violations.push(format!("(b) {r} got a body nobody sent: {:?}", d.body));
                continue;
            };
            if to != recipient || d.from != sender_id(sender) {
                violations.push(format!(
                    "(b) {r} got {:?} from {}, meant for r{to} from s{sender}",
                    d.body, d.from
                ));
            }
            match sent.get(&(sender, seq)).map(|s| &s.outcome) {
                None => violations.push(format!("(b) {r} got {:?}, never sent", d.body)),
                Some(Outcome::Rejected(why)) => violations.push(format!(
                    "(b) {r} got {:?}, which was rejected ({why})",
                    d.body
                )),
                Some(Outcome::Accepted { message_id }) if *message_id != d.message_id => violations
                    .push(format!(
                        "{r} got {:?} as message {}, accepted as message {message_id}",
                        d.body, d.message_id
                    )),
                Some(_) => {}
            }
            if seen.insert((sender, seq)) {
                if let Some(last) = last_first.insert(sender, seq) {
                    if seq <= last {
                        violations.push(format!(
                            "(d) {r} got s{sender}'s message {seq} (id {}) for the first time \
                             after its message {last}",
                            d.message_id
                        ));
                    }
                }
            }
            copies.entry((sender, seq)).or_default().push(d);
        }
    }

    for send in sends {
        match (&send.outcome, copies.contains_key(&(send.sender, send.seq))) {
            (Outcome::Accepted { message_id }, false) => {
                counts.lost += 1;
                violations.push(format!(
                    "(a) LOST: {:?}, accepted as message {message_id}, never delivered",
                    body(send.sender, send.to, send.seq)
                ));
            }
            (Outcome::Unknown, true) => counts.unknown_delivered += 1,
            _ => {}
        }
    }

    counts.delivered = copies.len() as u64;
    counts.duplicates = counts.deliveries - counts.delivered;
    for list in copies.values() {
        for pair in list.windows(2) {
            let (earlier, later) = (pair[0], pair[1]);
            if later.message_id != earlier.message_id {
                violations.push(format!(
                    "{:?} was stored twice, as messages {} and {}",
                    earlier.body, earlier.message_id, later.message_id
                ));
            }
            if later.epoch <= earlier.epoch {
                violations.push(format!(
                    "(c) {:?} (message {}) was delivered twice without a crash in between: in \
                     epoch {} on {} and again in epoch {} on {}",
                    earlier.body,
                    earlier.message_id,
                    earlier.epoch,
                    earlier.on,
                    later.epoch,
                    later.on
                ));
            }
        }
    }
    (counts, violations)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(sender: usize, to: usize, seq: u64, outcome: Outcome) -> SendRecord {
        SendRecord {
            sender,
            seq,
            to,
            outcome,
        }
    }

    fn got(sender: usize, to: usize, seq: u64, message_id: u64, epoch: u64) -> Delivery {
        Delivery {
            from: sender_id(sender),
            body: body(sender, to, seq),
            message_id,
            epoch,
            on: format!("connection {}", epoch + 1),
        }
    }

    #[test]
    fn bodies_round_trip() {
        assert_eq!(parse_body(&body(3, 1, 42)), Some((3, 1, 42)));
        assert_eq!(parse_body("s3:1:42:9"), None);
        assert_eq!(parse_body("x3:1:42"), None);
    }

    #[test]
    fn each_broken_promise_is_named() {
        let sends = [
            sent(0, 0, 0, Outcome::Accepted { message_id: 10 }),
            sent(0, 0, 1, Outcome::Accepted { message_id: 11 }),
            sent(0, 0, 2, Outcome::Unknown),
            sent(0, 0, 3, Outcome::Accepted { message_id: 13 }),
            sent(0, 0, 4, Outcome::Rejected("unavailable".into())),
        ];
        let deliveries = vec![vec![
            got(0, 0, 1, 11, 0),
            got(0, 0, 0, 10, 0),
            got(0, 0, 1, 11, 0),
            got(0, 0, 2, 12, 1),
            got(0, 0, 4, 14, 1),
        ]];
        let (counts, violations) = check(&sends, &deliveries);
        let starts: Vec<&str> = violations.iter().map(|v| &v[..3]).collect();
        assert_eq!(starts, ["(d)", "(b)", "(a)", "(c)"], "{violations:#?}");
        assert_eq!(counts.lost, 1);
        assert_eq!(counts.duplicates, 1);
        assert_eq!(counts.unknown_delivered, 1);
    }

    #[test]
    fn redelivery_after_a_crash_is_fine() {
        let sends = [
            sent(0, 0, 0, Outcome::Accepted { message_id: 10 }),
            sent(0, 0, 1, Outcome::Unknown),
        ];
        let deliveries = vec![vec![got(0, 0, 0, 10, 0), got(0, 0, 0, 10, 1)]];
        let (counts, violations) = check(&sends, &deliveries);
        assert!(violations.is_empty(), "{violations:?}");
        assert_eq!(counts.duplicates, 1);
        assert_eq!(counts.unknown_delivered, 0);
    }
}
