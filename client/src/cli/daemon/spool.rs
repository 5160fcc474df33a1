//! `switchboard send --spool DIR`, and the file a spooled message is.
//!
//! The command chooses the message's client message id at once, then tries the broker. If the
//! broker cannot be reached (the connection is refused or times out), or the connection ends before
//! the broker answers, the message goes into `DIR` as one file, written atomically, and the command
//! exits 0 saying `spooled to DIR/<file> (<why>)` on stderr (stdout, where a sent message's broker id
//! goes, stays empty). The daemon run as the same client id with `--outbox DIR` sends it later
//! (`outbox.rs`); the stored id makes every attempt the same send, which the broker stores once.
//!
//! While a daemon serves the outbox it holds the directory's lock file (`.lock`, which names its id)
//! and `send --spool` writes the file for it without connecting: a second connection with the
//! daemon's id would take its session over (see "Takeover" in `PROTOCOL.md`). Otherwise the command
//! holds the lock shared while it tries the broker, so a daemon starting meanwhile waits for it.
//!
//! A file is `<id>.json`, the client message id zero-padded to 20 digits (so names sort in the
//! order the ids were chosen), holding `from`, `to`, `id`, optionally `ttl_ms`, and `body` (UTF-8)
//! or `body_b64` (standard base64). A time to live counts from the broker's acceptance, not from the
//! spooling.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::anyhow;
use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use switchboard_client::{ClientError, ClientOptions, SendOptions};

use super::files::{blocking, ensure_dir, write_atomic, DirLock, Locked};
use crate::cli::commands::{connect, print_line, Deadline};

/// The lock file in an outbox directory.
pub const LOCK_FILE: &str = ".lock";

/// What the daemon writes into the lock file: `switchboard daemon <id>`.
pub const OWNER_PREFIX: &str = "switchboard daemon ";

/// One spooled message, as its file holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spooled {
    /// The sender's client id; only a daemon with this id sends it.
    pub from: String,
    /// The recipient.
    pub to: String,
    /// The client message id, chosen when the message was spooled.
    pub id: u64,
    /// The time to live in milliseconds, counted from acceptance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// The body, when it is UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The body in standard base64, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_b64: Option<String>,
    /// Why the broker refused it; only in `rejected/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
}

impl Spooled {
    pub fn new(from: &str, to: &str, id: u64, ttl: Option<Duration>, body: &[u8]) -> Self {
        let (body, body_b64) = match std::str::from_utf8(body) {
            Ok(text) => (Some(text.to_owned()), None),
            Err(_) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(body)),
            ),
        };
        Self {
            from: from.to_owned(),
            to: to.to_owned(),
            id,
            ttl_ms: ttl
                .map(|t| u64::try_from(t.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)),
            body,
            body_b64,
            rejected: None,
        }
    }

    /// The file name: the id, zero-padded.
    pub fn file_name(&self) -> String {
        format!("{:020}.json", self.id)
    }

    /// The body's bytes.
    pub fn bytes(&self) -> Result<Bytes, String> {
        match (&self.body, &self.body_b64) {
            (Some(text), None) => Ok(Bytes::from(text.clone())),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map(Bytes::from)
                .map_err(|e| format!("body_b64 is not base64: {e}")),
            _ => Err("a spooled message needs exactly one of body and body_b64".into()),
        }
    }

    pub fn options(&self) -> SendOptions {
        SendOptions {
            ttl: self.ttl_ms.map(Duration::from_millis),
        }
    }
}

/// Whether `name` is a spooled message's file (and not a temporary file or the lock).
pub fn is_spool_file(name: &str) -> bool {
    name.len() == 25
        && name.ends_with(".json")
        && name.as_bytes()[..20].iter().all(u8::is_ascii_digit)
}

/// Writes `message` into `dir`, atomically; returns its path.
pub async fn spool(dir: &Path, message: &Spooled) -> io::Result<PathBuf> {
    let text = serde_json::to_vec_pretty(message).map_err(io::Error::other)?;
    let (dir, name) = (dir.to_path_buf(), message.file_name());
    blocking(move || write_atomic(&dir, &name, &text)).await
}

