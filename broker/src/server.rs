//! The broker as a whole: opens the store, starts the actors, accepts connections, shuts down.
//!
//! [`Broker::start`] is a library function that binds the listener and returns at once with the bound
//! address, so tests bind port 0 and run the real broker. Sessions run on worker arbiters (one thread
//! each) so that connection handling uses every core; the Registry and the Router run on the arbiter that
//! called `start`. Shutdown is designed, not bolted on: stop accepting, tell every client, wait for the
//! sessions to close, let the Router commit everything queued, then close the store.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use actix::prelude::*;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::accept;
use crate::admin::{AdminListener, AdminParts, AdminState, Readiness};
use crate::auth::Auth;
use crate::descriptors;
use crate::metrics::Metrics;
use crate::registry::{self, Registry};
use crate::router::{self, Router, RouterConfig};
use crate::session::SessionDeps;
use crate::settings::{Settings, StoreKind};
use crate::store::{
    LogStore, MailboxStore, MemoryStore, SqliteStore, StoreError, StoreHandle, StoreThread,
};
use crate::tls;

/// Requests the store thread may have queued before senders wait.
const STORE_QUEUE_DEPTH: usize = 1_024;

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    // As in `StoreError`, causes are in the message rather than in `source()`.
    #[error("cannot listen on {addr}: {cause}")]
    Bind { addr: String, cause: std::io::Error },
    #[error("cannot open the store: {0}")]
    Store(StoreError),
    #[error("invalid settings: {0}")]
    Settings(String),
}

impl From<StoreError> for BrokerError {
    fn from(error: StoreError) -> Self {
        BrokerError::Store(error)
    }
}

/// Settings that passed every check a start makes before it opens anything.
struct Checked {
    settings: Arc<Settings>,
    auth: Arc<Auth>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Checked {
    fn new(mut settings: Settings) -> Result<Self, BrokerError> {
        settings
            .validate()
            .map_err(|e| BrokerError::Settings(e.to_string()))?;
        settings.limits.max_connections =
            descriptors::connection_limit(settings.limits.max_connections);
        let auth = if settings.auth.credentials_file.as_os_str().is_empty() {
            Auth::open()
        } else {
            Auth::load(&settings.auth.credentials_file)
                .map_err(|e| BrokerError::Settings(format!("auth.credentials_file: {e}")))?
        };
        let listen = settings.listen_addr().map_err(BrokerError::Settings)?;
        let tls = tls::acceptor(&settings.tls).map_err(|e| BrokerError::Settings(e.to_string()))?;
        auth.check_listen(listen, &settings.auth, tls.is_some())
            .map_err(BrokerError::Settings)?;
        Ok(Self {
            settings: Arc::new(settings),
            auth: Arc::new(auth),
            tls,
        })
    }
}

/// A running broker.
pub struct Broker {
    local_addr: SocketAddr,
    registry: Addr<Registry>,
    router: Addr<Router>,
    settings: Arc<Settings>,
    stop_accepting: oneshot::Sender<()>,
    accept_loop: tokio::task::JoinHandle<()>,
    workers: Vec<Arbiter>,
    store_thread: StoreThread,
    readiness: Arc<Readiness>,
    admin: Option<AdminListener>,
}

impl Broker {
    /// Opens the store, binds `settings.listen` and starts serving. Must run inside an actix system.
    /// Everything that can refuse the start is checked before the store is opened (and its data
    /// directory locked).
    pub async fn start(settings: Settings) -> Result<Broker, BrokerError> {
        let checked = Checked::new(settings)?;
        let store = open_store(&checked.settings).await?;
        Self::serve(checked, store).await
    }

    /// Starts serving like [`Broker::start`], with mailboxes in `store` instead of the one
    /// `settings.store` names: an engine of the embedder's own (see [`MailboxStore`]).
    pub async fn start_with_store(
        settings: Settings,
        store: Box<dyn MailboxStore>,
    ) -> Result<Broker, BrokerError> {
        Self::serve(Checked::new(settings)?, store).await
    }

