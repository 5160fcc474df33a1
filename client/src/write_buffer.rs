//! The bytes on their way to one connection's socket, and the acknowledgements that wait for theirs.
//!
//! A [`WriteBuffer`] belongs to one connection (`Link`, in `connection.rs`). Frames are encoded into it as
//! they are queued and written out whenever the socket takes bytes, in coalesced writes. It counts
//! positions in the connection's outgoing stream so that a user's [`PendingAck`] is answered only
//! once the last byte of its `Ack` frame has reached the socket; the acks that never got there are
//! handed to the next connection.

use std::collections::VecDeque;

use bytes::BytesMut;
use switchboard_proto::{ClientCodec, ClientFrame};
use tokio::sync::oneshot;
use tokio_util::codec::Encoder;

/// An `Ack` the user asked for, and the caller waiting for it to be written.
pub(crate) struct PendingAck {
    pub(crate) id: u64,
    pub(crate) written: oneshot::Sender<()>,
}

/// Encoded frames on their way to the socket, and the acknowledgements waiting to leave.
pub(crate) struct WriteBuffer {
    /// Encoded frames not yet written to the socket.
    pub(crate) buf: BytesMut,
    max_frame: usize,
    /// How many bytes were ever queued and written: positions in this connection's outgoing stream.
    queued: u64,
    written: u64,
    /// User acks not yet fully written, with the position their frame ends at, in position order.
    acks: VecDeque<(u64, PendingAck)>,
}

impl WriteBuffer {
    pub(crate) fn new(max_frame: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_frame,
            queued: 0,
            written: 0,
            acks: VecDeque::new(),
        }
    }

    /// Queues a frame encoded beforehand (a `Send`, which is kept encoded until answered).
    pub(crate) fn push_encoded(&mut self, frame: &[u8]) {
        self.buf.extend_from_slice(frame);
        self.queued += frame.len() as u64;
    }

    /// Queues a frame that carries no user data and so cannot be too large.
    pub(crate) fn control(&mut self, frame: ClientFrame) {
        let before = self.buf.len();
        // Encoded in place, behind the frames already queued: no buffer of its own.
        match ClientCodec::new(self.max_frame).encode(frame, &mut self.buf) {
            Ok(()) => self.queued += (self.buf.len() - before) as u64,
            Err(e) => tracing::warn!(error = %e, "cannot encode a control frame"),
        }
    }

    /// Queues the `Ack` and tells its caller once it is written.
    pub(crate) fn ack(&mut self, ack: PendingAck) {
        self.control(ClientFrame::Ack { id: ack.id });
        self.acks.push_back((self.queued, ack));
    }

    /// Records that `n` more bytes reached the socket.
    pub(crate) fn wrote(&mut self, n: usize) {
        self.written += n as u64;
        while let Some((at, _)) = self.acks.front() {
            if *at > self.written {
                break;
            }
            if let Some((_, ack)) = self.acks.pop_front() {
                let _ = ack.written.send(());
            }
        }
    }

    /// The user acks that never fully reached the socket, for the next connection to carry.
    pub(crate) fn into_unwritten_acks(self) -> impl Iterator<Item = PendingAck> {
        self.acks.into_iter().map(|(_, ack)| ack)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(id: u64) -> (PendingAck, oneshot::Receiver<()>) {
        let (written, rx) = oneshot::channel();
        (PendingAck { id, written }, rx)
    }

    #[test]
    fn an_ack_is_answered_once_the_last_byte_of_its_frame_is_written() {
        let mut out = WriteBuffer::new(1024);
        out.control(ClientFrame::Ping);
        let ping = out.buf.len();
        let (ack, mut written) = pending(42);
        out.ack(ack);
        let end = out.buf.len();
        out.wrote(ping);
        assert!(written.try_recv().is_err(), "only the ping is out");
        out.wrote(end - ping - 1);
        assert!(written.try_recv().is_err(), "one byte of the ack is left");
        out.wrote(1);
        assert_eq!(written.try_recv(), Ok(()));
    }

    #[test]
    fn acks_not_fully_written_are_handed_on_in_order() {
        let mut out = WriteBuffer::new(1024);
        let (first, _first_rx) = pending(1);
        let (second, _second_rx) = pending(2);
        out.ack(first);
        let one = out.buf.len();
        out.ack(second);
        out.wrote(one);
        let left: Vec<u64> = out.into_unwritten_acks().map(|ack| ack.id).collect();
        assert_eq!(left, [2], "the first one reached the socket");
    }
}