/// `switchboard send --spool DIR`: sends now if the broker takes it, spools it otherwise.
pub async fn send_or_spool(
    mut opts: ClientOptions,
    to: &str,
    body: Bytes,
    options: SendOptions,
    dir: &Path,
    timeout: Option<Duration>,
) -> anyhow::Result<()> {
    ensure_dir(dir, "outbox")?;
    let message = Spooled::new(
        &opts.id,
        to,
        switchboard_client::next_send_id(),
        options.ttl,
        &body,
    );
    let lock = DirLock::try_shared(dir, LOCK_FILE)
        .map_err(|e| anyhow!("cannot open the lock of the outbox {}: {e}", dir.display()))?;
    let _lock = match lock {
        Locked::Held(holder) => {
            if let Some(daemon) = holder.strip_prefix(OWNER_PREFIX) {
                if daemon != opts.id {
                    anyhow::bail!(
                        "{} is the outbox of the daemon running as {daemon}; messages from {} need an outbox of their own",
                        dir.display(),
                        opts.id
                    );
                }
            }
            return spooled(dir, &message, "the daemon serving this outbox sends it").await;
        }
        Locked::Taken(lock) => lock,
    };

    let deadline = Deadline::after(timeout);
    if let Some(timeout) = timeout {
        opts.connect_timeout = opts.connect_timeout.min(timeout);
    }
    let (client, _events) = match connect(opts).await {
        Ok(connected) => connected,
        Err(e) => match e.downcast_ref::<ClientError>() {
            Some(client_error) if !client_error.is_retryable() => return Err(e),
            _ => return spooled(dir, &message, &e.to_string()).await,
        },
    };
    let sent = deadline
        .bound(
            "the broker to accept the message",
            client.send_with_id(to, body, message.id, options),
        )
        .await;
    let why = match sent {
        Ok(Ok(sent)) => {
            print_line(&sent.message_id.to_string())?;
            client.close().await?;
            return Ok(());
        }
        Ok(Err(e @ (ClientError::Rejected { .. } | ClientError::Codec(_)))) => return Err(e.into()),
        // Whether the broker stored it is unknown; the same id makes a second send harmless.
        Ok(Err(e)) => e.to_string(),
        Err(timed_out) => timed_out.to_string(),
    };
    client.close().await?;
    spooled(dir, &message, &why).await
}

async fn spooled(dir: &Path, message: &Spooled, why: &str) -> anyhow::Result<()> {
    spool(dir, message).await.map_err(|e| {
        anyhow!(
            "cannot write the message into the outbox {}: {e}",
            dir.display()
        )
    })?;
    eprintln!(
        "spooled to {} ({why})",
        dir.join(message.file_name()).display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spooled_message_keeps_its_body_text_or_binary() {
        let text = Spooled::new(
            "alice",
            "bob",
            17,
            Some(Duration::from_micros(1_500)),
            b"hi",
        );
        assert_eq!(text.file_name(), "00000000000000000017.json");
        assert_eq!(text.ttl_ms, Some(2));
        let json = serde_json::to_string(&text).unwrap();
        assert_eq!(
            json,
            r#"{"from":"alice","to":"bob","id":17,"ttl_ms":2,"body":"hi"}"#
        );
        let binary = Spooled::new("alice", "bob", 18, None, &[0xff, 0x00]);
        let back: Spooled = serde_json::from_str(&serde_json::to_string(&binary).unwrap()).unwrap();
        assert_eq!(back.bytes().unwrap(), Bytes::from_static(&[0xff, 0x00]));
        assert_eq!(back.body_b64.as_deref(), Some("/wA="));
    }

    #[test]
    fn only_padded_ids_are_spool_files() {
        assert!(is_spool_file("00000000000000000017.json"));
        assert!(!is_spool_file(".00000000000000000017.json.tmp"));
        assert!(!is_spool_file(".lock"));
        assert!(!is_spool_file("17.json"));
        assert!(!is_spool_file("rejected"));
    }
}
