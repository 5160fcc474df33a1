//! The driver's part of the datagram path: opening the UDP path `hi` offered, and sending the
//! datagrams the handles could not send over UDP themselves (before the bind is answered, or
//! without UDP) on the TCP connection.

use std::sync::Arc;

use switchboard_proto::ClientFrame;

use super::Driver;
use crate::connection::Link;
use crate::udp::UdpPath;

impl Driver {
    /// Opens the UDP path `hi` offered, if any; its reader hands datagrams to the events itself.
    pub(super) async fn open_udp(&mut self, link: &mut Link) {
        if let Some(offer) = link.udp_offer.take() {
            let buffer = self.opts.udp_socket_buffer;
            let events = self.events.sender();
            link.udp = UdpPath::open(offer, buffer, Arc::clone(&self.udp), events).await;
        }
    }

    /// A datagram over UDP once the broker answered the bind (dropped if the socket will not take
    /// it), else on the connection.
    pub(super) fn send_datagram(&self, link: &mut Link, frame: ClientFrame) {
        if let Some(udp) = link.udp.as_ref().filter(|udp| udp.sender.is_bound()) {
            udp.sender.send(&frame);
            return;
        }
        self.udp.counters.sent_on_tcp();
        link.out.control(frame);
    }
}
