//! What each frame from the client does, given the session's phase.
//!
//! Before `Hello` only `Hello` is welcome; after it, `Send` goes to the Router (once the send rules and
//! the rate allow it), `Datagram` goes straight to the datagram path, `Ack` is recorded, `Ping` is answered and `Bye` ends the session. A draining
//! session rejects new sends at once but still records acks.

use std::time::Instant;

use actix::prelude::*;
use switchboard_proto::{BrokerFrame, ClientFrame, ClientId, ErrorCode, Receipts, RejectReason};

use super::handshake::Hello;
use super::Session;
use crate::router;

/// A `Send` frame from an identified client.
struct IncomingSend {
    from: ClientId,
    send_id: u64,
    to: String,
    body: bytes::Bytes,
    ttl_ms: Option<u64>,
    fresh: bool,
    receipts: Receipts,
}

impl Session {
    /// Acts on one frame read from the peer.
    pub(super) fn on_frame(&mut self, frame: ClientFrame, ctx: &mut Context<Self>) {
        if !self.phase.may_read() {
            return;
        }
        let Some(client) = self.phase.client() else {
            return self.on_greeting_frame(frame, ctx);
        };
        match frame {
            ClientFrame::Hello { .. } => self.fail(
                ErrorCode::UnexpectedFrame,
                "hello was already received",
                ctx,
            ),
            ClientFrame::Send { send_id, .. } if !self.phase.may_accept_sends() => {
                let seq = self.answers.owe(send_id);
                let text = "the broker is shutting down; nothing was stored".to_string();
                self.settle(seq, Err(RejectReason::Unavailable), Some(text), ctx)
            }
            ClientFrame::Send {
                send_id,
                to,
                body,
                ttl_ms,
                fresh,
                receipts,
            } => {
                let send = IncomingSend {
                    from: client.clone(),
                    send_id,
                    to,
                    body,
                    ttl_ms,
                    fresh,
                    receipts,
                };
                self.on_send(send, ctx)
            }
            ClientFrame::Ack { id } => {
                let ack = router::Ack {
                    client: client.clone(),
                    conn_id: self.conn_id,
                    id,
                };
                self.on_ack(ack, ctx)
            }
            ClientFrame::Ping => self.write(BrokerFrame::Pong, ctx),
            ClientFrame::Datagram { to, body } => {
                if let Some(peer) = &self.datagram_peer {
                    self.datagrams.route_from_session(peer, to, body);
                }
            }
            ClientFrame::Bye => {
                tracing::debug!(parent: &self.span, "client said bye");
                ctx.stop();
            }
        }
    }

    /// Before the client is identified: the first frame must be `Hello`.
    fn on_greeting_frame(&mut self, frame: ClientFrame, ctx: &mut Context<Self>) {
        match frame {
            ClientFrame::Hello {
                version,
                client_id,
                token,
                keepalive_secs,
            } => {
                let hello = Hello {
                    version,
                    client_id,
                    token,
                    keepalive_secs,
                };
                self.on_hello(hello, ctx)
            }
            _ => self.fail(
                ErrorCode::HelloRequired,
                "the first frame must be hello",
                ctx,
            ),
        }
    }

    /// Takes the send's place in line, then rejects it at once or hands it to the Router; reading
    /// stops while `limits.max_unaccepted_sends` sends await their answer.
    fn on_send(&mut self, send: IncomingSend, ctx: &mut Context<Self>) {
        let IncomingSend {
            from,
            send_id,
            to,
            body,
            ttl_ms,
            fresh,
            receipts,
        } = send;
        let seq = self.answers.owe(send_id);
        let max_body = self.settings.max_body_bytes();
        if body.len() > max_body {
            // Accepted, it could never be delivered: its `deliver` would not fit in a frame.
            let text = format!(
                "the body is {} bytes; this broker takes at most {max_body}",
                body.len()
            );
            return self.settle(seq, Err(RejectReason::TooLarge), Some(text), ctx);
        }
        let to = match ClientId::new(to) {
            Ok(to) => to,
            Err(e) => {
                let text = Some(e.to_string());
                return self.settle(seq, Err(RejectReason::InvalidRecipient), text, ctx);
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
            send_id,
            to,
            body,
            ttl_ms,
            fresh,
            receipts,
        };
        let answer = self
            .router
            .send(submit)
            .into_actor(self)
            .map(move |res, act, ctx| {
                let outcome = res.unwrap_or(Err(RejectReason::Unavailable));
                act.settle(seq, outcome, None, ctx);
            });
        if self.answers.owed() >= self.settings.limits.max_unaccepted_sends {
            ctx.wait(answer); // Too many sends in the air: stop reading until this one is answered.
        } else {
            ctx.spawn(answer);
        }
    }

    /// Records an acknowledgement with the Router, never dropping it.
    fn on_ack(&mut self, ack: router::Ack, ctx: &mut Context<Self>) {
        if let Err(SendError::Full(ack)) = self.router.try_send(ack) {
            // The Router is backed up: hold this session back until the ack is in, never drop it.
            ctx.wait(self.router.send(ack).into_actor(self).map(|res, act, _| {
                if let Err(error) = res {
                    tracing::error!(parent: &act.span, %error, "router unreachable; ack not recorded");
                }
            }));
        }
    }
}
