//! The Switchboard broker as a library, so tests and embedders run the real thing.
//!
//! Layout, one question per file: [`server`] starts the broker and runs shutdown; `accept` takes
//! connections in (and tells those it cannot take why), `descriptors` fits the connection limit to the
//! process's file descriptors; a `session/` actor
//! speaks the protocol on one connection (its phase, handshake, frames, answer order and clock in one
//! file each, and its socket's reader and writer in `session/connection/`); the [`registry`] knows who
//! is connected; the [`router`] owns delivery and the mailboxes; [`store`] makes them durable behind a
//! trait; `datagram` is the unconfirmed path (datagrams over the session and UDP, never stored);
//! [`settings`] is the one typed configuration; [`auth`] decides who may connect and send where;
//! [`reload`] swaps credentials, TLS and the log level on SIGHUP, and [`notify`] speaks to systemd.
//! `ARCHITECTURE.md` walks through the path of a message.

// The broker logs through `tracing`; nothing in the library writes to stdout or stderr.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod accept;
pub mod admin;
pub mod auth;
pub mod cluster;
mod datagram;
mod descriptors;
pub mod metrics;
pub mod notify;
pub mod rate;
pub mod registry;
pub mod reload;
pub mod router;
pub mod server;
pub(crate) mod session;
pub mod settings;
pub mod store;
pub mod tls;

pub use server::{Broker, BrokerError};
pub use settings::Settings;
