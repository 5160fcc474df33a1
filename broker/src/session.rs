//! A Session: one actor per TCP connection, from handshake to close.
//!
//! The session turns frames into requests to the Registry and the Router and their answers back into
//! frames. It owns the connection's timers (handshake deadline, keepalive) and its ordering promise:
//! `Accepted`/`Rejected` go out in the order the `Send`s came in, whatever order the Router answers in.
//! Reading stops (backpressure) while `max_unaccepted_sends` sends await the store. Writes go through
//! the [`Outbox`]: a peer that stops reading is closed once `limits.max_outgoing_bytes` pile up or no
//! write makes progress for `limits.write_timeout_ms`, and the Router's byte window keeps a healthy
//! but slow reader well below that.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{self, Poll};
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::BytesMut;
use switchboard_proto::{
    BrokerCodec, BrokerFrame, ClientFrame, ClientId, CodecError, ErrorCode, ReceiptStatus,
    RejectReason, PROTOCOL_VERSION,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio_util::codec::Decoder;
use tracing::Span;

use crate::auth::{Auth, Denied, Grant};
use crate::outbox::{Outbox, OutboxError, WriterResult};
use crate::rate::TokenBucket;
use crate::registry::{self, Kick, Registry};
use crate::router::{self, Deliver, Router};
use crate::settings::Settings;
use crate::store::{Entry, EntryKind};

/// How long a closing session waits for its last frame to reach a peer that may not be reading.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Capacity of a connection's read buffer, allocated to read when none is held (it grows for larger
/// frames). An idle connection holds none, so this can be large enough for a busy one to read many
/// frames per system call: 8 KiB measured ~10 % more relay throughput than 512 bytes.
const READ_BUFFER: usize = 8 * 1024;
/// Headroom in the session's mailbox above the delivery window, for kicks and stray messages.
const MAILBOX_HEADROOM: usize = 16;

/// The answer to one `Send`, kept in arrival order until it can be written.
struct SendSlot {
    client_msg_id: u64,
    outcome: Option<Result<u64, RejectReason>>,
}

pub struct Session {
    conn_id: u64,
    peer: SocketAddr,
    /// Set once `Hello` checks out: the id this connection is registered under.
    client: Option<ClientId>,
    /// An `Error` has been written; nothing more is read or delivered.
    closing: bool,
    /// The broker is shutting down and said so: no more deliveries or sends, but acknowledgements for
    /// what was already delivered are still recorded until the client hangs up.
    draining: bool,
    /// The `Hello` was refused; the `Error` follows after the constant delay.
    refusing: bool,
    auth: Arc<Auth>,
    /// What the credentials allow this client.
    grant: Grant,
    /// `limits.max_sends_per_sec`.
    send_rate: TokenBucket,
    connections: Arc<AtomicUsize>,
    outbox: Outbox,
    registry: Addr<Registry>,
    router: Addr<Router>,
    settings: Arc<Settings>,
    span: Span,
    keepalive: Duration,
    last_heard: Instant,
    /// Answers owed to `Send`s, oldest first; `first_seq` is the sequence number of the front slot.
    owed: VecDeque<SendSlot>,
    first_seq: u64,
    /// Deliveries held back, in order, behind a receipt whose send's `Accepted` is not written yet
    /// (an early-delivered message can be acknowledged before its sender hears `Accepted`).
    held: Vec<Entry>,
}

/// Everything a session needs from the broker around it.
#[derive(Clone)]
pub struct SessionDeps {
    pub registry: Addr<Registry>,
    pub router: Addr<Router>,
    pub settings: Arc<Settings>,
    pub auth: Arc<Auth>,
    /// Connections open right now, for `limits.max_connections`.
    pub connections: Arc<AtomicUsize>,
    /// TLS for new connections, when configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Session {
    /// Starts the session actor for an accepted connection on the current arbiter.
    pub fn start(
        read: impl AsyncRead + Unpin + 'static,
        write: impl AsyncWrite + Unpin + 'static,
        peer: SocketAddr,
        conn_id: u64,
        deps: SessionDeps,
    ) {
        let span =
            tracing::info_span!("session", conn = conn_id, %peer, client = tracing::field::Empty);
        let max_frame = deps.settings.limits.max_frame_bytes;
        let window = deps.settings.limits.window;
        Session::create(move |ctx| {
            ctx.set_mailbox_capacity(window + MAILBOX_HEADROOM);
            ctx.add_stream(FrameReader::new(read, BrokerCodec::new(max_frame)));
            let outbox = Outbox::new(
                write,
                max_frame,
                deps.settings.limits.max_outgoing_bytes,
                deps.settings.write_timeout(),
            );
            Session {
                conn_id,
                peer,
                client: None,
                closing: false,
                draining: false,
                refusing: false,
                auth: deps.auth,
                grant: Grant::default(),
                send_rate: TokenBucket::new(deps.settings.limits.max_sends_per_sec, Instant::now()),
                connections: deps.connections,
                outbox,
                registry: deps.registry,
                router: deps.router,
                keepalive: deps.settings.agreed_keepalive(0),
                settings: deps.settings,
                span,
                last_heard: Instant::now(),
                owed: VecDeque::new(),
                held: Vec::new(),
                first_seq: 0,
            }
        });
    }

    /// Queues `frame` for the socket. A peer that lets too much pile up is not reading: it is closed
    /// and what it held unacknowledged goes back to its mailbox.
    fn write(&mut self, frame: BrokerFrame, ctx: &mut Context<Self>) {
        match self.outbox.send(frame) {
            Ok(()) => {}
            Err(OutboxError::Overflow { queued, limit }) => {
                tracing::warn!(parent: &self.span, queued, limit, "peer is not reading its socket; closing the connection");
                self.closing = true;
                ctx.stop();
            }
            Err(OutboxError::Closed) => {}
            Err(error) => {
                tracing::error!(parent: &self.span, %error, "cannot write a frame; closing the connection");
                self.closing = true;
                ctx.stop();
            }
        }
    }

    /// The writer ended: everything was written after a close, or the socket failed.
    fn writer_ended(&mut self, result: WriterResult, ctx: &mut Context<Self>) {
        match result {
            Ok(()) => {
                tracing::debug!(parent: &self.span, "connection closed after the last frame")
            }
            Err(error) => {
                tracing::info!(parent: &self.span, %error, "writing to the connection failed")
            }
        }
        ctx.stop();
    }

    /// Writes `Error { code, text }` and closes once it is flushed (or after a grace period).
    fn fail(&mut self, code: ErrorCode, text: impl Into<String>, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        let text = text.into();
        tracing::info!(parent: &self.span, %code, reason = %text, "closing connection");
        self.closing = true;
        // The writer flushes the error, shuts the socket and ends; that stops the session.
        self.write(BrokerFrame::Error { code, text }, ctx);
        self.outbox.close();
        ctx.run_later(CLOSE_GRACE, |_, ctx| ctx.stop());
    }

    /// Shutdown: tell the client, keep recording its acks until it hangs up or the grace period ends.
    fn drain(&mut self, text: String, ctx: &mut Context<Self>) {
        if self.client.is_none() {
            return self.fail(ErrorCode::ShuttingDown, text, ctx);
        }
        if self.closing || self.draining {
            return;
        }
        tracing::info!(parent: &self.span, "telling client the broker is shutting down");
        self.draining = true;
        self.write(
            BrokerFrame::Error {
                code: ErrorCode::ShuttingDown,
                text,
            },
            ctx,
        );
        ctx.run_later(self.settings.shutdown_grace(), |_, ctx| ctx.stop());
    }

    fn on_frame(&mut self, frame: ClientFrame, ctx: &mut Context<Self>) {
        if self.closing || self.refusing {
            return;
        }
        if self.draining {
            if let ClientFrame::Send { id, .. } = frame {
                let seq = self.first_seq + self.owed.len() as u64;
                self.owed.push_back(SendSlot {
                    client_msg_id: id,
                    outcome: None,
                });
                let text = "the broker is shutting down; nothing was stored".to_string();
                return self.settle(seq, Err(RejectReason::Unavailable), Some(text), ctx);
            }
        }
        match (&self.client, frame) {
            (
                None,
                ClientFrame::Hello {
                    version,
                    client_id,
                    token,
                    keepalive_secs,
                },
            ) => self.on_hello(version, client_id, token, keepalive_secs, ctx),
            (None, _) => self.fail(
                ErrorCode::HelloRequired,
                "the first frame must be hello",
                ctx,
            ),
            (Some(_), ClientFrame::Hello { .. }) => self.fail(
                ErrorCode::UnexpectedFrame,
                "hello was already received",
                ctx,
            ),
            (
                Some(from),
                ClientFrame::Send {
                    id,
                    to,
                    body,
                    ttl_ms,
                    fresh,
                },
            ) => {
                let send = Outgoing {
                    from: from.clone(),
                    id,
                    to,
                    body,
                    ttl_ms,
                    fresh,
                };
                self.on_send(send, ctx)
            }
            (Some(client), ClientFrame::Ack { id }) => {
                let ack = router::Ack {
                    client: client.clone(),
                    conn_id: self.conn_id,
                    id,
                };
                if let Err(SendError::Full(ack)) = self.router.try_send(ack) {
                    // The Router is backed up: hold this session back until the ack is in, never drop it.
                    ctx.wait(self.router.send(ack).into_actor(self).map(|res, act, _| {
                        if let Err(error) = res {
                            tracing::error!(parent: &act.span, %error, "router unreachable; ack not recorded");
                        }
                    }));
                }
            }
            (Some(_), ClientFrame::Ping) => self.write(BrokerFrame::Pong, ctx),
            (Some(_), ClientFrame::Bye) => {
                tracing::debug!(parent: &self.span, "client said bye");
                ctx.stop();
            }
        }
    }

    fn on_hello(
        &mut self,
        version: u32,
        client_id: String,
        token: Option<String>,
        keepalive_secs: u32,
        ctx: &mut Context<Self>,
    ) {
        if version != PROTOCOL_VERSION {
            return self.fail(
                ErrorCode::UnsupportedVersion,
                format!("protocol version {version} is not supported; this broker speaks {PROTOCOL_VERSION}"),
                ctx,
            );
        }
        let client = match ClientId::new(client_id) {
            Ok(client) => client,
            Err(e) => return self.fail(ErrorCode::InvalidClientId, e.to_string(), ctx),
        };
        if self.auth.is_open() {
            return self.admit(client, keepalive_secs, Grant::default(), ctx);
        }
        // argon2 is slow on purpose: off the actor thread, and nothing else is read meanwhile.
        let (auth, id, ip) = (self.auth.clone(), client.to_string(), self.peer.ip());
        let started = Instant::now();
        let check = async move {
            tokio::task::spawn_blocking(move || auth.check(&id, token.as_deref(), ip))
                .await
                .unwrap_or_else(|_| Err(Denied("the check failed".into())))
        };
        ctx.wait(check.into_actor(self).map(move |result, act, ctx| match result {
            Ok(grant) => act.admit(client, keepalive_secs, grant, ctx),
            Err(Denied(reason)) => {
                tracing::warn!(parent: &act.span, client = %client, %reason, "authentication failed");
                // Every refusal takes the same time, whatever the reason.
                act.refusing = true;
                let delay = act.settings.auth_failure_delay().saturating_sub(started.elapsed());
                ctx.run_later(delay, |act, ctx| {
                    act.fail(ErrorCode::Unauthorized, "not authorized", ctx)
                });
            }
        }));
    }

    /// The `Hello` checked out: register, attach to the mailbox, answer `Hi`.
    fn admit(
        &mut self,
        client: ClientId,
        keepalive_secs: u32,
        grant: Grant,
        ctx: &mut Context<Self>,
    ) {
        self.grant = grant;
        self.span.record("client", client.as_str());
        self.keepalive = self.settings.agreed_keepalive(keepalive_secs);
        self.client = Some(client.clone());
        let register = self.registry.send(registry::Register {
            client: client.clone(),
            conn_id: self.conn_id,
            peer: self.peer,
            session: ctx.address().recipient(),
        });
        let attach = self.router.send(router::Attach {
            client,
            conn_id: self.conn_id,
            session: ctx.address().recipient(),
        });
        // `wait`, not `spawn`: no delivery may be written before `Hi`.
        ctx.wait(
            async move {
                register.await.map_err(|e| e.to_string())?;
                attach.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())
            }
            .into_actor(self)
            .map(|result, act, ctx| match result {
                Ok(pending) => {
                    tracing::info!(parent: &act.span, pending, keepalive = act.keepalive.as_secs(), "client connected");
                    let hi = BrokerFrame::Hi {
                        version: PROTOCOL_VERSION,
                        keepalive_secs: u32::try_from(act.keepalive.as_secs()).unwrap_or(u32::MAX),
                        address: act.peer.to_string(),
                        pending,
                    };
                    act.write(hi, ctx);
                }
                Err(error) => {
                    tracing::error!(parent: &act.span, %error, "cannot attach session");
                    act.fail(ErrorCode::Internal, "the broker cannot open this mailbox now", ctx);
                }
            }),
        );
    }

    fn on_send(&mut self, send: Outgoing, ctx: &mut Context<Self>) {
        let Outgoing {
            from,
            id,
            to,
            body,
            ttl_ms,
            fresh,
        } = send;
        let seq = self.first_seq + self.owed.len() as u64;
        self.owed.push_back(SendSlot {
            client_msg_id: id,
            outcome: None,
        });
        let to = match ClientId::new(to) {
            Ok(to) => to,
            Err(e) => {
                self.settle(
                    seq,
                    Err(RejectReason::InvalidRecipient),
                    Some(e.to_string()),
                    ctx,
                );
                return;
            }
        };
        if !self.grant.may_send_to(to.as_str()) {
            return self.settle(seq, Err(RejectReason::Forbidden), None, ctx);
        }
        if !self.send_rate.take(Instant::now()) {
            return self.settle(seq, Err(RejectReason::RateLimited), None, ctx);
        }
        let submit = router::Submit {
            from,
            client_msg_id: id,
            to,
            body,
            ttl_ms,
            fresh,
        };
        let answer = self
            .router
            .send(submit)
            .into_actor(self)
            .map(move |res, act, ctx| {
                let outcome = res.unwrap_or(Err(RejectReason::Unavailable));
                act.settle(seq, outcome, None, ctx);
            });
        if self.owed.len() >= self.settings.limits.max_unaccepted_sends {
            ctx.wait(answer); // Too many sends in the air: stop reading until this one is answered.
        } else {
            ctx.spawn(answer);
        }
    }

    /// Records the outcome of send `seq` and writes every answer that is now due, in order.
    fn settle(
        &mut self,
        seq: u64,
        outcome: Result<u64, RejectReason>,
        text: Option<String>,
        ctx: &mut Context<Self>,
    ) {
        let Some(slot) = seq
            .checked_sub(self.first_seq)
            .and_then(|i| self.owed.get_mut(i as usize))
        else {
            return;
        };
        slot.outcome = Some(outcome);
        let mut text = text;
        while self.owed.front().is_some_and(|s| s.outcome.is_some()) {
            let Some(SendSlot {
                client_msg_id: id,
                outcome: Some(outcome),
            }) = self.owed.pop_front()
            else {
                break;
            };
            self.first_seq += 1;
            let frame = match outcome {
                Ok(message_id) => BrokerFrame::Accepted { id, message_id },
                Err(reason) => BrokerFrame::Rejected {
                    id,
                    reason,
                    text: text
                        .take()
                        .unwrap_or_else(|| reject_text(reason).to_string()),
                },
            };
            self.write(frame, ctx);
        }
        self.release_held(ctx);
    }

    /// Whether the answer to this connection's send `client_msg_id` has not been written yet.
    fn owes(&self, client_msg_id: u64) -> bool {
        self.owed.iter().any(|s| s.client_msg_id == client_msg_id)
    }

    /// Whether `entry` must wait: it is a receipt for a send still owed its answer, or deliveries are
    /// already waiting (order holds).
    fn must_hold(&self, entry: &Entry) -> bool {
        !self.held.is_empty() || (entry.kind.is_receipt() && self.owes(entry.client_msg_id))
    }

    /// Writes the held deliveries that no longer wait for an answer, in order.
    fn release_held(&mut self, ctx: &mut Context<Self>) {
        if self.held.is_empty() {
            return;
        }
        let ready = self
            .held
            .iter()
            .position(|e| e.kind.is_receipt() && self.owes(e.client_msg_id))
            .unwrap_or(self.held.len());
        let ready: Vec<Entry> = self.held.drain(..ready).collect();
        for entry in ready {
            self.write(entry_frame(entry), ctx);
        }
    }

    fn check_alive(&mut self, ctx: &mut Context<Self>) {
        let limit = self.keepalive.mul_f32(1.5);
        if self.last_heard.elapsed() > limit {
            self.fail(
                ErrorCode::KeepaliveTimeout,
                format!("nothing received for {} ms", limit.as_millis()),
                ctx,
            );
        }
    }
}

