//! How an online client's mailbox flushes: page reads of its backlog, and committed entries handed
//! over straight from their commit when it has none.
//!
//! The decisions are the window's (`window.rs`); this is the actor's side of them: the store reads
//! and what happens when they come back. A read is stamped (`deleting.rs`) so that an entry whose
//! delete committed while the read was under way is not handed out again.

use std::time::Duration;

use actix::prelude::*;
use switchboard_proto::{ClientId, ErrorCode};

use super::window::Handed;
use super::Router;
use crate::store::{Entry, StoreError};

/// How long to wait before retrying a page read that failed.
const FETCH_RETRY: Duration = Duration::from_secs(1);

impl Router {
    /// A committed entry: hand it over now if its owner is online and has nothing older waiting.
    pub(super) fn arrived(&mut self, entry: Entry) {
        let Some(window) = self.online.get_mut(&entry.mailbox) else {
            return;
        };
        if window.takes_committed(&entry) {
            let owner = entry.mailbox.clone();
            if window.hand_out(entry) == Handed::Gone {
                self.went_away(&owner);
            }
        }
    }

    /// Reads the next page of a client's backlog if its window has room for a useful amount.
    pub(super) fn refill(&mut self, client: &ClientId, ctx: &mut Context<Self>) {
        let Some(window) = self.online.get_mut(client.as_str()) else {
            return;
        };
        let Some(page) = window.next_page() else {
            return;
        };
        let conn_id = window.conn_id;
        let stamp = self.deleting.begin_read();
        let store = self.store.clone();
        let mailbox = client.to_string();
        let client = client.clone();
        async move { store.fetch(mailbox, page.after, page.limit).await }
            .into_actor(self)
            .map(move |result, router, ctx| {
                router.page_read(client, conn_id, page.limit, result, ctx);
                router.deleting.end_read(stamp);
            })
            .spawn(ctx);
    }

    fn page_read(
        &mut self,
        client: ClientId,
        conn_id: u64,
        limit: usize,
        result: Result<Vec<Entry>, StoreError>,
        ctx: &mut Context<Self>,
    ) {
        let Some(window) = self.online.current_mut(client.as_str(), conn_id) else {
            return; // A newer session took over and started its own flush.
        };
        let (page, damaged) = match result {
            Ok(page) => (page, Vec::new()),
            Err(StoreError::DamagedEntries {
                page,
                damaged,
                what,
                ..
            }) => {
                tracing::error!(mailbox = %client, ?damaged, what, "stored bodies are damaged; those entries are set aside");
                (page, damaged)
            }
            Err(error) if error.is_damage() => {
                window.page_failed();
                tracing::error!(%error, mailbox = %client, "the mailbox cannot be read back from the store; closing its session");
                window.refuse(
                    ErrorCode::MailboxUnreadable,
                    "the broker cannot read your mailbox from its store; try again later".into(),
                );
                return;
            }
            Err(error) => {
                window.page_failed();
                tracing::error!(%error, mailbox = %client, "reading mailbox failed; retrying");
                ctx.run_later(FETCH_RETRY, move |router, ctx| router.refill(&client, ctx));
                return;
            }
        };
        let set_aside = self.set_aside_damaged(&page, &damaged);
        if self.set_aside_undeliverable(&page) || set_aside {
            self.commit_pending(ctx);
        }
        let Some(window) = self.online.current_mut(client.as_str(), conn_id) else {
            return;
        };
        let (deleting, damaged) = (&self.deleting, &self.damaged);
        if window
            .page_read(page, limit, |id| {
                deleting.contains(id) || damaged.contains(&id)
            })
            .is_err()
        {
            self.went_away(client.as_str());
            return;
        }
        self.refill(&client, ctx);
    }
}
