//! Where the daemon hands each message: standard output, a directory, or a command.
//!
//! A sink either has the message (then the daemon records it in the journal and acknowledges it) or
//! does not (then nothing is acknowledged and the broker keeps it). What "has it" means:
//!
//! - **stdout** (the default): the JSON line, as `listen` prints it, is written and flushed. A
//!   closed or failing stdout stops the daemon, since nothing could be handed on any more.
//! - **`--out-dir DIR`**: `DIR/<id>.json` (the message id, the sender and its `send_id`, the time,
//!   the size) and then `DIR/<id>.msg` (the body) are written atomically (`files.rs`); `<id>` is the
//!   broker's message id zero-padded to 20 digits, so names sort in arrival order. A `.msg` file that
//!   exists is complete and its `.json` is already there. A failing write (a full disk, say) is tried
//!   again with backoff until it succeeds or the daemon is stopped.
//! - **`--exec CMD`**: see `exec.rs`; a message the command keeps refusing ends in the dead-letter
//!   directory, which counts as handled.
//!
//! Receipts (for messages this id sent, from its outbox say) are printed by the stdout sink like
//! messages; the other sinks log them and let them be acknowledged.
//!
//! Datagrams are handed over once, never retried: stdout prints their line, `--out-dir` writes it to
//! `DIR/datagram-<nanoseconds since the epoch>-<n>.json`, `--exec` logs and drops them (a command per
//! datagram would fork at the sender's rate).

use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use switchboard_client::{Datagram, Message, Receipt, Reconnect};
use tokio_util::sync::CancellationToken;

use crate::daemon::delivered::{file_stem, Delivered, Metadata, SinkError};
use crate::daemon::exec::Exec;
use crate::files::{blocking, write_atomic};
use crate::output::{datagram_line, message_line, receipt_line};
use crate::stdio::print_line;

/// One daemon's sink.
pub(crate) enum Sink {
    /// JSON lines on standard output.
    Stdout,
    /// A file per message in a directory.
    OutDir {
        /// Where the files go.
        dir: PathBuf,
        /// How long to wait before writing again after a failure.
        backoff: Reconnect,
    },
    /// A command per message.
    Exec(Exec),
}

impl Sink {
    /// Hands `message` to the sink.
    pub(crate) async fn message(
        &self,
        message: &Message,
        stop: &CancellationToken,
    ) -> Result<Delivered, SinkError> {
        match self {
            Sink::Stdout => {
                let line = message_line(message).map_err(|e| SinkError::Fatal(e.into()))?;
                print_line(&line).map_err(SinkError::Fatal)?;
                Ok(Delivered::Handled)
            }
            Sink::OutDir { dir, backoff } => {
                write_out(dir, message, *backoff, stop).await?;
                Ok(Delivered::Handled)
            }
            Sink::Exec(exec) => exec.deliver(message, stop).await,
        }
    }

    /// Hands a receipt to the sink; only stdout shows it.
    pub(crate) async fn receipt(&self, receipt: &Receipt) -> Result<(), SinkError> {
        match self {
            Sink::Stdout => {
                let line = receipt_line(receipt).map_err(|e| SinkError::Fatal(e.into()))?;
                print_line(&line).map_err(SinkError::Fatal)
            }
            Sink::OutDir { .. } | Sink::Exec(_) => {
                tracing::info!(
                    send_id = receipt.send_id,
                    message_id = receipt.message_id,
                    to = %receipt.to,
                    status = %receipt.status,
                    "receipt"
                );
                Ok(())
            }
        }
    }
}

impl Sink {
    /// Hands a datagram to the sink, once.
    pub(crate) async fn datagram(&self, datagram: &Datagram) -> Result<(), SinkError> {
        let line = datagram_line(datagram).map_err(|e| SinkError::Fatal(e.into()))?;
        match self {
            Sink::Stdout => print_line(&line).map_err(SinkError::Fatal),
            Sink::OutDir { dir, .. } => {
                static WRITTEN: AtomicU64 = AtomicU64::new(0);
                let nanos = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                let n = WRITTEN.fetch_add(1, Ordering::Relaxed);
                let name = format!("datagram-{nanos:020}-{n}.json");
                let dir = dir.clone();
                // Once: a datagram that cannot be written now is worth nothing later.
                if let Err(error) =
                    blocking(move || write_atomic(&dir, &name, line.as_bytes())).await
                {
                    tracing::warn!(%error, "cannot write a datagram; dropped");
                }
                Ok(())
            }
            Sink::Exec(_) => {
                tracing::debug!(from = %datagram.from, "datagram dropped: --exec takes messages only");
                Ok(())
            }
        }
    }
}

/// Writes the message's two files, trying again with backoff while the directory refuses them.
async fn write_out(
    dir: &Path,
    message: &Message,
    backoff: Reconnect,
    stop: &CancellationToken,
) -> Result<(), SinkError> {
    let stem = file_stem(message.message_id);
    let metadata = serde_json::to_vec_pretty(&Metadata::of(message))
        .map_err(|e| SinkError::Fatal(e.into()))?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (dir, stem, metadata, body) = (
            dir.to_path_buf(),
            stem.clone(),
            metadata.clone(),
            message.body.clone(),
        );
        let written = blocking(move || {
            write_atomic(&dir, &format!("{stem}.json"), &metadata)?;
            write_atomic(&dir, &format!("{stem}.msg"), &body)
        })
        .await;
        let error = match written {
            Ok(path) => {
                tracing::debug!(path = %path.display(), "message written");
                return Ok(());
            }
            Err(e) => e,
        };
        let delay = backoff.delay(attempt);
        tracing::warn!(message_id = message.message_id, attempt, ?delay, %error, "cannot write the message to the out directory; trying again");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => return Err(SinkError::Interrupted),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use bytes::Bytes;

    use super::*;

    #[tokio::test]
    async fn out_dir_writes_the_body_and_its_metadata_under_the_padded_id() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Sink::OutDir {
            dir: dir.path().to_path_buf(),
            backoff: Reconnect::default(),
        };
        let message = Message {
            message_id: 42,
            from: "alice".into(),
            send_id: 7,
            sent_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            body: Bytes::from_static(b"\xffbinary"),
        };
        let stop = CancellationToken::new();
        assert!(matches!(
            sink.message(&message, &stop).await,
            Ok(Delivered::Handled)
        ));
        let body = std::fs::read(dir.path().join("00000000000000000042.msg")).unwrap();
        assert_eq!(body, b"\xffbinary");
        let meta: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join("00000000000000000042.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(meta["from"], "alice");
        assert_eq!(meta["message_id"], 42);
        assert_eq!(meta["send_id"], 7);
        assert_eq!(meta["sent_at"], "2023-11-14T22:13:20.123Z");
        assert_eq!(meta["bytes"], 7);
    }
}
