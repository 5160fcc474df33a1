//! `switchboard daemon`: keep a mailbox drained and hand each message to a local program, never
//! losing one and never handing one on twice.
//!
//! ```text
//!            ┌── stay.rs: one reconnecting client ─┐   idle timeout    ┌── poll.rs: connect, ──┐
//!  start.rs  ┤   (heartbeats, backoff, resends)    ├──────────────────▶│   drain, Bye, sleep   │
//!            └──────────────┬──────────────────────┘◀──────────────────┴──────────┬────────────┘
//!                           │               a poll found traffic                  │
//!                           └───────────── each entry: handler.rs ◀───────────────┘
//!                                   journal/ ─ sink.rs / exec.rs ─ journal/ ─ ack
//!  ../outbox/sender.rs: spooled files sent (stay: a task of their own; poll: first thing in each poll)
//! ```
//!
//! What lives on disk, and why: the state directory (`--state-dir`) holds the journal of handled
//! entries (`journal/`) and a lock so that two daemons never share it; the outbox (`--outbox`)
//! holds messages waiting for the broker (`../outbox/`: `send --spool` writes them, the daemon's
//! `SpoolSender` sends them); `--out-dir` and the dead-letter directory hold what the sink produced
//! (`sink.rs`, `exec.rs`). Every file is written atomically (`../files.rs`).
//!
//! The modules, bottom-up: `args.rs` (the flags), `state_dir.rs`, `delivered.rs` (what a sink
//! answers), `exec.rs` and `sink.rs` (the sinks), `journal/`, `handler.rs` (one entry, from arrival
//! to ack), `shared.rs` (the running `Daemon`), `stay.rs` and `poll.rs` (the modes) and `start.rs`
//! (`run`: setting up, then switching between the modes).
//!
//! Stopping (SIGTERM, Ctrl-C) lets the entry in hand finish (a running `--exec` command included),
//! says `Bye`, and exits 0.

pub(crate) mod args;
pub(crate) mod delivered;
pub(crate) mod exec;
pub(crate) mod handler;
pub(crate) mod journal;
pub(crate) mod poll;
pub(crate) mod shared;
pub(crate) mod sink;
pub(crate) mod start;
pub(crate) mod state_dir;
pub(crate) mod stay;
