//! TLS to the broker, with rustls.

use std::path::Path;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::error::ClientError;

/// How to speak TLS to the broker: which certificate authorities to trust, and optionally a client
/// certificate for brokers that ask for one.
#[derive(Clone)]
pub struct Tls {
    roots: Arc<RootCertStore>,
    identity: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("roots", &self.roots.len())
            .field("client_certificate", &self.identity.is_some())
            .finish()
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ClientError::Tls(format!("cannot read {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ClientError::Tls(format!(
            "no certificate in {}",
            path.display()
        )));
    }
    Ok(certs)
}

impl Tls {
    /// Trusts the operating system's certificate authorities.
    pub fn system_roots() -> Result<Tls, ClientError> {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(ClientError::Tls(
                "no usable certificate authority in the system store; give one with a CA file"
                    .into(),
            ));
        }
        Ok(Tls {
            roots: Arc::new(roots),
            identity: None,
        })
    }

    /// Trusts only the certificate authorities in `ca_file` (PEM).
    pub fn with_ca_file(ca_file: &Path) -> Result<Tls, ClientError> {
        let mut roots = RootCertStore::empty();
        for cert in certificates(ca_file)? {
            roots
                .add(cert)
                .map_err(|e| ClientError::Tls(format!("{}: {e}", ca_file.display())))?;
        }
        Ok(Tls {
            roots: Arc::new(roots),
            identity: None,
        })
    }

    /// Presents the certificate chain in `cert_file` with the key in `key_file` (both PEM).
    pub fn with_client_certificate(
        mut self,
        cert_file: &Path,
        key_file: &Path,
    ) -> Result<Tls, ClientError> {
        let chain = certificates(cert_file)?;
        let key = PrivateKeyDer::from_pem_file(key_file)
            .map_err(|e| ClientError::Tls(format!("cannot read {}: {e}", key_file.display())))?;
        self.identity = Some((chain, Arc::new(key)));
        Ok(self)
    }

    /// Wraps a connected socket, checking the broker's certificate against `server` (the host part
    /// of the address the client was given).
    pub(crate) async fn connect(
        &self,
        server: &str,
        stream: TcpStream,
    ) -> Result<TlsStream<TcpStream>, ClientError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Tls(e.to_string()))?
            .with_root_certificates(self.roots.clone());
        let config = match &self.identity {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| ClientError::Tls(format!("client certificate: {e}")))?,
        };
        let name = ServerName::try_from(host_of(server).to_string())
            .map_err(|e| ClientError::Tls(format!("`{server}` has no usable host name: {e}")))?;
        TlsConnector::from(Arc::new(config))
            .connect(name, stream)
            .await
            .map_err(|source| {
                if answered_in_plain(&source) {
                    return ClientError::Tls(format!(
                        "{server} did not answer in TLS: it looks like a plain listener \
                         (connect without TLS, or check the port)"
                    ));
                }
                ClientError::Connect {
                    addr: server.to_string(),
                    source,
                }
            })
    }
}

/// Whether the TLS handshake failed because the broker's bytes were not TLS records at all (a plain
/// Switchboard frame starts with a length prefix, which TLS reads as an invalid content type).
fn answered_in_plain(error: &std::io::Error) -> bool {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| {
            matches!(
                e,
                rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)
            )
        })
}

/// `host` of `host:port` or `[v6]:port`.
fn host_of(server: &str) -> &str {
    let host = server.rsplit_once(':').map_or(server, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn the_host_is_what_the_certificate_must_name() {
        assert_eq!(host_of("broker.example:7878"), "broker.example");
        assert_eq!(host_of("127.0.0.1:7878"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7878"), "::1");
    }
}
