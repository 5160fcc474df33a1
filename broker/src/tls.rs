//! TLS for the listeners, with rustls: the broker's certificate and key, and optionally the CA that
//! client certificates must be signed by. The main listener and the admin listener (`admin/tls.rs`)
//! both build their acceptor here; the connections to PostgreSQL their client configuration
//! ([`client_config`]).

use std::path::Path;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::settings::TlsSettings;

/// Why TLS cannot be set up; the message names the settings key and the file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

/// The certificates in `path`, the file of the settings key `key`.
fn certificates(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            TlsError(format!(
                "{key}: cannot read certificates from {}: {e}",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "{key}: no certificate in {}",
            path.display()
        )));
    }
    Ok(certs)
}

/// The main listener's acceptor for `settings` (`[tls]`), or `None` when TLS is off (no
/// certificate configured).
pub fn acceptor(settings: &TlsSettings) -> Result<Option<TlsAcceptor>, TlsError> {
    acceptor_for(settings, "tls")
}

/// Like [`acceptor`], for files given under the settings section `section` (`tls`, `admin.tls`):
/// each error names the key whose file is wrong, so the operator knows which to fix.
pub fn acceptor_for(
    settings: &TlsSettings,
    section: &str,
) -> Result<Option<TlsAcceptor>, TlsError> {
    if settings.cert_file.as_os_str().is_empty() {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&settings.cert_file, &format!("{section}.cert_file"))?;
    let key = PrivateKeyDer::from_pem_file(&settings.key_file).map_err(|e| {
        TlsError(format!(
            "{section}.key_file: cannot read the private key from {}: {e}",
            settings.key_file.display()
        ))
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?;
    let builder = if settings.client_ca_file.as_os_str().is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        for cert in certificates(
            &settings.client_ca_file,
            &format!("{section}.client_ca_file"),
        )? {
            roots
                .add(cert)
                .map_err(|e| TlsError(format!("{}: {e}", settings.client_ca_file.display())))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| TlsError(e.to_string()))?;
        builder.with_client_cert_verifier(verifier)
    };
    let config = builder.with_single_cert(chain, key).map_err(|e| {
        TlsError(format!(
            "{section}.cert_file and {section}.key_file: the certificate and key do not fit: {e}"
        ))
    })?;
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

/// A client configuration that trusts the CA certificates in `ca_file` (the file of the settings key
/// `key`) or, without one, the system's roots. rustls checks the chain and the server's name (the
/// host connected to) on every connection.
pub fn client_config(ca_file: Option<&Path>, key: &str) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in certificates(path, key)? {
                roots
                    .add(cert)
                    .map_err(|e| TlsError(format!("{key}: {}: {e}", path.display())))?;
            }
        }
        None => {
            let (added, _) =
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            if added == 0 {
                return Err(TlsError(format!(
                    "no system CA certificates to verify the server with; set {key}"
                )));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
