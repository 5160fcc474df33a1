//! The sends waiting for the broker's answer, kept encoded in the order they were made.
//!
//! A send stays here from the moment the driver takes it until its `Accepted` or `Rejected` comes,
//! across as many connections as that takes: each new connection carries every one again, oldest
//! first, byte for byte, and the broker recognises a resend by its send id. The order is a sequence
//! number of the driver's own, since a caller-chosen send id need not be larger than earlier ones;
//! among the unanswered sends a send id is used at most once.
//!
//! A send the library numbered goes out the first time with `fresh: true`. Once a connection that
//! carried it is lost, the broker may have it, so from then on it is a resend and must say
//! `fresh: false`: [`Unanswered::no_longer_fresh`] re-encodes the kept frame that way, once.

use std::collections::{BTreeMap, HashMap};

use bytes::{Bytes, BytesMut};
use switchboard_proto::{encode_frame, ClientFrame, CodecError, FrameCodec};
use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tokio_util::codec::Decoder;

use crate::error::ClientError;
use crate::sent::Sent;

/// A send waiting for its answer.
pub(crate) struct PendingSend {
    /// The send id, as on the wire.
    pub(crate) send_id: u64,
    /// The whole `Send` frame, length prefix included.
    frame: Bytes,
    /// Whether `frame` says `fresh: true`: only until a connection that carried it is lost.
    fresh: bool,
    /// Where the answer goes.
    pub(crate) accepted: oneshot::Sender<Result<Sent, ClientError>>,
    /// One of the places for unanswered sends, given back when the send is answered or dropped.
    _room: OwnedSemaphorePermit,
}

impl PendingSend {
    pub(crate) fn new(
        send_id: u64,
        frame: Bytes,
        fresh: bool,
        accepted: oneshot::Sender<Result<Sent, ClientError>>,
        room: OwnedSemaphorePermit,
    ) -> Self {
        Self {
            send_id,
            frame,
            fresh,
            accepted,
            _room: room,
        }
    }
}

/// The unanswered sends, by the order the driver took them in.
#[derive(Default)]
pub(crate) struct Unanswered {
    /// By sequence number.
    sends: BTreeMap<u64, PendingSend>,
    /// The sequence number of each unanswered send id.
    seq_of: HashMap<u64, u64>,
    /// The sequence number the next send taken gets.
    next_seq: u64,
}

impl Unanswered {
    /// Whether a send with this id is waiting for its answer.
    pub(crate) fn contains(&self, send_id: u64) -> bool {
        self.seq_of.contains_key(&send_id)
    }

    /// Keeps a send, after every one kept before it. Its id must not be in use (see
    /// [`Unanswered::contains`]).
    pub(crate) fn push(&mut self, send: PendingSend) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.seq_of.insert(send.send_id, seq);
        self.sends.insert(seq, send);
    }

    /// Takes out the send an answer is for; `None` if no send with this id is waiting.
    pub(crate) fn answered(&mut self, send_id: u64) -> Option<PendingSend> {
        let seq = self.seq_of.remove(&send_id)?;
        self.sends.remove(&seq)
    }

    /// The oldest send numbered `seq` or later (a link asks with the lowest number it has not
    /// carried yet): its sequence number and its frame.
    pub(crate) fn next_to_write(&self, seq: u64) -> Option<(u64, &Bytes)> {
        self.sends
            .range(seq..)
            .next()
            .map(|(&seq, send)| (seq, &send.frame))
    }

    /// The sends numbered below `carried` went onto a link that is now lost: the broker may have any
    /// of them, so each goes out again as a resend. A send still saying `fresh: true` is re-encoded
    /// with `fresh: false`; this happens once per send, at the first loss. (One that was only queued
    /// and never reached the socket would not need it; telling the two apart is not worth it,
    /// `fresh: false` is always safe.) A send whose frame cannot be re-encoded is taken out and
    /// returned with the error, to be failed rather than go out again as fresh.
    pub(crate) fn no_longer_fresh(
        &mut self,
        carried: u64,
        max_frame: usize,
    ) -> Vec<(PendingSend, CodecError)> {
        let mut broken = Vec::new();
        for (&seq, send) in self.sends.range_mut(..carried) {
            if !send.fresh {
                continue;
            }
            match as_resend(&send.frame, max_frame) {
                Ok(frame) => {
                    send.frame = frame;
                    send.fresh = false;
                }
                Err(e) => broken.push((seq, e)),
            }
        }
        broken
            .into_iter()
            .filter_map(|(seq, error)| {
                let send = self.sends.remove(&seq)?;
                self.seq_of.remove(&send.send_id);
                Some((send, error))
            })
            .collect()
    }
}

