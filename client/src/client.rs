//! The handle a program holds: connect, send, acknowledge, close.
//!
//! [`Client::connect`] does the handshake itself, then hands the socket to a task of its own
//! (`connection.rs`). Every method after that is a message to that task, so a `Client` is cheap to
//! clone and can be used from many tasks at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use switchboard_proto::{BrokerFrame, ClientCodec, ClientFrame, ClientId, PROTOCOL_VERSION};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{Encoder, FramedRead};

use crate::connection::{Command, Connection};
use crate::error::ClientError;
use crate::event::{Events, Receipt};
use crate::options::ClientOptions;

/// How many events wait for the program to read them before the connection stops reading the socket.
/// Events are unacknowledged entries, which the broker's window caps (256 by default), so with such a
/// window this never fills and answers to sends are never held up behind unread deliveries.
const EVENTS_CAPACITY: usize = 1024;

/// How many commands wait for the connection task.
const COMMANDS_CAPACITY: usize = 256;

/// What the broker said in `Hi`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// The agreed keepalive; the client pings when it has sent nothing for half of it.
    pub keepalive: Duration,
    /// This client's address as the broker sees it, `ip:port`.
    pub address: String,
    /// Entries (messages and receipts) waiting in the mailbox at the handshake; they arrive first.
    pub pending: u64,
}

/// A message the broker has stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sent {
    /// The client message id (`Send.id`); receipts carry it.
    pub id: u64,
    /// The broker's id for the message; the recipient sees it.
    pub message_id: u64,
}

/// A message the broker has stored, and the receipt to come.
#[derive(Debug)]
pub struct Tracked {
    /// The ids of the stored message.
    pub sent: Sent,
    /// Resolves when the recipient has acknowledged the message.
    pub receipt: ReceiptFuture,
}

/// The receipt for a tracked message. The library acknowledges it to the broker itself.
///
/// Fails with [`ClientError::Closed`] if the connection ends first; the receipt is then delivered on
/// a later connection as an ordinary [`Event::Receipt`](crate::Event::Receipt).
#[derive(Debug)]
#[must_use = "a receipt future does nothing unless awaited"]
pub struct ReceiptFuture {
    rx: oneshot::Receiver<Receipt>,
}

impl Future for ReceiptFuture {
    type Output = Result<Receipt, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|received| received.map_err(|_| ClientError::Closed))
    }
}

/// A connected client. Clones share the connection.
///
/// The connection stays up until [`Client::close`] is called, the broker ends it, or every clone is
/// dropped (which closes it as `close` does). How it ended is the last [`Event`](crate::Event).
#[derive(Debug, Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    welcome: Arc<Welcome>,
}

impl Client {
    /// Connects to the broker, says `Hello`, and waits for `Hi`.
    ///
    /// The id is checked before anything goes on the wire. Opening the connection and the handshake
    /// together are bounded by `opts.connect_timeout`.
    pub async fn connect(opts: ClientOptions) -> Result<(Client, Events), ClientError> {
        let id = ClientId::new(opts.id.as_str())?;
        let (reader, writer, welcome) =
            tokio::time::timeout(opts.connect_timeout, handshake(&opts, id))
                .await
                .map_err(|_| ClientError::Timeout)??;
        tracing::debug!(server = %opts.server, address = %welcome.address, pending = welcome.pending, "connected");

        let (commands, commands_rx) = mpsc::channel(COMMANDS_CAPACITY);
        let (events_tx, events_rx) = mpsc::channel(EVENTS_CAPACITY);
        let connection = Connection::new(
            reader,
            writer,
            opts.max_frame,
            welcome.keepalive,
            commands_rx,
            events_tx,
        );
        tokio::spawn(connection.run());
        let client = Client {
            commands,
            welcome: Arc::new(welcome),
        };
        Ok((client, Events::new(events_rx)))
    }

    /// What the broker said when this connection opened.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// Sends `body` to `to`; resolves once the broker has stored it.
    ///
    /// Sends may be made from many tasks at once; they are pipelined on the one connection. The
    /// answer is read in order with deliveries, so it can wait behind events nobody reads once more
    /// than a thousand of them are waiting (only possible with a broker window that large).
    pub async fn send(&self, to: &str, body: impl Into<Bytes>) -> Result<Sent, ClientError> {
        let (accepted, answer) = oneshot::channel();
        self.command(Command::Send {
            to: to.to_owned(),
            body: body.into(),
            accepted,
            receipt: None,
        })
        .await?;
        answer.await.map_err(|_| ClientError::Closed)?
    }

