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
//! let sent = client.send("bob", "hello").await?; // the broker has it on disk
//! while let Some(event) = events.next().await {
//!     match event {
//!         Event::Message(m) => client.ack(m.message_id).await?,
//!         Event::Receipt(r) => client.ack(r.receipt_id).await?,
//!         Event::Closed(reason) => eprintln!("{reason}"),
//!     }
//! }
//! # let _ = sent;
//! # Ok(())
//! # }
//! ```
//!
//! Delivery is at least once: a message or receipt not acknowledged before the connection ends comes
//! back on the next one. See `PROTOCOL.md` for the conversation this library holds.

mod client;
mod connection;
mod error;
mod event;
mod options;

pub use client::{Client, ReceiptFuture, Sent, Tracked, Welcome};
pub use error::ClientError;
pub use event::{CloseReason, Event, Events, Message, Receipt};
pub use options::ClientOptions;
pub use switchboard_proto::{ErrorCode, ReceiptStatus, RejectReason};