/// A kept `Send` frame (length prefix included) as the same send with `fresh: false`.
fn as_resend(frame: &[u8], max_frame: usize) -> Result<Bytes, CodecError> {
    let mut codec = FrameCodec::<ClientFrame, ClientFrame>::new(max_frame);
    match codec.decode(&mut BytesMut::from(frame))? {
        Some(ClientFrame::Send {
            send_id,
            to,
            body,
            ttl_ms,
            receipts,
            ..
        }) => {
            let resend = ClientFrame::Send {
                send_id,
                to,
                body,
                ttl_ms,
                fresh: false,
                receipts,
            };
            Ok(encode_frame(&resend, max_frame)?.freeze())
        }
        Some(_) | None => Err(CodecError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "a kept send frame does not decode as a send",
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::Semaphore;

    use super::*;

    fn send(fresh: bool) -> ClientFrame {
        send_numbered(1_700_000_000_000_001, fresh)
    }

    fn send_numbered(send_id: u64, fresh: bool) -> ClientFrame {
        ClientFrame::Send {
            send_id,
            to: "bob".into(),
            body: Bytes::from_static(b"\x00\xffhello"),
            ttl_ms: Some(90_000),
            fresh,
            receipts: switchboard_proto::Receipts::All,
        }
    }

    /// A kept send with this id; the receiver of its answer is dropped.
    fn pending(send_id: u64, fresh: bool) -> PendingSend {
        let frame = encode_frame(&send_numbered(send_id, fresh), 1024).unwrap();
        let room = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        PendingSend::new(send_id, frame.freeze(), fresh, oneshot::channel().0, room)
    }

    /// The send ids from `seq` on, in the order they would be written.
    fn order(unanswered: &Unanswered, mut seq: u64) -> Vec<u64> {
        let mut ids = Vec::new();
        while let Some((at, frame)) = unanswered.next_to_write(seq) {
            let mut codec = FrameCodec::<ClientFrame, ClientFrame>::new(1024);
            match codec.decode(&mut BytesMut::from(&frame[..])).unwrap() {
                Some(ClientFrame::Send { send_id, .. }) => ids.push(send_id),
                other => panic!("not a send: {other:?}"),
            }
            seq = at + 1;
        }
        ids
    }

    #[test]
    fn a_fresh_send_becomes_the_same_send_as_a_resend() {
        let fresh = encode_frame(&send(true), 1024).unwrap();
        let resend = as_resend(&fresh, 1024).unwrap();
        assert_eq!(resend, encode_frame(&send(false), 1024).unwrap());
        assert_ne!(resend, fresh.freeze());
        assert_eq!(
            as_resend(&resend, 1024).unwrap(),
            resend,
            "already a resend"
        );
    }

    #[test]
    fn a_frame_that_is_not_a_send_is_an_error_not_a_panic() {
        let ping = encode_frame(&ClientFrame::Ping, 1024).unwrap();
        assert!(as_resend(&ping, 1024).is_err());
        assert!(as_resend(&ping[..3], 1024).is_err(), "a partial frame");
    }

    #[test]
    fn sends_go_out_in_the_order_they_were_made_whatever_their_ids() {
        let mut unanswered = Unanswered::default();
        for send_id in [50, 3, 20] {
            unanswered.push(pending(send_id, false));
        }
        assert_eq!(order(&unanswered, 0), [50, 3, 20]);
        assert_eq!(
            order(&unanswered, 1),
            [3, 20],
            "a link that carried the first"
        );
        assert!(unanswered.answered(3).is_some());
        assert_eq!(order(&unanswered, 0), [50, 20]);
    }

    #[test]
    fn an_answered_send_frees_its_id() {
        let mut unanswered = Unanswered::default();
        unanswered.push(pending(7, false));
        assert!(unanswered.contains(7));
        assert_eq!(unanswered.answered(7).map(|s| s.send_id), Some(7));
        assert!(!unanswered.contains(7));
        assert!(unanswered.answered(7).is_none(), "answered once");
        unanswered.push(pending(7, false));
        assert_eq!(order(&unanswered, 0), [7]);
    }

    #[test]
    fn only_the_sends_a_lost_link_carried_stop_being_fresh() {
        let mut unanswered = Unanswered::default();
        unanswered.push(pending(1, true));
        unanswered.push(pending(2, true));
        assert!(unanswered.no_longer_fresh(1, 1024).is_empty());
        let frame = |seq| {
            unanswered
                .next_to_write(seq)
                .map(|(_, frame)| frame.clone())
        };
        assert_eq!(
            frame(0),
            Some(
                encode_frame(&send_numbered(1, false), 1024)
                    .unwrap()
                    .freeze()
            ),
            "carried by the lost link: a resend now"
        );
        assert_eq!(
            frame(1),
            Some(
                encode_frame(&send_numbered(2, true), 1024)
                    .unwrap()
                    .freeze()
            ),
            "never carried: still a first attempt"
        );
    }
}
