//! What a sink says about a message it was handed ([`Delivered`], [`SinkError`]), and how the sinks
//! that write files name and describe a message ([`file_stem`], [`Metadata`]). Shared by the sinks
//! (`sink.rs`, `exec.rs`) and the handler that acts on their answer.

use std::path::PathBuf;

use serde::Serialize;
use switchboard_client::Message;

use crate::output::rfc3339_millis;

/// What became of a message the sink took.
#[derive(Debug)]
pub(crate) enum Delivered {
    /// The sink has it.
    Handled,
    /// The sink refused it as often as allowed; it is in the dead-letter directory at this path.
    DeadLettered(PathBuf),
}

/// Why a sink did not take a message; either way it stays unacknowledged.
#[derive(Debug)]
pub(crate) enum SinkError {
    /// The daemon is stopping; the message comes again next time.
    Interrupted,
    /// The sink cannot work at all; the daemon stops.
    Fatal(anyhow::Error),
}

/// What `--out-dir` and the dead-letter directory write beside each body.
#[derive(Debug, Serialize)]
pub(crate) struct Metadata<'a> {
    /// The broker's message id.
    pub message_id: u64,
    /// The sender.
    pub from: &'a str,
    /// The sender's send id; with `from` it names the message across broker crashes (0
    /// from brokers that do not send it).
    pub send_id: u64,
    /// When the broker accepted it, RFC 3339.
    pub sent_at: String,
    /// The size of the body.
    pub bytes: usize,
}

impl<'a> Metadata<'a> {
    pub(crate) fn of(message: &'a Message) -> Self {
        Self {
            message_id: message.message_id,
            from: &message.from,
            send_id: message.send_id,
            sent_at: rfc3339_millis(message.sent_at),
            bytes: message.body.len(),
        }
    }
}

/// A message's file names without extension: the message id, zero-padded so names sort by id.
pub(crate) fn file_stem(message_id: u64) -> String {
    format!("{message_id:020}")
}
