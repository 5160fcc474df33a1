//! A scripted stand-in for the broker: it accepts connections on 127.0.0.1 port 0 and lets a test
//! read the client's frames and write the broker's, one by one.

#![allow(dead_code)] // each test binary uses its own share of the helpers

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use switchboard_proto::{BrokerCodec, BrokerFrame, ClientFrame, PROTOCOL_VERSION};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

/// Every wait in these tests is bounded by `switchboard_tests::WAIT`, as in the workspace's other
/// tests.
pub(crate) use switchboard_tests::within;

/// A port with nothing listening on it.
pub(crate) fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    addr
}

pub(crate) struct MockBroker {
    listener: TcpListener,
    pub addr: SocketAddr,
}

impl MockBroker {
    pub(crate) async fn start() -> MockBroker {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        MockBroker { listener, addr }
    }

    /// The next connection, before its `Hello`.
    pub(crate) async fn accept(&self) -> Peer {
        let (stream, _) = within("a connection", self.listener.accept())
            .await
            .expect("accept");
        Peer {
            framed: Framed::new(stream, BrokerCodec::default()),
        }
    }

    /// The next connection, with its `Hello` read and answered by a `Hi`.
    pub(crate) async fn welcome(&self, keepalive_secs: u32, pending: u64) -> (Peer, ClientFrame) {
        let mut peer = self.accept().await;
        let hello = peer.recv().await.expect("hello");
        assert!(
            matches!(hello, ClientFrame::Hello { .. }),
            "expected hello, got {hello:?}"
        );
        let address = peer
            .framed
            .get_ref()
            .peer_addr()
            .expect("peer address")
            .to_string();
        peer.send(BrokerFrame::Hi {
            version: PROTOCOL_VERSION,
            keepalive_secs,
            address,
            pending,
            max_body_bytes: switchboard_proto::max_body_len(switchboard_proto::DEFAULT_MAX_FRAME)
                as u64,
            udp_port: None,
            datagram_session: None,
            datagram_key: None,
        })
        .await;
        (peer, hello)
    }
}

/// The broker's end of one connection.
pub(crate) struct Peer {
    pub framed: Framed<TcpStream, BrokerCodec>,
}

impl Peer {
    pub(crate) async fn send(&mut self, frame: BrokerFrame) {
        within("frame write", self.framed.send(frame))
            .await
            .expect("frame write");
    }

    /// The next frame, or `None` once the client has closed the connection.
    pub(crate) async fn recv(&mut self) -> Option<ClientFrame> {
        match within("a frame", self.framed.next()).await {
            Some(Ok(frame)) => Some(frame),
            Some(Err(e)) => panic!("undecodable frame from the client: {e}"),
            None => None,
        }
    }

    /// The next frame that is not a `Ping`.
    pub(crate) async fn recv_skipping_pings(&mut self) -> Option<ClientFrame> {
        loop {
            match self.recv().await {
                Some(ClientFrame::Ping) => continue,
                other => return other,
            }
        }
    }
}

/// The next `Send`, skipping pings: its send id, recipient, body and time to live.
pub(crate) async fn recv_send(peer: &mut Peer) -> (u64, String, bytes::Bytes, Option<u64>) {
    match peer.recv_skipping_pings().await {
        Some(ClientFrame::Send {
            send_id,
            to,
            body,
            ttl_ms,
            ..
        }) => (send_id, to, body, ttl_ms),
        other => panic!("expected a send, got {other:?}"),
    }
}

/// The next `Send`, skipping pings, whole: its send id, body and `fresh` flag are what the
/// early-delivery tests look at.
pub(crate) async fn recv_send_frame(peer: &mut Peer) -> SendFrame {
    match peer.recv_skipping_pings().await {
        Some(ClientFrame::Send {
            send_id,
            to,
            body,
            ttl_ms,
            fresh,
            ..
        }) => SendFrame {
            send_id,
            to,
            body,
            ttl_ms,
            fresh,
        },
        other => panic!("expected a send, got {other:?}"),
    }
}

/// A `Send` frame's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SendFrame {
    /// The send id (`id` on the wire).
    pub send_id: u64,
    pub to: String,
    pub body: bytes::Bytes,
    pub ttl_ms: Option<u64>,
    pub fresh: bool,
}
