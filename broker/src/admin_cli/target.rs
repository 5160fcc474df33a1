//! Where `switchboard-broker admin` connects and how: `--admin` as `host:port`, `http://host:port`
//! or `https://host:port`, and for https the certificate authorities it trusts (`--ca FILE`, else
//! the system's) and the name it checks the broker's certificate against (the host given).

use std::path::Path;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

/// The admin listener's port when `--admin` names none.
const DEFAULT_PORT: u16 = 7879;

/// Why `--admin` or `--ca` cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TargetError {
    #[error("--admin `{0}`: expected host:port, http://host:port or https://host:port")]
    Address(String),
    #[error("--ca {path}: {cause}")]
    Ca { path: String, cause: String },
    #[error("--ca is for https: give --admin as https://{0}")]
    CaWithoutTls(String),
    #[error("no usable certificate authority in the system store; give one with --ca FILE")]
    NoSystemRoots,
}

/// An admin listener to talk to.
pub(crate) struct Target {
    /// `host:port`, to connect to and to send as `Host`.
    pub authority: String,
    /// Set for https: the connector and the name the certificate must carry.
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Target {
    /// Reads `--admin` (and `--ca`, which needs https).
    pub(crate) fn new(admin: &str, ca: Option<&Path>) -> Result<Target, TargetError> {
        let (tls, rest) = match admin.split_once("://") {
            Some(("https", rest)) => (true, rest),
            Some(("http", rest)) => (false, rest),
            Some(_) => return Err(TargetError::Address(admin.into())),
            None => (false, admin),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, authority) =
            split_host(rest).ok_or_else(|| TargetError::Address(admin.into()))?;
        if !tls {
            if ca.is_some() {
                return Err(TargetError::CaWithoutTls(authority));
            }
            return Ok(Target {
                authority,
                tls: None,
            });
        }
        let name = ServerName::try_from(host.to_owned())
            .map_err(|_| TargetError::Address(admin.into()))?;
        let roots = match ca {
            Some(path) => ca_roots(path)?,
            None => system_roots()?,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TargetError::Ca {
                path: String::new(),
                cause: e.to_string(),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Target {
            authority,
            tls: Some((TlsConnector::from(Arc::new(config)), name)),
        })
    }
}

/// The host (without brackets) and `host:port` of `host[:port]` or `[v6][:port]`.
fn split_host(text: &str) -> Option<(&str, String)> {
    if text.is_empty() || text.contains('/') {
        return None;
    }
    let (host, port) = if let Some(v6) = text.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    let port: u16 = match port {
        Some(port) => port.parse().ok()?,
        None => DEFAULT_PORT,
    };
    if host.is_empty() {
        return None;
    }
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Some((host, authority))
}

fn ca_roots(path: &Path) -> Result<RootCertStore, TargetError> {
    let failed = |cause: String| TargetError::Ca {
        path: path.display().to_string(),
        cause,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| failed(e.to_string()))?;
    if certs.is_empty() {
        return Err(failed("no certificate in it".into()));
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| failed(e.to_string()))?;
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, TargetError> {
    let mut roots = RootCertStore::empty();
    let (added, _) =
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if added == 0 {
        return Err(TargetError::NoSystemRoots);
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_addresses_read_as_operators_write_them() {
        let plain = Target::new("127.0.0.1:7879", None).unwrap();
        assert_eq!(plain.authority, "127.0.0.1:7879");
        assert!(plain.tls.is_none());
        let http = Target::new("http://localhost/", None).unwrap();
        assert_eq!(http.authority, "localhost:7879");
        assert_eq!(split_host("[::1]:80"), Some(("::1", "[::1]:80".into())));
        assert_eq!(split_host("[::1]"), Some(("::1", "[::1]:7879".into())));
        for bad in [
            "",
            "ftp://x:1",
            "https://",
            "x:notaport",
            "http://x:1/api",
            ":80",
        ] {
            assert!(Target::new(bad, None).is_err(), "{bad}");
        }
        assert!(matches!(
            Target::new("127.0.0.1:1", Some(Path::new("ca.pem"))),
            Err(TargetError::CaWithoutTls(_))
        ));
        assert!(matches!(
            Target::new(
                "https://127.0.0.1:1",
                Some(Path::new("/nonexistent/ca.pem"))
            ),
            Err(TargetError::Ca { .. })
        ));
    }
}