    /// Sends like [`Client::send`], and also returns a future for the message's receipt.
    ///
    /// The receipt of a tracked message is acknowledged by the library and does not appear among the
    /// [`Events`].
    pub async fn send_and_track(
        &self,
        to: &str,
        body: impl Into<Bytes>,
    ) -> Result<Tracked, ClientError> {
        let (accepted, answer) = oneshot::channel();
        let (receipt, rx) = oneshot::channel();
        self.command(Command::Send {
            to: to.to_owned(),
            body: body.into(),
            accepted,
            receipt: Some(receipt),
        })
        .await?;
        let sent = answer.await.map_err(|_| ClientError::Closed)??;
        Ok(Tracked {
            sent,
            receipt: ReceiptFuture { rx },
        })
    }

    /// Acknowledges a message (by `message_id`) or a receipt (by `receipt_id`) so the broker can
    /// forget it.
    ///
    /// Resolves once the `Ack` has been written to the socket (the broker sends nothing back), so a
    /// program may exit or drop the client right after; fails with [`ClientError::Closed`] if the
    /// connection ended before that, in which case the entry will be delivered again.
    pub async fn ack(&self, id: u64) -> Result<(), ClientError> {
        let (written, done) = oneshot::channel();
        self.command(Command::Ack { id, written }).await?;
        done.await.map_err(|_| ClientError::Closed)
    }

    /// Says `Bye` after everything queued before it, and closes the connection for every clone.
    ///
    /// Resolves once the broker has closed its side (or a few seconds have passed), so that
    /// acknowledgements sent just before are not lost. Closing a closed connection does nothing.
    pub async fn close(&self) -> Result<(), ClientError> {
        let (closed, done) = oneshot::channel();
        if self.commands.send(Command::Close(closed)).await.is_err() {
            return Ok(());
        }
        // An error here means the connection ended some other way meanwhile: closed all the same.
        let _ = done.await;
        Ok(())
    }

    async fn command(&self, command: Command) -> Result<(), ClientError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| ClientError::Closed)
    }
}

/// Opens the TCP connection, says `Hello` and reads `Hi`.
///
/// The socket is split from the start, and the reader that read `Hi` is the one the connection keeps:
/// frames the broker sent right behind `Hi` may already sit in its buffer.
async fn handshake(
    opts: &ClientOptions,
    id: ClientId,
) -> Result<
    (
        FramedRead<OwnedReadHalf, ClientCodec>,
        OwnedWriteHalf,
        Welcome,
    ),
    ClientError,
> {
    let stream = TcpStream::connect(opts.server.as_str())
        .await
        .map_err(|source| ClientError::Connect {
            addr: opts.server.clone(),
            source,
        })?;
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let (read, mut writer) = stream.into_split();
    let mut reader = FramedRead::new(read, ClientCodec::new(opts.max_frame));

    let hello = ClientFrame::Hello {
        version: PROTOCOL_VERSION,
        client_id: id.into_string(),
        token: opts.token.clone(),
        keepalive_secs: opts.keepalive_secs(),
    };
    let mut bytes = BytesMut::new();
    ClientCodec::new(opts.max_frame).encode(hello, &mut bytes)?;
    writer
        .write_all(&bytes)
        .await
        .map_err(|e| ClientError::Codec(e.into()))?;

    match reader.next().await {
        Some(Ok(BrokerFrame::Hi {
            version,
            keepalive_secs,
            address,
            pending,
        })) => {
            if version != PROTOCOL_VERSION {
                return Err(ClientError::Protocol(format!(
                    "the broker speaks protocol version {version}, this client {PROTOCOL_VERSION}"
                )));
            }
            let welcome = Welcome {
                keepalive: Duration::from_secs(keepalive_secs.into()),
                address,
                pending,
            };
            Ok((reader, writer, welcome))
        }
        Some(Ok(BrokerFrame::Error { code, text })) => Err(ClientError::Refused { code, text }),
        Some(Ok(other)) => Err(ClientError::Protocol(format!(
            "expected hi, got {}",
            frame_kind(&other)
        ))),
        Some(Err(e)) => Err(e.into()),
        None => Err(ClientError::Closed),
    }
}

/// The wire name of a broker frame's kind, for messages.
fn frame_kind(frame: &BrokerFrame) -> &'static str {
    match frame {
        BrokerFrame::Hi { .. } => "hi",
        BrokerFrame::Accepted { .. } => "accepted",
        BrokerFrame::Rejected { .. } => "rejected",
        BrokerFrame::Deliver { .. } => "deliver",
        BrokerFrame::Receipt { .. } => "receipt",
        BrokerFrame::Pong => "pong",
        BrokerFrame::Error { .. } => "error",
    }
}
