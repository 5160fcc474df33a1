//! The handle a program holds: connect, send, acknowledge, close.
//!
//! [`Client::connect`] does the handshake itself, then hands the connection to a task of its own
//! (the `Driver`, `driver/`). Every method after that is a `Command` to that task, so a
//! `Client` is cheap to clone and can be used from many tasks at once.

use std::sync::Arc;

use bytes::Bytes;
use switchboard_proto::{ClientId, Receipts};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use crate::command::{ttl_millis, Command, SendCommand, MAX_UNANSWERED};
use crate::driver::Driver;
use crate::error::ClientError;
use crate::event::{Events, Receipt};
use crate::handshake;
use crate::options::ClientOptions;
use crate::sent::{ReceiptFuture, SendOptions, Sent, Tracked};
use crate::udp::{DatagramStats, UdpShared};
use crate::welcome::Welcome;
use crate::write_buffer::PendingAck;

/// How many commands wait for the driver task.
const COMMANDS_CAPACITY: usize = 256;

/// A connected client. Clones share the connection.
///
/// The client stays up until [`Client::close`] is called, the connection ends (for good, with
/// [`ClientOptions::reconnect`]), or every clone is dropped (which closes it as `close` does). How it
/// ended is the last [`Event`](crate::Event).
#[derive(Debug, Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    /// Places for unanswered sends; see `MAX_UNANSWERED`.
    room: Arc<Semaphore>,
    welcome: watch::Receiver<Welcome>,
    /// The UDP path once bound, on which `send_datagram` sends without the driver, and the counts.
    udp: Arc<UdpShared>,
}

impl Client {
    /// Connects to the broker, says `Hello`, and waits for `Hi`.
    ///
    /// The id is checked before anything goes on the wire. Opening the connection and the handshake
    /// together are bounded by `opts.connect_timeout`. This first connection is never retried, even
    /// with [`ClientOptions::reconnect`]: if it fails, the error says why.
    pub async fn connect(opts: ClientOptions) -> Result<(Client, Events), ClientError> {
        ClientId::new(opts.id.as_str())?;
        let (link, welcome) = handshake::open(&opts).await?;
        tracing::debug!(server = %opts.server, address = %welcome.address, pending = welcome.pending, "connected");

        let (commands, commands_rx) = mpsc::channel(COMMANDS_CAPACITY);
        let (events_tx, events_rx) = mpsc::channel(opts.events_capacity.max(1));
        let (welcome_tx, welcome) = watch::channel(welcome);
        let room = Arc::new(Semaphore::new(MAX_UNANSWERED));
        let udp = Arc::new(UdpShared::default());
        let driver = Driver::new(
            opts,
            commands_rx,
            events_tx,
            welcome_tx,
            Arc::clone(&room),
            Arc::clone(&udp),
        );
        tokio::spawn(driver.run(link));
        let client = Client {
            commands,
            room,
            welcome,
            udp,
        };
        Ok((client, Events::new(events_rx)))
    }

    /// What the broker said in the latest `Hi`: the first connection's, or after a reconnect the new
    /// one's (also reported as [`Event::Reconnected`](crate::Event::Reconnected)).
    pub fn welcome(&self) -> Welcome {
        self.welcome.borrow().clone()
    }

    /// Sends `body` to `to`; resolves once the broker has stored it (or, having handed it to its
    /// recipient early, once the recipient has acknowledged it).
    ///
    /// Sends may be made from many tasks at once; they are pipelined on the one connection. At most
    /// 1024 wait for the broker's answer; more wait for room first. The answer is read in order with
    /// deliveries, so it can wait behind events nobody reads once more than a thousand of them are
    /// waiting (only possible with a broker window that large).
    ///
    /// With [`ClientOptions::reconnect`], a send whose connection is lost before the answer is sent
    /// again on the next connection (same send id, body and ttl) and resolves with the
    /// answer there; a send made while disconnected goes out after those. Without it, such a send
    /// fails with [`ClientError::Closed`], and whether the message was stored is unknown.
    ///
    /// The library chooses the send id ([`next_send_id`](crate::next_send_id)), so it knows
    /// the first transmission is a first attempt and marks it `fresh`: the broker may then hand the
    /// message to an online recipient before it is on disk (the answer still comes only once it is on
    /// disk or acknowledged; see "Early delivery" in `PROTOCOL.md`). A resend after a reconnect is
    /// marked as not fresh, so the broker first checks whether it already has the message.
    pub async fn send(&self, to: &str, body: impl Into<Bytes>) -> Result<Sent, ClientError> {
        self.send_with(to, body, SendOptions::default()).await
    }

