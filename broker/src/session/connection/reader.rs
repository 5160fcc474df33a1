//! The connection's reading side: bytes from the socket become `ClientFrame`s, and an idle connection
//! holds no read buffer.
//!
//! [`FrameReader`] is the session's stream of frames. It works like `tokio_util`'s `FramedRead`, except
//! that most connections are idle most of the time, so it allocates a buffer only to read and gives it
//! back as soon as a read finds nothing and no partial frame is held. It also notes when bytes last
//! arrived ([`Heard`]): the keepalive counts bytes, not frames, so a frame arriving slowly is not silence.
//! A partial frame larger than the ordinary read buffer is charged to the broker-wide [`FrameBudget`].

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{self, Poll};
use std::time::Instant;

use bytes::BytesMut;
use switchboard_proto::{BrokerCodec, ClientFrame, CodecError};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::codec::Decoder;

use super::FrameBudget;

/// Capacity of a connection's read buffer, allocated to read when none is held (it grows for larger
/// frames). An idle connection holds none, so this can be large enough for a busy one to read many
/// frames per system call: 8 KiB measured ~10 % more relay throughput than 512 bytes.
const READ_BUFFER: usize = 8 * 1024;

/// The length prefix before every frame.
const PREFIX_LEN: usize = 4;

/// Why the connection's frames end.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The frame being received needs more of the partial-frame budget than is left.
    #[error("the broker's {limit}-byte budget for partly received frames is spent")]
    NoBudget { limit: usize },
}

/// When bytes last arrived from the peer: written by the reader, read by the session's keepalive check
/// (both on the session's thread, so a `Cell`).
#[derive(Debug, Clone)]
pub(crate) struct Heard(Rc<Cell<Instant>>);

impl Heard {
    /// Heard from now.
    pub(crate) fn now() -> Self {
        Heard(Rc::new(Cell::new(Instant::now())))
    }

    /// How long ago bytes last arrived.
    pub(crate) fn silent_for(&self) -> std::time::Duration {
        self.0.get().elapsed()
    }

    fn bytes_arrived(&self) {
        self.0.set(Instant::now());
    }
}

/// The connection's frames, like `FramedRead` except that it holds no buffer while the connection is
/// idle: one is allocated to read into, and dropped when a read finds nothing and no partial frame is
/// held.
pub(crate) struct FrameReader<R> {
    io: R,
    codec: BrokerCodec,
    buffer: BytesMut,
    heard: Heard,
    budget: Arc<FrameBudget>,
    /// What the partial frame in `buffer` holds of `budget`.
    charged: usize,
    /// Bytes arrived since `decode` last found no frame.
    readable: bool,
    eof: bool,
    errored: bool,
}

impl<R> FrameReader<R> {
    /// Frames from `io`, noting in `heard` whenever bytes arrive and charging large partial frames to
    /// `budget`.
    pub(crate) fn new(io: R, codec: BrokerCodec, heard: Heard, budget: Arc<FrameBudget>) -> Self {
        FrameReader {
            io,
            codec,
            buffer: BytesMut::new(),
            heard,
            budget,
            charged: 0,
            readable: false,
            eof: false,
            errored: false,
        }
    }
}

impl<R: AsyncRead + Unpin> futures_util::Stream for FrameReader<R> {
    type Item = Result<ClientFrame, ReadError>;

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
                // Budget first: the codec reserves a large frame's whole length as soon as it sees
                // the prefix, and a refused connection must never have held that memory (freed at
                // once, it still stays with the allocator and in the broker's RSS).
                if let Err(error) = this.charge() {
                    this.errored = true;
                    return Poll::Ready(Some(Err(error)));
                }
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
                    Ok(None) => {
                        this.readable = false;
                        if let Err(error) = this.charge() {
                            this.errored = true;
                            return Poll::Ready(Some(Err(error)));
                        }
                    }
                    Err(error) => {
                        this.errored = true;
                        return Poll::Ready(Some(Err(error.into())));
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
                    return Poll::Ready(Some(Err(CodecError::from(error).into())));
                }
                Poll::Ready(Ok(0)) if this.eof => return Poll::Ready(None),
                Poll::Ready(Ok(0)) => this.eof = true,
                Poll::Ready(Ok(_)) => {
                    this.eof = false;
                    this.heard.bytes_arrived();
                }
            }
            this.readable = true;
        }
    }
}

