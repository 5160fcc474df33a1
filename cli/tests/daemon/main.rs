//! `switchboard daemon` against real `switchboard-broker` processes on loopback: broker restarts in
//! both modes, the outbox, each sink, dead letters, and a daemon killed between its sink and its
//! acknowledgement.

mod harness;

mod crash;
mod hangup;
mod poll;
mod sinks;
mod stay;
