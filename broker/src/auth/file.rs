//! The credentials file as stored: one entry per client id, its token's hash and its rules, and
//! the tokens themselves (hashed for the file, or generated).

use std::collections::BTreeMap;
use std::path::Path;

use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
use argon2::Argon2;
use base64::Engine as _;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};

use super::AuthError;

/// One client's entry in the credentials file. An unknown key (`may_send_too`, `network`) refuses
/// the file: silently dropping a misspelt rule would drop the client's restriction.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientEntry {
    /// argon2id hash of the client's token, in PHC string format.
    pub hash: String,
    /// Networks (CIDR) the client may connect from; empty means anywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
    /// Client ids (globs) the client may send to; absent means anyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub may_send_to: Option<Vec<String>>,
}

/// The credentials file as stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CredentialsFile {
    #[serde(default)]
    pub clients: BTreeMap<String, ClientEntry>,
}

impl CredentialsFile {
    /// Reads `path`; a missing file is an empty one (so `passwd add` can create it).
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(cause) => {
                return Err(AuthError::Read {
                    path: path.into(),
                    cause,
                })
            }
        };
        toml::from_str(&text).map_err(|e| AuthError::Invalid {
            path: path.into(),
            reason: e.to_string(),
        })
    }

    /// Reads `path`, which must exist: a typo in a path is an error, not an empty file.
    pub fn load_existing(path: &Path) -> Result<Self, AuthError> {
        if !path.exists() {
            return Err(AuthError::Missing { path: path.into() });
        }
        Self::load(path)
    }

    /// Writes the file atomically, readable by its owner only. It loses any comments: `passwd` edits
    /// a hand-written file through [`CredentialsEdit`](super::CredentialsEdit) instead.
    pub fn save(&self, path: &Path) -> Result<(), AuthError> {
        let text = toml::to_string_pretty(self).map_err(|e| AuthError::Invalid {
            path: path.into(),
            reason: e.to_string(),
        })?;
        write_atomically(path, &text)
    }
}

/// Writes `text` to `path` through a temporary file (fsync, rename), mode 0600: a crash leaves the
/// old file or the new one, never half of one, and nobody else reads the hashes.
pub(super) fn write_atomically(path: &Path, text: &str) -> Result<(), AuthError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let write_err = |cause| AuthError::Write {
        path: path.into(),
        cause,
    };
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(write_err)?;
    file.write_all(text.as_bytes()).map_err(write_err)?;
    file.sync_all().map_err(write_err)?;
    std::fs::rename(&tmp, path).map_err(write_err)
}

/// Hashes `token` with argon2id and a fresh salt, for the credentials file.
pub fn hash_token(token: &str) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(token.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Bytes of randomness in a generated token: 256 bits, beyond guessing whatever the hash costs.
const GENERATED_TOKEN_BYTES: usize = 32;

/// A fresh random token (URL-safe base64, no padding), for `passwd add --generate-token`.
pub fn generate_token() -> String {
    let mut bytes = [0u8; GENERATED_TOKEN_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
