//! The order of what a session writes about its client's sends: `Accepted`/`Rejected` go out in the
//! order the `Send`s came in, whatever order the Router answers in, and a receipt waits for its send's
//! answer.
//!
//! Every `Send` takes a slot, in arrival order; the Router's answer fills it, and answers leave from the
//! front as far as the slots are filled. A message handed out early can be acknowledged by its
//! recipient before the Router has answered its sender, so a receipt for a send still owed its answer
//! is held back, and with it every later delivery, to keep the Router's order. The slots also count the
//! sends in the air, which `limits.max_unaccepted_sends` caps. No actor and no socket here: the session
//! writes what these methods hand back.

use std::collections::VecDeque;

use switchboard_proto::{BrokerFrame, RejectReason};

use crate::store::Entry;

/// What became of one `Send`: stored under a broker message id, or rejected.
pub(crate) type Outcome = Result<u64, RejectReason>;

/// A send's place in line: the number of `Send`s this connection read before it.
pub(crate) type Seq = u64;

/// The answer to one `Send`, kept in arrival order until it can be written.
struct Slot {
    /// The sender's send id for the message (`id` in its `Send`).
    send_id: u64,
    outcome: Option<Outcome>,
    /// Replaces the reason's standard text in a `Rejected`.
    text: Option<String>,
}

/// The answers a connection owes its client's sends, and the deliveries held behind them.
#[derive(Default)]
pub(crate) struct Answers {
    /// Oldest first; `first_seq` is the place in line of the front slot.
    owed: VecDeque<Slot>,
    first_seq: Seq,
    /// Deliveries held back, in order, behind a receipt whose send's answer is not written yet; they
    /// leave from the front.
    held: VecDeque<Entry>,
}

impl Answers {
    /// A `Send` came in: it takes the next place in line, which its outcome is recorded against.
    pub(crate) fn owe(&mut self, send_id: u64) -> Seq {
        let seq = self.first_seq + self.owed.len() as u64;
        self.owed.push_back(Slot {
            send_id,
            outcome: None,
            text: None,
        });
        seq
    }

    /// Sends whose answer is not written yet: the ones `limits.max_unaccepted_sends` counts.
    pub(crate) fn owed(&self) -> usize {
        self.owed.len()
    }

    /// Records the outcome of send `seq`; `false` if no answer is owed to it. Then take what is due
    /// with [`Answers::next_answer`] and [`Answers::released`].
    ///
    /// `text` replaces the standard text only of an answer that is due at once: an answer that waits
    /// behind an earlier send's goes out with its reason's standard text, as it always has.
    pub(crate) fn settle(&mut self, seq: Seq, outcome: Outcome, text: Option<String>) -> bool {
        let Some(index) = seq.checked_sub(self.first_seq) else {
            return false;
        };
        let Some(slot) = self.owed.get_mut(index as usize) else {
            return false;
        };
        slot.outcome = Some(outcome);
        slot.text = if index == 0 { text } else { None };
        true
    }

    /// The next `Accepted` or `Rejected` to write, if the oldest send owed one has its outcome.
    pub(crate) fn next_answer(&mut self) -> Option<BrokerFrame> {
        let outcome = self.owed.front()?.outcome?;
        let slot = self.owed.pop_front()?;
        self.first_seq += 1;
        Some(match outcome {
            Ok(message_id) => BrokerFrame::Accepted {
                send_id: slot.send_id,
                message_id,
            },
            Err(reason) => BrokerFrame::Rejected {
                send_id: slot.send_id,
                reason,
                text: slot.text.unwrap_or_else(|| reject_text(reason).to_string()),
            },
        })
    }

    /// An entry the Router handed over: back to be written now, or `None` when it must wait (it is a
    /// receipt for a send still owed its answer, or deliveries already wait: order holds).
    pub(crate) fn pass(&mut self, entry: Entry) -> Option<Entry> {
        if !self.held.is_empty() || (entry.kind.is_receipt() && self.owes(entry.send_id)) {
            self.held.push_back(entry);
            return None;
        }
        Some(entry)
    }

    /// The next held delivery that no longer waits for an answer, in order: none from the first
    /// receipt whose send is still owed its answer.
    pub(crate) fn next_released(&mut self) -> Option<Entry> {
        let front = self.held.front()?;
        if front.kind.is_receipt() && self.owes(front.send_id) {
            return None;
        }
        self.held.pop_front()
    }