impl<R> FrameReader<R> {
    /// Holds budget for exactly the partial frame in the buffer (nothing for one that fits the ordinary
    /// read buffer, nor for one over the frame limit, which the codec refuses). Without budget for
    /// it, the buffer is given back and the connection ends.
    fn charge(&mut self) -> Result<(), ReadError> {
        let want = partial_frame_len(&self.buffer);
        if want.saturating_sub(PREFIX_LEN) > self.codec.max_frame() {
            return Ok(()); // The codec refuses it as too large, holding nothing.
        }
        if want > self.charged {
            if !self.budget.try_take(want - self.charged) {
                self.buffer = BytesMut::new();
                self.budget.give_back(std::mem::take(&mut self.charged));
                return Err(ReadError::NoBudget {
                    limit: self.budget.limit(),
                });
            }
        } else {
            self.budget.give_back(self.charged - want);
        }
        self.charged = want;
        Ok(())
    }
}

impl<R> Drop for FrameReader<R> {
    fn drop(&mut self) {
        self.budget.give_back(self.charged);
    }
}

/// The length (prefix included) of the frame `buffer` starts with, if it is larger than the ordinary
/// read buffer (the codec reserves that much for it); 0 otherwise.
fn partial_frame_len(buffer: &[u8]) -> usize {
    let Some(prefix) = buffer.first_chunk::<PREFIX_LEN>() else {
        return 0;
    };
    let len = (u32::from_be_bytes(*prefix) as usize).saturating_add(prefix.len());
    if len > READ_BUFFER {
        len
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use tokio::io::AsyncWriteExt;

    fn next<R: AsyncRead + Unpin>(
        reader: &mut FrameReader<R>,
    ) -> Option<Option<Result<ClientFrame, ReadError>>> {
        std::future::poll_fn(|cx| futures_util::Stream::poll_next(Pin::new(&mut *reader), cx))
            .now_or_never()
    }

    #[tokio::test]
    async fn the_read_buffer_is_held_only_while_a_frame_is_incomplete() {
        let (io, mut peer) = tokio::io::duplex(1024);
        let budget = Arc::new(FrameBudget::new(1 << 20));
        let mut reader = FrameReader::new(io, BrokerCodec::new(1024), Heard::now(), budget);
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
            Some(Some(Err(ReadError::Codec(CodecError::Io(_)))))
        ));
        assert!(matches!(next(&mut reader), Some(None)));
    }

    #[tokio::test]
    async fn a_large_partial_frame_takes_budget_and_gives_it_back() {
        let max = 64 * 1024;
        let budget = Arc::new(FrameBudget::new(50_000));
        let (io, mut peer) = tokio::io::duplex(1024);
        let mut reader = FrameReader::new(io, BrokerCodec::new(max), Heard::now(), budget.clone());
        peer.write_all(&40_000u32.to_be_bytes()).await.unwrap();
        assert!(next(&mut reader).is_none());
        assert_eq!(budget.used(), 40_004, "the whole frame is reserved");

        let (other_io, mut other) = tokio::io::duplex(1024);
        let mut refused = FrameReader::new(
            other_io,
            BrokerCodec::new(max),
            Heard::now(),
            budget.clone(),
        );
        other.write_all(&20_000u32.to_be_bytes()).await.unwrap();
        assert!(matches!(
            next(&mut refused),
            Some(Some(Err(ReadError::NoBudget { limit: 50_000 })))
        ));
        assert_eq!(budget.used(), 40_004, "the refused frame holds nothing");
        assert_eq!(
            refused.buffer.capacity(),
            0,
            "the refused connection's buffer is given back"
        );
        drop(reader);
        assert_eq!(
            budget.used(),
            0,
            "a closed connection gives its budget back"
        );
    }

    #[tokio::test]
    async fn a_frame_over_the_limit_is_refused_as_too_large_not_for_budget() {
        let budget = Arc::new(FrameBudget::new(50_000));
        let (io, mut peer) = tokio::io::duplex(1024);
        let mut reader = FrameReader::new(
            io,
            BrokerCodec::new(64 * 1024),
            Heard::now(),
            budget.clone(),
        );
        peer.write_all(&(1u32 << 20).to_be_bytes()).await.unwrap();
        assert!(matches!(
            next(&mut reader),
            Some(Some(Err(ReadError::Codec(
                CodecError::FrameTooLarge { .. }
            ))))
        ));
        assert_eq!(budget.used(), 0);
    }
}
