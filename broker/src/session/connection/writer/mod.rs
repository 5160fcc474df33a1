//! The connection's writing side: frames encoded by the session, written to the socket by a task.
//!
//! The session encodes each frame and queues the bytes; a writer task on the same worker thread takes
//! everything queued since its last write and writes it with one syscall, so a burst of `Deliver` or
//! `Accepted` frames costs one write, not one each. The bytes queued and not yet written are counted:
//! past `limits.max_outgoing_bytes` the peer is not reading fast enough and [`SocketWriter::send`] says so,
//! so the session can close it instead of buffering without bound. What it held unacknowledged goes
//! back to its mailbox.
//!
//! Most connections are idle most of the time, so an idle connection's writer holds as little as possible: the
//! writer task runs while there is something to write and ends when the queue is empty, giving back
//! the queue and the encoding buffer. Starting a task for every burst would cost a busy connection,
//! so once bursts follow each other the writer lingers, waiting for the next frame, until
//! [`SocketWriter::release_if_idle`] (called now and then by the session) finds nothing queued since its
//! previous call.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::IoSlice;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use switchboard_proto::{BrokerCodec, BrokerFrame, CodecError};
use tokio::io::AsyncWrite;
use tokio_util::codec::Encoder;

/// Largest amount of queued frames copied into one write, where the socket takes no vectored writes.
const WRITE_BATCH: usize = 256 * 1024;
/// Most frames handed to one vectored write (the kernel takes up to 1,024 slices).
const WRITE_SLICES: usize = 64;
/// Room set aside at once for encoding frames: a burst of small frames shares one allocation.
const ENCODE_CHUNK: usize = 1024;

/// Why a frame could not be queued.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    #[error("the peer is not reading: {queued} bytes wait to be written, the limit is {limit}")]
    Overflow { queued: usize, limit: usize },
    #[error("cannot encode a frame: {0}")]
    Encode(#[from] CodecError),
    #[error("the connection is closed")]
    Closed,
}

/// How the writer ended: after [`SocketWriter::close`] once everything was written, or on a write error.
pub(crate) type WriterResult = Result<(), std::io::Error>;

/// What the session and its writer task share; both run on the same worker thread. The socket is the
/// last field so that one allocation holds it whatever its type.
struct Shared<W: ?Sized> {
    frames: RefCell<VecDeque<Bytes>>,
    /// Where frames are encoded; each queued frame is split off it.
    scratch: RefCell<BytesMut>,
    /// Bytes queued and not yet taken by the kernel.
    queued: Cell<usize>,
    /// No more frames will come (the session closed the writer, or writing failed).
    closed: Cell<bool>,
    /// A frame was queued since the last [`SocketWriter::release_if_idle`].
    active: Cell<bool>,
    /// The writer waits for more frames when the queue is empty, rather than ending.
    linger: Cell<bool>,
    /// The writer task while one runs.
    task: Cell<Option<actix_rt::task::JoinHandle<()>>>,
    /// The writer task while it waits for frames.
    writer: Cell<Option<Waker>>,
    /// How the writer ended, until the session takes it.
    ended: Cell<Option<WriterResult>>,
    /// The session's task, woken when `ended` is set.
    waker: Cell<Option<Waker>>,
    stall_timeout: Duration,
    socket: RefCell<W>,
}

type Socket = dyn AsyncWrite + Unpin;

/// The session's handle on its socket's writing side: the frames it queues, and the task that writes
/// them.
pub(crate) struct SocketWriter {
    shared: Rc<Shared<Socket>>,
    limit: usize,
    max_frame: usize,
}

impl SocketWriter {
    /// A writer to `socket`: frames up to `max_frame` bytes, at most `limit` bytes queued, and
    /// a write that makes no progress for `stall_timeout` fails. No task runs until there is
    /// something to write; [`SocketWriter::poll_ended`] tells when writing has ended.
    pub(crate) fn new(
        socket: impl AsyncWrite + Unpin + 'static,
        max_frame: usize,
        limit: usize,
        stall_timeout: Duration,
    ) -> SocketWriter {
        let shared: Rc<Shared<Socket>> = Rc::new(Shared {
            frames: RefCell::default(),
            scratch: RefCell::default(),
            queued: Cell::new(0),
            closed: Cell::new(false),
            active: Cell::new(false),
            linger: Cell::new(false),
            task: Cell::new(None),
            writer: Cell::new(None),
            ended: Cell::new(None),
            waker: Cell::new(None),
            stall_timeout,
            socket: RefCell::new(socket),
        });
        SocketWriter {
            shared,
            limit,
            max_frame,
        }
    }