    /// Whether the answer to this connection's send `send_id` has not been written yet.
    fn owes(&self, send_id: u64) -> bool {
        self.owed.iter().any(|s| s.send_id == send_id)
    }
}

/// The standard text of a `Rejected` for `reason`.
fn reject_text(reason: RejectReason) -> &'static str {
    match reason {
        RejectReason::InvalidRecipient => "the recipient is not a valid client id",
        RejectReason::TooLarge => "the message is larger than the broker accepts",
        RejectReason::Unavailable => "the broker could not store the message; nothing was stored",
        RejectReason::MailboxFull => "the recipient's mailbox is full; nothing was stored",
        RejectReason::Forbidden => "this client may not send to that recipient",
        RejectReason::RateLimited => "sending too fast; nothing was stored, slow down and resend",
        RejectReason::Unknown => "rejected",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EntryKind;

    fn entry(id: u64, kind: EntryKind, send_id: u64) -> Entry {
        Entry {
            id,
            mailbox: "alice".into(),
            kind,
            peer: "bob".into(),
            send_id,
            message_id: id,
            sent_at_ms: 0,
            expires_at_ms: 0,
            body: bytes::Bytes::new(),
            receipts: switchboard_proto::Receipts::All,
        }
    }

    /// A receipt for alice's send `send_id`.
    fn receipt(id: u64, send_id: u64) -> Entry {
        entry(id, EntryKind::Delivered, send_id)
    }

    /// A message to alice, whose sender called it `send_id` (its own numbering, not alice's).
    fn message(id: u64, send_id: u64) -> Entry {
        entry(id, EntryKind::Message, send_id)
    }

    /// Every answer due now, as (send id, message id or reject reason).
    fn due(answers: &mut Answers) -> Vec<(u64, Outcome)> {
        std::iter::from_fn(|| answers.next_answer())
            .map(|frame| match frame {
                BrokerFrame::Accepted {
                    send_id,
                    message_id,
                } => (send_id, Ok(message_id)),
                BrokerFrame::Rejected {
                    send_id, reason, ..
                } => (send_id, Err(reason)),
                other => panic!("not an answer: {other:?}"),
            })
            .collect()
    }

    fn released(answers: &mut Answers) -> Vec<u64> {
        std::iter::from_fn(|| answers.next_released())
            .map(|e| e.id)
            .collect()
    }

    #[test]
    fn answers_leave_in_the_order_the_sends_came_in_whatever_order_they_are_settled() {
        let mut answers = Answers::default();
        let seqs: Vec<Seq> = [10, 11, 12].into_iter().map(|id| answers.owe(id)).collect();
        assert!(answers.settle(seqs[2], Ok(102), None));
        assert_eq!(due(&mut answers), [], "the first two are not answered yet");
        assert!(answers.settle(seqs[0], Err(RejectReason::MailboxFull), None));
        assert_eq!(due(&mut answers), [(10, Err(RejectReason::MailboxFull))]);
        assert!(answers.settle(seqs[1], Ok(101), None));
        assert_eq!(due(&mut answers), [(11, Ok(101)), (12, Ok(102))]);
        assert_eq!(answers.next_answer(), None);
    }

    #[test]
    fn places_in_line_keep_counting_after_answers_are_written() {
        let mut answers = Answers::default();
        let first = answers.owe(1);
        answers.settle(first, Ok(7), None);
        assert_eq!(due(&mut answers), [(1, Ok(7))]);
        let second = answers.owe(2);
        assert_eq!(second, first + 1);
        assert!(!answers.settle(first, Ok(7), None), "already answered");
        assert!(!answers.settle(second + 1, Ok(8), None), "no such send yet");
        assert!(answers.settle(second, Ok(8), None));
        assert_eq!(due(&mut answers), [(2, Ok(8))]);
    }

    #[test]
    fn the_unanswered_count_drops_only_as_answers_are_written() {
        let mut answers = Answers::default();
        let seqs: Vec<Seq> = (1..=3).map(|id| answers.owe(id)).collect();
        assert_eq!(answers.owed(), 3);
        answers.settle(seqs[1], Ok(2), None);
        assert_eq!(due(&mut answers), []);
        assert_eq!(
            answers.owed(),
            3,
            "answered but not written: still in the air"
        );
        answers.settle(seqs[0], Ok(1), None);
        assert_eq!(due(&mut answers).len(), 2);
        assert_eq!(answers.owed(), 1);
    }

    #[test]
    fn a_rejection_carries_its_own_text_when_due_at_once_and_the_standard_text_otherwise() {
        let mut answers = Answers::default();
        let text = |frame: Option<BrokerFrame>| match frame {
            Some(BrokerFrame::Rejected { text, .. }) => text,
            other => panic!("not a rejection: {other:?}"),
        };
        let first = answers.owe(1);
        answers.settle(
            first,
            Err(RejectReason::InvalidRecipient),
            Some("bad id".into()),
        );
        assert_eq!(text(answers.next_answer()), "bad id");

        let waiting = answers.owe(2);
        let behind = answers.owe(3);
        answers.settle(behind, Err(RejectReason::Forbidden), Some("dropped".into()));
        answers.settle(waiting, Err(RejectReason::RateLimited), None);
        assert_eq!(
            text(answers.next_answer()),
            reject_text(RejectReason::RateLimited)
        );
        assert_eq!(
            text(answers.next_answer()),
            reject_text(RejectReason::Forbidden)
        );
    }

    #[test]
    fn a_receipt_waits_for_its_sends_answer_and_is_released_exactly_then() {
        let mut answers = Answers::default();
        let seq = answers.owe(5);
        assert_eq!(
            answers.pass(receipt(100, 5)),
            None,
            "send 5 is not answered"
        );
        assert_eq!(released(&mut answers), Vec::<u64>::new());
        answers.settle(seq, Ok(99), None);
        assert_eq!(due(&mut answers), [(5, Ok(99))]);
        assert_eq!(released(&mut answers), [100]);
        assert_eq!(released(&mut answers), Vec::<u64>::new(), "released once");
    }

    #[test]
    fn deliveries_after_a_held_receipt_wait_behind_it_to_keep_the_order() {
        let mut answers = Answers::default();
        let seq = answers.owe(5);
        assert_eq!(answers.pass(receipt(100, 5)), None);
        assert_eq!(
            answers.pass(message(101, 1)),
            None,
            "behind the held receipt"
        );
        answers.settle(seq, Ok(99), None);
        due(&mut answers);
        assert_eq!(released(&mut answers), [100, 101]);
        assert_eq!(answers.pass(message(102, 1)).map(|e| e.id), Some(102));
    }

    #[test]
    fn held_deliveries_go_out_up_to_the_next_receipt_still_waiting() {
        let mut answers = Answers::default();
        let (first, second) = (answers.owe(1), answers.owe(2));
        for delivery in [
            receipt(100, 1),
            message(101, 9),
            receipt(102, 2),
            message(103, 9),
        ] {
            assert_eq!(answers.pass(delivery), None);
        }
        answers.settle(first, Ok(10), None);
        assert_eq!(due(&mut answers), [(1, Ok(10))]);
        assert_eq!(released(&mut answers), [100, 101]);
        answers.settle(second, Ok(20), None);
        assert_eq!(due(&mut answers), [(2, Ok(20))]);
        assert_eq!(released(&mut answers), [102, 103]);
    }

    #[test]
    fn an_answer_settled_but_not_written_still_holds_its_receipt() {
        let mut answers = Answers::default();
        let (first, second) = (answers.owe(1), answers.owe(2));
        answers.settle(second, Ok(20), None);
        assert_eq!(
            answers.pass(receipt(100, 2)),
            None,
            "Accepted for 2 waits behind 1"
        );
        assert_eq!(released(&mut answers), Vec::<u64>::new());
        answers.settle(first, Ok(10), None);
        assert_eq!(due(&mut answers).len(), 2);
        assert_eq!(released(&mut answers), [100]);
    }

    #[test]
    fn messages_and_receipts_for_answered_or_unknown_sends_pass_at_once() {
        let mut answers = Answers::default();
        let seq = answers.owe(1);
        assert_eq!(
            answers.pass(message(100, 1)).map(|e| e.id),
            Some(100),
            "a message is not a receipt"
        );
        assert_eq!(
            answers.pass(receipt(101, 7)).map(|e| e.id),
            Some(101),
            "no send 7 is owed"
        );
        answers.settle(seq, Ok(10), None);
        due(&mut answers);
        assert_eq!(
            answers.pass(receipt(102, 1)).map(|e| e.id),
            Some(102),
            "send 1 was answered"
        );
        let expired = entry(103, EntryKind::Expired, 2);
        answers.owe(2);
        assert_eq!(
            answers.pass(expired),
            None,
            "an expiry notice is a receipt too"
        );
    }
}