    async fn serve(checked: Checked, store: Box<dyn MailboxStore>) -> Result<Broker, BrokerError> {
        let Checked {
            settings,
            auth,
            tls,
        } = checked;
        let metrics = Arc::new(Metrics::new());
        let (store, store_thread) = StoreHandle::spawn(store, STORE_QUEUE_DEPTH, metrics.clone())?;
        let last_id = store.last_id().await?;
        let usage = store.usage().await?;
        let (mailboxes, entries) = (usage.len(), usage.iter().map(|u| u.entries).sum::<u64>());

        let listener =
            TcpListener::bind(&settings.listen)
                .await
                .map_err(|cause| BrokerError::Bind {
                    addr: settings.listen.clone(),
                    cause,
                })?;
        let local_addr = listener.local_addr().map_err(|cause| BrokerError::Bind {
            addr: settings.listen.clone(),
            cause,
        })?;

        let registry = Registry::default().start();
        let router = Router::new(
            store.clone(),
            RouterConfig::from_settings(&settings),
            last_id,
            usage,
        )
        .with_metrics(metrics.clone())
        .start();
        let workers: Vec<Arbiter> = (0..settings.worker_threads())
            .map(|_| Arbiter::new())
            .collect();
        let connections = Arc::new(AtomicUsize::new(0));
        let readiness = Arc::new(Readiness::default());
        let admin = match settings.admin_addr().map_err(BrokerError::Settings)? {
            None => None,
            Some(_) => {
                let parts = AdminParts {
                    metrics: metrics.clone(),
                    readiness: readiness.clone(),
                    store: store.clone(),
                    router: router.clone(),
                    registry: registry.clone(),
                    connections: connections.clone(),
                };
                let state = AdminState::new(settings.clone(), parts);
                let admin =
                    AdminListener::start(&settings.admin.listen, state).map_err(|cause| {
                        BrokerError::Bind {
                            addr: format!("{} (admin.listen)", settings.admin.listen),
                            cause,
                        }
                    })?;
                Some(admin)
            }
        };
        let deps = SessionDeps {
            registry: registry.clone(),
            router: router.clone(),
            settings: settings.clone(),
            auth,
            connections,
            tls,
            metrics: metrics.clone(),
        };
        let tls_on = deps.tls.is_some();
        let (stop_accepting, stopped) = oneshot::channel();
        let handles = workers.iter().map(Arbiter::handle).collect();
        let accept_loop = actix_rt::spawn(accept::run(
            listener,
            handles,
            deps,
            metrics.clone(),
            stopped,
        ));
        readiness.serving();
        tracing::info!(address = %local_addr, store = ?settings.store, tls = tls_on, last_id, mailboxes, entries, "listening on {local_addr}");
        Ok(Broker {
            local_addr,
            registry,
            router,
            settings,
            stop_accepting,
            accept_loop,
            workers,
            store_thread,
            readiness,
            admin,
        })
    }

    /// The address the listener is bound to (with the real port when `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The admin listener's address, when it is on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(AdminListener::local_addr)
    }

    /// The Registry, to ask who is connected.
    pub fn registry(&self) -> &Addr<Registry> {
        &self.registry
    }

    /// Stops accepting, tells every client `shutting-down`, waits (up to the grace period) for the
    /// sessions to close and for every queued write to be committed, then closes the store.
    pub async fn shutdown(self) {
        self.readiness.stopping();
        let _ = self.stop_accepting.send(());
        let _ = self.accept_loop.await;
        let grace = self.settings.shutdown_grace();
        let told = self.registry.send(registry::KickAll).await.unwrap_or(0);
        tracing::info!(clients = told, "shutting down");
        if tokio::time::timeout(grace, self.registry.send(registry::AwaitEmpty))
            .await
            .is_err()
        {
            tracing::warn!("some sessions did not close within the grace period");
        }
        for worker in &self.workers {
            worker.stop();
        }
        match tokio::time::timeout(grace, self.router.send(router::Drain)).await {
            Ok(_) => tracing::info!("store writes committed"),
            Err(_) => tracing::error!("store writes still pending after the grace period"),
        }
        // The admin listener holds a store handle too: it goes first.
        if let Some(admin) = self.admin {
            admin.stop().await;
        }
        // The Router holds the last store handle; stopping it lets the store thread finish and close.
        let _ = self.router.send(router::Stop).await;
        drop(self.router);
        let store_thread = self.store_thread;
        if tokio::task::spawn_blocking(move || store_thread.join())
            .await
            .is_err()
        {
            tracing::error!("store thread panicked");
        }
        tracing::info!("broker stopped");
    }
}

async fn open_store(settings: &Settings) -> Result<Box<dyn MailboxStore>, StoreError> {
    match settings.store {
        StoreKind::Memory => Ok(Box::new(MemoryStore::new())),
        StoreKind::Sqlite => {
            open_blocking(settings, |dir, durability| {
                Ok(Box::new(SqliteStore::open(dir, durability)?))
            })
            .await
        }
        StoreKind::Log => {
            open_blocking(settings, |dir, durability| {
                Ok(Box::new(LogStore::open(dir, durability)?))
            })
            .await
        }
    }
}

/// Opens a store on disk with `open(data_dir, durability)`, off the actor threads.
async fn open_blocking(
    settings: &Settings,
    open: impl FnOnce(
            &std::path::Path,
            crate::store::Durability,
        ) -> Result<Box<dyn MailboxStore>, StoreError>
        + Send
        + 'static,
) -> Result<Box<dyn MailboxStore>, StoreError> {
    let dir = settings.data_dir.clone();
    let durability = settings.durability;
    tokio::task::spawn_blocking(move || open(&dir, durability))
        .await
        .map_err(|_| StoreError::Stopped)?
}
