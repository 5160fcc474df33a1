//! The broker as a whole: opens the store, starts the actors, accepts connections, shuts down.
//!
//! [`Broker::start`] is a library function that binds the listener and returns at once with the bound
//! address, so tests bind port 0 and run the real broker. Sessions run on worker arbiters (one thread
//! each) so that connection handling uses every core; the Registry and the Router run on the arbiter that
//! called `start`. Shutdown is designed, not bolted on: stop accepting, tell every client, wait for the
//! sessions to close, let the Router commit everything queued, then close the store.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::auth::Auth;
use crate::rate::TokenBucket;
use crate::registry::{self, Registry};
use crate::router::{self, Router, RouterConfig};
use crate::session::{Session, SessionDeps};
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
    fn new(settings: Settings) -> Result<Self, BrokerError> {
        settings
            .validate()
            .map_err(|e| BrokerError::Settings(e.to_string()))?;
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
        let (store, store_thread) = StoreHandle::spawn(store, STORE_QUEUE_DEPTH)?;
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
            store,
            RouterConfig::from_settings(&settings),
            last_id,
            usage,
        )
        .start();
        let workers: Vec<Arbiter> = (0..settings.worker_threads())
            .map(|_| Arbiter::new())
            .collect();
        let deps = SessionDeps {
            registry: registry.clone(),
            router: router.clone(),
            settings: settings.clone(),
            auth,
            connections: Arc::new(AtomicUsize::new(0)),
            tls,
        };
        let tls_on = deps.tls.is_some();
        let (stop_accepting, stopped) = oneshot::channel();
        let handles = workers.iter().map(Arbiter::handle).collect();
        let accept_loop = actix_rt::spawn(accept(listener, handles, deps, stopped));
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
        })
    }

    /// The address the listener is bound to (with the real port when `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The Registry, to ask who is connected.
    pub fn registry(&self) -> &Addr<Registry> {
        &self.registry
    }

    /// Stops accepting, tells every client `shutting-down`, waits (up to the grace period) for the
    /// sessions to close and for every queued write to be committed, then closes the store.
    pub async fn shutdown(self) {
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

/// Accepts connections until told to stop, handing each to the next worker in turn.
async fn accept(
    listener: TcpListener,
    workers: Vec<ArbiterHandle>,
    deps: SessionDeps,
    mut stop: oneshot::Receiver<()>,
) {
    static NEXT_CONN: AtomicU64 = AtomicU64::new(1);
    let mut next_worker = 0usize;
    let mut per_address = ConnectRate::new(deps.settings.limits.max_connects_per_sec_per_ip);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Typically EMFILE: the connection stays in the backlog; back off briefly.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if !per_address.admit(peer.ip()) {
            tracing::debug!(%peer, "too many new connections from this address; dropped");
            continue;
        }
        let open = deps.connections.fetch_add(1, Ordering::Relaxed);
        if open >= deps.settings.limits.max_connections {
            deps.connections.fetch_sub(1, Ordering::Relaxed);
            tracing::warn!(%peer, open, "connection limit reached; refusing");
            actix_rt::spawn(refuse(stream, deps.settings.limits.max_frame_bytes));
            continue;
        }
        let conn_id = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
        if let Err(error) = hand_to_worker(stream, peer, conn_id, &workers, &mut next_worker, &deps)
        {
            deps.connections.fetch_sub(1, Ordering::Relaxed);
            tracing::warn!(%peer, %error, "cannot start session");
        }
    }
}

/// A [`TokenBucket`] per source address for `limits.max_connects_per_sec_per_ip`. Addresses idle for
/// a minute are forgotten, so the table stays small.
struct ConnectRate {
    rate: u64,
    buckets: std::collections::HashMap<std::net::IpAddr, TokenBucket>,
    last_sweep: std::time::Instant,
}

impl ConnectRate {
    fn new(rate: u64) -> Self {
        Self {
            rate,
            buckets: std::collections::HashMap::new(),
            last_sweep: std::time::Instant::now(),
        }
    }

    fn admit(&mut self, ip: std::net::IpAddr) -> bool {
        if self.rate == 0 {
            return true;
        }
        let now = std::time::Instant::now();
        let minute = std::time::Duration::from_secs(60);
        if now.duration_since(self.last_sweep) > minute {
            self.buckets
                .retain(|_, bucket| now.duration_since(bucket.last_used()) < minute);
            self.last_sweep = now;
        }
        let rate = self.rate;
        self.buckets
            .entry(ip)
            .or_insert_with(|| TokenBucket::new(rate, now))
            .take(now)
    }
}

/// Tells a connection over `limits.max_connections` why it is closed, without starting a session.
async fn refuse(mut stream: TcpStream, max_frame: usize) {
    use tokio::io::AsyncWriteExt;
    let frame = switchboard_proto::BrokerFrame::Error {
        code: switchboard_proto::ErrorCode::Overloaded,
        text: "the broker is at its connection limit; try again later".into(),
    };
    if let Ok(bytes) = switchboard_proto::encode_frame(&frame, max_frame) {
        let write = async {
            stream.write_all(&bytes).await?;
            stream.shutdown().await
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), write).await;
    }
}

/// Completes the TLS handshake (within the handshake timeout), then starts the session.
async fn start_tls(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    conn_id: u64,
    deps: SessionDeps,
) {
    let handshake =
        tokio::time::timeout(deps.settings.handshake_timeout(), acceptor.accept(stream));
    match handshake.await {
        Ok(Ok(tls)) => {
            let (read, write) = tokio::io::split(tls);
            Session::start(read, write, peer, conn_id, deps);
        }
        Ok(Err(error)) => {
            deps.connections.fetch_sub(1, Ordering::Relaxed);
            tracing::info!(%peer, %error, "TLS handshake failed");
        }
        Err(_) => {
            deps.connections.fetch_sub(1, Ordering::Relaxed);
            tracing::info!(%peer, "TLS handshake timed out");
        }
    }
}

fn hand_to_worker(
    stream: TcpStream,
    peer: SocketAddr,
    conn_id: u64,
    workers: &[ArbiterHandle],
    next_worker: &mut usize,
    deps: &SessionDeps,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    // A tokio socket belongs to the runtime that registered it; move it as a std socket.
    let stream = stream.into_std()?;
    let deps = deps.clone();
    let worker = &workers[*next_worker % workers.len()];
    *next_worker = next_worker.wrapping_add(1);
    let spawned = worker.spawn_fn(move || match TcpStream::from_std(stream) {
        Ok(stream) => match deps.tls.clone() {
            None => {
                let (read, write) = stream.into_split();
                Session::start(read, write, peer, conn_id, deps);
            }
            Some(acceptor) => {
                actix_rt::spawn(start_tls(acceptor, stream, peer, conn_id, deps));
            }
        },
        Err(error) => {
            deps.connections.fetch_sub(1, Ordering::Relaxed);
            tracing::warn!(%peer, %error, "cannot register connection");
        }
    });
    if spawned {
        Ok(())
    } else {
        Err(std::io::Error::other("worker thread has stopped"))
    }
}
