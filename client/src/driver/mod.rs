//! The driver: the task behind every `Client`. It owns the connection, and with reconnecting on,
//! outlives it, replacing one connection with the next.
//!
//! `Client` handles talk to it over a bounded channel of [`Command`]s, and it hands what the broker
//! says to [`Events`](crate::Events). It keeps what must survive a lost connection: the sends not yet
//! answered (`unanswered.rs`: encoded, so a resend is the same `Send`: same send id, body and ttl),
//! the tracked sends waiting for receipts, and acknowledgements not yet written.
//!
//! A send whose id the library chose goes out the first time with `fresh: true`, which lets the
//! broker hand it to an online recipient before it is on disk (see "Early delivery" in
//! `PROTOCOL.md`). Once a connection that carried it is lost, the broker may have it, so from then on
//! it is a resend and must say `fresh: false`: the kept frame is re-encoded that way, once, when the
//! connection is given up (`no_longer_fresh`). A send with a caller-chosen id may itself be a resend
//! (of a spooled message, say) and always says `fresh: false`.
//!
//! ```text
//!  Client ──Command──▶ Driver ──Event──▶ Events
//!                        │  serve(link): frames in and out of one connection
//!                        │  link lost, retryable? ── no ──▶ Event::Closed, pending calls fail
//!                        │        │ yes
//!                        │  Event::Disconnected; backoff (reconnect.rs); Hello again (handshake.rs)
//!                        └─ Event::Reconnected; unanswered sends again, in order; then new ones
//! ```
//!
//! Memory stays bounded: at most `MAX_UNANSWERED` sends (`command.rs`) wait for an answer (callers
//! wait for room, connected or not), no command is taken while more than [`OUT_HIGH_WATER`] bytes
//! wait for the socket, and the socket is not read while an event waits for room in the events
//! channel. Datagrams over UDP pass by the driver both ways (`udp/`): the handles send them, and
//! the UDP path's reader hands them to the events channel, dropping (and counting) what finds it
//! full.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use futures_util::StreamExt;
use switchboard_proto::{encode_frame, ClientFrame};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::time::Instant;

use crate::command::{next_send_id, Command, SendCommand};
use crate::connection::Link;
use crate::error::{codec_reason, io_reason, may_retry_connect, may_retry_read, ClientError};
use crate::event::{CloseReason, Event, EventQueue, Receipt};
use crate::handshake;
use crate::options::ClientOptions;
use crate::reconnect::Reconnect;
use crate::udp::UdpShared;

mod datagrams;
mod frames;
use crate::unanswered::{PendingSend, Unanswered};
use crate::welcome::Welcome;
use crate::write_buffer::PendingAck;

/// Above this many bytes waiting to be written, no further commands are taken and no further sends
/// are written until the socket drains. One `Send` may overshoot it by up to a frame.
const OUT_HIGH_WATER: usize = 64 * 1024;

/// How serving a connection, or trying to get one back, ended.
enum End {
    /// The client asked to close (or every handle is gone).
    Local(Option<oneshot::Sender<()>>),
    /// The connection is gone; `retry` says whether another one is worth trying.
    Lost { reason: CloseReason, retry: bool },
}

/// What the driver task owns.
pub(crate) struct Driver {
    opts: Arc<ClientOptions>,
    commands: mpsc::Receiver<Command>,
    events: EventQueue,
    /// The latest `Hi`, for [`Client::welcome`](crate::Client::welcome).
    welcome: watch::Sender<Welcome>,
    /// The largest frame to write on the current connection (the client's own limit, or the one
    /// its `Hi` announced); kept here so a send reads a field, not the watch.
    max_frame: usize,
    /// The places for unanswered sends; closed when the driver ends, so that waiting sends fail.
    room: Arc<Semaphore>,
    /// Sends waiting for `Accepted` or `Rejected`, in the order the driver took them in.
    unanswered: Unanswered,
    /// Tracked sends waiting for their receipt, by send id.
    tracked: HashMap<u64, oneshot::Sender<Receipt>>,
    /// Acks waiting for a connection.
    acks: Vec<PendingAck>,
    /// Receipts the library acknowledged on a connection that then broke: the broker may deliver
    /// them again, and they are acknowledged again rather than shown to the program. Entries arrive
    /// in id order, so an id is forgotten once a later entry has arrived.
    library_acked: BTreeSet<u64>,
    /// Reconnect attempts since the last connection that stayed up long enough.
    attempt: u32,
    /// The UDP path the handles send on once bound, and the datagram counts.
    udp: Arc<UdpShared>,
}

impl Driver {
    pub(crate) fn new(
        opts: ClientOptions,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
        welcome: watch::Sender<Welcome>,
        room: Arc<Semaphore>,
        udp: Arc<UdpShared>,
    ) -> Self {
        let max_frame = welcome.borrow().max_frame(opts.max_frame);
        Self {
            opts: Arc::new(opts),
            commands,
            events: EventQueue::new(events),
            welcome,
            max_frame,
            room,
            unanswered: Unanswered::default(),
            tracked: HashMap::new(),
            acks: Vec::new(),
            library_acked: BTreeSet::new(),
            attempt: 0,
            udp,
        }
    }

