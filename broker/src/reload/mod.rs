//! What a SIGHUP changes in a running broker, and what it leaves for a restart.
//!
//! Three things are reloaded without dropping a connection: the credentials file, the TLS certificate
//! and key (with the client CA; the admin listener's too, `[admin.tls]`), and the log level. The new credentials and TLS files are read and
//! checked completely before anything is swapped, so a reload that fails anywhere changes nothing and
//! the broker goes on with what it had. What is swapped is [`Live`]: the accept loop takes the
//! current credentials and TLS acceptor from it for every new connection, while a session keeps the
//! grant it was admitted with until it reconnects. A client id the new credentials no longer name is
//! disconnected with `unauthorized`. Every other setting is fixed at start-up: a changed one is named
//! in the log as needing a restart ([`restart`]), and the running value stays.

pub mod logging;
mod restart;
pub mod signals;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use actix::Addr;
use switchboard_proto::ClientId;
use tokio_rustls::TlsAcceptor;

use crate::auth::{Auth, AuthError};
use crate::registry::{Registry, Revoke};
use crate::settings::Settings;
use crate::tls::{self, TlsError};

pub use restart::needs_restart;

/// Why a reload was refused; the broker keeps the configuration it had.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("cannot load the settings: {0}")]
    Settings(String),
    #[error("auth.credentials_file: {0}")]
    Credentials(#[from] AuthError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("the thread reading the credentials failed")]
    Interrupted,
    #[error("invalid setting `log.level`: `{level}`: {reason}")]
    LogLevel { level: String, reason: String },
}

/// The part of the configuration a reload swaps, read by the accept loop for each new connection.
///
/// A std `RwLock` around an `Arc`: read once per connection and written once per reload, it is never
/// held across an await.
pub(crate) struct Live {
    /// The settings the broker started with, as given: a reload compares the new ones with these.
    given: Settings,
    auth: RwLock<Arc<Auth>>,
    tls: RwLock<Option<TlsAcceptor>>,
    /// The admin listener's TLS (`admin/tls.rs` takes it for every new admin connection).
    admin_tls: RwLock<Option<TlsAcceptor>>,
}

impl Live {
    pub(crate) fn new(
        given: Settings,
        auth: Arc<Auth>,
        tls: Option<TlsAcceptor>,
        admin_tls: Option<TlsAcceptor>,
    ) -> Self {
        Self {
            given,
            auth: RwLock::new(auth),
            tls: RwLock::new(tls),
            admin_tls: RwLock::new(admin_tls),
        }
    }

    /// The credentials a new connection is checked against.
    pub(crate) fn auth(&self) -> Arc<Auth> {
        self.auth.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The TLS a new connection is served, if TLS is on.
    pub(crate) fn tls(&self) -> Option<TlsAcceptor> {
        self.tls.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The TLS a new admin connection is served, if TLS is on there.
    pub(crate) fn admin_tls(&self) -> Option<TlsAcceptor> {
        self.admin_tls
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_admin_tls(&self, tls: TlsAcceptor) {
        *self.admin_tls.write().unwrap_or_else(|e| e.into_inner()) = Some(tls);
    }

    fn set_auth(&self, auth: Arc<Auth>) {
        *self.auth.write().unwrap_or_else(|e| e.into_inner()) = auth;
    }

    fn set_tls(&self, tls: TlsAcceptor) {
        *self.tls.write().unwrap_or_else(|e| e.into_inner()) = Some(tls);
    }
}

/// What a reload did, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Client ids the credentials file gained, and those it lost.
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Connected clients disconnected because their id was removed.
    pub disconnected: usize,
    /// Whether a new certificate and key were loaded (TLS on).
    pub tls: bool,
    /// Whether the admin listener's certificate and key were loaded (TLS on there).
    pub admin_tls: bool,
    /// Settings that changed but only take effect at the next start.
    pub needs_restart: Vec<&'static str>,
}

/// Loads what `new` names (credentials, TLS files) into `live` if all of it checks out, then
/// disconnects the clients whose ids are gone.
pub(crate) async fn apply(
    live: &Live,
    registry: &Addr<Registry>,
    new: Settings,
) -> Result<Reloaded, ReloadError> {
    new.validate()
        .map_err(|e| ReloadError::Settings(e.to_string()))?;
    let running = &live.given;
    let mut reloaded = Reloaded {
        needs_restart: needs_restart(running, &new),
        ..Reloaded::default()
    };
    // Credentials and TLS stay on or off as they started (turning either is in `needs_restart`).
    let auth = if both_set(&running.auth.credentials_file, &new.auth.credentials_file) {
        Some(Arc::new(
            load_auth(new.auth.credentials_file.clone()).await?,
        ))
    } else {
        None
    };
    let tls = if both_set(&running.tls.cert_file, &new.tls.cert_file) {
        tls::acceptor(&new.tls)?
    } else {
        None
    };
    let admin_tls = if running.admin_tls().is_some() && new.admin_tls().is_some() {
        crate::admin::tls_acceptor(&new)?
    } else {
        None
    };
    if let Some(auth) = auth {
        let old = live.auth();
        reloaded.added = missing_from(&auth, &old);
        reloaded.removed = missing_from(&old, &auth);
        live.set_auth(auth);
        reloaded.disconnected = revoke(registry, &reloaded.removed).await;
    }
    if let Some(tls) = tls {
        live.set_tls(tls);
        reloaded.tls = true;
    }
    if let Some(tls) = admin_tls {
        live.set_admin_tls(tls);
        reloaded.admin_tls = true;
    }
    Ok(reloaded)
}

/// Whether a file setting is set both in the running configuration and in the new one.
fn both_set(running: &Path, new: &Path) -> bool {
    !running.as_os_str().is_empty() && !new.as_os_str().is_empty()
}

/// Reads and compiles the credentials file on the blocking pool (it may be large).
async fn load_auth(path: PathBuf) -> Result<Auth, ReloadError> {
    match tokio::task::spawn_blocking(move || Auth::load(&path)).await {
        Ok(loaded) => Ok(loaded?),
        Err(_) => Err(ReloadError::Interrupted),
    }
}

/// The client ids `a` names and `b` does not, sorted.
fn missing_from(a: &Auth, b: &Auth) -> Vec<String> {
    let known: std::collections::HashSet<&str> = b.client_ids().collect();
    let mut ids: Vec<String> = a
        .client_ids()
        .filter(|id| !known.contains(id))
        .map(str::to_string)
        .collect();
    ids.sort();
    ids
}

/// Disconnects the connected clients among `removed`; answers how many were.
async fn revoke(registry: &Addr<Registry>, removed: &[String]) -> usize {
    let clients: Vec<ClientId> = removed
        .iter()
        .filter_map(|id| ClientId::new(id.as_str()).ok())
        .collect();
    if clients.is_empty() {
        return 0;
    }
    registry.send(Revoke(clients)).await.unwrap_or(0)
}
