//! What a `Client` handle asks of the driver task (`driver/`), and how a send is numbered.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use switchboard_proto::ClientFrame;
use tokio::sync::{oneshot, OwnedSemaphorePermit};

use crate::error::ClientError;
use crate::event::Receipt;
use crate::sent::Sent;
use crate::write_buffer::PendingAck;

/// How many sends may wait for `Accepted` or `Rejected` at once; further sends wait for room. The
/// broker's own limit (`limits.max_unaccepted_sends`) defaults to the same number, and every one of
/// them is kept, encoded, until answered, in case it must be sent again.
pub(crate) const MAX_UNANSWERED: usize = 1024;

/// What a `Client` handle asks of the driver.
pub(crate) enum Command {
    /// Send a message; see [`SendCommand`].
    Send(SendCommand),
    /// Acknowledge a delivery or a receipt; answer once the `Ack` is on a socket.
    Ack(PendingAck),
    /// Say `Bye` (if connected) and end; answer once the socket is closed.
    Close(oneshot::Sender<()>),
    /// Send a `datagram` frame (always a [`ClientFrame::Datagram`]) if connected; otherwise it is
    /// gone, as datagrams are.
    Datagram(ClientFrame),
}

/// A message to send; answered on `accepted`, and on `receipt` when the receipt comes, if tracked.
pub(crate) struct SendCommand {
    pub(crate) to: String,
    pub(crate) body: Bytes,
    pub(crate) ttl_ms: Option<u64>,
    pub(crate) receipts: switchboard_proto::Receipts,
    /// The send id the caller chose, or `None` for the next of [`next_send_id`]. Only a
    /// send numbered by the library is known to be a first attempt and goes out `fresh`.
    pub(crate) send_id: Option<u64>,
    pub(crate) accepted: oneshot::Sender<Result<Sent, ClientError>>,
    pub(crate) receipt: Option<oneshot::Sender<Receipt>>,
    /// One of the [`MAX_UNANSWERED`] places, held until the answer comes.
    pub(crate) room: OwnedSemaphorePermit,
}

/// A fresh send id, as the library numbers its own sends: the Unix time in
/// microseconds, or one more than the last id handed out in this process if that is larger.
///
/// Ids stay unique across reconnects and, unless a process sends faster than one message per
/// microsecond on average, across restarts. Use it to choose the id of a message stored before it
/// is sent, for [`Client::send_with_id`](crate::Client::send_with_id).
pub fn next_send_id() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last.saturating_add(1));
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(actual) => last = actual,
        }
    }
}

/// A time to live as `Send.ttl_ms`: whole milliseconds, rounded up so that a short one is not zero.
pub(crate) fn ttl_millis(ttl: Duration) -> u64 {
    let millis = ttl.as_nanos().div_ceil(1_000_000);
    u64::try_from(millis).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ttl_is_whole_milliseconds_rounded_up() {
        assert_eq!(ttl_millis(Duration::from_secs(90)), 90_000);
        assert_eq!(ttl_millis(Duration::from_micros(1)), 1);
        assert_eq!(ttl_millis(Duration::from_micros(1_500)), 2);
        assert_eq!(ttl_millis(Duration::ZERO), 0);
        assert_eq!(ttl_millis(Duration::MAX), u64::MAX);
    }

    #[test]
    fn send_ids_increase() {
        let first = next_send_id();
        let second = next_send_id();
        assert!(second > first);
    }
}
