//! How a Router on a store shared with other brokers learns that a mailbox of an online client
//! grew: a [`Wake`] after its own commits and, through the database, after anyone's
//! (`crate::cluster`), and a slow safety sweep in case a wake-up was lost.
//!
//! With a shared store nothing is handed out straight from a commit: another broker may have
//! committed to the same mailbox in between, under a lower id. A wake-up only marks the owner's
//! window as having more in the store (`Window::more_stored`); the page read then hands out
//! everything new in commit order. Wake-ups are hints: one too many costs a page read that finds
//! nothing, one lost is caught by the sweep, or by the re-read after the listener reconnects.

use std::time::Duration;

use actix::prelude::*;

use super::Router;

/// How often every online client's mailbox is read again, in case a wake-up was lost.
pub(super) const SAFETY_SWEEP: Duration = Duration::from_secs(10);

/// Mailboxes that may hold entries their online owners were not handed; empty for every online
/// client (after the listener reconnected, when notifications may have been missed).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Wake {
    pub mailboxes: Vec<String>,
}

impl Handler<Wake> for Router {
    type Result = ();

    fn handle(&mut self, msg: Wake, ctx: &mut Context<Self>) {
        if msg.mailboxes.is_empty() {
            self.wake_everyone(ctx);
        } else {
            self.wake(&msg.mailboxes, ctx);
        }
    }
}

impl Router {
    /// Reads the mailboxes of those of `mailboxes` whose owners are online here.
    pub(super) fn wake(&mut self, mailboxes: &[String], ctx: &mut Context<Self>) {
        for mailbox in mailboxes {
            let Some(client) = self.online.id_of(mailbox) else {
                continue; // Not online here: the owner reads it when it connects.
            };
            if let Some(window) = self.online.get_mut(mailbox) {
                window.more_stored();
            }
            self.refill(&client, ctx);
        }
    }

    /// Reads every online client's mailbox again.
    pub(super) fn wake_everyone(&mut self, ctx: &mut Context<Self>) {
        for client in self.online.ids() {
            if let Some(window) = self.online.get_mut(client.as_str()) {
                window.more_stored();
            }
            self.refill(&client, ctx);
        }
    }
}
