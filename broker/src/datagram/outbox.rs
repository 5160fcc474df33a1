//! The broker's UDP socket (its batched receive and send), and the datagrams sealed for it during one batch.
//!
//! The listener reads up to `quinn_udp::BATCH_SIZE` datagrams with one `recvmmsg`; what they route
//! over UDP is sealed into an [`Outbox`] and sent once the batch is done, not one `sendto` each:
//! grouped by destination (in order within each), and a run of equal-sized datagrams to one
//! address leaves in one `sendmsg` with GSO (`UDP_SEGMENT`), which the kernel splits into datagrams
//! again (or hands whole to a receiver that asked for GRO). A full socket buffer drops what did not
//! fit, never waits.

use std::net::SocketAddr;

use bytes::BytesMut;
use quinn_udp::{RecvMeta, Transmit, UdpSocketState};

use crate::metrics::{Dropped, Metrics, Via};

/// At most this many bytes in one GSO send: what one UDP datagram may hold.
const GSO_BYTES: usize = 65_000;

/// The socket the broker sends datagrams from, with what `quinn_udp` learnt of it (whether GSO
/// works).
pub(crate) struct UdpOut {
    socket: std::net::UdpSocket,
    state: UdpSocketState,
}

impl UdpOut {
    /// Takes `socket` (bound, non-blocking) for sending. `quinn_udp` sets it to refuse IP
    /// fragmentation; the kernel's default (fragment what exceeds the path MTU) is put back, so a
    /// `max_body_bytes` raised above the path MTU behaves as it did with plain `sendto`.
    pub(crate) fn new(socket: std::net::UdpSocket) -> std::io::Result<Self> {
        let state = UdpSocketState::new((&socket).into())?;
        allow_fragments(&socket);
        Ok(Self { socket, state })
    }

    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Reads a batch from `socket` (the listener's handle on the same socket) into `bufs`.
    pub(super) fn receive(
        &self,
        socket: &tokio::net::UdpSocket,
        bufs: &mut [std::io::IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> std::io::Result<usize> {
        self.state.recv(socket.into(), bufs, meta)
    }

    /// Sends `contents` (datagrams of `segment` bytes, the last maybe shorter) to `to`.
    fn send(&self, to: SocketAddr, contents: &[u8], segment: usize) -> std::io::Result<()> {
        let transmit = Transmit {
            destination: to,
            ecn: None,
            contents,
            segment_size: (contents.len() > segment).then_some(segment),
            src_ip: None,
        };
        self.state.try_send((&self.socket).into(), &transmit)
    }
}

/// Puts back `IP_PMTUDISC_WANT` (Linux's default for UDP) where `quinn_udp` set `PROBE`.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn allow_fragments(socket: &std::net::UdpSocket) {
    use std::os::fd::AsRawFd;
    let (level, option) = match socket.local_addr() {
        Ok(SocketAddr::V4(_)) => (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER),
        _ => (libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER),
    };
    let want: libc::c_int = libc::IP_PMTUDISC_WANT;
    // SAFETY: a valid socket, an int option, and its size.
    let done = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            option,
            (&want as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if done != 0 {
        let error = std::io::Error::last_os_error();
        tracing::debug!(%error, "cannot allow ip fragmentation on the udp socket");
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn allow_fragments(_socket: &std::net::UdpSocket) {}

/// One sealed datagram waiting for the end of the batch.
struct Sealed {
    to: SocketAddr,
    bytes: BytesMut,
    /// A `datagram` (counted delivered once the socket took it), not a `bound` answer.
    counted: bool,
}

/// The datagrams sealed during one batch, sent together by [`Outbox::flush`].
#[derive(Default)]
pub(crate) struct Outbox {
    pending: Vec<Sealed>,
    /// Where a GSO run is put together; kept between batches.
    run: Vec<u8>,
}

impl Outbox {
    /// Queues a sealed datagram for `to`; `counted` for a `datagram`, not a `bound` answer.
    pub(super) fn push(&mut self, to: SocketAddr, bytes: BytesMut, counted: bool) {
        self.pending.push(Sealed { to, bytes, counted });
    }

    /// Sends everything queued: per destination in order, equal-sized neighbours in one GSO send.
    /// What the socket refused is dropped and counted (`send_failed`).
    pub(crate) fn flush(&mut self, out: &UdpOut, metrics: &Metrics) {
        if self.pending.is_empty() {
            return;
        }
        // Stable: each destination's datagrams keep their order (and their sequence numbers').
        self.pending.sort_by_key(|sealed| sealed.to);
        let max_segments = out.state.max_gso_segments().max(1);
        let mut rest = &self.pending[..];
        while let Some(first) = rest.first() {
            let segment = first.bytes.len();
            let mut taken = 1;
            let mut bytes = segment;
            while let Some(next) = rest.get(taken) {
                let fits = next.to == first.to
                    && next.bytes.len() <= segment
                    && taken < max_segments
                    && bytes + next.bytes.len() <= GSO_BYTES;
                if !fits {
                    break;
                }
                bytes += next.bytes.len();
                taken += 1;
                if next.bytes.len() < segment {
                    break; // only the last of a GSO run may be shorter
                }
            }
            let (run, later) = rest.split_at(taken);
            let sent = if let [only] = run {
                out.send(only.to, &only.bytes, segment)
            } else {
                self.run.clear();
                for sealed in run {
                    self.run.extend_from_slice(&sealed.bytes);
                }
                out.send(first.to, &self.run, segment)
            };
            if let Err(error) = &sent {
                tracing::debug!(%error, addr = %first.to, datagrams = taken, "cannot send datagrams");
            }
            for sealed in run {
                match sent {
                    Ok(()) if sealed.counted => metrics.datagrams.delivered(Via::Udp),
                    Ok(()) => {}
                    Err(_) => metrics.datagrams.dropped(Dropped::SendFailed),
                }
            }
            rest = later;
        }
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::time::Duration;

    use super::*;

    fn receiver() -> UdpSocket {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        socket
    }

    fn received(socket: &UdpSocket, count: usize) -> Vec<Vec<u8>> {
        let mut buf = [0u8; 2048];
        (0..count)
            .map(|_| {
                let len = socket.recv(&mut buf).expect("a datagram within 5 s");
                buf[..len].to_vec()
            })
            .collect()
    }

    fn datagram(fill: u8, len: usize) -> BytesMut {
        BytesMut::from(&vec![fill; len][..])
    }

    #[test]
    fn a_batch_reaches_each_destination_whole_and_in_order() {
        let sending = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sending.set_nonblocking(true).unwrap();
        let out = UdpOut::new(sending).unwrap();
        let (bob, carol) = (receiver(), receiver());
        let (to_bob, to_carol) = (bob.local_addr().unwrap(), carol.local_addr().unwrap());
        let mut outbox = Outbox::default();
        // Bob's interleaved with Carol's; equal sizes (one GSO run), a shorter one ending it, then
        // a longer one starting the next.
        let bobs = [(1, 100), (2, 100), (3, 100), (4, 60), (5, 300), (6, 300)];
        for (i, &(fill, len)) in bobs.iter().enumerate() {
            outbox.push(to_bob, datagram(fill, len), true);
            if i % 2 == 0 {
                outbox.push(to_carol, datagram(100 + fill, 50), i != 0);
            }
        }
        outbox.flush(&out, &Metrics::new());

        let expected: Vec<Vec<u8>> = bobs.iter().map(|&(f, l)| vec![f; l]).collect();
        assert_eq!(received(&bob, bobs.len()), expected);
        let expected: Vec<Vec<u8>> = [101, 103, 105].iter().map(|&f| vec![f; 50]).collect();
        assert_eq!(received(&carol, 3), expected);
    }
}
