//! The test harness: a real broker on 127.0.0.1 port 0 with a temporary data directory, raw protocol
//! connections for the failure paths, and bounded waits.

use std::net::SocketAddr;
use std::path::Path;

use actix::Addr;
use futures_util::{SinkExt, StreamExt};
use switchboard_broker::registry::{AwaitGone, Connection, Lookup, Registry};
use switchboard_broker::settings::{Settings, StoreKind};
use switchboard_broker::store::MailboxStore;
use switchboard_broker::Broker;
use switchboard_client::{Client, ClientOptions, Event, Events};
use switchboard_proto::{
    BrokerFrame, ClientCodec, ClientFrame, ClientId, ErrorCode, ReceiptStatus, PROTOCOL_VERSION,
};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_util::codec::Framed;

/// The bounded waits every test shares.
pub(crate) use switchboard_tests::{within, WAIT};

/// Settings for a test broker: port 0 (admin listener too), the default log store in `data_dir`.
pub(crate) fn settings(data_dir: &Path) -> Settings {
    let mut s = Settings {
        listen: "127.0.0.1:0".into(),
        data_dir: data_dir.to_path_buf(),
        store: StoreKind::Log,
        workers: 2,
        ..Settings::default()
    };
    s.limits.shutdown_grace_ms = 2_000;
    // Many test brokers run at once: each admin listener on a port of its own, and each UDP
    // listener too (the default, TCP's port number, could be a test's UDP socket already).
    s.admin.listen = "127.0.0.1:0".into();
    s.udp.listen = Some("127.0.0.1:0".into());
    s
}

/// A broker running on its own thread with its own actix system, like a separate process would.
pub(crate) struct TestBroker {
    pub addr: SocketAddr,
    /// The admin listener's address, when the settings turn it on.
    pub admin: Option<SocketAddr>,
    registry: Addr<Registry>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestBroker {
    pub(crate) async fn start(settings: Settings) -> TestBroker {
        Self::start_with(settings, None).await
    }

    /// A broker keeping its mailboxes in `store` rather than the one the settings name.
    pub(crate) async fn start_with_store(
        settings: Settings,
        store: Box<dyn MailboxStore>,
    ) -> TestBroker {
        Self::start_with(settings, Some(store)).await
    }

    async fn start_with(settings: Settings, store: Option<Box<dyn MailboxStore>>) -> TestBroker {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let started = match store {
                    Some(store) => Broker::start_with_store(settings, store).await,
                    None => Broker::start(settings).await,
                };
                let broker = match started {
                    Ok(broker) => broker,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let ready = (
                    broker.local_addr(),
                    broker.admin_addr(),
                    broker.registry().clone(),
                );
                let _ = ready_tx.send(Ok(ready));
                let _ = stop_rx.await;
                broker.shutdown().await;
            });
        });
        let (addr, admin, registry) = within("broker start", ready_rx)
            .await
            .expect("broker thread died")
            .expect("broker failed to start");
        TestBroker {
            addr,
            admin,
            registry,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// What the broker's Registry knows about `client`.
    pub(crate) async fn lookup(&self, client: &str) -> Option<Connection> {
        let client = ClientId::new(client).expect("valid id");
        within("registry lookup", self.registry.send(Lookup(client)))
            .await
            .expect("registry alive")
    }

    /// Resolves once `client` has no connection to the broker.
    pub(crate) async fn gone(&self, client: &str) {
        let client = ClientId::new(client).expect("valid id");
        within(
            "the client to be disconnected",
            self.registry.send(AwaitGone(client)),
        )
        .await
        .expect("registry alive");
    }

    /// A clean shutdown, as on SIGTERM; returns once the broker has stopped.
    pub(crate) async fn stop(mut self) {
        self.stop_now().await;
    }

    async fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            within(
                "broker shutdown",
                tokio::task::spawn_blocking(move || thread.join()),
            )
            .await
            .expect("join task")
            .expect("broker thread panicked");
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A broker with a fresh temporary data directory.
pub(crate) struct Fixture {
    /// Kept so the data directory lives as long as the broker.
    _dir: tempfile::TempDir,
    pub broker: TestBroker,
}

impl Fixture {
    pub(crate) async fn new() -> Fixture {
        Self::with(|_| {}).await
    }

    pub(crate) async fn with(tune: impl FnOnce(&mut Settings)) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = settings(dir.path());
        tune(&mut s);
        let broker = TestBroker::start(s).await;
        Fixture { _dir: dir, broker }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.broker.addr
    }

    /// Connects a library client.
    pub(crate) async fn connect(&self, id: &str) -> (Client, Events) {
        connect(self.addr(), id).await
    }
}

