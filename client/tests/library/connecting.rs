//! Getting in: the options, the handshake (`Hello` and `Hi`), and the ways it fails before a
//! connection is up.

use std::time::Duration;

use switchboard_client::{Client, ClientError, ClientOptions, ErrorCode};
use switchboard_proto::{BrokerFrame, ClientFrame, PROTOCOL_VERSION};

use crate::connect;
use crate::support::*;

#[test]
fn options_have_documented_defaults() {
    let opts = ClientOptions::new("127.0.0.1:7878", "alice");
    assert_eq!(opts.server, "127.0.0.1:7878");
    assert_eq!(opts.id, "alice");
    assert_eq!(opts.keepalive, Duration::from_secs(30));
    assert_eq!(opts.token, None);
    assert_eq!(opts.max_frame, None, "follows the broker");
    assert_eq!(opts.connect_timeout, Duration::from_secs(10));
    assert_eq!(opts.reconnect, None);
}

#[tokio::test]
async fn a_closed_port_is_a_connect_error_that_reads_well() {
    let addr = closed_port();
    let err = Client::connect(ClientOptions::new(addr.to_string(), "alice"))
        .await
        .expect_err("nothing listens there");
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("cannot connect to {addr}: connection refused")
    );
}

#[tokio::test]
async fn an_invalid_id_is_refused_before_connecting() {
    // Nothing listens there: an attempt to connect would be a Connect error instead.
    let addr = closed_port();
    for id in ["", "has space", "bell\u{7}"] {
        let err = Client::connect(ClientOptions::new(addr.to_string(), id))
            .await
            .expect_err("refused");
        assert!(matches!(err, ClientError::InvalidId(_)), "{id:?}: {err:?}");
    }
}

#[tokio::test]
async fn hello_carries_the_options_and_hi_becomes_the_welcome() {
    let broker = MockBroker::start().await;
    let mut opts = ClientOptions::new(broker.addr.to_string(), "alice");
    opts.keepalive = Duration::from_secs(12);
    opts.token = Some("secret".into());
    let (connected, (_peer, hello)) = tokio::join!(Client::connect(opts), broker.welcome(7, 3));
    let (client, _events) = connected.expect("connect");
    assert_eq!(
        hello,
        ClientFrame::Hello {
            version: PROTOCOL_VERSION,
            client_id: "alice".into(),
            token: Some("secret".into()),
            keepalive_secs: 12,
        }
    );
    let welcome = client.welcome();
    assert_eq!(welcome.keepalive, Duration::from_secs(7));
    assert_eq!(welcome.pending, 3);
    assert!(welcome.address.starts_with("127.0.0.1:"), "{welcome:?}");
}

#[tokio::test]
async fn an_error_instead_of_hi_is_a_refusal() {
    let broker = MockBroker::start().await;
    let opts = ClientOptions::new(broker.addr.to_string(), "alice");
    let refuse = async {
        let mut peer = broker.accept().await;
        peer.recv().await.expect("hello");
        peer.send(BrokerFrame::Error {
            code: ErrorCode::UnsupportedVersion,
            text: "version 1 is too old".into(),
        })
        .await;
        peer
    };
    let (connected, _peer) = tokio::join!(Client::connect(opts), refuse);
    let err = connected.expect_err("refused");
    assert!(
        matches!(err, ClientError::Refused { code: ErrorCode::UnsupportedVersion, ref text } if text == "version 1 is too old"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_broker_that_never_answers_times_out() {
    let broker = MockBroker::start().await;
    let mut opts = ClientOptions::new(broker.addr.to_string(), "alice");
    opts.connect_timeout = Duration::from_millis(200);
    let (connected, _peer) = tokio::join!(Client::connect(opts), broker.accept());
    assert!(matches!(connected, Err(ClientError::Timeout)));
}

#[tokio::test]
async fn an_idle_client_pings_at_half_the_agreed_keepalive() {
    let broker = MockBroker::start().await;
    let (_client, _events, mut peer) = connect(&broker, 1, 0).await;
    let started = tokio::time::Instant::now();
    for _ in 0..3 {
        assert_eq!(peer.recv().await, Some(ClientFrame::Ping));
        peer.send(BrokerFrame::Pong).await;
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1_400) && elapsed < Duration::from_millis(2_500),
        "three pings took {elapsed:?}"
    );
}
