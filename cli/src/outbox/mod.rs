//! The outbox: a directory of messages waiting for the broker, written when it could not be
//! reached and sent later, exactly once.
//!
//! ```text
//!  send --spool DIR ──▶ spool.rs: send now, or ──▶ DIR/<send id>.json (spooled.rs)
//!                                                       │
//!  daemon --outbox DIR ──▶ sender.rs (SpoolSender): holds DIR/.lock, sends each file with its
//!                          stored send id, removes it once accepted; refused ones go to rejected/
//! ```
//!
//! The stored send id is what makes "exactly once" hold: however often a file is sent (a daemon
//! that dies between the broker's `Accepted` and the removal sends it again), the broker recognises
//! the id and stores the message once (see "Resending" in `PROTOCOL.md`).

pub(crate) mod sender;
pub(crate) mod spool;
pub(crate) mod spooled;
