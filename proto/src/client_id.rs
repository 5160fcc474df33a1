//! Client ids: the names clients are known by and mail is addressed to.
//!
//! An id is 1 to 128 bytes of printable UTF-8 with no white space. The limit keeps ids cheap to store
//! and index, and forbidding spaces and control characters keeps them safe to print in logs and JSON
//! lines and to use in shell scripts without quoting surprises.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest id accepted, in bytes of UTF-8.
pub const MAX_CLIENT_ID_LEN: usize = 128;

/// Why a string is not a valid client id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidClientId {
    #[error("client id is empty")]
    Empty,
    #[error("client id is {0} bytes long; the limit is {MAX_CLIENT_ID_LEN}")]
    TooLong(usize),
    #[error("client id contains a space or a non-printable character at byte {0}")]
    BadCharacter(usize),
}

/// A validated client id. Constructing one is the only way to get past the check.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ClientId(String);

impl ClientId {
    /// Checks `id` against the rules and wraps it.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidClientId> {
        let id = id.into();
        validate(&id)?;
        Ok(Self(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// Checks `id` against the client id rules without taking ownership.
pub fn validate(id: &str) -> Result<(), InvalidClientId> {
    if id.is_empty() {
        return Err(InvalidClientId::Empty);
    }
    if id.len() > MAX_CLIENT_ID_LEN {
        return Err(InvalidClientId::TooLong(id.len()));
    }
    // Every `send` names its recipient, so the common case, ASCII, is checked a byte at a time.
    let bad = if id.is_ascii() {
        id.bytes().position(|b| !printable_ascii(b))
    } else {
        id.char_indices()
            .find(|(_, c)| c.is_whitespace() || c.is_control())
            .map(|(at, _)| at)
    };
    match bad {
        Some(at) => Err(InvalidClientId::BadCharacter(at)),
        None => Ok(()),
    }
}

/// The ASCII bytes that are neither white space nor control characters: `!` to `~`.
fn printable_ascii(b: u8) -> bool {
    b > b' ' && b != 0x7f
}

impl<'de> Deserialize<'de> for ClientId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ClientId::new(s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for ClientId {
    type Err = InvalidClientId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ClientId::new(s)
    }
}

impl AsRef<str> for ClientId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for ClientId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_printable_ids() {
        for id in ["alice", "bob@host-1", "ünïcödé", "a", &"x".repeat(128)] {
            assert!(ClientId::new(id).is_ok(), "{id}");
        }
    }

    #[test]
    fn refuses_bad_ids() {
        assert_eq!(ClientId::new(""), Err(InvalidClientId::Empty));
        assert_eq!(
            ClientId::new("x".repeat(129)),
            Err(InvalidClientId::TooLong(129))
        );
        assert_eq!(ClientId::new("a b"), Err(InvalidClientId::BadCharacter(1)));
        assert_eq!(
            ClientId::new("a\u{7}"),
            Err(InvalidClientId::BadCharacter(1))
        );
        assert_eq!(
            ClientId::new("tab\there"),
            Err(InvalidClientId::BadCharacter(3))
        );
    }

    #[test]
    fn the_ascii_rule_is_the_unicode_rule_for_ascii() {
        for b in 0..0x80u8 {
            let c = char::from(b);
            assert_eq!(
                printable_ascii(b),
                !(c.is_whitespace() || c.is_control()),
                "{b:#04x}"
            );
        }
    }
}
