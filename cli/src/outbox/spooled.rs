//! The file a spooled message is, and the outbox directory's lock.
//!
//! A file is `<send id>.json`, the send id zero-padded to 20 digits (so names sort in the order the
//! ids were chosen), holding `from`, `to`, `id` (the send id), optionally `ttl_ms` and `receipts`
//! (`delivered` or `none`; absent is `all`), and `body` (UTF-8) or `body_b64` (standard base64). A time to live counts from the broker's acceptance, not
//! from the spooling. A message the broker refused for good is kept in `rejected/` with the reason
//! added as `rejected`.
//!
//! The lock file (`.lock`) names the daemon serving the outbox while one does; see `spool.rs` and
//! `sender.rs` for who holds it when.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use switchboard_client::{Receipts, SendOptions};

use crate::files::{blocking, write_atomic};

/// The lock file in an outbox directory.
pub(crate) const LOCK_FILE: &str = ".lock";

/// What the daemon writes into the lock file: `switchboard daemon <id>`.
pub(crate) const OWNER_PREFIX: &str = "switchboard daemon ";

/// One spooled message, as its file holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Spooled {
    /// The sender's client id; only a daemon with this id sends it.
    pub from: String,
    /// The recipient.
    pub to: String,
    /// The send id, chosen when the message was spooled (`id` in the file).
    #[serde(rename = "id")]
    pub send_id: u64,
    /// The time to live in milliseconds, counted from acceptance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// Which receipts the sender asked for.
    #[serde(default, skip_serializing_if = "is_all")]
    pub receipts: Receipts,
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
    /// The message `from` sends `to` with `send_id`, as its file will hold it.
    pub(crate) fn new(
        from: &str,
        to: &str,
        send_id: u64,
        options: SendOptions,
        body: &[u8],
    ) -> Self {
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
            send_id,
            ttl_ms: options
                .ttl
                .map(|t| u64::try_from(t.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)),
            receipts: options.receipts,
            body,
            body_b64,
            rejected: None,
        }
    }

    /// The file name: the send id, zero-padded.
    pub(crate) fn file_name(&self) -> String {
        format!("{:020}.json", self.send_id)
    }

    /// The body's bytes.
    pub(crate) fn bytes(&self) -> Result<Bytes, String> {
        match (&self.body, &self.body_b64) {
            (Some(text), None) => Ok(Bytes::from(text.clone())),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map(Bytes::from)
                .map_err(|e| format!("body_b64 is not base64: {e}")),
            _ => Err("a spooled message needs exactly one of body and body_b64".into()),
        }
    }

    /// The options to send it with: its time to live and the receipts asked for.
    pub(crate) fn options(&self) -> SendOptions {
        SendOptions {
            ttl: self.ttl_ms.map(Duration::from_millis),
            receipts: self.receipts,
        }
    }
}

fn is_all(receipts: &Receipts) -> bool {
    *receipts == Receipts::All
}

/// Whether `name` is a spooled message's file (and not a temporary file or the lock).
pub(crate) fn is_spool_file(name: &str) -> bool {
    name.len() == 25
        && name.ends_with(".json")
        && name.as_bytes()[..20].iter().all(u8::is_ascii_digit)
}

/// Writes `message` into `dir`, atomically; returns its path.
pub(crate) async fn spool(dir: &Path, message: &Spooled) -> io::Result<PathBuf> {
    let text = serde_json::to_vec_pretty(message).map_err(io::Error::other)?;
    let (dir, name) = (dir.to_path_buf(), message.file_name());
    blocking(move || write_atomic(&dir, &name, &text)).await
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
            SendOptions {
                ttl: Some(Duration::from_micros(1_500)),
                receipts: Receipts::None,
            },
            b"hi",
        );
        assert_eq!(text.file_name(), "00000000000000000017.json");
        assert_eq!(text.ttl_ms, Some(2));
        let json = serde_json::to_string(&text).unwrap();
        assert_eq!(
            json,
            r#"{"from":"alice","to":"bob","id":17,"ttl_ms":2,"receipts":"none","body":"hi"}"#
        );
        assert_eq!(text.options().receipts, Receipts::None);
        let binary = Spooled::new("alice", "bob", 18, SendOptions::default(), &[0xff, 0x00]);
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
