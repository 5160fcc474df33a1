//! What the admin listener asks the Router: how much waits in the mailboxes.

use actix::prelude::*;

use super::Router;

/// Asks for the [`MailboxTotals`].
#[derive(Message, Debug)]
#[rtype(result = "MailboxTotals")]
pub struct Totals;

/// Committed entries over every mailbox, as the Router counts them for the limits.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, MessageResponse)]
pub struct MailboxTotals {
    /// Mailboxes holding at least one entry.
    pub mailboxes: u64,
    pub entries: u64,
    /// Body bytes.
    pub bytes: u64,
}

impl Handler<Totals> for Router {
    type Result = MailboxTotals;

    fn handle(&mut self, _: Totals, _: &mut Context<Self>) -> MailboxTotals {
        let (mailboxes, count) = self.usage.stored_totals();
        MailboxTotals {
            mailboxes,
            entries: count.entries,
            bytes: count.bytes,
        }
    }
}
