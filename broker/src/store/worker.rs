//! The store's own thread: the only place disk work happens.
//!
//! A [`StoreHandle`] is a cheap, cloneable async front for a [`MailboxStore`] running on a dedicated
//! OS thread. Requests travel over a bounded channel (a full queue makes callers wait, which is the
//! backpressure the Router wants) and answers come back on oneshot channels. Commits that queued up
//! while the previous one ran are merged into one transaction, so the store never does more fsyncs
//! than it has to, whoever the callers are.
//!
//! An engine that offers a [`PageReader`] (PostgreSQL, whose commits wait for remote flushes) gets a
//! second thread, `switchboard-store-reads`, with a channel of its own for page reads, so the next
//! page of a backlog is read while a commit is under way instead of after it.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;

use super::oldest;
use super::{
    Batch, CommitOutcome, Entry, ExpiredEntry, MailboxStore, MailboxUsage, Maintenance,
    MaintenanceReport, PageReader, StoreError,
};

/// A read that may run beside the commits (on the reads' thread when there is one).
enum Read {
    /// Up to `limit` entries of `mailbox` with an id above `after`.
    Page {
        mailbox: String,
        after: u64,
        limit: usize,
        reply: oneshot::Sender<Result<Vec<Entry>, StoreError>>,
    },
    /// How many entries `mailbox` holds.
    Count {
        mailbox: String,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
}

impl Read {
    /// Answers the read from `reader`: the engine's [`PageReader`], or the store itself.
    fn answer(self, reader: &mut dyn PageReader) {
        match self {
            Read::Page {
                mailbox,
                after,
                limit,
                reply,
            } => {
                let _ = reply.send(reader.fetch(&mailbox, after, limit));
            }
            Read::Count { mailbox, reply } => {
                let _ = reply.send(reader.entries_in(&mailbox));
            }
        }
    }
}

/// A store without a reader of its own answers reads on its commit thread.
impl PageReader for Box<dyn MailboxStore> {
    fn fetch(&mut self, mailbox: &str, after: u64, limit: usize) -> Result<Vec<Entry>, StoreError> {
        (**self).fetch(mailbox, after, limit)
    }

    fn entries_in(&mut self, mailbox: &str) -> Result<u64, StoreError> {
        (**self).entries_in(mailbox)
    }
}

enum Request {
    Commit(Batch, oneshot::Sender<Result<CommitOutcome, StoreError>>),
    Read(Read),
    LastId(oneshot::Sender<Result<u64, StoreError>>),
    Usage(oneshot::Sender<Result<Vec<MailboxUsage>, StoreError>>),
    Expired {
        now_ms: u64,
        limit: usize,
        reply: oneshot::Sender<Result<Vec<ExpiredEntry>, StoreError>>,
    },
    Sent {
        sender: String,
        send_id: u64,
        reply: oneshot::Sender<Result<Option<u64>, StoreError>>,
    },
    Oldest(oldest::Oldest),
    Maintain(
        Maintenance,
        oneshot::Sender<Result<MaintenanceReport, StoreError>>,
    ),
}

/// Async access to a store running on its own thread. Clone freely; the thread ends when the last
/// handle is dropped.
#[derive(Clone)]
pub struct StoreHandle {
    requests: mpsc::Sender<Request>,
    /// The page reads' own thread, when the engine has a [`PageReader`].
    reads: Option<mpsc::Sender<Read>>,
}

/// The store thread, to wait for once every handle is gone (that is, after a clean shutdown).
#[derive(Debug)]
pub struct StoreThread {
    store: std::thread::JoinHandle<()>,
    reads: Option<std::thread::JoinHandle<()>>,
}

impl StoreThread {
    /// Blocks until the store thread has committed its last request and closed the store (and the
    /// page reads' thread, if there is one, has answered its last read).
    pub fn join(self) {
        if self.store.join().is_err() {
            tracing::error!("store thread panicked");
        }
        if self.reads.is_some_and(|reads| reads.join().is_err()) {
            tracing::error!("store reads thread panicked");
        }
    }
}

impl StoreHandle {
    /// Moves `store` onto a new thread named `switchboard-store`, serving up to `queue_depth`
    /// queued requests.
    /// Each commit's time and size go to `metrics`.
    pub fn spawn(
        mut store: Box<dyn MailboxStore>,
        queue_depth: usize,
        metrics: Arc<Metrics>,
    ) -> Result<(StoreHandle, StoreThread), StoreError> {
        let (reads, reads_thread) = match store.page_reader() {
            Some(reader) => {
                let (reads, rx) = mpsc::channel(queue_depth.max(1));
                let thread = std::thread::Builder::new()
                    .name("switchboard-store-reads".into())
                    .spawn(move || serve_reads(reader, rx))
                    .map_err(StoreError::Thread)?;
                (Some(reads), Some(thread))
            }
            None => (None, None),
        };
        let (requests, rx) = mpsc::channel(queue_depth.max(1));
        let thread = std::thread::Builder::new()
            .name("switchboard-store".into())
            .spawn(move || serve(store, rx, &metrics))
            .map_err(StoreError::Thread)?;
        Ok((
            StoreHandle { requests, reads },
            StoreThread {
                store: thread,
                reads: reads_thread,
            },
        ))
    }

