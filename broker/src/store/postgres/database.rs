//! Which database the brokers share and how to reach it: `postgres.url`, and TLS when the url asks
//! for it (`sslmode=require`) or `postgres.ca_file` names the CA to trust. Every connection a broker
//! makes (the store's two, the wake-up listener's, the presence thread's) is made here.
//!
//! The server's certificate is verified against `postgres.ca_file`, or the system's roots without
//! one, and its name against the host connected to: what libpq calls `verify-full`. There is no
//! unverified mode: an encrypted connection to a server nobody checked protects nothing from whoever
//! sits in between. `sslmode=prefer` (the default) with a CA tries TLS and verifies it where the
//! server offers it; without a CA it stays plain, as before.

use std::path::Path;
use std::str::FromStr;

use postgres::config::SslMode;
use postgres::{Client, Config, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::store::StoreError;

/// A database and how to connect to it. Cheap to clone; the url is never printed.
#[derive(Clone)]
pub struct Database {
    url: String,
    tls: Option<MakeRustlsConnect>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Database {
    /// `url` (a libpq connection string or URL), over TLS when it says `sslmode=require` or a CA is
    /// given. Refuses a url it cannot read and a CA file it cannot use, naming the settings key.
    pub fn new(url: &str, ca_file: Option<&Path>) -> Result<Self, StoreError> {
        let config = Config::from_str(url).map_err(|e| {
            // The error never quotes the url, which may hold a password.
            StoreError::Incompatible(format!("postgres.url: cannot read it: {e}"))
        })?;
        let tls = match (config.get_ssl_mode(), ca_file) {
            (SslMode::Disable, Some(_)) => {
                return Err(StoreError::Incompatible(
                    "postgres.ca_file is set but postgres.url says sslmode=disable".into(),
                ))
            }
            (SslMode::Disable, None) | (SslMode::Prefer, None) => None,
            _ => {
                let config = crate::tls::client_config(ca_file, "postgres.ca_file")
                    .map_err(|e| StoreError::Incompatible(e.to_string()))?;
                Some(MakeRustlsConnect::new(config))
            }
        };
        Ok(Self {
            url: url.to_owned(),
            tls,
        })
    }

    /// Whether connections are made over TLS.
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// A new connection (blocking).
    pub fn connect(&self) -> Result<Client, postgres::Error> {
        match &self.tls {
            Some(tls) => Client::connect(&self.url, tls.clone()),
            None => Client::connect(&self.url, NoTls),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_when_the_url_requires_it_or_a_ca_is_given_and_never_unverified() {
        let plain = Database::new("host=127.0.0.1 user=switchboard", None).expect("plain");
        assert!(!plain.tls());
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        let err = Database::new("host=127.0.0.1 sslmode=require", Some(&missing))
            .expect_err("an unreadable CA is refused");
        assert!(err.to_string().contains("postgres.ca_file"), "{err}");
        let err = Database::new("host=127.0.0.1 sslmode=disable", Some(&missing))
            .expect_err("a CA with TLS off is refused");
        assert!(err.to_string().contains("sslmode=disable"), "{err}");
        let err = Database::new("host=127.0.0.1 sslmode=sometimes", None)
            .expect_err("an unknown sslmode is refused");
        assert!(err.to_string().contains("postgres.url"), "{err}");
        assert!(
            !err.to_string().contains("127.0.0.1"),
            "the url is not quoted: {err}"
        );
    }
}
