//! Who may connect as which client id, from where, and send to whom.
//!
//! The credentials file (settings key `auth.credentials_file`) is TOML, one table per client id:
//!
//! ```toml
//! [clients.alice]
//! hash = "$argon2id$v=19$m=19456,t=2,p=1$..."   # argon2id hash of alice's token
//! networks = ["10.0.0.0/8", "2001:db8::/32"]     # optional: where alice may connect from
//! may_send_to = ["bob", "sensor-*"]              # optional: whom alice may send to (globs)
//! ```
//!
//! `switchboard-broker passwd add|set|remove|list` manages it ([`CredentialsEdit`]), keeping what a
//! person wrote in it. Without a credentials file the broker is
//! open to any client id, which [`Auth::check_listen`] only allows on a loopback address unless
//! `auth.allow_anonymous` says otherwise.
//!
//! Verifying an argon2id hash is deliberately slow (tens of milliseconds), so it runs on the blocking
//! pool, and a successful verification is remembered (as a keyed SHA-256 of the token, never the token)
//! so that a reconnecting client does not pay it again.

mod edit;
mod file;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use argon2::Argon2;
use globset::{Glob, GlobSet, GlobSetBuilder};
use ipnet::IpNet;
use sha2::{Digest, Sha256};

pub use edit::CredentialsEdit;
pub use file::{generate_token, hash_token, ClientEntry, CredentialsFile};

use crate::settings::AuthSettings;

/// Why the credentials file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("cannot write {path}: {cause}")]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path} does not exist (passwd add creates it)")]
    Missing { path: PathBuf },
    #[error("{path} is not a valid credentials file: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot hash the token: {0}")]
    Hash(String),
}

/// A client's rules, checked and compiled.
#[derive(Debug)]
struct Rules {
    hash: String,
    networks: Vec<IpNet>,
    may_send_to: Option<Arc<GlobSet>>,
}

/// What a connection may do once its `Hello` checks out.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    may_send_to: Option<Arc<GlobSet>>,
}

impl Grant {
    /// Whether this client may send to `to`.
    pub fn may_send_to(&self, to: &str) -> bool {
        self.may_send_to.as_ref().is_none_or(|set| set.is_match(to))
    }
}

/// Why a `Hello` was refused. The text goes to the log, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied(pub String);

/// The broker's authentication and authorisation.
#[derive(Debug)]
pub struct Auth {
    clients: Option<HashMap<String, Rules>>,
    /// Keyed fingerprints of tokens that verified, per client id.
    verified: Mutex<HashMap<String, [u8; 32]>>,
    fingerprint_key: [u8; 32],
}

impl Auth {
    /// No credentials: every client id may connect, from anywhere the listener is reachable.
    pub fn open() -> Self {
        Self::with_clients(None)
    }

