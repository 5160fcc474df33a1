//! What the broker can be told about its admin listener (`[admin]`, `[admin.tls]`), and which
//! combinations it refuses: a listener off loopback without a token, or without TLS unless the
//! operator says a proxy in front provides it.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::{Settings, TlsSettings};

/// The admin listener (metrics, health, the admin API); off while `listen` is empty.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    /// Address (ip:port) of the HTTP admin listener; empty turns it off. Port 0 picks a free port.
    pub listen: String,
    /// Bearer token with every right (reads, body peeks, actions) that every admin request but
    /// `/healthz` and `/readyz` must carry; required when `listen` is not a loopback address.
    pub token: String,
    /// A second bearer token that may only read counts and metadata: no bodies, no actions. Lets a
    /// dashboard or a monitoring job see the broker without being able to change it.
    pub read_token: String,
    /// Off loopback the listener must serve TLS, unless this is true (a TLS-terminating proxy on
    /// the same host in front of it): otherwise the tokens would cross the network in clear.
    pub allow_plaintext: bool,
    pub tls: AdminTlsSettings,
}

/// TLS on the admin listener; off unless a certificate is given or `use_main` is set.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AdminTlsSettings {
    /// Serve the main listener's `[tls]` certificate and key (without its client CA: the admin
    /// listener's clients prove themselves with a token). The usual case: one name, one certificate.
    pub use_main: bool,
    /// A certificate chain (PEM) of the admin listener's own, when its name differs.
    pub cert_file: PathBuf,
    /// Its private key (PEM).
    pub key_file: PathBuf,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7879".into(),
            token: String::new(),
            read_token: String::new(),
            allow_plaintext: false,
            tls: AdminTlsSettings::default(),
        }
    }
}

impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The tokens are secrets: never printed.
        let set = |t: &str| if t.is_empty() { "" } else { "<set>" };
        f.debug_struct("AdminSettings")
            .field("listen", &self.listen)
            .field("token", &set(&self.token))
            .field("read_token", &set(&self.read_token))
            .field("allow_plaintext", &self.allow_plaintext)
            .field("tls", &self.tls)
            .finish()
    }
}

fn is_set(path: &std::path::Path) -> bool {
    !path.as_os_str().is_empty()
}

impl Settings {
    /// The admin listener's address, `None` when it is off.
    pub fn admin_addr(&self) -> Result<Option<SocketAddr>, String> {
        if self.admin.listen.is_empty() {
            return Ok(None);
        }
        self.admin
            .listen
            .parse()
            .map(Some)
            .map_err(|e| format!("`{}` is not an ip:port address ({e})", self.admin.listen))
    }

    /// The certificate and key the admin listener serves, `None` without TLS there. The settings
    /// key each file came from leads the errors about it (`tls` or `admin.tls`).
    pub fn admin_tls(&self) -> Option<(TlsSettings, &'static str)> {
        let admin = &self.admin.tls;
        if admin.use_main {
            let main = TlsSettings {
                client_ca_file: PathBuf::new(),
                ..self.tls.clone()
            };
            return Some((main, "tls"));
        }
        is_set(&admin.cert_file).then(|| {
            let own = TlsSettings {
                cert_file: admin.cert_file.clone(),
                key_file: admin.key_file.clone(),
                client_ca_file: PathBuf::new(),
            };
            (own, "admin.tls")
        })
    }

    /// Refuses what would leave the admin listener open to more than its operator meant.
    pub(super) fn check_admin(&self) -> Result<(), (&'static str, String)> {
        let addr = self.admin_addr().map_err(|e| ("admin.listen", e))?;
        let admin = &self.admin;
        if !admin.read_token.is_empty() && admin.token.is_empty() {
            return Err((
                "admin.read_token",
                "needs admin.token beside it: without one every request has every right, and a \
                 read-only token would restrict no one"
                    .into(),
            ));
        }
        if !admin.read_token.is_empty() && admin.read_token == admin.token {
            return Err((
                "admin.read_token",
                "must differ from admin.token, or the read-only role could do everything".into(),
            ));
        }
        self.check_admin_tls()?;
        let Some(addr) = addr.filter(|a| !a.ip().is_loopback()) else {
            return Ok(());
        };
        if admin.token.is_empty() {
            return Err((
                "admin.listen",
                format!(
                    "`{addr}` is not a loopback address, so admin.token must be set: anyone who \
                     reaches it could read the broker's state"
                ),
            ));
        }
        if self.admin_tls().is_none() && !admin.allow_plaintext {
            return Err((
                "admin.listen",
                format!(
                    "`{addr}` is not a loopback address, so the admin listener needs TLS \
                     ([admin.tls] use_main = true, or cert_file and key_file): the tokens would \
                     cross the network in clear. Behind a TLS-terminating proxy on this host, set \
                     admin.allow_plaintext = true"
                ),
            ));
        }
        Ok(())
    }

