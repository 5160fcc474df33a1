//! What the Router does on its timers: remove expired messages (telling their senders) and ask the
//! store to forget old sends and hand free space back.
//!
//! The sweep asks the store for entries whose expiry time has passed, skips those on their way out
//! and those handed out and awaiting an ack (the delivery is under way; its ack decides), and queues
//! for each of the rest, in one batch, its delete and an `expired` receipt for the sender.

use std::time::Instant;

use actix::prelude::*;

use super::config::{millis, RouterConfig};
use super::{now_ms, Router};
use crate::store::{Entry, EntryKind, ExpiredEntry, Maintenance};

/// Expired entries handled per sweep read.
pub(super) const SWEEP_BATCH: usize = 1_024;

impl Router {
    /// Looks for expired entries unless a sweep is under way.
    pub(super) fn sweep(&mut self, ctx: &mut Context<Self>) {
        if self.sweeping {
            return;
        }
        self.sweeping = true;
        let stamp = self.deleting.begin_read();
        let store = self.store.clone();
        async move { store.expired(now_ms(), SWEEP_BATCH).await }
            .into_actor(self)
            .map(move |result, router, ctx| {
                router.sweeping = false;
                let removed = match result {
                    Ok(due) => router.expire(due),
                    Err(error) => {
                        tracing::error!(%error, "looking for expired messages failed");
                        0
                    }
                };
                router.deleting.end_read(stamp);
                router.commit_pending(ctx);
                if removed == SWEEP_BATCH {
                    router.sweep(ctx); // More may be due.
                }
            })
            .spawn(ctx);
    }

    /// Removes expired entries and tells their senders; returns how many it removed.
    fn expire(&mut self, due: Vec<ExpiredEntry>) -> usize {
        let (deleting, online) = (&self.deleting, &self.online);
        let due = removable(due, |e| {
            deleting.contains(e.id) || online.is_out(&e.mailbox, e.id)
        });
        let removed = due.len();
        let mut messages = 0;
        for ExpiredEntry { entry, body_len } in due {
            self.delete(entry.id, entry.mailbox.clone(), body_len);
            // A receipt that was never collected goes without a word: nobody is waiting for it.
            if entry.kind == EntryKind::Message {
                messages += 1;
            }
            self.tell_sender(EntryKind::Expired, &entry);
        }
        if removed > 0 {
            tracing::info!(
                removed,
                receipts = removed - messages,
                "expired messages and receipts removed"
            );
        }
        removed
    }

    pub(super) fn maintain(&mut self, ctx: &mut Context<Self>) {
        self.usage.forget_idle();
        let mut what = maintenance(&self.config, now_ms());
        what.forget_sent_before_ms = self
            .forget_cut
            .next(what.forget_sent_before_ms, Instant::now());
        let store = self.store.clone();
        async move { store.maintain(what).await }
            .into_actor(self)
            .map(|result, _, _| match result {
                Ok(report) => tracing::debug!(
                    forgotten = report.forgotten,
                    reclaimed_pages = report.reclaimed_pages,
                    "store maintenance"
                ),
                Err(error) => tracing::warn!(%error, "store maintenance failed"),
            })
            .spawn(ctx);
    }
}

/// The expired entries to remove now: all but those `busy` says are leaving already or being
/// delivered.
fn removable(due: Vec<ExpiredEntry>, busy: impl Fn(&Entry) -> bool) -> Vec<ExpiredEntry> {
    due.into_iter().filter(|e| !busy(&e.entry)).collect()
}

/// What to ask of the store's housekeeping at `now_ms`: forget sends older than the dedupe window,
/// and keep at most the configured number.
fn maintenance(config: &RouterConfig, now_ms: u64) -> Maintenance {
    Maintenance {
        forget_sent_before_ms: now_ms.saturating_sub(millis(config.dedupe_window)),
        remember_at_most: config.dedupe_max,
    }
}

/// How far the dedupe window's cut may move: never faster than twice real time, measured on a clock
/// that cannot jump. Remembered sends carry wall-clock times, and a wall clock set two days ahead
/// would otherwise forget every remembered send at the next pass, so that a resend is stored twice;
/// bounded, a jump is absorbed over as long again, with at most two intervals' worth forgotten per
/// pass. (The first pass after a start takes the wall clock as it is.)
#[derive(Debug, Default)]
pub(super) struct ForgetCut {
    /// The previous cut, and when it was made.
    last: Option<(u64, Instant)>,
}

impl ForgetCut {
    /// The cut to use now, given the one the wall clock asks for.
    pub(super) fn next(&mut self, wanted_ms: u64, now: Instant) -> u64 {
        let cut = match self.last {
            None => wanted_ms,
            Some((last, at)) => {
                let bound = last.saturating_add(millis(now.duration_since(at)).saturating_mul(2));
                wanted_ms.clamp(last, bound.max(last))
            }
        };
        self.last = Some((cut, now));
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::tests::config;
    use super::super::testing::entry;
    use super::*;

    #[test]
    fn an_expired_entry_being_delivered_or_deleted_is_left_to_that() {
        let due = (1..=4)
            .map(|id| ExpiredEntry {
                entry: entry(id, "bob", 0),
                body_len: 9,
            })
            .collect();
        let left = removable(due, |e| e.id % 2 == 0);
        let ids: Vec<u64> = left.iter().map(|e| e.entry.id).collect();
        assert_eq!(ids, [1, 3]);
    }

    #[test]
    fn a_wall_clock_jump_moves_the_cut_at_most_twice_real_time() {
        let mut cut = ForgetCut::default();
        let start = Instant::now();
        assert_eq!(
            cut.next(1_000_000, start),
            1_000_000,
            "the first pass as asked"
        );
        let minute = std::time::Duration::from_secs(60);
        let two_days = 2 * 24 * 3_600_000;
        assert_eq!(
            cut.next(1_060_000 + two_days, start + minute),
            1_120_000,
            "two minutes' worth, not two days"
        );
        assert_eq!(
            cut.next(500_000, start + 2 * minute),
            1_120_000,
            "a clock set back forgets nothing new"
        );
        assert_eq!(cut.next(1_150_000, start + 3 * minute), 1_150_000);
    }

    #[test]
    fn maintenance_forgets_sends_older_than_the_dedupe_window() {
        let what = maintenance(&config(), 100_000);
        assert_eq!(what.forget_sent_before_ms, 40_000);
        assert_eq!(what.remember_at_most, 1_000);
        assert_eq!(maintenance(&config(), 5).forget_sent_before_ms, 0);
    }
}
