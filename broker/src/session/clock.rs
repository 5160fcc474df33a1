//! The session's sense of time: the handshake deadline, the keepalive check, the idle writer's release,
//! and noticing that the writer has ended.
//!
//! Liveness is judged after reading what is waiting: a connection found silent for too long at one tick
//! is closed only if it is still silent at the next, so a broker that was paused (SIGSTOP, a stalled
//! machine) reads the pings sitting in its sockets before it judges anyone.
//!
//! All of it is one future spawned on the session's context, because each spawned future is an
//! allocation kept for the life of the connection, and most connections are idle.

use std::future::Future;
use std::pin::Pin;
use std::task::{self, Poll};
use std::time::Duration;

use actix::prelude::*;
use switchboard_proto::ErrorCode;

use super::Session;
use crate::settings::Settings;

/// The session's timers and the end of its writer: the handshake deadline, every `tick` a liveness
/// check once the client is identified and [`SocketWriter::release_if_idle`], and
/// [`SocketWriter::poll_ended`].
///
/// [`SocketWriter::release_if_idle`]: super::connection::SocketWriter::release_if_idle
/// [`SocketWriter::poll_ended`]: super::connection::SocketWriter::poll_ended
pub(super) struct Clock {
    sleep: Pin<Box<tokio::time::Sleep>>,
    tick: Duration,
    next_tick: tokio::time::Instant,
    /// Until it has passed.
    handshake_deadline: Option<tokio::time::Instant>,
    /// The previous tick found the connection silent for too long.
    overdue: bool,
}

impl Clock {
    /// The clock for a new connection under `settings`.
    pub(super) fn for_settings(settings: &Settings) -> Self {
        // Check liveness often enough to honour even the shortest keepalive promptly.
        let tick = Duration::from_millis(250).max(settings.agreed_keepalive(0) / 4);
        Clock::new(settings.handshake_timeout(), tick)
    }

    fn new(handshake_timeout: Duration, tick: Duration) -> Self {
        let now = tokio::time::Instant::now();
        let (handshake_deadline, next_tick) = (now + handshake_timeout, now + tick);
        Clock {
            sleep: Box::pin(tokio::time::sleep_until(handshake_deadline.min(next_tick))),
            tick,
            next_tick,
            handshake_deadline: Some(handshake_deadline),
            overdue: false,
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
        if let Poll::Ready(result) = act.writer.poll_ended(task) {
            act.writer_ended(result, ctx);
            return Poll::Ready(());
        }
        while this.sleep.as_mut().poll(task).is_ready() {
            let now = tokio::time::Instant::now();
            if this.handshake_deadline.is_some_and(|at| at <= now) {
                this.handshake_deadline = None;
                if act.phase.client().is_none() {
                    act.fail(
                        ErrorCode::HandshakeTimeout,
                        "no hello within the handshake timeout",
                        ctx,
                    );
                }
            }
            if this.next_tick <= now {
                this.next_tick = now + this.tick;
                act.writer.release_if_idle();
                if act.phase.client().is_some() {
                    this.overdue = act.check_alive(this.overdue, ctx);
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

impl Session {
    /// Whether the connection has been silent (no byte received) for longer than the keepalive allows
    /// (with slack); if it was so at the previous tick too (`overdue`), closes it. The tick between
    /// lets the reader take in whatever waited in the socket.
    fn check_alive(&mut self, overdue: bool, ctx: &mut Context<Self>) -> bool {
        let limit = self.keepalive.mul_f32(1.5);
        let silent = self.last_heard.silent_for() > limit;
        if silent && overdue {
            self.fail(
                ErrorCode::KeepaliveTimeout,
                format!("nothing received for {} ms", limit.as_millis()),
                ctx,
            );
        }
        silent
    }
}