    /// Loads and compiles the credentials file.
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        if !path.exists() {
            return Err(AuthError::Read {
                path: path.into(),
                cause: std::io::ErrorKind::NotFound.into(),
            });
        }
        Self::from_credentials(path, CredentialsFile::load(path)?)
    }

    /// Compiles `file` (read from `path`, which errors name): every id, hash, network and glob is
    /// checked, so a file that compiles is one the broker starts with.
    pub fn from_credentials(path: &Path, file: CredentialsFile) -> Result<Self, AuthError> {
        let invalid = |reason: String| AuthError::Invalid {
            path: path.into(),
            reason,
        };
        let mut clients = HashMap::new();
        for (id, entry) in file.clients {
            switchboard_proto::ClientId::new(id.clone())
                .map_err(|e| invalid(format!("client `{id}`: {e}")))?;
            PasswordHash::new(&entry.hash)
                .map_err(|e| invalid(format!("client `{id}`: bad hash: {e}")))?;
            let networks = entry
                .networks
                .iter()
                .map(|n| parse_network(n).map_err(|e| invalid(format!("client `{id}`: {e}"))))
                .collect::<Result<Vec<_>, _>>()?;
            let may_send_to = match &entry.may_send_to {
                None => None,
                Some(globs) => {
                    let mut set = GlobSetBuilder::new();
                    for glob in globs {
                        set.add(Glob::new(glob).map_err(|e| {
                            invalid(format!("client `{id}`: may_send_to `{glob}`: {e}"))
                        })?);
                    }
                    Some(Arc::new(set.build().map_err(|e| invalid(e.to_string()))?))
                }
            };
            let rules = Rules {
                hash: entry.hash,
                networks,
                may_send_to,
            };
            clients.insert(id, rules);
        }
        Ok(Self::with_clients(Some(clients)))
    }

    fn with_clients(clients: Option<HashMap<String, Rules>>) -> Self {
        Self {
            clients,
            verified: Mutex::new(HashMap::new()),
            fingerprint_key: rand::random(),
        }
    }

    /// The client ids the credentials name (none when the broker is open), so a reload can tell
    /// which were removed.
    pub fn client_ids(&self) -> impl Iterator<Item = &str> {
        self.clients
            .iter()
            .flat_map(|c| c.keys())
            .map(String::as_str)
    }

    /// Whether credentials are required.
    pub fn is_open(&self) -> bool {
        self.clients.is_none()
    }

    /// Refuses, on a non-loopback address, an open broker unless anonymous access was asked for, and
    /// a broker with credentials but no TLS unless tokens in clear were asked for.
    pub fn check_listen(
        &self,
        listen: SocketAddr,
        settings: &AuthSettings,
        tls: bool,
    ) -> Result<(), String> {
        if listen.ip().is_loopback() {
            return Ok(());
        }
        if self.is_open() && !settings.allow_anonymous {
            return Err(format!(
                "refusing to listen on {listen} without credentials: anyone could read any mailbox. \
                 Set auth.credentials_file, or auth.allow_anonymous = true to accept that"
            ));
        }
        if !self.is_open() && !tls && !settings.allow_cleartext_tokens {
            return Err(format!(
                "refusing to listen on {listen} with credentials but without TLS: every token would \
                 cross the network in clear. Set tls.cert_file and tls.key_file, or \
                 auth.allow_cleartext_tokens = true to accept that"
            ));
        }
        Ok(())
    }

    /// Checks a `Hello`. Blocking (argon2): call it on the blocking pool.
    pub fn check(&self, client: &str, token: Option<&str>, peer: IpAddr) -> Result<Grant, Denied> {
        let Some(clients) = &self.clients else {
            return Ok(Grant::default());
        };
        let Some(rules) = clients.get(client) else {
            return Err(Denied(format!("unknown client id `{client}`")));
        };
        if !rules.networks.is_empty() && !rules.networks.iter().any(|n| n.contains(&peer)) {
            return Err(Denied(format!("`{client}` may not connect from {peer}")));
        }
        let Some(token) = token else {
            return Err(Denied(format!("no token for `{client}`")));
        };
        let fingerprint = self.fingerprint(token);
        let remembered = self
            .verified
            .lock()
            .map(|v| v.get(client) == Some(&fingerprint))
            .unwrap_or(false);
        if !remembered {
            let ok = PasswordHash::new(&rules.hash)
                .map(|hash| {
                    Argon2::default()
                        .verify_password(token.as_bytes(), &hash)
                        .is_ok()
                })
                .unwrap_or(false);
            if !ok {
                return Err(Denied(format!("wrong token for `{client}`")));
            }
            if let Ok(mut verified) = self.verified.lock() {
                verified.insert(client.to_owned(), fingerprint);
            }
        }
        Ok(Grant {
            may_send_to: rules.may_send_to.clone(),
        })
    }

    fn fingerprint(&self, token: &str) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.fingerprint_key);
        hasher.update(token.as_bytes());
        hasher.finalize().into()
    }
}