    /// Serves connections, the first one being `link`, until the client closes or a connection ends
    /// in a way not worth reconnecting; then reports [`Event::Closed`].
    pub(crate) async fn run(mut self, mut link: Link) {
        let (reason, closed) = loop {
            match self.serve(&mut link).await {
                End::Local(closed) => {
                    link.drain_udp().await;
                    link.say_bye(|frame| self.answer(frame)).await;
                    link.stop_udp().await;
                    break (CloseReason::Local, closed);
                }
                End::Lost { reason, retry } => {
                    link.stop_udp().await;
                    let Some(policy) = self.opts.reconnect.filter(|_| retry) else {
                        break (reason, None);
                    };
                    if link.opened.elapsed() >= policy.settled_after() {
                        self.attempt = 0;
                    }
                    self.carry_over(link);
                    tracing::warn!(%reason, "connection lost; reconnecting");
                    self.events.push(Event::Disconnected(reason));
                    match self.reconnect(policy).await {
                        Ok(next) => link = next,
                        Err(End::Local(closed)) => break (CloseReason::Local, closed),
                        Err(End::Lost { reason, .. }) => break (reason, None),
                    }
                }
            }
        };
        self.finish(reason, closed).await;
    }

    /// The main loop of one connection: until the broker ends it, the socket fails, or the client
    /// closes.
    async fn serve(&mut self, link: &mut Link) -> End {
        self.open_udp(link).await;
        self.fill(link);
        let ping = tokio::time::sleep(link.ping_every);
        tokio::pin!(ping);
        loop {
            tokio::select! {
                written = link.writer.write_buf(&mut link.out.buf), if !link.out.buf.is_empty() => {
                    match written {
                        Ok(0) => return lost(CloseReason::Failed("socket closed for writing".into()), true),
                        Ok(n) => {
                            link.out.wrote(n);
                            self.fill(link);
                            ping.as_mut().reset(Instant::now() + link.ping_every);
                        }
                        Err(e) => return lost(CloseReason::Failed(io_reason(&e)), true),
                    }
                }
                frame = link.reader.next(), if !self.events.is_waiting() => match frame {
                    Some(Ok(frame)) => {
                        if let Some(end) = self.on_frame(link, frame) {
                            return end;
                        }
                    }
                    Some(Err(e)) => return lost(CloseReason::Failed(codec_reason(&e)), may_retry_read(&e)),
                    None => return lost(CloseReason::Disconnected, true),
                },
                () = self.events.pass_on(), if self.events.is_waiting() => {}
                command = self.commands.recv(), if link.out.buf.len() < OUT_HIGH_WATER => match command {
                    Some(Command::Close(closed)) => return End::Local(Some(closed)),
                    Some(command) => {
                        self.on_command(command, Some(link));
                        if let Some(end) = self.take_ready_commands(link) {
                            return end;
                        }
                    }
                    None => return End::Local(None),
                },
                () = &mut ping => {
                    if link.out.buf.is_empty() {
                        tracing::trace!("ping");
                        link.out.control(ClientFrame::Ping);
                    }
                    // Again: a lost bind is repaired, and a NAT mapping kept open.
                    if let Some(udp) = &link.udp {
                        udp.sender.bind();
                    }
                    ping.as_mut().reset(Instant::now() + link.ping_every);
                }
            }
        }
    }

