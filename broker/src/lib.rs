//! The Switchboard broker as a library, so tests and embedders run the real thing.
//!
//! Layout, one question per file: [`server`] accepts connections and runs shutdown; a [`session`] actor
//! speaks the protocol on one connection and writes through its [`outbox`]; the [`registry`] knows who is connected; the [`router`] owns
//! delivery and the mailboxes; [`store`] makes them durable behind a trait; [`settings`] is the one
//! typed configuration; [`auth`] decides who may connect and send where. `ARCHITECTURE.md` walks through the path of a message.

pub mod auth;
pub mod outbox;
pub mod rate;
pub mod registry;
pub mod router;
pub mod server;
pub mod session;
pub mod settings;
pub mod store;
pub mod tls;

pub use server::{Broker, BrokerError};
pub use settings::Settings;