    /// Encodes `frame` and queues it for writing.
    pub(crate) fn send(&mut self, frame: BrokerFrame) -> Result<(), WriteError> {
        if self.shared.closed.get() {
            return Err(WriteError::Closed);
        }
        let bytes = {
            let mut scratch = self.shared.scratch.borrow_mut();
            if scratch.capacity() == 0 {
                scratch.reserve(ENCODE_CHUNK);
            }
            BrokerCodec::new(self.max_frame).encode(frame, &mut scratch)?;
            scratch.split().freeze()
        };
        let queued = self.shared.queued.get() + bytes.len();
        if queued > self.limit {
            return Err(WriteError::Overflow {
                queued,
                limit: self.limit,
            });
        }
        self.shared.queued.set(queued);
        self.shared.frames.borrow_mut().push_back(bytes);
        let busy = self.shared.active.replace(true);
        self.start_writer(busy);
        Ok(())
    }

    /// Bytes queued and not yet taken by the kernel: datagrams go out only while this is small, so
    /// they never push a slow reader towards the limit that would close it.
    pub(crate) fn queued(&self) -> usize {
        self.shared.queued.get()
    }

    /// No more frames: the writer writes what is queued, shuts the socket's write side and ends.
    pub(crate) fn close(&mut self) {
        if !self.shared.closed.replace(true) {
            self.start_writer(false);
        }
    }

    /// Ends a lingering writer if no frame was queued since the previous call, which gives back its
    /// memory: the session calls this now and then.
    pub(crate) fn release_if_idle(&mut self) {
        if self.shared.active.replace(false) {
            return;
        }
        if self.shared.linger.replace(false) {
            if let Some(writer) = self.shared.writer.take() {
                writer.wake();
            }
        }
    }

    /// Ready with the writer's result once it has ended after [`SocketWriter::close`] or on a write error;
    /// until then `cx` is woken when it does.
    pub(crate) fn poll_ended(&mut self, cx: &mut Context<'_>) -> Poll<WriterResult> {
        if let Some(result) = self.shared.ended.take() {
            return Poll::Ready(result);
        }
        if let Some(task) = self.shared.task.take() {
            if task.is_finished() {
                // A writer drops its own handle before it returns: this one panicked.
                return Poll::Ready(Err(std::io::Error::other("the writer task failed")));
            }
            self.shared.task.set(Some(task));
        }
        let waker = match self.shared.waker.take() {
            Some(waker) if waker.will_wake(cx.waker()) => waker,
            _ => cx.waker().clone(),
        };
        self.shared.waker.set(Some(waker));
        Poll::Pending
    }

    /// Wakes the writer task if it waits for frames, or starts it on the current worker thread if none
    /// runs; when `busy` (a frame was already queued since the last [`SocketWriter::release_if_idle`]) the
    /// new writer lingers.
    fn start_writer(&self, busy: bool) {
        if let Some(writer) = self.shared.writer.take() {
            writer.wake();
            return;
        }
        let task = match self.shared.task.take() {
            Some(task) => task,
            None => {
                if busy {
                    self.shared.linger.set(true);
                }
                actix_rt::spawn(write_loop(self.shared.clone()))
            }
        };
        self.shared.task.set(Some(task));
    }
}

impl Drop for SocketWriter {
    /// A session that stops without closing first (or whose peer stopped reading) abandons what is
    /// left: the writer may be stuck on a full socket and must not outlive the session. After a close
    /// it may finish on its own.
    fn drop(&mut self) {
        // The session's task is going away: do not keep it alive.
        drop(self.shared.waker.take());
        drop(self.shared.writer.take());
        if !self.shared.closed.get() {
            if let Some(task) = self.shared.task.take() {
                task.abort();
            }
        }
    }
}

/// The next bytes to write: everything queued, coalesced up to [`WRITE_BATCH`]; `None` once the
/// queue is empty.
fn next_batch(shared: &Shared<Socket>, batch: &mut BytesMut) -> Option<Bytes> {
    let mut frames = shared.frames.borrow_mut();
    let first = frames.pop_front()?;
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
    Some(batch.split().freeze())
}

