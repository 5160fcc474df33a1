//! Datagrams, the unconfirmed path: delivered over UDP once bound, else over TCP; an offline
//! recipient's datagram dropped and counted with its mailbox untouched; forged, replayed, truncated,
//! oversized and unknown-session datagrams dropped without a reply and without disturbing anyone; a
//! flooded slow recipient still gets its messages; the send rules apply; a session's end ends its key.
//!
//! Every wait is on an event: a datagram is routed in the order its connection or the UDP socket
//! delivered it, so once a later one arrives (or a later `send` is accepted) every earlier one was
//! counted, and one scrape of `/metrics` tells.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use switchboard_broker::auth::{hash_token, ClientEntry, CredentialsFile};
use switchboard_client::{Client, ClientOptions, Event, Events};
use switchboard_proto::datagram::{parse, seal, Direction};
use switchboard_proto::{
    BrokerFrame, ClientFrame, DatagramKey, DecodeFrame, EncodeFrame, ReplayWindow,
};
use tokio::net::UdpSocket;

use crate::admin::{get, sample};
use crate::support::*;

/// A client's UDP side, from what its `hi` offered.
struct Udp {
    socket: UdpSocket,
    broker: SocketAddr,
    session: u64,
    key: DatagramKey,
    sent: u64,
    window: ReplayWindow,
}

impl Udp {
    async fn from_hi(hi: &BrokerFrame, host: SocketAddr) -> Udp {
        let BrokerFrame::Hi {
            udp_port: Some(port),
            datagram_session: Some(session),
            datagram_key: Some(key),
            ..
        } = hi
        else {
            panic!("hi offers no UDP: {hi:?}");
        };
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("udp bind");
        Udp {
            socket,
            broker: SocketAddr::new(host.ip(), *port),
            session: *session,
            key: DatagramKey::from_slice(key).expect("a 32-byte key"),
            sent: 0,
            window: ReplayWindow::default(),
        }
    }

    /// The sealed bytes of `frame` (nothing: a bind) under the next sequence number.
    fn sealed(&mut self, frame: Option<&ClientFrame>) -> Vec<u8> {
        let mut payload = BytesMut::new();
        if let Some(frame) = frame {
            frame.encode_map(&mut payload);
        }
        self.sent += 1;
        let mut out = Vec::new();
        let (session, sequence) = (self.session, self.sent);
        seal(
            &mut out,
            Direction::ToBroker,
            session,
            sequence,
            &self.key,
            &payload,
        );
        out
    }

    async fn send_bytes(&self, bytes: &[u8]) {
        let sent = within("udp send", self.socket.send_to(bytes, self.broker)).await;
        assert_eq!(sent.expect("udp send"), bytes.len());
    }

    async fn datagram(&mut self, to: &str, body: &[u8]) {
        let frame = ClientFrame::Datagram {
            to: to.into(),
            body: Bytes::copy_from_slice(body),
        };
        let bytes = self.sealed(Some(&frame));
        self.send_bytes(&bytes).await;
    }

    /// Sends a bind and waits for the broker's `bound`.
    async fn bind(&mut self) {
        let bytes = self.sealed(None);
        self.send_bytes(&bytes).await;
        assert_eq!(self.recv().await, None, "the first answer is bound");
    }

    /// The next datagram from the broker, verified: its frame, or `None` for `bound`.
    async fn recv(&mut self) -> Option<BrokerFrame> {
        let mut buf = vec![0; 70 * 1024];
        let (len, from) = within("a udp datagram", self.socket.recv_from(&mut buf))
            .await
            .expect("udp receive");
        assert_eq!(from, self.broker);
        let sealed = parse(&buf[..len]).expect("a datagram");
        assert_eq!(sealed.direction, Direction::ToClient);
        assert_eq!(sealed.session, self.session);
        assert!(sealed.verify(&self.key), "the broker's MAC checks out");
        assert!(self.window.accept(sealed.sequence), "a new sequence number");
        if sealed.payload.is_empty() {
            return None;
        }
        let payload = Bytes::copy_from_slice(sealed.payload);
        Some(BrokerFrame::decode_frame(&payload).expect("a broker frame"))
    }
}

fn datagram(from: &str, body: &str) -> BrokerFrame {
    BrokerFrame::Datagram {
        from: from.into(),
        body: Bytes::copy_from_slice(body.as_bytes()),
    }
}

/// `switchboard_datagrams_dropped_total{reason}` now.
async fn dropped(fx: &Fixture, reason: &str) -> f64 {
    let admin = fx.broker.admin.expect("the admin listener is on");
    let (_, scrape) = get(admin, "/metrics", None).await;
    sample(
        &scrape,
        &format!("switchboard_datagrams_dropped_total{{reason=\"{reason}\"}}"),
    )
}