    /// Sends like [`Client::send`], with options such as a time to live. Like it, the first
    /// transmission is marked `fresh` and a resend after a reconnect is not.
    pub async fn send_with(
        &self,
        to: &str,
        body: impl Into<Bytes>,
        options: SendOptions,
    ) -> Result<Sent, ClientError> {
        let (accepted, answer) = oneshot::channel();
        self.submit(to, body.into(), options, None, accepted, None)
            .await?;
        answer.await.map_err(|_| ClientError::Closed)?
    }

    /// Sends like [`Client::send_with`], with a send id chosen by the caller instead of the
    /// library.
    ///
    /// This is for resending a message persisted elsewhere, such as a file in an outbox written
    /// before the broker could be reached: the id is chosen once (with [`next_send_id`] or another
    /// scheme) and stored with the message, and every attempt to send it uses that id, so the broker
    /// stores it once however often it is sent (see "Resending" in `PROTOCOL.md`; the broker
    /// remembers ids for `dedupe.window_secs`, a day by default).
    ///
    /// The id must be unique per sender (per client id), across processes and restarts: the broker
    /// answers a second, different message with a remembered id as a resend of the first and stores
    /// nothing. A send whose id is the id of another send of this client still waiting for its answer
    /// fails at once with [`ClientError::DuplicateId`]. With [`ClientOptions::reconnect`], unanswered
    /// sends are sent again in the order they were made, whatever their ids.
    ///
    /// Since any attempt may be a resend, every transmission of such a send says `fresh: false`: the
    /// broker checks whether it already has the message before taking it, and does not deliver it
    /// before it is on disk (see "Early delivery" in `PROTOCOL.md`).
    ///
    /// [`next_send_id`]: crate::next_send_id
    pub async fn send_with_id(
        &self,
        to: &str,
        body: impl Into<Bytes>,
        send_id: u64,
        options: SendOptions,
    ) -> Result<Sent, ClientError> {
        let (accepted, answer) = oneshot::channel();
        self.submit(to, body.into(), options, Some(send_id), accepted, None)
            .await?;
        answer.await.map_err(|_| ClientError::Closed)?
    }

    /// Sends like [`Client::send`], and also returns a future for the message's receipt.
    ///
    /// The receipt of a tracked message is acknowledged by the library and does not appear among the
    /// [`Events`]. As with [`Client::send`], the first transmission is marked `fresh` and a resend
    /// after a reconnect is not.
    pub async fn send_and_track(
        &self,
        to: &str,
        body: impl Into<Bytes>,
    ) -> Result<Tracked, ClientError> {
        self.send_and_track_with(to, body, SendOptions::default())
            .await
    }

    /// Sends like [`Client::send_with`], and also returns a future for the message's receipt, as
    /// [`Client::send_and_track`] does. With a ttl, the receipt may say
    /// [`ReceiptStatus::Expired`](crate::ReceiptStatus::Expired). The first transmission is marked
    /// `fresh` and a resend after a reconnect is not, as for [`Client::send`].
    pub async fn send_and_track_with(
        &self,
        to: &str,
        body: impl Into<Bytes>,
        options: SendOptions,
    ) -> Result<Tracked, ClientError> {
        if options.receipts != Receipts::All {
            return Err(ClientError::ReceiptsNotAsked(options.receipts));
        }
        let (accepted, answer) = oneshot::channel();
        let (receipt, rx) = oneshot::channel();
        self.submit(to, body.into(), options, None, accepted, Some(receipt))
            .await?;
        let sent = answer.await.map_err(|_| ClientError::Closed)??;
        Ok(Tracked {
            sent,
            receipt: ReceiptFuture::new(rx),
        })
    }