/// The writer task: writes what is queued, until the queue is empty and it does not linger, the
/// [`SocketWriter`] is closed (then it shuts the socket's write side), or writing fails.
async fn write_loop(shared: Rc<Shared<Socket>>) {
    let ended = write_until_idle(&shared).await;
    // This task is finishing: drop its handle so that its memory goes as soon as it returns.
    drop(shared.task.take());
    match ended {
        None => {
            // Idle: give back the queue's and the encoder's memory (the queue is empty, and nothing
            // else refers to the scratch buffer's free room).
            *shared.frames.borrow_mut() = VecDeque::new();
            let mut scratch = shared.scratch.borrow_mut();
            if scratch.is_empty() {
                *scratch = BytesMut::new();
            }
        }
        Some(result) => {
            shared.closed.set(true);
            shared.ended.set(Some(result));
            if let Some(waker) = shared.waker.take() {
                waker.wake();
            }
        }
    }
}

/// Writes frames as they are queued. `None` when the queue is empty and the writer does not linger;
/// otherwise how writing ended.
async fn write_until_idle(shared: &Shared<Socket>) -> Option<WriterResult> {
    let mut batch = BytesMut::new();
    loop {
        if let Err(error) = write_queued(shared, &mut batch).await {
            return Some(Err(error));
        }
        if shared.closed.get() {
            return Some(poll_fn(|cx| shared.poll_socket(cx, |s, cx| s.poll_shutdown(cx))).await);
        }
        if !shared.linger.get() {
            return None;
        }
        // Wait for a frame, the close, or the end of lingering.
        poll_fn(|cx| {
            if shared.frames.borrow().is_empty() && !shared.closed.get() && shared.linger.get() {
                shared.writer.set(Some(cx.waker().clone()));
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
    }
}

/// Writes everything queued: straight from the queued frames with vectored writes where the socket
/// takes them (TCP, and rustls, which encrypts the slices as one stream), otherwise coalesced into
/// one buffer per write.
async fn write_queued(shared: &Shared<Socket>, batch: &mut BytesMut) -> WriterResult {
    if shared.socket.borrow().is_write_vectored() {
        while !shared.frames.borrow().is_empty() {
            let n = write_some(shared, |socket, cx| {
                let frames = shared.frames.borrow();
                let mut slices = [IoSlice::new(&[]); WRITE_SLICES];
                let count = frames
                    .iter()
                    .zip(slices.iter_mut())
                    .map(|(frame, slice)| *slice = IoSlice::new(frame))
                    .count();
                socket.poll_write_vectored(cx, &slices[..count])
            })
            .await?;
            consume(&mut shared.frames.borrow_mut(), n);
            shared.queued.set(shared.queued.get().saturating_sub(n));
        }
        return Ok(());
    }
    while let Some(bytes) = next_batch(shared, batch) {
        let mut written = 0;
        while written < bytes.len() {
            let n = write_some(shared, |socket, cx| {
                socket.poll_write(cx, &bytes[written..])
            })
            .await?;
            written += n;
            shared.queued.set(shared.queued.get().saturating_sub(n));
        }
    }
    Ok(())
}

/// Drops the first `n` written bytes from the front of the queue.
fn consume(frames: &mut VecDeque<Bytes>, mut n: usize) {
    while n > 0 {
        let Some(front) = frames.front_mut() else {
            return;
        };
        if front.len() > n {
            front.advance(n);
            return;
        }
        n -= front.len();
        frames.pop_front();
    }
}

/// One write on the socket. It returns as soon as the kernel takes some bytes: a timeout means the
/// peer has not read anything for that long.
async fn write_some(
    shared: &Shared<Socket>,
    mut write: impl FnMut(Pin<&mut Socket>, &mut Context<'_>) -> Poll<std::io::Result<usize>>,
) -> std::io::Result<usize> {
    let stall_timeout = shared.stall_timeout;
    let poll = poll_fn(|cx| shared.poll_socket(cx, &mut write));
    match tokio::time::timeout(stall_timeout, poll).await {
        Ok(Ok(0)) => Err(std::io::ErrorKind::WriteZero.into()),
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("the peer read nothing for {} ms", stall_timeout.as_millis()),
        )),
    }
}

impl Shared<Socket> {
    /// Runs one poll on the socket (borrowed for that poll only: only the writer task uses it).
    fn poll_socket<T>(
        &self,
        cx: &mut Context<'_>,
        f: impl FnOnce(Pin<&mut Socket>, &mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        let mut socket = self.socket.borrow_mut();
        f(Pin::new(&mut *socket), cx)
    }
}

#[cfg(test)]
mod tests;