    fn check_admin_tls(&self) -> Result<(), (&'static str, String)> {
        let tls = &self.admin.tls;
        let (cert, key) = (is_set(&tls.cert_file), is_set(&tls.key_file));
        if tls.use_main && (cert || key) {
            return Err((
                "admin.tls.use_main",
                "serves the [tls] certificate: leave admin.tls.cert_file and key_file empty, or \
                 turn use_main off"
                    .into(),
            ));
        }
        if tls.use_main && !is_set(&self.tls.cert_file) {
            return Err((
                "admin.tls.use_main",
                "needs the main listener's certificate: tls.cert_file is empty".into(),
            ));
        }
        if cert && !key {
            return Err((
                "admin.tls.key_file",
                "must be set with admin.tls.cert_file".into(),
            ));
        }
        if key && !cert {
            return Err((
                "admin.tls.cert_file",
                "must be set with admin.tls.key_file".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused_key(s: &Settings) -> String {
        s.validate().unwrap_err().to_string()
    }

    fn on(listen: &str) -> Settings {
        let mut s = Settings::default();
        s.admin.listen = listen.into();
        s.admin.token = "full".into();
        s
    }

    #[test]
    fn off_loopback_the_admin_listener_needs_a_token_and_tls() {
        let mut s = on("0.0.0.0:7879");
        s.admin.token.clear();
        assert!(refused_key(&s).contains("admin.token must be set"));
        let s = on("0.0.0.0:7879");
        let err = refused_key(&s);
        assert!(
            err.contains("`admin.listen`") && err.contains("needs TLS"),
            "{err}"
        );
        let mut plain = on("0.0.0.0:7879");
        plain.admin.allow_plaintext = true;
        plain.validate().unwrap();
        let mut own = on("0.0.0.0:7879");
        own.admin.tls.cert_file = "admin.pem".into();
        own.admin.tls.key_file = "admin.key".into();
        own.validate().unwrap();
        let mut main = on("0.0.0.0:7879");
        main.tls.cert_file = "main.pem".into();
        main.tls.key_file = "main.key".into();
        main.admin.tls.use_main = true;
        main.validate().unwrap();
        on("127.0.0.1:7879").validate().unwrap();
    }

    #[test]
    fn admin_tls_combinations_that_make_no_sense_name_their_key() {
        let mut s = on("127.0.0.1:0");
        s.admin.tls.use_main = true;
        assert!(refused_key(&s).contains("`admin.tls.use_main`"));
        s.tls.cert_file = "main.pem".into();
        s.tls.key_file = "main.key".into();
        s.admin.tls.cert_file = "admin.pem".into();
        assert!(refused_key(&s).contains("`admin.tls.use_main`"));
        s.admin.tls.use_main = false;
        assert!(refused_key(&s).contains("`admin.tls.key_file`"));
        s.admin.tls.cert_file.clear();
        s.admin.tls.key_file = "admin.key".into();
        assert!(refused_key(&s).contains("`admin.tls.cert_file`"));
    }

    #[test]
    fn the_read_token_needs_a_different_full_token() {
        let mut s = Settings::default();
        s.admin.read_token = "read".into();
        assert!(refused_key(&s).contains("`admin.read_token`"));
        s.admin.token = "read".into();
        assert!(refused_key(&s).contains("must differ"));
        s.admin.token = "full".into();
        s.validate().unwrap();
        assert!(
            !format!("{s:?}").contains("full\""),
            "tokens are not printed"
        );
    }

    #[test]
    fn use_main_serves_the_main_certificate_without_its_client_ca() {
        let mut s = Settings::default();
        assert!(s.admin_tls().is_none());
        s.tls.cert_file = "main.pem".into();
        s.tls.key_file = "main.key".into();
        s.tls.client_ca_file = "clients.pem".into();
        s.admin.tls.use_main = true;
        let (files, key) = s.admin_tls().unwrap();
        assert_eq!((files.cert_file, key), ("main.pem".into(), "tls"));
        assert!(files.client_ca_file.as_os_str().is_empty());
    }
}