/// A `Send` frame from an identified client.
struct Outgoing {
    from: ClientId,
    id: u64,
    to: String,
    body: bytes::Bytes,
    ttl_ms: Option<u64>,
    fresh: bool,
}

fn reject_text(reason: RejectReason) -> &'static str {
    match reason {
        RejectReason::InvalidRecipient => "the recipient is not a valid client id",
        RejectReason::TooLarge => "the message is larger than the broker accepts",
        RejectReason::Unavailable => "the broker could not store the message; nothing was stored",
        RejectReason::MailboxFull => "the recipient's mailbox is full; nothing was stored",
        RejectReason::Forbidden => "this client may not send to that recipient",
        RejectReason::RateLimited => "sending too fast; nothing was stored, slow down and resend",
        RejectReason::Unknown => "rejected",
    }
}

fn entry_frame(entry: Entry) -> BrokerFrame {
    match entry.kind {
        EntryKind::Message => BrokerFrame::Deliver {
            message_id: entry.id,
            from: entry.peer,
            send_id: entry.client_msg_id,
            sent_at_ms: entry.sent_at_ms,
            body: entry.body,
        },
        EntryKind::Delivered | EntryKind::Expired => BrokerFrame::Receipt {
            receipt_id: entry.id,
            id: entry.client_msg_id,
            message_id: entry.message_id,
            to: entry.peer,
            status: if entry.kind == EntryKind::Expired {
                ReceiptStatus::Expired
            } else {
                ReceiptStatus::Delivered
            },
        },
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        tracing::debug!(parent: &self.span, "connection accepted");
        // Check liveness often enough to honour even the shortest keepalive promptly.
        let tick = Duration::from_millis(250).max(self.settings.agreed_keepalive(0) / 4);
        ctx.spawn(Clock::new(self.settings.handshake_timeout(), tick));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
        let Some(client) = self.client.take() else {
            tracing::debug!(parent: &self.span, "connection closed");
            return;
        };
        tracing::info!(parent: &self.span, "client disconnected");
        // Exactly one of each per session, so `do_send` cannot grow a mailbox without bound, and unlike
        // `try_send` it cannot lose them when the Router or Registry is momentarily busy.
        self.router.do_send(router::Detach {
            client: client.clone(),
            conn_id: self.conn_id,
        });
        self.registry.do_send(registry::Unregister {
            client,
            conn_id: self.conn_id,
        });
    }
}

