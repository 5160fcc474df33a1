//! The store's own thread: the only place disk work happens.
//!
//! A [`StoreHandle`] is a cheap, cloneable async front for a [`MailboxStore`] running on a dedicated
//! OS thread. Requests travel over a bounded channel (a full queue makes callers wait, which is the
//! backpressure the Router wants) and answers come back on oneshot channels. Commits that queued up
//! while the previous one ran are merged into one transaction, so the store never does more fsyncs
//! than it has to, whoever the callers are.

use tokio::sync::{mpsc, oneshot};

use super::{Batch, Entry, MailboxStore, StoreError};

enum Request {
    Commit(Batch, oneshot::Sender<Result<(), StoreError>>),
    Fetch {
        mailbox: String,
        after: u64,
        limit: usize,
        reply: oneshot::Sender<Result<Vec<Entry>, StoreError>>,
    },
    Count(String, oneshot::Sender<Result<u64, StoreError>>),
    LastId(oneshot::Sender<Result<u64, StoreError>>),
}

/// Async access to a store running on its own thread. Clone freely; the thread ends when the last
/// handle is dropped.
#[derive(Clone)]
pub struct StoreHandle {
    requests: mpsc::Sender<Request>,
}

/// The store thread, to wait for once every handle is gone (that is, after a clean shutdown).
#[derive(Debug)]
pub struct StoreThread(std::thread::JoinHandle<()>);

impl StoreThread {
    /// Blocks until the store thread has committed its last request and closed the store.
    pub fn join(self) {
        if self.0.join().is_err() {
            tracing::error!("store thread panicked");
        }
    }
}

impl StoreHandle {
    /// Moves `store` onto a new thread named `switchboard-store`, serving up to `queue_depth`
    /// queued requests.
    pub fn spawn(
        store: Box<dyn MailboxStore>,
        queue_depth: usize,
    ) -> Result<(StoreHandle, StoreThread), StoreError> {
        let (requests, rx) = mpsc::channel(queue_depth.max(1));
        let thread = std::thread::Builder::new()
            .name("switchboard-store".into())
            .spawn(move || serve(store, rx))
            .map_err(StoreError::Thread)?;
        Ok((StoreHandle { requests }, StoreThread(thread)))
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
    pub async fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        self.ask(|reply| Request::Commit(batch, reply)).await
    }

    /// Up to `limit` entries of `mailbox` after id `after`, in order.
    pub async fn fetch(
        &self,
        mailbox: String,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.ask(|reply| Request::Fetch {
            mailbox,
            after,
            limit,
            reply,
        })
        .await
    }

    /// How many entries `mailbox` holds.
    pub async fn count(&self, mailbox: String) -> Result<u64, StoreError> {
        self.ask(|reply| Request::Count(mailbox, reply)).await
    }

    /// The highest id ever committed.
    pub async fn last_id(&self) -> Result<u64, StoreError> {
        self.ask(Request::LastId).await
    }
}

fn serve(mut store: Box<dyn MailboxStore>, mut rx: mpsc::Receiver<Request>) {
    let mut next = rx.blocking_recv();
    while let Some(request) = next.take() {
        match request {
            Request::Commit(batch, reply) => {
                // Merge every commit already waiting behind this one into a single transaction.
                let mut merged = batch;
                let mut replies = vec![reply];
                loop {
                    match rx.try_recv() {
                        Ok(Request::Commit(more, reply)) => {
                            merged.appends.extend(more.appends);
                            merged.deletes.extend(more.deletes);
                            replies.push(reply);
                        }
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let result = store.commit(&merged);
                if let Err(error) = &result {
                    tracing::error!(%error, entries = merged.appends.len(), "store commit failed");
                }
                let failed = result.as_ref().err().map(ToString::to_string);
                for reply in replies {
                    let answer = match &failed {
                        None => Ok(()),
                        Some(text) => Err(StoreError::Failed(text.clone())),
                    };
                    let _ = reply.send(answer);
                }
            }
            Request::Fetch {
                mailbox,
                after,
                limit,
                reply,
            } => {
                let _ = reply.send(store.fetch(&mailbox, after, limit));
            }
            Request::Count(mailbox, reply) => {
                let _ = reply.send(store.count(&mailbox));
            }
            Request::LastId(reply) => {
                let _ = reply.send(store.last_id());
            }
        }
        if next.is_none() {
            next = rx.blocking_recv();
        }
    }
    tracing::debug!("store thread finished");
}