/// Resolves once every frame `client` wrote before it has been handled by its session.
async fn barrier(client: &Client) {
    client.send("nobody", "barrier").await.expect("accepted");
}

#[tokio::test]
async fn bob_receives_a_datagram_over_tcp_and_then_over_udp_once_bound() {
    let fx = Fixture::new().await;
    let (alice, _ae) = fx.connect("alice").await;
    let (mut bob_tcp, hi) = Raw::hello(fx.addr(), "bob", 30).await;

    alice.send_datagram("bob", "over tcp").await.expect("sent");
    assert_eq!(bob_tcp.recv().await, Some(datagram("alice", "over tcp")));

    let mut bob = Udp::from_hi(&hi, fx.addr()).await;
    bob.bind().await;
    alice.send_datagram("bob", "over udp").await.expect("sent");
    assert_eq!(bob.recv().await, Some(datagram("alice", "over udp")));

    // And alice's datagrams over UDP reach a library client over TCP.
    let (carol, mut carol_events) = fx.connect("carol").await;
    let (_alice_tcp, alice_hi) = Raw::hello(fx.addr(), "alice-udp", 30).await;
    let mut alice_udp = Udp::from_hi(&alice_hi, fx.addr()).await;
    alice_udp.datagram("carol", b"from udp").await;
    match next_event(&mut carol_events).await {
        Event::Datagram(d) => {
            assert_eq!((&d.from[..], &d.body[..]), ("alice-udp", &b"from udp"[..]))
        }
        other => panic!("expected a datagram, got {other:?}"),
    }
    assert_eq!(carol.welcome().pending, 0);
}