    async fn ask<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Request,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(request(reply))
            .await
            .map_err(|_| StoreError::Stopped)?;
        answer.await.map_err(|_| StoreError::Stopped)?
    }

    /// Makes `batch` durable; resolves once it is.
    pub async fn commit(&self, batch: Batch) -> Result<CommitOutcome, StoreError> {
        self.ask(|reply| Request::Commit(batch, reply)).await
    }

    /// Up to `limit` entries of `mailbox` after id `after`, in order.
    pub async fn fetch(
        &self,
        mailbox: String,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.read(|reply| Read::Page {
            mailbox,
            after,
            limit,
            reply,
        })
        .await
    }

    /// How many entries `mailbox` holds, as the store counts them now (beside the commits, where
    /// the engine reads on a thread of its own).
    pub async fn entries_in(&self, mailbox: String) -> Result<u64, StoreError> {
        self.read(|reply| Read::Count { mailbox, reply }).await
    }

    /// Asks a [`Read`] of the reads' thread, or of the store thread when there is none.
    async fn read<T>(
        &self,
        read: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Read,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let read = read(reply);
        let sent = match &self.reads {
            Some(reads) => reads.send(read).await.is_ok(),
            None => self.requests.send(Request::Read(read)).await.is_ok(),
        };
        if !sent {
            return Err(StoreError::Stopped);
        }
        answer.await.map_err(|_| StoreError::Stopped)?
    }

    /// Usage of every non-empty mailbox.
    pub async fn usage(&self) -> Result<Vec<MailboxUsage>, StoreError> {
        self.ask(Request::Usage).await
    }