impl StreamHandler<Result<ClientFrame, CodecError>> for Session {
    fn handle(&mut self, item: Result<ClientFrame, CodecError>, ctx: &mut Context<Self>) {
        self.last_heard = Instant::now();
        match item {
            Ok(frame) => self.on_frame(frame, ctx),
            Err(CodecError::FrameTooLarge { max }) => self.fail(
                ErrorCode::FrameTooLarge,
                format!("frame larger than the {max}-byte limit"),
                ctx,
            ),
            Err(CodecError::Io(error)) => {
                tracing::debug!(parent: &self.span, %error, "read failed");
                ctx.stop();
            }
            Err(error) => self.fail(ErrorCode::BadFrame, error.to_string(), ctx),
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        // The peer closed its side. Anything unacknowledged stays in the mailbox.
        if !self.closing {
            ctx.stop();
        }
    }
}

impl Handler<Deliver> for Session {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Context<Self>) {
        // While closing or draining the entry simply stays in the mailbox for the next connection.
        if self.closing || self.draining {
            return;
        }
        if self.must_hold(&msg.0) {
            self.held.push(msg.0);
        } else {
            self.write(entry_frame(msg.0), ctx);
        }
    }
}

impl Handler<Kick> for Session {
    type Result = ();

    fn handle(&mut self, msg: Kick, ctx: &mut Context<Self>) {
        if msg.code == ErrorCode::ShuttingDown {
            self.drain(msg.text, ctx);
        } else {
            self.fail(msg.code, msg.text, ctx);
        }
    }
}

