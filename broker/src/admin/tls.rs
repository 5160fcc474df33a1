//! TLS on the admin listener: which certificate it serves (`[admin.tls]`, built by `crate::tls`
//! like the main listener's), and the accept loop that does each handshake off the accept path.
//!
//! The acceptor is taken from [`Live`] for every new connection, so a SIGHUP that reloads the
//! certificate (`crate::reload`) reaches the next connection while an open one keeps the session it
//! negotiated. A handshake runs in a task of its own, bounded in time and in number, so a client
//! that opens a connection and says nothing delays no one else.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::reload::Live;
use crate::settings::Settings;
use crate::tls::{self, TlsError};

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);
/// Handshakes under way at once; the accept loop waits for a place past it.
const HANDSHAKES: usize = 64;

/// The admin listener's acceptor for `settings`, `None` without TLS there. An error names the
/// settings key whose file is missing or bad (`admin.tls.cert_file`, or `tls.cert_file` with
/// `use_main`).
pub(crate) fn acceptor(settings: &Settings) -> Result<Option<TlsAcceptor>, TlsError> {
    match settings.admin_tls() {
        None => Ok(None),
        Some((files, section)) => tls::acceptor_for(&files, section),
    }
}

/// Who is on the other end of an admin connection, for the actions' log.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub SocketAddr);

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// A listener whose connections have finished their TLS handshake, for `axum::serve`.
pub(crate) struct TlsListener {
    handshaken: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `tcp` (on the current runtime), each connection served the acceptor
    /// `live` holds when it arrives.
    pub(crate) fn new(tcp: TcpListener, live: Arc<Live>) -> std::io::Result<Self> {
        let addr = tcp.local_addr()?;
        let (done, handshaken) = mpsc::channel(HANDSHAKES);
        tokio::spawn(accept(tcp, live, done));
        Ok(Self { handshaken, addr })
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.handshaken.recv().await {
            Some(connection) => connection,
            // The accept loop ended (the listener is stopping): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

/// Accepts TCP connections and hands each to a handshake task of its own.
async fn accept(
    tcp: TcpListener,
    live: Arc<Live>,
    done: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let places = Arc::new(Semaphore::new(HANDSHAKES));
    loop {
        let Ok(place) = places.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match tcp.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors, say: wait rather than spin.
                tracing::warn!(%error, "admin listener cannot accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(acceptor) = live.admin_tls() else {
            tracing::error!("admin TLS has no acceptor; the listener stops");
            return;
        };
        let done = done.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_DEADLINE, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = done.send((tls, peer)).await;
                }
                Ok(Err(error)) => {
                    tracing::info!(%peer, %error, "admin TLS handshake failed");
                }
                Err(_) => tracing::info!(%peer, "admin TLS handshake timed out"),
            }
            drop(place);
        });
    }
}
