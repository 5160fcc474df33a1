//! What the driver does with each frame the broker sends: answers resolve their sends, deliveries
//! and receipts become events (a tracked send's receipt goes to its future and is acknowledged by the
//! library), and an `error` ends the connection.

use switchboard_proto::{BrokerFrame, ClientFrame};

use super::{lost, Driver, End};
use crate::connection::Link;
use crate::error::{may_retry_after, ClientError};
use crate::event::{time_from_millis, CloseReason, Datagram, Event, Message, Receipt};
use crate::sent::Sent;

impl Driver {
    /// Acts on one frame from the broker; `Some` when the connection is over.
    pub(super) fn on_frame(&mut self, link: &mut Link, frame: BrokerFrame) -> Option<End> {
        tracing::trace!(?frame, "received");
        match frame {
            BrokerFrame::Accepted { .. } | BrokerFrame::Rejected { .. } => self.answer(frame),
            BrokerFrame::Deliver {
                message_id,
                from,
                send_id,
                sent_at_ms,
                body,
            } => {
                self.entry_arrived(message_id);
                self.events.push(Event::Message(Message {
                    message_id,
                    from,
                    send_id,
                    sent_at: time_from_millis(sent_at_ms),
                    body,
                }));
            }
            BrokerFrame::Receipt {
                receipt_id,
                send_id,
                message_id,
                to,
                status,
            } => {
                self.entry_arrived(receipt_id);
                let receipt = Receipt {
                    receipt_id,
                    send_id,
                    message_id,
                    to,
                    status,
                };
                // A tracked receipt is the library's to acknowledge; if its future was dropped,
                // nobody wants it and acknowledging it is still right.
                if let Some(waiter) = self.tracked.remove(&send_id) {
                    link.out.control(ClientFrame::Ack { id: receipt_id });
                    link.library_acks.push(receipt_id);
                    let _ = waiter.send(receipt);
                } else if self.library_acked.remove(&receipt_id) {
                    tracing::debug!(receipt_id, "acknowledging a tracked receipt again");
                    link.out.control(ClientFrame::Ack { id: receipt_id });
                    link.library_acks.push(receipt_id);
                } else {
                    self.events.push(Event::Receipt(receipt));
                }
            }
            BrokerFrame::Pong => tracing::trace!("pong"),
            BrokerFrame::Error { code, text } => {
                tracing::debug!(%code, %text, "the broker sent an error");
                return Some(lost(
                    CloseReason::Broker { code, text },
                    may_retry_after(code),
                ));
            }
            BrokerFrame::Hi { .. } => tracing::warn!("ignoring a second hi from the broker"),
            BrokerFrame::Datagram { from, body } => {
                self.udp.counters.received_on_tcp();
                self.events.push(Event::Datagram(Datagram { from, body }));
            }
        }
        None
    }

    /// Answers the send an `Accepted` or `Rejected` is for; other frames are ignored.
    pub(super) fn answer(&mut self, frame: BrokerFrame) {
        let (send_id, answer) = match frame {
            BrokerFrame::Accepted {
                send_id,
                message_id,
            } => (
                send_id,
                Ok(Sent {
                    send_id,
                    message_id,
                }),
            ),
            BrokerFrame::Rejected {
                send_id,
                reason,
                text,
            } => {
                self.tracked.remove(&send_id);
                (send_id, Err(ClientError::Rejected { reason, text }))
            }
            _ => return,
        };
        match self.unanswered.answered(send_id) {
            Some(send) => {
                debug_assert_eq!(send.send_id, send_id);
                let _ = send.accepted.send(answer);
            }
            None => tracing::warn!(send_id, "an answer for a send this client did not make"),
        }
    }

    /// Entries arrive in id order: a receipt acknowledged before the break that has not come again
    /// by now never will.
    fn entry_arrived(&mut self, entry_id: u64) {
        if !self.library_acked.is_empty() {
            self.library_acked = self.library_acked.split_off(&entry_id);
        }
    }
}
