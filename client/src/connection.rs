//! One connection's socket, after the handshake: the [`Link`], its framed reader, its writer and the
//! [`WriteBuffer`] of bytes waiting to be written to it.
//!
//! A link lives as long as its TCP connection; the driver (`driver/`) drives it and, when
//! reconnecting, replaces it with a new one. Reading and writing happen in the same `select!` loop but
//! never wait on each other: outgoing frames are encoded into the write buffer (`write_buffer.rs`),
//! which is written whenever the socket takes bytes, so a broker that stops reading while it catches
//! up can never stop this side from reading its answers (see `limits.max_unaccepted_sends` in
//! `PROTOCOL.md`).

use std::time::Duration;

use futures_util::StreamExt;
use switchboard_proto::{BrokerFrame, ClientCodec, ClientFrame};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;

use crate::udp::{UdpOffer, UdpPath};
use crate::write_buffer::WriteBuffer;

/// How long a closing connection waits for its last frames to go out and for the broker to close its
/// side, before it simply drops the socket.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The shortest ping interval, whatever keepalive the broker announces.
const MIN_PING_EVERY: Duration = Duration::from_millis(100);

/// The read side of a connection, plain TCP or TLS.
pub(crate) type Reader = Box<dyn tokio::io::AsyncRead + Unpin + Send>;
/// The write side of a connection, plain TCP or TLS.
pub(crate) type Writer = Box<dyn tokio::io::AsyncWrite + Unpin + Send>;

/// An open connection to the broker.
pub(crate) struct Link {
    pub(crate) reader: FramedRead<Reader, ClientCodec>,
    pub(crate) writer: Writer,
    pub(crate) out: WriteBuffer,
    /// Half the agreed keepalive: the longest this side stays silent.
    pub(crate) ping_every: Duration,
    /// When the handshake completed; a link that lived long enough resets the reconnect backoff.
    pub(crate) opened: Instant,
    /// Receipts the library acknowledged on this link (the tracked ones). If the link breaks, the
    /// broker may not have read those `Ack`s and will deliver the receipts again.
    pub(crate) library_acks: Vec<u64>,
    /// The lowest driver sequence number among the unanswered sends this link has not carried yet: a
    /// new link starts at 0 and so sends every unanswered one again, oldest first.
    pub(crate) next_send: u64,
    /// What `hi` offered for datagrams over UDP on a plain connection, until the driver opens it.
    pub(crate) udp_offer: Option<UdpOffer>,
    /// Datagrams over UDP, once the driver opened the offered path.
    pub(crate) udp: Option<UdpPath>,
}

impl Link {
    pub(crate) fn new(
        reader: FramedRead<Reader, ClientCodec>,
        writer: Writer,
        max_frame: usize,
        keepalive: Duration,
    ) -> Self {
        Self {
            reader,
            writer,
            out: WriteBuffer::new(max_frame),
            ping_every: (keepalive / 2).max(MIN_PING_EVERY),
            opened: Instant::now(),
            library_acks: Vec::new(),
            next_send: 0,
            udp_offer: None,
            udp: None,
        }
    }

    /// Lets what was sent over UDP reach the broker before the session ends ([`UdpPath::drain`]).
    pub(crate) async fn drain_udp(&mut self) {
        if let Some(udp) = self.udp.as_mut() {
            udp.drain().await;
        }
    }

    /// Stops the UDP path, if any, and waits until its reader has stopped.
    pub(crate) async fn stop_udp(&mut self) {
        if let Some(udp) = self.udp.take() {
            udp.stop().await;
        }
    }

    /// Sends `Bye` after whatever is queued, then waits (bounded) for the broker to close its side, so
    /// that acknowledgements queued before are read by the broker rather than lost to a reset.
    /// `answer` is called with each `Accepted` or `Rejected` arriving meanwhile.
    pub(crate) async fn say_bye(&mut self, mut answer: impl FnMut(BrokerFrame)) {
        self.out.control(ClientFrame::Bye);
        let Link {
            reader,
            writer,
            out,
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
                        Some(Ok(frame @ (BrokerFrame::Accepted { .. } | BrokerFrame::Rejected { .. }))) => answer(frame),
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
