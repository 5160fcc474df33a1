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
use crate::cluster::{self, PresenceThread, WakeListener};
use crate::descriptors;
use crate::metrics::Metrics;
use crate::notify::Probe;
use crate::registry::{self, Registry};
use crate::reload::{self, Live, ReloadError, Reloaded};
use crate::router::{self, Router, RouterConfig};
use crate::session::{FrameBudget, SessionDeps};
use crate::settings::{Settings, StoreKind};
use crate::store::postgres::Database;
use crate::store::{
    LogOptions, LogStore, MailboxStore, MemoryStore, PostgresStore, SqliteStore, StoreError,
    StoreHandle, StoreThread,
};
use crate::tls;

mod udp;
use self::udp::{start_datagrams, DatagramPath, UdpListener};

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
    /// As given, before the connection limit was fitted to the descriptors: what a reload compares.
    given: Settings,
    settings: Arc<Settings>,
    auth: Arc<Auth>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// The admin listener's TLS (`[admin.tls]`).
    admin_tls: Option<tokio_rustls::TlsAcceptor>,
    /// `store = "postgres"`: the shared database and how to reach it, made once (its CA file read
    /// and checked) for every connection the broker opens to it.
    database: Option<Database>,
}

impl Checked {
    fn new(mut settings: Settings) -> Result<Self, BrokerError> {
        settings
            .validate()
            .map_err(|e| BrokerError::Settings(e.to_string()))?;
        let given = settings.clone();
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
        let admin_tls = crate::admin::tls_acceptor(&settings)
            .map_err(|e| BrokerError::Settings(e.to_string()))?;
        let database = match settings.store {
            StoreKind::Postgres => Some(
                shared_database(&settings.postgres)
                    .map_err(|e| BrokerError::Settings(e.to_string()))?,
            ),
            _ => None,
        };
        Ok(Self {
            given,
            settings: Arc::new(settings),
            auth: Arc::new(auth),
            tls,
            admin_tls,
            database,
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
    /// The credentials and TLS new connections get; a reload swaps them.
    live: Arc<Live>,
    /// Cluster mode: hears which mailboxes other brokers on the database appended to.
    wake_listener: Option<WakeListener>,
    /// Cluster mode: claims this broker's client ids in the database and renews their leases.
    presence: Option<PresenceThread>,
    /// The UDP datagram listener's thread, when it is on.
    udp: Option<UdpListener>,
}

impl Broker {
    /// Opens the store, binds `settings.listen` and starts serving. Must run inside an actix system.
    /// Everything that can refuse the start is checked before the store is opened (and its data
    /// directory locked).
    pub async fn start(settings: Settings) -> Result<Broker, BrokerError> {
        let checked = Checked::new(settings)?;
        let store = open_store(&checked.settings, checked.database.clone()).await?;
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
            given,
            settings,
            auth,
            tls,
            admin_tls,
            database,
        } = checked;
        let metrics = Arc::new(Metrics::new());
        let (store, store_thread) = StoreHandle::spawn(store, STORE_QUEUE_DEPTH, metrics.clone())?;
        let last_id = store.last_id().await?;
        let usage = store.usage().await?;
        let (mailboxes, entries) = (usage.len(), usage.iter().map(|u| u.entries).sum::<u64>());

        let (listener, local_addr, (datagrams, udp)) = bind_listeners(&settings, &metrics).await?;
        let admin_listener = match settings.admin_addr().map_err(BrokerError::Settings)? {
            None => None,
            Some(_) => Some(
                AdminListener::bind(&settings.admin.listen).map_err(|cause| BrokerError::Bind {
                    addr: format!("{} (admin.listen)", settings.admin.listen),
                    cause,
                })?,
            ),
        };
        let (registry, presence, cluster) = match database {
            Some(database) => {
                let lease = std::time::Duration::from_secs(settings.cluster.lease_secs);
                let (registry, thread, takeovers) = cluster::start_registry(&database, lease)
                    .map_err(|e| BrokerError::Store(StoreError::Thread(e)))?;
                (registry, Some(thread), Some((takeovers, database)))
            }
            None => (Registry::default().start(), None, None),
        };
        let router = Router::new(
            store.clone(),
            RouterConfig::from_settings(&settings),
            last_id,
            usage,
        )
        .with_metrics(metrics.clone())
        .start();
        let wake_listener = match cluster {
            Some((takeovers, database)) => Some(
                WakeListener::spawn(database, router.clone().recipient(), takeovers)
                    .map_err(|e| BrokerError::Store(StoreError::Thread(e)))?,
            ),
            None => None,
        };
        let workers: Vec<Arbiter> = (0..settings.worker_threads())
            .map(|_| Arbiter::new())
            .collect();
        let connections = Arc::new(AtomicUsize::new(0));
        let readiness = Arc::new(Readiness::default());
        let admin_tls_on = admin_tls.is_some();
        let live = Arc::new(Live::new(given, auth.clone(), tls.clone(), admin_tls));
        let admin = match admin_listener {
            None => None,
            Some(listener) => {
                let parts = AdminParts {
                    metrics: metrics.clone(),
                    readiness: readiness.clone(),
                    store: store.clone(),
                    router: router.clone(),
                    registry: registry.clone(),
                    connections: connections.clone(),
                };
                let state = AdminState::new(settings.clone(), parts);
                let admin_tls = admin_tls_on.then(|| live.clone());
                let admin = AdminListener::start(listener, state, admin_tls).map_err(|cause| {
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
            frame_budget: Arc::new(FrameBudget::new(settings.limits.max_partial_frames_bytes)),
            datagrams,
        };
        let tls_on = deps.tls.is_some();
        let (stop_accepting, stopped) = oneshot::channel();
        let handles = workers.iter().map(Arbiter::handle).collect();
        let accept_loop = actix_rt::spawn(accept::run(
            listener,
            handles,
            deps,
            live.clone(),
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
            live,
            wake_listener,
            presence,
            udp,
        })
    }

    /// The UDP datagram listener's address, when it is on.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp.as_ref().map(|(_, addr)| *addr)
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

    /// Reloads the credentials and the TLS files `settings` names (see [`reload`]): new connections
    /// get them, connected clients whose ids are gone are disconnected, and nothing changes if any of
    /// it fails. Other changed settings are only reported, as needing a restart.
    pub async fn reload(&self, settings: Settings) -> Result<Reloaded, ReloadError> {
        reload::apply(&self.live, &self.registry, settings).await
    }

    /// The actors systemd's watchdog asks after ([`crate::notify::start_watchdog`]).
    pub fn probe(&self) -> Probe {
        Probe {
            registry: self.registry.clone(),
            router: self.router.clone(),
        }
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
        if let Some((readers, _)) = &self.udp {
            for reader in readers {
                reader.stop();
            }
        }
        match tokio::time::timeout(grace, self.router.send(router::Drain)).await {
            Ok(_) => tracing::info!("store writes committed"),
            Err(_) => tracing::error!("store writes still pending after the grace period"),
        }
        // The admin listener holds a store handle too: it goes first.
        if let Some(admin) = self.admin {
            admin.stop().await;
        }
        if let Some(listener) = self.wake_listener {
            let _ = tokio::task::spawn_blocking(move || listener.stop()).await;
        }
        // After the sessions' releases, which it commits before it stops.
        if let Some(presence) = self.presence {
            let _ = tokio::task::spawn_blocking(move || presence.stop()).await;
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

/// Opens the store `settings.store` names (`database`: the shared one, for `postgres`).
async fn open_store(
    settings: &Settings,
    database: Option<Database>,
) -> Result<Box<dyn MailboxStore>, StoreError> {
    match settings.store {
        StoreKind::Memory => Ok(Box::new(MemoryStore::new())),
        StoreKind::Sqlite => {
            let accept = settings.accept_store_loss;
            open_blocking(settings, move |dir, durability| {
                Ok(Box::new(SqliteStore::open_with(dir, durability, accept)?))
            })
            .await
        }
        StoreKind::Log => {
            let options = LogOptions {
                accept_loss: settings.accept_store_loss,
                ..LogOptions::default()
            };
            open_blocking(settings, move |dir, durability| {
                Ok(Box::new(LogStore::open_with(dir, durability, options)?))
            })
            .await
        }
        StoreKind::Postgres => {
            let database = match database {
                Some(database) => database,
                None => shared_database(&settings.postgres)?,
            };
            let limits = crate::store::postgres::MailboxLimits {
                entries: settings.mailbox.max_messages,
                bytes: settings.mailbox.max_bytes,
            };
            open_blocking(settings, move |_, durability| {
                let store = PostgresStore::open_on(database, durability)?;
                Ok(Box::new(store.with_mailbox_limits(limits)))
            })
            .await
        }
    }
}

/// How many times the TCP and UDP ports are bound again when the kernel's pick for TCP is taken for
/// UDP.
const PORT_ATTEMPTS: usize = 32;

/// The TCP listener, and the datagram path (on the same port unless `udp.listen` says otherwise).
/// With `listen` on port 0, the kernel picks a TCP port that some other socket (any client's UDP
/// socket, say) may hold for UDP: then both are bound again on a new pick, a few times, rather than
/// refusing the start. A port the settings name that is taken refuses it at once.
async fn bind_listeners(
    settings: &Settings,
    metrics: &Arc<Metrics>,
) -> Result<(TcpListener, SocketAddr, DatagramPath), BrokerError> {
    bind_listeners_with(settings, |tcp| start_datagrams(settings, tcp, metrics)).await
}

/// [`bind_listeners`], the datagram path started by `start_udp` given the TCP listener's address.
async fn bind_listeners_with<T>(
    settings: &Settings,
    mut start_udp: impl FnMut(SocketAddr) -> Result<T, BrokerError>,
) -> Result<(TcpListener, SocketAddr, T), BrokerError> {
    let picked_by_kernel = settings
        .listen
        .parse::<SocketAddr>()
        .is_ok_and(|addr| addr.port() == 0);
    let mut attempt = 1;
    loop {
        let bind_error = |cause| BrokerError::Bind {
            addr: settings.listen.clone(),
            cause,
        };
        let listener = TcpListener::bind(&settings.listen)
            .await
            .map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let follows = settings.udp_addr(local_addr) == Ok(Some(local_addr));
        match start_udp(local_addr) {
            Err(BrokerError::Bind { cause, .. })
                if picked_by_kernel
                    && follows
                    && cause.kind() == std::io::ErrorKind::AddrInUse
                    && attempt < PORT_ATTEMPTS =>
            {
                tracing::debug!(
                    port = local_addr.port(),
                    attempt,
                    "the port picked for tcp is taken for udp; picking another"
                );
                attempt += 1;
            }
            started => return Ok((listener, local_addr, started?)),
        }
    }
}

/// The shared database of `store = "postgres"` (`postgres.url`, `postgres.ca_file`).
fn shared_database(settings: &crate::settings::PostgresSettings) -> Result<Database, StoreError> {
    let ca_file = &settings.ca_file;
    Database::new(
        &settings.url,
        (!ca_file.as_os_str().is_empty()).then_some(ca_file.as_path()),
    )
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

#[cfg(test)]
mod tests;
