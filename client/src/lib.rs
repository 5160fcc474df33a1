//! The Switchboard client library, on plain tokio.
//!
//! [`Client::connect`] opens a connection and returns two halves: a [`Client`] to send and
//! acknowledge with (cheap to clone, usable from many tasks), and [`Events`], the stream of what the
//! broker delivers. A task of the library's own owns the socket, answers the keepalive and matches
//! `Accepted`, `Rejected` and receipts to the calls waiting for them.
//!
//! ```no_run
//! use switchboard_client::{Client, ClientOptions, Event};
//!
//! # async fn demo() -> Result<(), switchboard_client::ClientError> {
//! let (client, mut events) = Client::connect(ClientOptions::new("127.0.0.1:7878", "alice")).await?;
//! let sent = client.send("bob", "hello").await?; // on the broker's disk, or already with bob
//! while let Some(event) = events.next().await {
//!     match event {
//!         Event::Message(m) => client.ack(m.message_id).await?,
//!         Event::Receipt(r) => client.ack(r.receipt_id).await?,
//!         Event::Datagram(d) => println!("{}: {:?}", d.from, d.body), // nothing to acknowledge
//!         Event::Disconnected(_) | Event::Reconnected(_) => {} // only with `reconnect` set
//!         Event::Closed(reason) => eprintln!("{reason}"),
//!     }
//! }
//! # let _ = sent;
//! # Ok(())
//! # }
//! ```
//!
//! Delivery is at least once: a message or receipt not acknowledged before the connection ends comes
//! back on the next one. After a crash of the broker, a message can also come again under a new
//! `message_id`; [`Message::send_id`] with [`Message::from`] names it across that. See `PROTOCOL.md`
//! for the conversation this library holds.
//!
//! The library's own sends ([`Client::send`] and the like) go out as first attempts (`fresh`), which
//! lets the broker deliver them before they are on disk; anything sent again is marked as a resend.
//!
//! With [`ClientOptions::reconnect`] set, a lost connection is not the end: the client connects
//! again with backoff and sends again what the broker had not answered (the broker recognises a
//! repeated send id and stores the message once); see [`Reconnect`]. A message kept
//! somewhere before it could be sent (a file in an outbox, a row in a database) can carry its own
//! send id, chosen once with [`next_send_id`], and be sent with [`Client::send_with_id`] as
//! often as needed: the broker stores it once.
//!
//! Inside, the modules build on each other bottom-up, each using only those above it in this list:
//! `welcome.rs` (what `Hi` said), `reconnect.rs` (the backoff), `error.rs` (what can fail, and which
//! failures are worth retrying), `write_buffer.rs` (bytes on their way to a socket), `event.rs`
//! (what the broker tells the program), `tls.rs`, `options.rs`, `sent.rs` (what a send gives back),
//! `udp/` (datagrams over UDP: the shared sender, the reader, the counts), `connection.rs` (one
//! connection's socket, the `Link`), `handshake.rs` (opening one: TCP, TLS,
//! `Hello`, `Hi`), `command.rs` (what a handle asks of the driver), `unanswered.rs` (the sends kept
//! until answered), `driver/` (the task that owns the connections, one per client, across
//! reconnects) and `client.rs` (the handle).

mod client;
mod command;
mod connection;
mod driver;
mod error;
mod event;
mod handshake;
mod options;
mod reconnect;
mod sent;
mod tls;
mod udp;
mod unanswered;
mod welcome;
mod write_buffer;

pub use client::Client;
pub use command::next_send_id;
pub use error::ClientError;
pub use event::{CloseReason, Datagram, Event, Events, Message, Receipt};
pub use options::ClientOptions;
pub use reconnect::Reconnect;
pub use sent::{ReceiptFuture, SendOptions, Sent, Tracked};
pub use switchboard_proto::{ErrorCode, ReceiptStatus, Receipts, RejectReason};
pub use tls::Tls;
pub use udp::DatagramStats;
pub use welcome::Welcome;