pub(crate) async fn connect(addr: SocketAddr, id: &str) -> (Client, Events) {
    within(
        "connect",
        Client::connect(ClientOptions::new(addr.to_string(), id)),
    )
    .await
    .unwrap_or_else(|e| panic!("{id} cannot connect: {e}"))
}

/// The next event, which must come within [`WAIT`].
pub(crate) async fn next_event(events: &mut Events) -> Event {
    within("an event", events.next())
        .await
        .expect("event stream ended")
}

/// A raw protocol connection, for frames the library would never send.
pub(crate) struct Raw {
    pub framed: Framed<TcpStream, ClientCodec>,
}

impl Raw {
    pub(crate) async fn connect(addr: SocketAddr) -> Raw {
        let stream = within("tcp connect", TcpStream::connect(addr))
            .await
            .expect("tcp connect");
        Raw {
            framed: Framed::new(stream, ClientCodec::default()),
        }
    }

    /// Connects and completes the handshake; returns the `Hi`.
    pub(crate) async fn hello(
        addr: SocketAddr,
        id: &str,
        keepalive_secs: u32,
    ) -> (Raw, BrokerFrame) {
        let mut raw = Raw::connect(addr).await;
        raw.send(ClientFrame::Hello {
            version: PROTOCOL_VERSION,
            client_id: id.into(),
            token: None,
            keepalive_secs,
        })
        .await;
        let hi = raw.recv().await.expect("hi");
        assert!(
            matches!(hi, BrokerFrame::Hi { .. }),
            "expected hi, got {hi:?}"
        );
        (raw, hi)
    }

    pub(crate) async fn send(&mut self, frame: ClientFrame) {
        within("frame write", self.framed.send(frame))
            .await
            .expect("frame write");
    }

    /// Writes raw bytes to the socket.
    pub(crate) async fn send_bytes(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        within("byte write", self.framed.get_mut().write_all(bytes))
            .await
            .expect("byte write");
    }

    /// The next frame, or `None` once the broker has closed the connection.
    pub(crate) async fn recv(&mut self) -> Option<BrokerFrame> {
        match within("a frame", self.framed.next()).await {
            Some(Ok(frame)) => Some(frame),
            Some(Err(_)) | None => None,
        }
    }

    /// Sends `body` to `to` under `send_id` (not `fresh`, asking for `receipts`) and waits for its
    /// `accepted`; returns the message id.
    pub(crate) async fn send_accepted(
        &mut self,
        send_id: u64,
        to: &str,
        body: bytes::Bytes,
        receipts: switchboard_proto::Receipts,
    ) -> u64 {
        self.send(ClientFrame::Send {
            send_id,
            to: to.into(),
            body,
            ttl_ms: None,
            fresh: false,
            receipts,
        })
        .await;
        match self.recv().await {
            Some(BrokerFrame::Accepted { message_id, .. }) => message_id,
            other => panic!("expected accepted for send {send_id}, got {other:?}"),
        }
    }

    /// Reads the next `n` frames, each a receipt, and acknowledges each; returns their send ids
    /// and statuses, in the order they came.
    pub(crate) async fn receipts(&mut self, n: usize) -> Vec<(u64, ReceiptStatus)> {
        let mut heard = Vec::with_capacity(n);
        while heard.len() < n {
            match self.recv().await {
                Some(BrokerFrame::Receipt {
                    receipt_id,
                    send_id,
                    status,
                    ..
                }) => {
                    heard.push((send_id, status));
                    self.send(ClientFrame::Ack { id: receipt_id }).await;
                }
                other => panic!("expected a receipt, got {other:?}"),
            }
        }
        heard
    }

    /// Reads until the broker closes the connection; returns what came before, in order.
    pub(crate) async fn until_closed(&mut self) -> Vec<BrokerFrame> {
        let mut frames = Vec::new();
        while let Some(frame) = self.recv().await {
            frames.push(frame);
        }
        frames
    }
}

/// Asserts that the broker's last words on a connection were exactly one `Error` with `code`.
#[track_caller]
pub(crate) fn assert_closed_with(frames: &[BrokerFrame], code: ErrorCode) {
    match frames {
        [BrokerFrame::Error { code: got, .. }] if *got == code => {}
        other => panic!("expected only an error `{code}` before the close, got {other:?}"),
    }
}

/// The embedded engines, as `SWITCHBOARD_BROKER_STORE` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Engine {
    Log,
    Sqlite,
}

impl Engine {
    pub(crate) fn env(self) -> &'static str {
        match self {
            Engine::Log => "log",
            Engine::Sqlite => "sqlite",
        }
    }
}