    /// Entries whose time to live ran out by `now_ms`.
    pub async fn expired(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<ExpiredEntry>, StoreError> {
        self.ask(|reply| Request::Expired {
            now_ms,
            limit,
            reply,
        })
        .await
    }

    /// The broker id `sender`'s send `send_id` got, if it is remembered.
    pub async fn sent(&self, sender: String, send_id: u64) -> Result<Option<u64>, StoreError> {
        self.ask(|reply| Request::Sent {
            sender,
            send_id,
            reply,
        })
        .await
    }

    /// Housekeeping: forget old sends, hand back free space.
    pub async fn maintain(&self, what: Maintenance) -> Result<MaintenanceReport, StoreError> {
        self.ask(|reply| Request::Maintain(what, reply)).await
    }

    /// The highest id ever committed.
    pub async fn last_id(&self) -> Result<u64, StoreError> {
        self.ask(Request::LastId).await
    }

    /// When the oldest waiting entry of any mailbox was accepted (the admin listener's gauge).
    pub async fn oldest_sent_at_ms(&self) -> Result<Option<u64>, StoreError> {
        self.ask(|reply| Request::Oldest(oldest::Oldest::Any(reply)))
            .await
    }

    /// For each of `mailboxes`, when its oldest entry was accepted (the admin API's listing).
    pub async fn heads(&self, mailboxes: Vec<String>) -> Result<Vec<Option<u64>>, StoreError> {
        self.ask(|reply| Request::Oldest(oldest::Oldest::Each(mailboxes, reply)))
            .await
    }
}

fn serve(mut store: Box<dyn MailboxStore>, mut rx: mpsc::Receiver<Request>, metrics: &Metrics) {
    let mut next = rx.blocking_recv();
    while let Some(request) = next.take() {
        match request {
            Request::Commit(batch, reply) => {
                // Merge every commit already waiting behind this one into a single transaction.
                let mut merged = batch;
                let mut callers = vec![(merged.appends.len(), reply)];
                loop {
                    match rx.try_recv() {
                        Ok(Request::Commit(more, reply)) => {
                            callers.push((more.appends.len(), reply));
                            merged.merge(more);
                        }
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let started = std::time::Instant::now();
                let result = store.commit(&merged);
                let took = started.elapsed();
                metrics.commit(took, merged.appends.len() + merged.deletes.len());
                tracing::debug!(
                    appends = merged.appends.len(),
                    deletes = merged.deletes.len(),
                    remembered = merged.remembered.len(),
                    callers = callers.len(),
                    micros = took.as_micros() as u64,
                    "store commit"
                );
                answer_merged(result, &merged, callers);
            }
            Request::Read(read) => read.answer(&mut store),
            Request::LastId(reply) => {
                let _ = reply.send(store.last_id());
            }
            Request::Usage(reply) => {
                let _ = reply.send(store.usage());
            }
            Request::Expired {
                now_ms,
                limit,
                reply,
            } => {
                let _ = reply.send(store.expired(now_ms, limit));
            }
            Request::Sent {
                sender,
                send_id,
                reply,
            } => {
                let _ = reply.send(store.sent(&sender, send_id));
            }
            Request::Oldest(question) => question.answer(store.as_mut()),
            Request::Maintain(what, reply) => {
                let _ = reply.send(store.maintain(&what));
            }
        }
        if next.is_none() {
            next = rx.blocking_recv();
        }
    }
    tracing::debug!("store thread finished");
}

/// Gives each caller of a merged commit its own share of the outcome: the duplicates among its own
/// appends, or the failure.
fn answer_merged(
    result: Result<CommitOutcome, StoreError>,
    merged: &Batch,
    callers: Vec<(usize, oneshot::Sender<Result<CommitOutcome, StoreError>>)>,
) {
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(error) => {
            tracing::error!(%error, entries = merged.appends.len(), "store commit failed");
            let text = error.to_string();
            for (_, reply) in callers {
                let _ = reply.send(Err(StoreError::Failed(text.clone())));
            }
            return;
        }
    };
    let mut start = 0;
    for (len, reply) in callers {
        let ids = &merged.appends[start..start + len];
        start += len;
        let duplicates = outcome
            .duplicates
            .iter()
            .filter(|d| ids.iter().any(|e| e.id == d.id))
            .copied()
            .collect();
        let renumbered = outcome
            .renumbered
            .iter()
            .filter(|r| ids.iter().any(|e| e.id == r.id))
            .copied()
            .collect();
        let not_stored = outcome
            .not_stored
            .iter()
            .filter(|&&id| ids.iter().any(|e| e.id == id))
            .copied()
            .collect();
        let _ = reply.send(Ok(CommitOutcome {
            duplicates,
            renumbered,
            not_stored,
        }));
    }
}

/// The page reads' thread: answers each read in turn until every handle is gone.
fn serve_reads(mut reader: Box<dyn PageReader>, mut rx: mpsc::Receiver<Read>) {
    while let Some(read) = rx.blocking_recv() {
        read.answer(reader.as_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::{entry, ids};
    use crate::store::MemoryStore;

    #[test]
    fn the_store_thread_serves_and_merges_commits() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let (handle, thread) =
            StoreHandle::spawn(Box::new(MemoryStore::new()), 64, Arc::default()).expect("spawn");
        rt.block_on(async {
            let commits = (1..=20).map(|i| {
                let handle = handle.clone();
                async move {
                    handle
                        .commit(Batch {
                            appends: vec![entry(i, "bob", "x")],
                            deletes: vec![],
                            ..Default::default()
                        })
                        .await
                }
            });
            for result in futures_util::future::join_all(commits).await {
                result.expect("commit");
            }
            let page = handle.fetch("bob".into(), 0, 100).await.expect("fetch");
            assert_eq!(ids(&page), (1..=20).collect::<Vec<_>>());
            assert_eq!(handle.last_id().await.expect("last id"), 20);
        });
        drop(handle);
        thread.join();
    }
}
