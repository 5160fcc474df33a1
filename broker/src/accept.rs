//! How connections come in: the accept loop, the per-address connection rate, the connection limit,
//! and what a client hears when the broker cannot take it.
//!
//! Every refused connection is told why (`error {code: overloaded}`) rather than left hanging,
//! including when the process has run out of file descriptors: a spare descriptor is kept open, and
//! on `EMFILE`/`ENFILE` it is let go for a moment so that the waiting connection can be accepted,
//! told, and closed (the technique libev's documentation describes for this case), instead of the
//! connection waiting in the backlog until its client gives up.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::metrics::Metrics;
use crate::rate::TokenBucket;
use crate::reload::Live;
use crate::session::{Session, SessionDeps};

/// How long the loop pauses when an accept fails for another reason, so it does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts connections until told to stop, handing each to the next worker in turn. Every
/// connection it does not take is told why. Each connection gets the credentials and TLS in force
/// when it came ([`Live`], which a reload swaps).
pub(crate) async fn run(
    listener: TcpListener,
    workers: Vec<ArbiterHandle>,
    mut deps: SessionDeps,
    live: Arc<Live>,
    metrics: Arc<Metrics>,
    mut stop: oneshot::Receiver<()>,
) {
    static NEXT_CONN: AtomicU64 = AtomicU64::new(1);
    let mut next_worker = 0usize;
    let mut per_address = ConnectRate::new(deps.settings.limits.max_connects_per_sec_per_ip);
    let mut spare = SpareDescriptor::open();
    let refusal = Refusal::new(deps.settings.limits.max_frame_bytes);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) if is_out_of_descriptors(&error) => {
                    refuse_for_lack_of_descriptors(&listener, &mut spare, &refusal).await;
                    continue;
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        metrics.connection();
        if !per_address.admit(peer.ip()) {
            tracing::debug!(%peer, "too many new connections from this address; dropped");
            continue;
        }
        let open = deps.connections.fetch_add(1, Ordering::Relaxed);
        if open >= deps.settings.limits.max_connections {
            deps.connections.fetch_sub(1, Ordering::Relaxed);
            tracing::warn!(%peer, open, "connection limit reached; refusing");
            actix_rt::spawn(refusal.clone().tell(stream));
            continue;
        }
        let conn_id = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
        (deps.auth, deps.tls) = (live.auth(), live.tls());
        if let Err(error) = hand_to_worker(stream, peer, conn_id, &workers, &mut next_worker, &deps)
        {
            deps.connections.fetch_sub(1, Ordering::Relaxed);
            tracing::warn!(%peer, %error, "cannot start session");
        }
    }
}

fn is_out_of_descriptors(error: &std::io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// With no descriptor left, lets the spare one go, accepts the connection waiting in the backlog,
/// tells it `overloaded` and closes it, then takes the spare back. Without a spare (it could not be
/// reopened yet) it backs off, as the connection then cannot be reached at all.
async fn refuse_for_lack_of_descriptors(
    listener: &TcpListener,
    spare: &mut SpareDescriptor,
    refusal: &Refusal,
) {
    if !spare.release() {
        tracing::warn!("out of file descriptors and no spare one; waiting");
        tokio::time::sleep(ACCEPT_BACKOFF).await;
        spare.reopen();
        return;
    }
    // The descriptor just freed goes to the waiting connection (it is ready, so this is immediate).
    if let Ok(Ok((stream, peer))) = tokio::time::timeout(ACCEPT_BACKOFF, listener.accept()).await {
        tracing::warn!(%peer, "out of file descriptors; refusing (raise `ulimit -n` or lower limits.max_connections)");
        refusal.tell_now(stream);
    }
    spare.reopen();
}

/// One descriptor kept open (on `/dev/null`) to be let go when the process has none left.
struct SpareDescriptor(Option<std::fs::File>);

impl SpareDescriptor {
    fn open() -> Self {
        let mut spare = Self(None);
        spare.reopen();
        spare
    }

    /// Closes the spare; false if there was none.
    fn release(&mut self) -> bool {
        self.0.take().is_some()
    }

    fn reopen(&mut self) {
        if self.0.is_none() {
            self.0 = std::fs::File::open("/dev/null").ok();
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

/// What a refused connection hears: `error {code: overloaded}`, encoded once.
#[derive(Clone)]
struct Refusal(bytes::Bytes);

impl Refusal {
    fn new(max_frame: usize) -> Self {
        let frame = switchboard_proto::BrokerFrame::Error {
            code: switchboard_proto::ErrorCode::Overloaded,
            text: "the broker is at its connection limit; try again later".into(),
        };
        // A short error frame always fits the smallest frame limit (1 KiB).
        Self(
            switchboard_proto::encode_frame(&frame, max_frame)
                .unwrap_or_default()
                .freeze(),
        )
    }

    /// Writes the refusal (giving a slow reader a second), then closes the connection.
    async fn tell(self, mut stream: TcpStream) {
        use tokio::io::AsyncWriteExt;
        let write = async {
            stream.write_all(&self.0).await?;
            stream.shutdown().await
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
    }

    /// Writes the refusal into the empty socket buffer without waiting, and closes the connection at
    /// once, since the descriptor it holds is the one the broker is short of. What the client already
    /// sent is read first, so the close is a FIN after the refusal rather than a reset before it.
    fn tell_now(&self, stream: TcpStream) {
        let _ = stream.try_write(&self.0);
        let mut discard = [0u8; 1024];
        while matches!(stream.try_read(&mut discard), Ok(n) if n > 0) {}
        if let Ok(stream) = stream.into_std() {
            let _ = stream.shutdown(std::net::Shutdown::Write);
        }
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