    /// Acknowledges a message (by `message_id`) or a receipt (by `receipt_id`) so the broker can
    /// forget it.
    ///
    /// Resolves once the `Ack` has been written to the socket (the broker sends nothing back), so a
    /// program may exit or drop the client right after; fails with [`ClientError::Closed`] if the
    /// client ended before that, in which case the entry will be delivered again.
    ///
    /// With [`ClientOptions::reconnect`], an ack made while disconnected, or not yet written when the
    /// connection was lost, waits and is written on the next connection; it does not fail. The entry
    /// was delivered on the old connection, and the broker redelivers it on the new one: if the `Ack`
    /// reaches the broker after the redelivery it settles the entry, otherwise the broker ignores it
    /// and the entry arrives again as a new event, to be acknowledged again (at least once, as
    /// always).
    pub async fn ack(&self, id: u64) -> Result<(), ClientError> {
        let (written, done) = oneshot::channel();
        self.command(Command::Ack(PendingAck { id, written }))
            .await?;
        done.await.map_err(|_| ClientError::Closed)
    }

    /// Sends a datagram to `to`: fire and forget. It reaches `to` only if `to` is connected now; no
    /// answer, no receipt, no resend, nothing stored (PROTOCOL.md, "Datagrams"). Resolves once the
    /// datagram is queued for the socket; while disconnected it is dropped.
    ///
    /// Over UDP (once the broker answered the bind) the calling task seals and sends it itself; a
    /// full socket buffer drops it ([`DatagramStats::send_dropped`]). Until then it goes on the TCP
    /// connection, through the library's task. Sent over UDP it takes from the task's cooperative
    /// budget (`tokio::task::consume_budget`): a loop sending flat out yields now and then instead
    /// of holding its thread, so this client's reader, and the program's other tasks, still run.
    pub async fn send_datagram(&self, to: &str, body: impl Into<Bytes>) -> Result<(), ClientError> {
        let frame = switchboard_proto::ClientFrame::Datagram {
            to: to.to_owned(),
            body: body.into(),
        };
        if self.udp.send(&frame) {
            tokio::task::consume_budget().await;
            return Ok(());
        }
        self.command(Command::Datagram(frame)).await
    }

    /// What this client's datagrams did so far: sent which way, received, and dropped on this side
    /// and why.
    pub fn datagram_stats(&self) -> DatagramStats {
        self.udp.counters.snapshot()
    }

    /// Says `Bye` after everything queued before it, and closes the connection for every clone.
    ///
    /// Resolves once the broker has closed its side (or a few seconds have passed), so that
    /// acknowledgements sent just before are not lost. Closing a closed client does nothing. While
    /// reconnecting, it ends the client at once; unanswered sends fail with [`ClientError::Closed`].
    pub async fn close(&self) -> Result<(), ClientError> {
        let (closed, done) = oneshot::channel();
        if self.commands.send(Command::Close(closed)).await.is_err() {
            return Ok(());
        }
        // An error here means the connection ended some other way meanwhile: closed all the same.
        let _ = done.await;
        Ok(())
    }

    /// Waits for room among the unanswered sends, then hands the send to the driver.
    async fn submit(
        &self,
        to: &str,
        body: Bytes,
        options: SendOptions,
        send_id: Option<u64>,
        accepted: oneshot::Sender<Result<Sent, ClientError>>,
        receipt: Option<oneshot::Sender<Receipt>>,
    ) -> Result<(), ClientError> {
        let room = Arc::clone(&self.room)
            .acquire_owned()
            .await
            .map_err(|_| ClientError::Closed)?;
        self.command(Command::Send(SendCommand {
            to: to.to_owned(),
            body,
            ttl_ms: options.ttl.map(ttl_millis),
            receipts: options.receipts,
            send_id,
            accepted,
            receipt,
            room,
        }))
        .await
    }

    async fn command(&self, command: Command) -> Result<(), ClientError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| ClientError::Closed)
    }
}