/// The session's timers and the end of its writer, in one future spawned on its context (each spawned
/// future is an allocation, kept for the life of the connection): the handshake deadline, every `tick`
/// a liveness check once the client is identified and [`Outbox::release_if_idle`], and
/// [`Outbox::poll_ended`].
struct Clock {
    sleep: Pin<Box<tokio::time::Sleep>>,
    tick: Duration,
    next_tick: tokio::time::Instant,
    /// Until it has passed.
    handshake_deadline: Option<tokio::time::Instant>,
}

impl Clock {
    fn new(handshake_timeout: Duration, tick: Duration) -> Self {
        let now = tokio::time::Instant::now();
        let (handshake_deadline, next_tick) = (now + handshake_timeout, now + tick);
        Clock {
            sleep: Box::pin(tokio::time::sleep_until(handshake_deadline.min(next_tick))),
            tick,
            next_tick,
            handshake_deadline: Some(handshake_deadline),
        }
    }
}

impl ActorFuture<Session> for Clock {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut Session,
        ctx: &mut Context<Session>,
        task: &mut task::Context<'_>,
    ) -> Poll<()> {
        let this = self.get_mut();
        if let Poll::Ready(result) = act.outbox.poll_ended(task) {
            act.writer_ended(result, ctx);
            return Poll::Ready(());
        }
        while this.sleep.as_mut().poll(task).is_ready() {
            let now = tokio::time::Instant::now();
            if this.handshake_deadline.is_some_and(|at| at <= now) {
                this.handshake_deadline = None;
                if act.client.is_none() {
                    act.fail(
                        ErrorCode::HandshakeTimeout,
                        "no hello within the handshake timeout",
                        ctx,
                    );
                }
            }
            if this.next_tick <= now {
                this.next_tick = now + this.tick;
                act.outbox.release_if_idle();
                if act.client.is_some() {
                    act.check_alive(ctx);
                }
            }
            let at = this
                .handshake_deadline
                .map_or(this.next_tick, |at| at.min(this.next_tick));
            this.sleep.as_mut().reset(at);
        }
        Poll::Pending
    }
}