    /// Waits and tries again until a connection is back; commands are taken meanwhile (sends and
    /// acks wait for the connection, a close ends the wait).
    async fn reconnect(&mut self, policy: Reconnect) -> Result<Link, End> {
        loop {
            self.attempt = self.attempt.saturating_add(1);
            let attempt = self.attempt;
            let delay = policy.delay(attempt);
            tracing::info!(attempt, ?delay, "reconnecting to the broker");
            let opts = Arc::clone(&self.opts);
            let opening = async move {
                tokio::time::sleep(delay).await;
                handshake::open(&opts).await
            };
            tokio::pin!(opening);
            let opened = loop {
                tokio::select! {
                    opened = &mut opening => break opened,
                    command = self.commands.recv() => match command {
                        Some(Command::Close(closed)) => return Err(End::Local(Some(closed))),
                        Some(command) => self.on_command(command, None),
                        None => return Err(End::Local(None)),
                    },
                    () = self.events.pass_on(), if self.events.is_waiting() => {}
                }
            };
            match opened {
                Ok((mut link, welcome)) => {
                    tracing::info!(attempt, address = %welcome.address, pending = welcome.pending, "reconnected");
                    for ack in self.acks.drain(..) {
                        link.out.ack(ack);
                    }
                    self.max_frame = welcome.max_frame(self.opts.max_frame);
                    self.welcome.send_replace(welcome.clone());
                    self.events.push(Event::Reconnected(welcome));
                    return Ok(link);
                }
                Err(e) if may_retry_connect(&e) => {
                    tracing::info!(attempt, error = %e, "reconnect attempt failed");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "giving up reconnecting");
                    let reason = match e {
                        ClientError::Refused { code, text } => CloseReason::Broker { code, text },
                        other => CloseReason::Failed(other.to_string()),
                    };
                    return Err(lost(reason, false));
                }
            }
        }
    }

    /// Keeps what a broken link leaves behind for the next one.
    fn carry_over(&mut self, link: Link) {
        self.library_acked.extend(link.library_acks);
        self.acks.extend(link.out.into_unwritten_acks());
        self.no_longer_fresh(link.next_send);
    }

    /// The unanswered sends numbered below `carried` went onto a link that is now lost: from now on
    /// each is a resend (see [`Unanswered::no_longer_fresh`]). One that cannot be re-encoded fails.
    fn no_longer_fresh(&mut self, carried: u64) {
        for (send, error) in self.unanswered.no_longer_fresh(carried, self.max_frame) {
            tracing::error!(send_id = send.send_id, %error, "cannot re-encode a send as a resend; failing it");
            self.tracked.remove(&send.send_id);
            let _ = send.accepted.send(Err(error.into()));
        }
    }

    /// Fails every pending call, answers the close, and reports `Closed` as the last event.
    async fn finish(self, reason: CloseReason, closed: Option<oneshot::Sender<()>>) {
        tracing::debug!(%reason, "client ended");
        // Drop the commands channel and every pending answer (their callers see `Closed`) now: the
        // last event may wait for a reader who is waiting for one of those answers.
        self.room.close();
        let Driver {
            commands,
            unanswered,
            tracked,
            acks,
            mut events,
            ..
        } = self;
        drop((commands, unanswered, tracked, acks));
        if let Some(closed) = closed {
            let _ = closed.send(());
        }
        // What was not handed over is unacknowledged and comes again on a later connection.
        events.clear();
        events.push(Event::Closed(reason));
        events.flush().await;
    }

    fn on_command(&mut self, command: Command, link: Option<&mut Link>) {
        match command {
            Command::Send(send) => {
                self.take_send(send);
                if let Some(link) = link {
                    self.fill(link);
                }
            }
            Command::Ack(ack) => match link {
                Some(link) => link.out.ack(ack),
                None => self.acks.push(ack),
            },
            Command::Datagram(frame) => match link {
                Some(link) => self.send_datagram(link, frame),
                None => {
                    tracing::debug!("not connected; the datagram is dropped");
                    self.udp.counters.sent(false, 1);
                }
            },
            // Handled by the loops, which end on it.
            Command::Close(_) => {}
        }
    }

    /// Numbers and encodes a send, and keeps it until answered; a send too large, or reusing the
    /// send id of a send still unanswered, fails at once. A send numbered by the library is
    /// a first attempt (`fresh: true`); one with a caller-chosen id may be a resend and is not.
    fn take_send(&mut self, send: SendCommand) {
        let SendCommand {
            to,
            body,
            ttl_ms,
            receipts,
            send_id,
            accepted,
            receipt,
            room,
        } = send;
        let fresh = send_id.is_none();
        let send_id = send_id.unwrap_or_else(next_send_id);
        if self.unanswered.contains(send_id) {
            let _ = accepted.send(Err(ClientError::DuplicateId(send_id)));
            return;
        }
        let frame = ClientFrame::Send {
            send_id,
            to,
            body,
            ttl_ms,
            fresh,
            receipts,
        };
        match encode_frame(&frame, self.max_frame) {
            Ok(frame) => {
                self.unanswered.push(PendingSend::new(
                    send_id,
                    frame.freeze(),
                    fresh,
                    accepted,
                    room,
                ));
                if let Some(receipt) = receipt {
                    self.tracked.insert(send_id, receipt);
                }
            }
            Err(e) => {
                let _ = accepted.send(Err(e.into()));
            }
        }
    }

    /// Takes the commands already waiting, up to the high water, so that their frames leave in one
    /// write rather than one write each; `Some` when one of them closes the client.
    fn take_ready_commands(&mut self, link: &mut Link) -> Option<End> {
        while link.out.buf.len() < OUT_HIGH_WATER {
            match self.commands.try_recv() {
                Ok(Command::Close(closed)) => return Some(End::Local(Some(closed))),
                Ok(command) => self.on_command(command, Some(link)),
                // Empty, or every handle is gone: the next `recv` says which.
                Err(_) => break,
            }
        }
        None
    }

    /// Queues the unanswered sends this link has not carried yet, in the order they were made, up to
    /// the high water.
    fn fill(&self, link: &mut Link) {
        while link.out.buf.len() < OUT_HIGH_WATER {
            let Some((seq, frame)) = self.unanswered.next_to_write(link.next_send) else {
                return;
            };
            link.out.push_encoded(frame);
            link.next_send = seq.saturating_add(1);
        }
    }
}

fn lost(reason: CloseReason, retry: bool) -> End {
    End::Lost { reason, retry }
}
