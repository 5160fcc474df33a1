//! A session's outgoing side: frames encoded by the session, written to the socket by a task.
//!
//! The session encodes each frame and queues the bytes; a writer task on the same worker thread takes
//! everything queued since its last write and writes it with one syscall, so a burst of `Deliver` or
//! `Accepted` frames costs one write, not one each. The bytes queued and not yet written are counted:
//! past `limits.max_outgoing_bytes` the peer is not reading fast enough and [`Outbox::send`] says so,
//! so the session can close it instead of buffering without bound. What it held unacknowledged goes
//! back to its mailbox.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use switchboard_proto::{BrokerCodec, BrokerFrame, CodecError};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{oneshot, Notify};
use tokio_util::codec::Encoder;

/// Largest amount of queued frames copied into one write.
const WRITE_BATCH: usize = 256 * 1024;

/// Why a frame could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("the peer is not reading: {queued} bytes wait to be written, the limit is {limit}")]
    Overflow { queued: usize, limit: usize },
    #[error("cannot encode a frame: {0}")]
    Encode(#[from] CodecError),
    #[error("the connection is closed")]
    Closed,
}

/// How the writer task ended.
pub type WriterResult = Result<(), std::io::Error>;

/// What the session and its writer task share; both run on the same worker thread. (A plain queue and a
/// `Notify` rather than a channel: an idle connection then holds no preallocated channel block.)
#[derive(Default)]
struct Shared {
    frames: RefCell<VecDeque<Bytes>>,
    /// Bytes queued and not yet taken by the kernel.
    queued: Cell<usize>,
    /// No more frames will come.
    closed: Cell<bool>,
    wake: Notify,
}

/// The session's handle on its writer task.
pub struct Outbox {
    shared: Rc<Shared>,
    limit: usize,
    codec: BrokerCodec,
    scratch: BytesMut,
    task: actix_rt::task::JoinHandle<()>,
}

impl Outbox {
    /// Starts the writer task on the current worker thread. `done` resolves when the task ends: after
    /// [`Outbox::close`] once everything is written, or on a write error.
    pub fn start(
        socket: impl AsyncWrite + Unpin + 'static,
        codec: BrokerCodec,
        limit: usize,
        stall_timeout: Duration,
    ) -> (Outbox, oneshot::Receiver<WriterResult>) {
        let shared = Rc::new(Shared::default());
        let (done_tx, done) = oneshot::channel();
        let task = actix_rt::spawn(write_loop(socket, shared.clone(), stall_timeout, done_tx));
        let outbox = Outbox {
            shared,
            limit,
            codec,
            scratch: BytesMut::new(),
            task,
        };
        (outbox, done)
    }

    /// Encodes `frame` and queues it for writing.
    pub fn send(&mut self, frame: BrokerFrame) -> Result<(), OutboxError> {
        if self.shared.closed.get() {
            return Err(OutboxError::Closed);
        }
        self.codec.encode(frame, &mut self.scratch)?;
        let bytes = self.scratch.split().freeze();
        let queued = self.shared.queued.get() + bytes.len();
        if queued > self.limit {
            return Err(OutboxError::Overflow {
                queued,
                limit: self.limit,
            });
        }
        self.shared.queued.set(queued);
        self.shared.frames.borrow_mut().push_back(bytes);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// No more frames: the task writes what is queued, shuts the socket's write side and ends.
    pub fn close(&mut self) {
        self.shared.closed.set(true);
        self.shared.wake.notify_one();
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.shared.queued.get()
    }
}

impl Drop for Outbox {
    /// A session that stops without closing first (or whose peer stopped reading) abandons what is
    /// left: the task may be stuck on a full socket and must not outlive the session.
    fn drop(&mut self) {
        if !self.shared.closed.get() {
            self.task.abort();
        }
    }
}

/// The next bytes to write: everything queued, coalesced up to [`WRITE_BATCH`]; `None` once the
/// outbox is closed and empty.
async fn next_batch(shared: &Shared, batch: &mut BytesMut) -> Option<Bytes> {
    loop {
        {
            let mut frames = shared.frames.borrow_mut();
            if let Some(first) = frames.pop_front() {
                if frames.is_empty() {
                    return Some(first); // The common case when idle: as it is, no copy.
                }
                batch.extend_from_slice(&first);
                while batch.len() < WRITE_BATCH {
                    match frames.pop_front() {
                        Some(more) => batch.extend_from_slice(&more),
                        None => break,
                    }
                }
                return Some(batch.split().freeze());
            }
            if shared.closed.get() {
                return None;
            }
        }
        shared.wake.notified().await;
    }
}

async fn write_loop(
    mut socket: impl AsyncWrite + Unpin,
    shared: Rc<Shared>,
    stall_timeout: Duration,
    done: oneshot::Sender<WriterResult>,
) {
    let mut batch = BytesMut::new();
    let result = async {
        while let Some(bytes) = next_batch(&shared, &mut batch).await {
            let mut written = 0;
            while written < bytes.len() {
                // Each write returns as soon as the kernel takes some bytes: a timeout here means the
                // peer has not read anything for that long.
                let n = tokio::time::timeout(stall_timeout, socket.write(&bytes[written..]))
                    .await
                    .map_err(|_| {
                        std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("the peer read nothing for {} ms", stall_timeout.as_millis()),
                        )
                    })??;
                if n == 0 {
                    return Err(std::io::ErrorKind::WriteZero.into());
                }
                written += n;
                shared.queued.set(shared.queued.get().saturating_sub(n));
            }
        }
        socket.shutdown().await
    }
    .await;
    let _ = done.send(result);
}