/// The connection's frames, like `FramedRead` except that it holds no buffer while the connection is
/// idle: one is allocated to read into, and dropped when a read finds nothing and no partial frame is
/// held.
struct FrameReader<R> {
    io: R,
    codec: BrokerCodec,
    buffer: BytesMut,
    /// Bytes arrived since `decode` last found no frame.
    readable: bool,
    eof: bool,
    errored: bool,
}

impl<R> FrameReader<R> {
    fn new(io: R, codec: BrokerCodec) -> Self {
        FrameReader {
            io,
            codec,
            buffer: BytesMut::new(),
            readable: false,
            eof: false,
            errored: false,
        }
    }
}

impl<R: AsyncRead + Unpin> futures_util::Stream for FrameReader<R> {
    type Item = Result<ClientFrame, CodecError>;

    /// The state machine of `tokio_util`'s `FramedRead`: frames are decoded while bytes may hold
    /// one, then more are read; after an error the stream ends.
    fn poll_next(self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.errored {
                this.errored = false;
                this.readable = false;
                return Poll::Ready(None);
            }
            if this.readable {
                let decoded = if this.eof {
                    this.codec.decode_eof(&mut this.buffer)
                } else {
                    this.codec.decode(&mut this.buffer)
                };
                match decoded {
                    Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                    Ok(None) if this.eof => {
                        this.readable = false;
                        return Poll::Ready(None);
                    }
                    Ok(None) => this.readable = false,
                    Err(error) => {
                        this.errored = true;
                        return Poll::Ready(Some(Err(error)));
                    }
                }
            }
            // Room for at least one byte, so that a read of 0 means the end of the stream.
            this.buffer.reserve(if this.buffer.capacity() == 0 {
                READ_BUFFER
            } else {
                1
            });
            let read = std::pin::pin!(this.io.read_buf(&mut this.buffer)).poll(cx);
            match read {
                Poll::Pending => {
                    if this.buffer.is_empty() {
                        // Nothing partial is held: give the buffer back until bytes arrive.
                        this.buffer = BytesMut::new();
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(error)) => {
                    this.errored = true;
                    return Poll::Ready(Some(Err(error.into())));
                }
                Poll::Ready(Ok(0)) if this.eof => return Poll::Ready(None),
                Poll::Ready(Ok(0)) => this.eof = true,
                Poll::Ready(Ok(_)) => this.eof = false,
            }
            this.readable = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use tokio::io::AsyncWriteExt;

    fn next<R: AsyncRead + Unpin>(
        reader: &mut FrameReader<R>,
    ) -> Option<Option<Result<ClientFrame, CodecError>>> {
        std::future::poll_fn(|cx| futures_util::Stream::poll_next(Pin::new(&mut *reader), cx))
            .now_or_never()
    }

    #[tokio::test]
    async fn the_read_buffer_is_held_only_while_a_frame_is_incomplete() {
        let (io, mut peer) = tokio::io::duplex(1024);
        let mut reader = FrameReader::new(io, BrokerCodec::new(1024));
        let ping = switchboard_proto::encode_frame(&ClientFrame::Ping, 1024).unwrap();
        let ack = switchboard_proto::encode_frame(&ClientFrame::Ack { id: 7 }, 1024).unwrap();
        assert!(next(&mut reader).is_none());
        assert_eq!(reader.buffer.capacity(), 0);

        peer.write_all(&ping).await.unwrap();
        peer.write_all(&ack[..3]).await.unwrap();
        assert!(matches!(
            next(&mut reader),
            Some(Some(Ok(ClientFrame::Ping)))
        ));
        assert!(next(&mut reader).is_none());
        assert!(!reader.buffer.is_empty(), "the partial frame is kept");

        peer.write_all(&ack[3..]).await.unwrap();
        assert!(matches!(
            next(&mut reader),
            Some(Some(Ok(ClientFrame::Ack { id: 7 })))
        ));
        assert!(next(&mut reader).is_none());
        assert_eq!(reader.buffer.capacity(), 0, "idle again: no buffer");

        peer.write_all(&ping[..2]).await.unwrap();
        drop(peer);
        assert!(matches!(
            next(&mut reader),
            Some(Some(Err(CodecError::Io(_))))
        ));
        assert!(matches!(next(&mut reader), Some(None)));
    }
}