#[tokio::test]
async fn an_offline_recipients_datagram_is_dropped_and_counted_and_its_mailbox_untouched() {
    let fx = Fixture::new().await;
    let (alice, _ae) = fx.connect("alice").await;
    alice
        .send_datagram("bob", "nobody hears")
        .await
        .expect("sent");
    barrier(&alice).await;
    assert_eq!(dropped(&fx, "offline").await, 1.0);
    let (bob, mut bob_events) = fx.connect("bob").await;
    assert_eq!(bob.welcome().pending, 0, "nothing was stored for bob");
    alice
        .send_datagram("bob", "now online")
        .await
        .expect("sent");
    match next_event(&mut bob_events).await {
        Event::Datagram(d) => assert_eq!(&d.body[..], b"now online"),
        other => panic!("expected the datagram, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_datagrams_are_dropped_without_a_reply_and_without_disturbing_anyone() {
    let fx = Fixture::new().await;
    let (_bob_tcp, bob_hi) = Raw::hello(fx.addr(), "bob", 30).await;
    let mut bob = Udp::from_hi(&bob_hi, fx.addr()).await;
    bob.bind().await;
    let (_alice_tcp, alice_hi) = Raw::hello(fx.addr(), "alice", 30).await;
    let mut alice = Udp::from_hi(&alice_hi, fx.addr()).await;

    alice.datagram("bob", b"first").await;
    assert_eq!(bob.recv().await, Some(datagram("alice", "first")));

    let frame = ClientFrame::Datagram {
        to: "bob".into(),
        body: Bytes::from_static(b"evil"),
    };
    let good = alice.sealed(Some(&frame));
    let mut forged = good.clone();
    *forged.last_mut().expect("a MAC") ^= 1;
    alice.send_bytes(&forged).await;
    let mut wrong_key = Udp {
        key: DatagramKey::new([0xff; 32]),
        ..Udp::from_hi(&alice_hi, fx.addr()).await
    };
    wrong_key.sent = 100;
    let other_key = wrong_key.sealed(Some(&frame));
    alice.send_bytes(&other_key).await;
    alice.send_bytes(&good[..20]).await; // truncated
    alice.send_bytes(&[]).await; // empty
    alice.send_bytes(&good).await; // taken once: the MAC is right
    alice.send_bytes(&good).await; // replayed
    let oversized = ClientFrame::Datagram {
        to: "bob".into(),
        body: Bytes::from(vec![7; 1_201]),
    };
    let oversized = alice.sealed(Some(&oversized));
    alice.send_bytes(&oversized).await;
    // From an address and a session number no connection has.
    let mut stranger = Udp::from_hi(&alice_hi, fx.addr()).await;
    stranger.session ^= 0x5555;
    stranger.datagram("bob", b"who am i").await;

    alice.datagram("bob", b"last").await;
    assert_eq!(
        bob.recv().await,
        Some(datagram("alice", "evil")),
        "the one genuine copy"
    );
    assert_eq!(
        bob.recv().await,
        Some(datagram("alice", "last")),
        "nothing else came between"
    );
    for (reason, count) in [
        ("forged", 2.0),
        ("malformed", 2.0),
        ("replayed", 1.0),
        ("too-large", 1.0),
        ("unknown-session", 1.0),
    ] {
        assert_eq!(dropped(&fx, reason).await, count, "{reason}");
    }
    // No reply to any of it: the first thing alice's socket receives is the answer to her bind.
    alice.bind().await;
    let mut stranger_buf = [0; 64];
    let nothing = stranger.socket.try_recv_from(&mut stranger_buf);
    assert!(nothing.is_err(), "the stranger got an answer: {nothing:?}");
}

#[tokio::test]
async fn a_flood_of_datagrams_to_a_slow_recipient_leaves_its_messages_flowing() {
    let fx = Fixture::with(|s| {
        s.datagrams.max_per_sec = 0;
        s.datagrams.queue = 16;
    })
    .await;
    let (alice, _ae) = fx.connect("alice").await;
    // Bob does not read his socket while alice floods him.
    let (mut bob, _) = Raw::hello(fx.addr(), "bob", 60).await;
    let body = vec![b'x'; 1_200];
    let mut sent = Vec::new();
    for i in 0..20_000 {
        alice
            .send_datagram("bob", body.clone())
            .await
            .expect("sent");
        if i % 5_000 == 0 {
            sent.push(
                alice
                    .send("bob", format!("message {i}"))
                    .await
                    .expect("accepted"),
            );
        }
    }
    barrier(&alice).await;
    assert!(
        dropped(&fx, "recipient-slow").await > 0.0,
        "bob's queue overflowed"
    );
    let mut delivered = Vec::new();
    while delivered.len() < sent.len() {
        match bob.recv().await.expect("bob's connection stays open") {
            BrokerFrame::Deliver {
                message_id, body, ..
            } => {
                bob.send(ClientFrame::Ack { id: message_id }).await;
                delivered.push(String::from_utf8(body.to_vec()).expect("text"));
            }
            BrokerFrame::Datagram { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        delivered,
        [
            "message 0",
            "message 5000",
            "message 10000",
            "message 15000"
        ]
    );
}

#[tokio::test]
async fn the_send_rules_apply_to_datagrams() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("credentials.toml");
    let entry = |may_send_to: Option<Vec<String>>| ClientEntry {
        hash: hash_token("t").expect("hash"),
        networks: Vec::new(),
        may_send_to,
    };
    CredentialsFile {
        clients: [
            ("alice".to_string(), entry(Some(vec!["bob".into()]))),
            ("bob".to_string(), entry(None)),
            ("carol".to_string(), entry(None)),
        ]
        .into_iter()
        .collect(),
    }
    .save(&path)
    .expect("save credentials");
    let fx = Fixture::with(|s| s.auth.credentials_file = path.clone()).await;
    let connect = |id: &'static str| {
        let mut opts = ClientOptions::new(fx.addr().to_string(), id);
        opts.token = Some("t".into());
        within("connect", Client::connect(opts))
    };
    let (alice, _ae) = connect("alice").await.expect("alice");
    let (_carol, mut carol_events) = connect("carol").await.expect("carol");
    let (bob, mut bob_events) = connect("bob").await.expect("bob");
    alice
        .send_datagram("carol", "not allowed")
        .await
        .expect("sent");
    alice.send_datagram("bob", "allowed").await.expect("sent");
    match next_event(&mut bob_events).await {
        Event::Datagram(d) => assert_eq!(&d.body[..], b"allowed"),
        other => panic!("expected the datagram, got {other:?}"),
    }
    assert_eq!(dropped(&fx, "forbidden").await, 1.0);
    // Bob may write to carol: his datagram is the first thing carol receives.
    bob.send_datagram("carol", "from bob").await.expect("sent");
    match next_event(&mut carol_events).await {
        Event::Datagram(d) => assert_eq!((&d.from[..], &d.body[..]), ("bob", &b"from bob"[..])),
        other => panic!("expected bob's datagram, got {other:?}"),
    }
}

#[tokio::test]
async fn a_sessions_end_ends_its_key() {
    let fx = Fixture::new().await;
    let (bob_tcp, bob_hi) = Raw::hello(fx.addr(), "bob", 30).await;
    let mut old = Udp::from_hi(&bob_hi, fx.addr()).await;
    old.bind().await;
    drop(bob_tcp);
    fx.broker.gone("bob").await;
    old.datagram("bob", b"from the past").await;
    // A new session of bob's; the old key and number no longer count.
    let (_bob_tcp, new_hi) = Raw::hello(fx.addr(), "bob", 30).await;
    let mut new = Udp::from_hi(&new_hi, fx.addr()).await;
    assert_ne!(new.session, old.session);
    new.bind().await;
    assert_eq!(dropped(&fx, "unknown-session").await, 1.0);
}

/// `switchboard_datagrams_{received,delivered}_total{via="udp"}` now.
async fn over_udp(fx: &Fixture) -> (f64, f64) {
    let admin = fx.broker.admin.expect("the admin listener is on");
    let (_, scrape) = get(admin, "/metrics", None).await;
    let series = |name: &str| {
        sample(
            &scrape,
            &format!("switchboard_datagrams_{name}_total{{via=\"udp\"}}"),
        )
    };
    (series("received"), series("delivered"))
}

#[tokio::test]
async fn library_clients_move_their_datagrams_to_udp_once_the_broker_answers_their_bind() {
    let fx = Fixture::new().await;
    let (alice, _ae) = fx.connect("alice").await;
    let (bob, mut bob_events) = fx.connect("bob").await;
    let rounds = until_over_udp(&fx, &alice, &mut bob_events).await;
    let (sent, received) = (alice.datagram_stats(), bob.datagram_stats());
    assert!(sent.sent_udp >= 1, "{sent:?}");
    assert_eq!(sent.sent_udp + sent.sent_tcp, rounds, "{sent:?}");
    assert_eq!(received.received, rounds, "{received:?}");
    assert_eq!(received.dropped_slow_reader + received.dropped_invalid, 0);
}

#[tokio::test]
async fn a_recipient_that_reads_no_events_loses_the_newest_datagrams_counted_and_its_messages_flow()
{
    let fx = Fixture::new().await;
    let (alice, _ae) = fx.connect("alice").await;
    let (bob, mut bob_events) = fx.connect("bob").await;
    until_over_udp(&fx, &alice, &mut bob_events).await;
    // Bob reads nothing now: his events channel (1024) fills, and what comes after is dropped.
    for n in 0..1100 {
        alice
            .send_datagram("bob", format!("{n}"))
            .await
            .expect("sent");
    }
    within("bob's library drops what finds his events full", async {
        while bob.datagram_stats().dropped_slow_reader == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    alice.send("bob", "a message").await.expect("accepted");
    loop {
        match next_event(&mut bob_events).await {
            Event::Datagram(_) => {}
            Event::Message(m) => break assert_eq!(&m.body[..], b"a message"),
            other => panic!("expected datagrams, then the message: {other:?}"),
        }
    }
}

#[tokio::test]
async fn datagrams_sent_over_udp_just_before_close_reach_their_recipient() {
    let fx = Fixture::new().await;
    let (alice, _ae) = fx.connect("alice").await;
    let (_bob, mut bob_events) = fx.connect("bob").await;
    until_over_udp(&fx, &alice, &mut bob_events).await;
    // Still in the broker's socket buffer when alice's `bye` ends her session, the last of these
    // would meet an ended key; closing waits for the broker to have read them.
    for n in 0..200 {
        alice
            .send_datagram("bob", format!("{n}"))
            .await
            .expect("sent");
    }
    within("alice closes", alice.close()).await.expect("closed");
    for n in 0..200 {
        match next_event(&mut bob_events).await {
            Event::Datagram(d) => assert_eq!(&d.body[..], format!("{n}").as_bytes()),
            other => panic!("expected datagram {n}, got {other:?}"),
        }
    }
}

/// Sends datagrams from `alice` to bob, each read by bob, until the broker has taken and delivered
/// one over UDP; how many were sent.
async fn until_over_udp(fx: &Fixture, alice: &Client, bob_events: &mut Events) -> u64 {
    // Both binds are on their way from the start; each round trip is one datagram seen by bob.
    for round in 0..100 {
        let body = format!("reading {round}");
        alice
            .send_datagram("bob", body.clone())
            .await
            .expect("sent");
        match next_event(bob_events).await {
            Event::Datagram(d) => {
                assert_eq!((&d.from[..], &d.body[..]), ("alice", body.as_bytes()))
            }
            other => panic!("expected the datagram, got {other:?}"),
        }
        let (received, delivered) = over_udp(fx).await;
        if received >= 1.0 && delivered >= 1.0 {
            return round + 1;
        }
    }
    panic!(
        "after 100 datagrams, none went over UDP both ways: {:?}",
        over_udp(fx).await
    );
}
