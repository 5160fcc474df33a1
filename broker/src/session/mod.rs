//! A Session: one actor per TCP connection, from handshake to close.
//!
//! The session turns frames into requests to the Registry and the Router and their answers back into
//! frames. Its [`Phase`] says what the connection may do now; the [`handshake`] admits the client;
//! [`frames`] says what each client frame does; [`Answers`] keeps the ordering promise (`Accepted`/
//! `Rejected` go out in the order the `Send`s came in, and a receipt waits for its send's answer);
//! the [`clock`] runs the handshake deadline and keepalive. Reading stops (backpressure) while
//! `max_unaccepted_sends` sends await the store. Frames come from the [`connection`]'s reader and go
//! out through its [`SocketWriter`]: a peer that stops reading is closed once
//! `limits.max_outgoing_bytes` pile up or no write makes progress for `limits.write_timeout_ms`, and
//! the Router's byte window keeps a healthy but slow reader well below that.

mod answers;
mod clock;
mod connection;
mod datagrams;
mod frames;
mod handshake;
mod phase;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use switchboard_proto::{
    BrokerCodec, BrokerFrame, ClientFrame, CodecError, ErrorCode, ReceiptStatus,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::Span;

use self::answers::{Answers, Outcome, Seq};
use self::clock::Clock;
use self::connection::{
    Counted, FrameReader, Heard, ReadError, SocketWriter, WriteError, WriterResult,
};
pub(crate) use self::connection::{FrameBudget, Traffic};
use self::phase::Phase;
use crate::auth::{Auth, Grant};
use crate::datagram::{Datagrams, Peer};
use crate::metrics::Metrics;
use crate::rate::TokenBucket;
use crate::registry::{self, Kick, Registry};
use crate::router::{self, Deliver, Router};
use crate::settings::Settings;
use crate::store::{Entry, EntryKind};

/// How long a closing session waits for its last frame to reach a peer that may not be reading.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Headroom in the session's mailbox above the delivery window, for kicks and stray messages.
const MAILBOX_HEADROOM: usize = 16;

/// The actor behind one connection: what it knows of its client, and its handles on the broker.
pub(crate) struct Session {
    conn_id: u64,
    peer: SocketAddr,
    /// Greeting, open, draining, closing: what the connection may do now, and who the client is.
    phase: Phase,
    auth: Arc<Auth>,
    /// What the credentials allow this client.
    grant: Grant,
    /// `limits.max_sends_per_sec`.
    send_rate: TokenBucket,
    connections: Arc<AtomicUsize>,
    writer: SocketWriter,
    registry: Addr<Registry>,
    router: Addr<Router>,
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
    span: Span,
    keepalive: Duration,
    last_heard: Heard,
    /// Answers owed to `Send`s, and the deliveries held behind them.
    answers: Answers,
    /// The datagram path, and this client's place on it once admitted.
    datagrams: Arc<Datagrams>,
    datagram_peer: Option<Arc<Peer>>,
    /// A retry of the datagram queue is scheduled (the socket had too much queued).
    datagram_retry: bool,
    /// This connection's bytes both ways (the Registry shows them to the admin API).
    traffic: Arc<Traffic>,
}

/// Everything a session needs from the broker around it.
#[derive(Clone)]
pub(crate) struct SessionDeps {
    pub registry: Addr<Registry>,
    pub router: Addr<Router>,
    pub settings: Arc<Settings>,
    pub auth: Arc<Auth>,
    /// Connections open right now, for `limits.max_connections`.
    pub connections: Arc<AtomicUsize>,
    /// TLS for new connections, when configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// The broker's counters (`GET /metrics`).
    pub metrics: Arc<Metrics>,
    /// What every connection's partial frames may hold together (`limits.max_partial_frames_bytes`).
    pub frame_budget: Arc<FrameBudget>,
    /// Who receives datagrams, and the UDP socket they may go out on.
    pub datagrams: Arc<Datagrams>,
}

impl Session {
    /// Starts the session actor for an accepted connection on the current arbiter.
    pub(crate) fn start(
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
            let traffic = Arc::new(Traffic::default());
            let (read, write) = (
                Counted::new(read, deps.metrics.clone(), traffic.clone()),
                Counted::new(write, deps.metrics.clone(), traffic.clone()),
            );
            let heard = Heard::now();
            let codec = BrokerCodec::new(max_frame);
            let budget = deps.frame_budget.clone();
            ctx.add_stream(FrameReader::new(read, codec, heard.clone(), budget));
            let writer = SocketWriter::new(
                write,
                max_frame,
                deps.settings.limits.max_outgoing_bytes,
                deps.settings.write_timeout(),
            );
            Session {
                conn_id,
                peer,
                phase: Phase::Greeting,
                auth: deps.auth,
                grant: Grant::default(),
                send_rate: TokenBucket::new(deps.settings.limits.max_sends_per_sec, Instant::now()),
                connections: deps.connections,
                writer,
                registry: deps.registry,
                router: deps.router,
                keepalive: deps.settings.agreed_keepalive(0),
                settings: deps.settings,
                metrics: deps.metrics,
                span,
                last_heard: heard,
                answers: Answers::default(),
                datagrams: deps.datagrams,
                datagram_peer: None,
                datagram_retry: false,
                traffic,
            }
        });
    }

    /// Queues `frame` for the socket. A peer that lets too much pile up is not reading: it is closed
    /// and what it held unacknowledged goes back to its mailbox.
    fn write(&mut self, frame: BrokerFrame, ctx: &mut Context<Self>) {
        match self.writer.send(frame) {
            Ok(()) => {}
            Err(WriteError::Overflow { queued, limit }) => {
                tracing::warn!(parent: &self.span, queued, limit, "peer is not reading its socket; closing the connection");
                self.phase.close();
                ctx.stop();
            }
            Err(WriteError::Closed) => {}
            Err(error) => {
                tracing::error!(parent: &self.span, %error, "cannot write a frame; closing the connection");
                self.phase.close();
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

    /// Writes `Error { code, text }` and closes once it is flushed (or after a grace period). The text
    /// is clipped: a decoding error quotes the peer's own bytes, which must neither outgrow a frame
    /// nor flood the log.
    fn fail(&mut self, code: ErrorCode, text: impl Into<String>, ctx: &mut Context<Self>) {
        if !self.phase.close() {
            return;
        }
        let text = clip(text.into());
        tracing::info!(parent: &self.span, %code, reason = %text, "closing connection");
        // The writer flushes the error, shuts the socket and ends; that stops the session.
        self.write(BrokerFrame::Error { code, text }, ctx);
        self.writer.close();
        ctx.run_later(CLOSE_GRACE, |_, ctx| ctx.stop());
    }

    /// Shutdown: tell the client, keep recording its acks until it hangs up or the grace period ends.
    fn drain(&mut self, text: String, ctx: &mut Context<Self>) {
        if self.phase.client().is_none() {
            return self.fail(ErrorCode::ShuttingDown, text, ctx);
        }
        if !self.phase.drain() {
            return; // Already closing or draining.
        }
        tracing::info!(parent: &self.span, "telling client the broker is shutting down");
        let code = ErrorCode::ShuttingDown;
        self.write(BrokerFrame::Error { code, text }, ctx);
        ctx.run_later(self.settings.shutdown_grace(), |_, ctx| ctx.stop());
    }

    /// Records the outcome of send `seq`, then writes every answer now due, in order, and the
    /// deliveries that no longer wait for one.
    fn settle(
        &mut self,
        seq: Seq,
        outcome: Outcome,
        text: Option<String>,
        ctx: &mut Context<Self>,
    ) {
        match outcome {
            Ok(_) => self.metrics.accepted(),
            Err(reason) => self.metrics.rejected(reason),
        };
        if !self.answers.settle(seq, outcome, text) {
            return;
        }
        while let Some(answer) = self.answers.next_answer() {
            self.write(answer, ctx);
        }
        while let Some(entry) = self.answers.next_released() {
            self.write(entry_frame(entry), ctx);
        }
    }
}

/// The frame that hands `entry` to its mailbox's owner.
fn entry_frame(entry: Entry) -> BrokerFrame {
    match entry.kind {
        EntryKind::Message => BrokerFrame::Deliver {
            message_id: entry.id,
            from: entry.peer,
            send_id: entry.send_id,
            sent_at_ms: entry.sent_at_ms,
            body: entry.body,
        },
        kind => BrokerFrame::Receipt {
            receipt_id: entry.id,
            send_id: entry.send_id,
            message_id: entry.message_id,
            to: entry.peer,
            status: kind.receipt_status().unwrap_or(ReceiptStatus::Unknown),
        },
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        tracing::debug!(parent: &self.span, "connection accepted");
        ctx.spawn(Clock::for_settings(&self.settings));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
        let Some(client) = self.phase.take_client() else {
            tracing::debug!(parent: &self.span, "connection closed");
            return;
        };
        tracing::info!(parent: &self.span, "client disconnected");
        if let Some(peer) = self.datagram_peer.take() {
            self.datagrams.leave(&peer);
        }
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

impl StreamHandler<Result<ClientFrame, ReadError>> for Session {
    fn handle(&mut self, item: Result<ClientFrame, ReadError>, ctx: &mut Context<Self>) {
        let item = match item {
            Err(ReadError::NoBudget { limit }) => {
                let text = format!("the {limit}-byte budget for partly received frames is spent");
                return self.fail(ErrorCode::Overloaded, text, ctx);
            }
            Err(ReadError::Codec(error)) => Err(error),
            Ok(frame) => Ok(frame),
        };
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
        if !self.phase.is_closing() {
            ctx.stop();
        }
    }
}

impl Handler<Deliver> for Session {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Context<Self>) {
        // While closing or draining the entry simply stays in the mailbox for the next connection.
        if !self.phase.may_deliver() {
            return;
        }
        if let Some(entry) = self.answers.pass(msg.0) {
            self.write(entry_frame(entry), ctx);
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

/// The longest `Error` text the broker writes or logs, in bytes.
const MAX_ERROR_TEXT: usize = 256;

/// `text`, cut at a character boundary to at most [`MAX_ERROR_TEXT`] bytes (and marked as cut).
fn clip(mut text: String) -> String {
    if text.len() > MAX_ERROR_TEXT {
        let mut end = MAX_ERROR_TEXT - '…'.len_utf8();
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_texts_are_clipped_at_a_character_boundary() {
        assert_eq!(clip("short".into()), "short");
        let long = clip("é".repeat(1000));
        assert!(long.len() <= MAX_ERROR_TEXT, "{}", long.len());
        assert!(long.ends_with('…'));
    }
}
