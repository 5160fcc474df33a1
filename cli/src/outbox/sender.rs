//! The daemon's side of an outbox, the [`SpoolSender`]: client-side store and forward.
//!
//! `send --spool DIR` (`spool.rs`) leaves messages the broker could not take as files in `DIR`
//! (`spooled.rs`). The daemon run with `--outbox DIR` holds the directory's lock for as long as it
//! runs, and sends the
//! files in name order once connected, each with the send id stored in it, removing each
//! only after the broker's `Accepted`. A daemon that dies between the two sends the file again; the
//! broker recognises the id and stores the message once (see "Resending" in `PROTOCOL.md`).
//!
//! One client id per outbox: the daemon sends a file only if its `from` is the daemon's id, since
//! the broker recognises a resend by sender and id. A message the broker refuses for good (an invalid
//! recipient, too large, forbidden) is moved to `DIR/rejected/` with the reason added as `rejected`;
//! one refused for now (a full mailbox, the broker unavailable, rate limited) stops the pass, which is
//! tried again after a backoff, so that later files do not overtake it.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::anyhow;
use switchboard_client::{Client, ClientError, RejectReason};
use tokio_util::sync::CancellationToken;

use crate::files::{
    blocking, ensure_dir, remove_durably, rename_durably, write_atomic, DirLock, Locked,
};
use crate::outbox::spooled::{is_spool_file, Spooled, LOCK_FILE, OWNER_PREFIX};

/// Where refused messages go, inside the outbox.
pub(crate) const REJECTED_DIR: &str = "rejected";

/// How long the daemon waits between attempts to take an outbox lock someone else holds.
const LOCK_RETRY: Duration = Duration::from_millis(200);

/// Why a pass over the outbox stopped before the end.
#[derive(Debug)]
pub(crate) enum FlushError {
    /// The broker refused a message for now; try again after a pause.
    Busy(String),
    /// The client ended (the connection is gone); try again on the next one.
    Lost,
    /// The outbox cannot be read or written.
    Fatal(anyhow::Error),
}

/// The daemon's side of an outbox: it holds the lock and sends the spooled files.
pub(crate) struct SpoolSender {
    dir: PathBuf,
    id: String,
    /// Files from another sender, already reported, so they are reported once.
    foreign: HashSet<String>,
    _lock: DirLock,
}

impl SpoolSender {
    /// Takes the outbox's lock, waiting while a `send --spool` holds it; `None` if stopped first.
    pub(crate) async fn open(
        dir: &Path,
        id: &str,
        stop: &CancellationToken,
    ) -> anyhow::Result<Option<SpoolSender>> {
        ensure_dir(dir, "outbox")?;
        let owner = format!("{OWNER_PREFIX}{id}");
        let mut told = false;
        loop {
            let lock = DirLock::try_exclusive(dir, LOCK_FILE, &owner)
                .map_err(|e| anyhow!("cannot lock the outbox {}: {e}", dir.display()))?;
            match lock {
                Locked::Taken(lock) => {
                    return Ok(Some(SpoolSender {
                        dir: dir.to_path_buf(),
                        id: id.to_owned(),
                        foreign: HashSet::new(),
                        _lock: lock,
                    }))
                }
                Locked::Held(holder) if !told => {
                    told = true;
                    tracing::warn!(outbox = %dir.display(), %holder, "the outbox is locked (by another daemon, or a send in progress); waiting");
                }
                Locked::Held(_) => {}
            }
            tokio::select! {
                () = tokio::time::sleep(LOCK_RETRY) => {}
                () = stop.cancelled() => return Ok(None),
            }
        }
    }