/// `10.0.0.0/8`, `2001:db8::/32`, or a single address.
fn parse_network(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{text}` is not a network (CIDR) or an address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(entries: &[(&str, ClientEntry)]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("credentials.toml");
        let file = CredentialsFile {
            clients: entries
                .iter()
                .map(|(id, e)| (id.to_string(), e.clone()))
                .collect(),
        };
        file.save(&path).expect("save");
        (dir, path)
    }

    fn entry(token: &str) -> ClientEntry {
        ClientEntry {
            hash: hash_token(token).expect("hash"),
            ..ClientEntry::default()
        }
    }

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 2, 3));

    #[test]
    fn tokens_are_checked_and_remembered_only_when_right() {
        let (_dir, path) = file_with(&[("alice", entry("s3cret"))]);
        let auth = Auth::load(&path).expect("load");
        assert!(auth.check("alice", Some("s3cret"), HOME).is_ok());
        assert!(
            auth.check("alice", Some("s3cret"), HOME).is_ok(),
            "remembered"
        );
        assert!(auth.check("alice", Some("wrong"), HOME).is_err());
        assert!(auth.check("alice", None, HOME).is_err());
        assert!(auth.check("mallory", Some("s3cret"), HOME).is_err());
    }

    #[test]
    fn networks_and_send_rules_apply() {
        let mut alice = entry("a");
        alice.networks = vec!["10.0.0.0/8".into(), "::1".into()];
        alice.may_send_to = Some(vec!["bob".into(), "sensor-*".into()]);
        let (_dir, path) = file_with(&[("alice", alice)]);
        let auth = Auth::load(&path).expect("load");
        let grant = auth.check("alice", Some("a"), HOME).expect("from 10/8");
        assert!(grant.may_send_to("bob") && grant.may_send_to("sensor-7"));
        assert!(!grant.may_send_to("carol"));
        assert!(auth
            .check("alice", Some("a"), "::1".parse().expect("ip"))
            .is_ok());
        let denied = auth.check("alice", Some("a"), "192.0.2.1".parse().expect("ip"));
        assert!(denied.is_err());
    }

    #[test]
    fn a_bad_file_names_the_problem() {
        let mut bad = entry("a");
        bad.networks = vec!["not-a-net".into()];
        let (_dir, path) = file_with(&[("alice", bad)]);
        let err = Auth::load(&path).expect_err("refused").to_string();
        assert!(err.contains("not-a-net"), "{err}");
    }

    #[test]
    fn a_misspelt_rule_refuses_the_file() {
        for (text, key) in [
            (
                "[clients.alice]\nhash = \"x\"\nmay_send_too = [\"bob\"]\n",
                "may_send_too",
            ),
            (
                "[clients.alice]\nhash = \"x\"\nnetwork = [\"10.0.0.0/8\"]\n",
                "network",
            ),
            ("[client.alice]\nhash = \"x\"\n", "client"),
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("credentials.toml");
            std::fs::write(&path, text).expect("write");
            let err = Auth::load(&path).expect_err("refused").to_string();
            assert!(err.contains(key), "{text}: {err}");
            assert!(err.contains("credentials.toml"), "{err}");
        }
    }

    #[test]
    fn an_open_broker_stays_on_loopback_unless_told() {
        let auth = Auth::open();
        let (local, public) = (
            "127.0.0.1:7878".parse().expect("addr"),
            "0.0.0.0:7878".parse().expect("addr"),
        );
        let mut told = AuthSettings::default();
        assert!(auth.check_listen(local, &told, false).is_ok());
        assert!(auth.check_listen(public, &told, true).is_err());
        told.allow_anonymous = true;
        assert!(auth.check_listen(public, &told, false).is_ok());
    }

    #[test]
    fn tokens_cross_a_public_address_only_over_tls_unless_told() {
        let (_dir, path) = file_with(&[("alice", entry("s3cret"))]);
        let auth = Auth::load(&path).expect("load");
        let (local, public) = (
            "127.0.0.1:7878".parse().expect("addr"),
            "0.0.0.0:7878".parse().expect("addr"),
        );
        let mut told = AuthSettings::default();
        assert!(auth.check_listen(local, &told, false).is_ok());
        assert!(auth.check_listen(public, &told, true).is_ok());
        let err = auth
            .check_listen(public, &told, false)
            .expect_err("refused");
        assert!(err.contains("allow_cleartext_tokens"), "{err}");
        told.allow_cleartext_tokens = true;
        assert!(auth.check_listen(public, &told, false).is_ok());
    }
}
