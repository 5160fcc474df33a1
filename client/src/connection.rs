//! The task that owns a connection's socket.
//!
//! One task per connection reads frames, writes frames and keeps the connection alive; `Client`
//! handles talk to it over a bounded channel of [`Command`]s, and it hands what the broker says to
//! [`Events`](crate::Events) over another. Reading and writing happen in the same `select!` loop but
//! never wait on each other: outgoing frames are encoded into a buffer that is written whenever the
//! socket takes bytes, so a broker that stops reading while it catches up can never stop this side
//! from reading its answers (see `limits.max_unaccepted_sends` in `PROTOCOL.md`).
//!
//! Memory stays bounded on both sides. The [`Outbox`] stops taking commands above
//! [`OUT_HIGH_WATER`]; an event that does not fit in the events channel is held, and the socket is not
//! read until it fits.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use switchboard_proto::{BrokerFrame, ClientCodec, ClientFrame, CodecError, RejectReason};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::codec::{Encoder, FramedRead};

use crate::client::Sent;
use crate::error::{io_reason, ClientError};
use crate::event::{time_from_millis, CloseReason, Event, Message, Receipt};

/// Above this many bytes waiting to be written, no further commands are taken until the socket
/// drains. One `Send` may overshoot it by up to a frame.
const OUT_HIGH_WATER: usize = 64 * 1024;

/// How long a closing connection waits for its last frames to go out and for the broker to close its
/// side, before it simply drops the socket.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The shortest ping interval, whatever keepalive the broker announces.
const MIN_PING_EVERY: Duration = Duration::from_millis(100);

/// What a `Client` handle asks of the connection task.
pub(crate) enum Command {
    /// Send a message; answer on `accepted`, and on `receipt` when the receipt comes, if tracked.
    Send {
        to: String,
        body: Bytes,
        accepted: oneshot::Sender<Result<Sent, ClientError>>,
        receipt: Option<oneshot::Sender<Receipt>>,
    },
    /// Acknowledge a delivery or a receipt; answer on `written` once the `Ack` is on the socket.
    Ack {
        id: u64,
        written: oneshot::Sender<()>,
    },
    /// Say `Bye` and close; answer once the socket is closed.
    Close(oneshot::Sender<()>),
}

/// The next client message id: the Unix time in microseconds, or one more than the last id handed
/// out in this process if that is larger. Ids stay unique across reconnects and, unless a process
/// sends faster than one message per microsecond on average, across restarts.
pub(crate) fn next_send_id() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last.saturating_add(1));
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(actual) => last = actual,
        }
    }
}

/// A connection after the handshake, owned by its task.
pub(crate) struct Connection {
    reader: FramedRead<OwnedReadHalf, ClientCodec>,
    writer: OwnedWriteHalf,
    out: Outbox,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    /// False once the `Events` receiver is gone; what arrives then is dropped, unacknowledged.
    events_open: bool,
    /// An event read from the socket that has not yet found room in the events channel.
    held: Option<Event>,
    /// Calls waiting for the broker's answer.
    waiters: Waiters,
    /// Half the agreed keepalive: the longest this side stays silent.
    ping_every: Duration,
}

/// How the main loop ended.
enum Ending {
    /// The client asked to close (or every handle is gone); say `Bye` first.
    Local(Option<oneshot::Sender<()>>),
    /// The connection is over already.
    Remote(CloseReason),
}

impl Connection {
    pub(crate) fn new(
        reader: FramedRead<OwnedReadHalf, ClientCodec>,
        writer: OwnedWriteHalf,
        max_frame: usize,
        keepalive: Duration,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
    ) -> Self {
        Self {
            reader,
            writer,
            out: Outbox::new(max_frame),
            commands,
            events,
            events_open: true,
            held: None,
            waiters: Waiters::default(),
            ping_every: (keepalive / 2).max(MIN_PING_EVERY),
        }
    }

    /// Runs the connection to its end, then reports [`Event::Closed`].
    pub(crate) async fn run(mut self) {
        let ending = self.serve().await;
        let (reason, closed) = match ending {
            Ending::Local(closed) => {
                self.say_bye().await;
                (CloseReason::Local, closed)
            }
            Ending::Remote(reason) => (reason, None),
        };
        tracing::debug!(%reason, "connection ended");
        // Drop the socket, the commands channel and every pending answer (their callers see `Closed`)
        // now: the last event may wait for a reader who is waiting for one of those answers.
        let events = self.events_open.then(|| self.events.clone());
        drop(self);
        if let Some(closed) = closed {
            let _ = closed.send(());
        }
        if let Some(events) = events {
            // Waits for room if the reader is behind; ends at once if `Events` is dropped.
            let _ = events.send(Event::Closed(reason)).await;
        }
    }