    /// Sends every spooled file, oldest first, removing each once accepted; returns how many were
    /// sent.
    pub(crate) async fn flush(&mut self, client: &Client) -> Result<usize, FlushError> {
        let dir = self.dir.clone();
        let names = blocking(move || list(&dir)).await.map_err(|e| {
            FlushError::Fatal(anyhow!(
                "cannot list the outbox {}: {e}",
                self.dir.display()
            ))
        })?;
        let mut sent = 0;
        for name in names {
            let path = self.dir.join(&name);
            let read = {
                let path = path.clone();
                blocking(move || fs::read(path)).await
            };
            let bytes = match read {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(FlushError::Fatal(anyhow!(
                        "cannot read {}: {e}",
                        path.display()
                    )))
                }
            };
            let message: Spooled = match serde_json::from_slice(&bytes) {
                Ok(message) => message,
                Err(e) => {
                    self.set_aside(&name, None, &format!("not a spooled message: {e}"))
                        .await?;
                    continue;
                }
            };
            if message.from != self.id {
                if self.foreign.insert(name.clone()) {
                    tracing::warn!(file = %path.display(), from = %message.from, "a spooled message from another sender; only a daemon run as that id sends it");
                }
                continue;
            }
            let body = match message.bytes() {
                Ok(body) => body,
                Err(why) => {
                    self.set_aside(&name, Some(message), &why).await?;
                    continue;
                }
            };
            match client
                .send_with_id(&message.to, body, message.send_id, message.options())
                .await
            {
                Ok(accepted) => {
                    tracing::info!(send_id = message.send_id, message_id = accepted.message_id, to = %message.to, "spooled message sent");
                    let path = path.clone();
                    blocking(move || remove_durably(&path)).await.map_err(|e| {
                        FlushError::Fatal(anyhow!("sent, but cannot remove {} (it would be sent again, and stored once): {e}", self.dir.join(&name).display()))
                    })?;
                    sent += 1;
                }
                Err(ClientError::Rejected { reason, text }) if passing(reason) => {
                    return Err(FlushError::Busy(format!("{reason}: {text}")));
                }
                Err(ClientError::Rejected { reason, text }) => {
                    self.set_aside(&name, Some(message), &format!("{reason}: {text}"))
                        .await?;
                }
                Err(e @ ClientError::Codec(_)) => {
                    self.set_aside(&name, Some(message), &e.to_string()).await?;
                }
                Err(ClientError::Closed) => return Err(FlushError::Lost),
                Err(e) => return Err(FlushError::Busy(e.to_string())),
            }
        }
        Ok(sent)
    }

    /// Moves a file the broker will never take to `rejected/`, with the reason.
    async fn set_aside(
        &self,
        name: &str,
        message: Option<Spooled>,
        why: &str,
    ) -> Result<(), FlushError> {
        tracing::error!(file = %self.dir.join(name).display(), reason = why, "moving a spooled message to {REJECTED_DIR}/");
        let (dir, name, why) = (self.dir.clone(), name.to_owned(), why.to_owned());
        blocking(move || {
            let rejected = dir.join(REJECTED_DIR);
            fs::create_dir_all(&rejected)?;
            match message {
                Some(mut message) => {
                    message.rejected = Some(why);
                    let text = serde_json::to_vec_pretty(&message).map_err(io::Error::other)?;
                    write_atomic(&rejected, &name, &text)?;
                    remove_durably(&dir.join(&name))
                }
                None => rename_durably(&dir.join(&name), &rejected.join(&name)),
            }
        })
        .await
        .map_err(|e| {
            FlushError::Fatal(anyhow!(
                "cannot move a refused message out of the outbox: {e}"
            ))
        })
    }
}

/// Refusals that may pass: the pass stops and is tried again later.
fn passing(reason: RejectReason) -> bool {
    matches!(
        reason,
        RejectReason::MailboxFull | RejectReason::Unavailable | RejectReason::RateLimited
    )
}

/// The spooled files in `dir`, in name order.
fn list(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        if let Ok(name) = entry?.file_name().into_string() {
            if is_spool_file(&name) {
                names.push(name);
            }
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::spooled::spool;

    #[tokio::test]
    async fn files_are_listed_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        for send_id in [30, 4, 200] {
            spool(
                dir.path(),
                &Spooled::new("a", "b", send_id, Default::default(), b"x"),
            )
            .await
            .unwrap();
        }
        fs::write(dir.path().join(".lock"), "").unwrap();
        assert_eq!(
            list(dir.path()).unwrap(),
            [
                "00000000000000000004.json",
                "00000000000000000030.json",
                "00000000000000000200.json"
            ]
        );
    }
}
