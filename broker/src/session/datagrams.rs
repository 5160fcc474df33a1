//! The session's side of the datagram path: its place in the directory, the UDP offer in `hi`, and
//! writing the datagrams queued for it beside its mailbox's deliveries, never in their way.
//!
//! Datagrams are written only while the socket has little queued ([`DATAGRAM_BUDGET`]); beyond it
//! they wait in the peer's small queue, where the oldest give way to newer ones, so a slow reader
//! loses datagrams, never its messages, and is never closed for them.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use switchboard_proto::BrokerFrame;

use super::Session;
use crate::datagram::Peer;

/// Bytes queued on the socket above which datagrams wait.
const DATAGRAM_BUDGET: usize = 64 * 1024;
/// How soon a session with datagrams waiting looks at its socket again.
const DATAGRAM_RETRY: Duration = Duration::from_millis(5);

/// The peer's queue gained a datagram.
pub(super) struct DatagramsWaiting;

impl Session {
    /// Takes `peer` as this session's place on the datagram path and starts listening for its queue.
    pub(super) fn start_datagrams(&mut self, peer: Arc<Peer>, ctx: &mut Context<Self>) {
        let wake = peer.clone();
        ctx.add_stream(futures_util::stream::unfold(wake, |peer| async move {
            peer.wake.notified().await;
            Some((DatagramsWaiting, peer))
        }));
        self.datagram_peer = Some(peer);
    }

    /// `hi` with the UDP port, session number and key, when the broker listens for UDP.
    pub(super) fn offer_udp(&self, mut hi: BrokerFrame) -> BrokerFrame {
        let (Some(port), Some(peer)) = (self.datagrams.udp_port(), &self.datagram_peer) else {
            return hi;
        };
        if let BrokerFrame::Hi {
            udp_port,
            datagram_session,
            datagram_key,
            ..
        } = &mut hi
        {
            *udp_port = Some(port);
            *datagram_session = Some(peer.session);
            *datagram_key = Some(Bytes::copy_from_slice(peer.key.as_bytes()));
        }
        hi
    }

    /// Writes queued datagrams while the socket has room for them; tries again soon if some wait.
    fn write_datagrams(&mut self, ctx: &mut Context<Self>) {
        let Some(peer) = self.datagram_peer.clone() else {
            return;
        };
        if !self.phase.may_deliver() {
            return;
        }
        while self.writer.queued() < DATAGRAM_BUDGET {
            let Some(datagram) = peer.next_queued() else {
                return;
            };
            let frame = BrokerFrame::Datagram {
                from: datagram.from,
                body: datagram.body,
            };
            self.write(frame, ctx);
            self.datagrams.written();
        }
        if peer.has_queued() && !self.datagram_retry {
            self.datagram_retry = true;
            ctx.run_later(DATAGRAM_RETRY, |act, ctx| {
                act.datagram_retry = false;
                act.write_datagrams(ctx);
            });
        }
    }
}

impl StreamHandler<DatagramsWaiting> for Session {
    fn handle(&mut self, _: DatagramsWaiting, ctx: &mut Context<Self>) {
        self.write_datagrams(ctx);
    }

    fn finished(&mut self, _: &mut Context<Self>) {
        // The stream never ends; the session's life is its socket's.
    }
}