    /// The main loop: until the broker ends the connection, the socket fails, or the client closes.
    async fn serve(&mut self) -> Ending {
        let ping = tokio::time::sleep(self.ping_every);
        tokio::pin!(ping);
        loop {
            tokio::select! {
                written = self.writer.write_buf(&mut self.out.buf), if !self.out.buf.is_empty() => {
                    match written {
                        Ok(0) => return Ending::Remote(CloseReason::Failed("socket closed for writing".into())),
                        Ok(n) => {
                            self.out.wrote(n);
                            ping.as_mut().reset(Instant::now() + self.ping_every);
                        }
                        Err(e) => return Ending::Remote(CloseReason::Failed(io_reason(&e))),
                    }
                }
                frame = self.reader.next(), if self.held.is_none() => match frame {
                    Some(Ok(frame)) => {
                        if let Some(reason) = self.on_frame(frame) {
                            return Ending::Remote(reason);
                        }
                    }
                    Some(Err(e)) => return Ending::Remote(CloseReason::Failed(codec_reason(&e))),
                    None => return Ending::Remote(CloseReason::Disconnected),
                },
                open = pass_on(&self.events, &mut self.held), if self.held.is_some() => {
                    if !open {
                        tracing::debug!("events receiver dropped; further deliveries are not acknowledged");
                        self.events_open = false;
                    }
                }
                command = self.commands.recv(), if self.out.buf.len() < OUT_HIGH_WATER => match command {
                    Some(Command::Close(closed)) => return Ending::Local(Some(closed)),
                    Some(command) => self.on_command(command),
                    None => return Ending::Local(None),
                },
                () = &mut ping => {
                    if self.out.buf.is_empty() {
                        tracing::trace!("ping");
                        self.out.control(ClientFrame::Ping);
                    }
                    ping.as_mut().reset(Instant::now() + self.ping_every);
                }
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Send {
                to,
                body,
                accepted,
                receipt,
            } => {
                let id = next_send_id();
                let frame = ClientFrame::Send {
                    id,
                    to,
                    body,
                    ttl_ms: None,
                };
                if let Err(e) = self.out.push(frame) {
                    let _ = accepted.send(Err(e.into()));
                    return;
                }
                self.waiters.unanswered.insert(id, accepted);
                if let Some(receipt) = receipt {
                    self.waiters.tracked.insert(id, receipt);
                }
            }
            Command::Ack { id, written } => {
                self.out.control(ClientFrame::Ack { id });
                self.out.notify_when_written(written);
            }
            // Handled by the loop, which ends on it.
            Command::Close(_) => {}
        }
    }

    /// Acts on one frame from the broker; `Some` when the connection is over.
    fn on_frame(&mut self, frame: BrokerFrame) -> Option<CloseReason> {
        tracing::trace!(?frame, "received");
        match frame {
            BrokerFrame::Accepted { id, message_id } => self.waiters.accepted(id, message_id),
            BrokerFrame::Rejected { id, reason, text } => self.waiters.rejected(id, reason, text),
            BrokerFrame::Deliver {
                message_id,
                from,
                sent_at_ms,
                body,
            } => self.hold(Event::Message(Message {
                message_id,
                from,
                sent_at: time_from_millis(sent_at_ms),
                body,
            })),
            BrokerFrame::Receipt {
                receipt_id,
                id,
                message_id,
                to,
                status,
            } => {
                let receipt = Receipt {
                    receipt_id,
                    id,
                    message_id,
                    to,
                    status,
                };
                match self.waiters.tracked.remove(&id) {
                    // A tracked receipt is the library's to acknowledge; if its future was dropped,
                    // nobody wants it and acknowledging it is still right.
                    Some(waiter) => {
                        self.out.control(ClientFrame::Ack { id: receipt_id });
                        let _ = waiter.send(receipt);
                    }
                    None => self.hold(Event::Receipt(receipt)),
                }
            }
            BrokerFrame::Pong => tracing::trace!("pong"),
            BrokerFrame::Error { code, text } => {
                tracing::debug!(%code, %text, "the broker sent an error");
                return Some(CloseReason::Broker { code, text });
            }
            BrokerFrame::Hi { .. } => tracing::warn!("ignoring a second hi from the broker"),
        }
        None
    }

    /// Queues `event` for the events channel; the loop stops reading until it is taken.
    fn hold(&mut self, event: Event) {
        if self.events_open {
            self.held = Some(event);
        } else {
            tracing::debug!(?event, "dropping an event nobody reads");
        }
    }

    /// Sends `Bye` after whatever is queued, then waits (bounded) for the broker to close its side, so
    /// that acknowledgements queued before are read by the broker rather than lost to a reset.
    /// `Accepted` and `Rejected` arriving meanwhile still answer their sends.
    async fn say_bye(&mut self) {
        self.held = None;
        self.out.control(ClientFrame::Bye);
        let Connection {
            reader,
            writer,
            out,
            waiters,
            ..
        } = self;
        let drained = tokio::time::timeout(CLOSE_GRACE, async {
            let write_side = async {
                let queued = out.buf.len();
                writer.write_all_buf(&mut out.buf).await?;
                out.wrote(queued);
                writer.shutdown().await
            };
            tokio::pin!(write_side);
            let mut written = false;
            loop {
                tokio::select! {
                    done = &mut write_side, if !written => {
                        if done.is_err() {
                            return;
                        }
                        written = true;
                    }
                    frame = reader.next() => match frame {
                        Some(Ok(BrokerFrame::Accepted { id, message_id })) => waiters.accepted(id, message_id),
                        Some(Ok(BrokerFrame::Rejected { id, reason, text })) => waiters.rejected(id, reason, text),
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => return,
                    },
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::debug!("the broker did not close within {CLOSE_GRACE:?} of bye");
        }
    }
}

/// Encoded frames on their way to the socket, and the callers waiting for them to leave.
struct Outbox {
    /// Encoded frames not yet written to the socket.
    buf: BytesMut,
    encoder: ClientCodec,
    /// How many bytes were ever queued and written: positions in this connection's outgoing stream.
    queued: u64,
    written: u64,
    /// Callers to tell once `written` reaches a position, in position order.
    waiting: VecDeque<(u64, oneshot::Sender<()>)>,
}

impl Outbox {
    fn new(max_frame: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            encoder: ClientCodec::new(max_frame),
            queued: 0,
            written: 0,
            waiting: VecDeque::new(),
        }
    }

    /// Queues a frame; on error (a body over the frame limit) nothing is queued.
    fn push(&mut self, frame: ClientFrame) -> Result<(), CodecError> {
        let before = self.buf.len();
        self.encoder.encode(frame, &mut self.buf)?;
        self.queued += (self.buf.len() - before) as u64;
        Ok(())
    }

    /// Queues a frame that carries no user data and so cannot be too large.
    fn control(&mut self, frame: ClientFrame) {
        if let Err(e) = self.push(frame) {
            tracing::warn!(error = %e, "cannot encode a control frame");
        }
    }

    /// Answers `tx` once everything queued so far is written.
    fn notify_when_written(&mut self, tx: oneshot::Sender<()>) {
        if self.written >= self.queued {
            let _ = tx.send(());
        } else {
            self.waiting.push_back((self.queued, tx));
        }
    }

    /// Records that `n` more bytes reached the socket.
    fn wrote(&mut self, n: usize) {
        self.written += n as u64;
        while let Some((at, _)) = self.waiting.front() {
            if *at > self.written {
                break;
            }
            if let Some((_, tx)) = self.waiting.pop_front() {
                let _ = tx.send(());
            }
        }
    }
}

/// Calls waiting for the broker to answer a send.
#[derive(Default)]
struct Waiters {
    /// Sends waiting for `Accepted` or `Rejected`, by client message id.
    unanswered: HashMap<u64, oneshot::Sender<Result<Sent, ClientError>>>,
    /// Tracked sends waiting for their receipt, by client message id.
    tracked: HashMap<u64, oneshot::Sender<Receipt>>,
}

impl Waiters {
    fn accepted(&mut self, id: u64, message_id: u64) {
        match self.unanswered.remove(&id) {
            Some(waiter) => {
                let _ = waiter.send(Ok(Sent { id, message_id }));
            }
            None => tracing::warn!(id, "accepted for a send this connection did not make"),
        }
    }

    fn rejected(&mut self, id: u64, reason: RejectReason, text: String) {
        self.tracked.remove(&id);
        match self.unanswered.remove(&id) {
            Some(waiter) => {
                let _ = waiter.send(Err(ClientError::Rejected { reason, text }));
            }
            None => tracing::warn!(id, "rejected for a send this connection did not make"),
        }
    }
}

/// Moves the held event into the events channel once there is room; false if the receiver is gone.
/// Cancel-safe: the event leaves `held` only once room is reserved.
async fn pass_on(events: &mpsc::Sender<Event>, held: &mut Option<Event>) -> bool {
    match events.reserve().await {
        Ok(permit) => {
            if let Some(event) = held.take() {
                permit.send(event);
            }
            true
        }
        Err(_) => {
            *held = None;
            false
        }
    }
}

fn codec_reason(error: &CodecError) -> String {
    match error {
        CodecError::Io(e) => io_reason(e),
        other => other.to_string(),
    }
}
