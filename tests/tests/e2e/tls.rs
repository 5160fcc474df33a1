//! TLS on the listener: certificates made at test time with rcgen, clients speaking through rustls.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use switchboard_client::{Client, ClientOptions, Event, Tls};
use switchboard_proto::{BrokerFrame, ClientCodec, ClientFrame, PROTOCOL_VERSION};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::codec::Framed;

use crate::support::*;

/// A CA, a broker certificate for 127.0.0.1 and a client certificate, as PEM files in a directory.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn write(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).expect("write pem");
    path
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca =
            CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
        let server_key = KeyPair::generate().expect("key");
        let server = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .expect("server params")
            .signed_by(&server_key, &ca)
            .expect("server cert");
        let client_key = KeyPair::generate().expect("key");
        let client = CertificateParams::new(vec!["alice".to_string()])
            .expect("client params")
            .signed_by(&client_key, &ca)
            .expect("client cert");
        let d = dir.path();
        Pki {
            ca: write(d, "ca.pem", &ca.pem()),
            server_cert: write(d, "server.pem", &server.pem()),
            server_key: write(d, "server.key", &server_key.serialize_pem()),
            client_cert: write(d, "client.pem", &client.pem()),
            client_key: write(d, "client.key", &client_key.serialize_pem()),
            _dir: dir,
        }
    }

    /// A broker serving TLS with the server certificate, requiring client certificates if asked.
    async fn broker(&self, client_ca: bool) -> Fixture {
        Fixture::with(|s| {
            s.tls.cert_file = self.server_cert.clone();
            s.tls.key_file = self.server_key.clone();
            if client_ca {
                s.tls.client_ca_file = self.ca.clone();
            }
        })
        .await
    }

    fn connector(&self, with_client_cert: bool) -> TlsConnector {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&self.ca).expect("ca file") {
            roots.add(cert.expect("ca cert")).expect("add ca");
        }
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let config = if with_client_cert {
            let chain = CertificateDer::pem_file_iter(&self.client_cert)
                .expect("client cert file")
                .collect::<Result<Vec<_>, _>>()
                .expect("client cert");
            let key = PrivateKeyDer::from_pem_file(&self.client_key).expect("client key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client auth")
        } else {
            builder.with_no_client_auth()
        };
        TlsConnector::from(Arc::new(config))
    }
}

type TlsFramed = Framed<TlsStream<TcpStream>, ClientCodec>;

async fn tls_hello(fx: &Fixture, connector: &TlsConnector, id: &str) -> Result<TlsFramed, String> {
    let tcp = TcpStream::connect(fx.addr())
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").expect("server name");
    let tls = within("tls handshake", connector.connect(name, tcp))
        .await
        .map_err(|e| e.to_string())?;
    let mut framed = Framed::new(tls, ClientCodec::default());
    within(
        "hello",
        framed.send(ClientFrame::Hello {
            version: PROTOCOL_VERSION,
            client_id: id.into(),
            token: None,
            keepalive_secs: 30,
        }),
    )
    .await
    .map_err(|e| e.to_string())?;
    match within("hi", framed.next()).await {
        Some(Ok(BrokerFrame::Hi { .. })) => Ok(framed),
        other => Err(format!("no hi: {other:?}")),
    }
}

#[tokio::test]
async fn clients_talk_over_tls_and_plain_tcp_is_refused() {
    let pki = Pki::new();
    let fx = pki.broker(false).await;
    let connector = pki.connector(false);
    let mut alice = tls_hello(&fx, &connector, "alice")
        .await
        .expect("alice over tls");
    let mut bob = tls_hello(&fx, &connector, "bob")
        .await
        .expect("bob over tls");
    within(
        "send",
        alice.send(ClientFrame::Send {
            send_id: 1,
            to: "bob".into(),
            body: Bytes::from_static(b"sealed"),
            ttl_ms: None,
            fresh: false,
            receipts: switchboard_proto::Receipts::All,
        }),
    )
    .await
    .expect("send");
    assert!(matches!(
        within("accepted", alice.next()).await,
        Some(Ok(BrokerFrame::Accepted { send_id: 1, .. }))
    ));
    match within("deliver", bob.next()).await {
        Some(Ok(BrokerFrame::Deliver { body, .. })) => assert_eq!(&body[..], b"sealed"),
        other => panic!("expected the message, got {other:?}"),
    }

    // A plain client's hello is not a TLS handshake: no answer, the connection just ends.
    let mut plain = Raw::connect(fx.addr()).await;
    plain
        .send(ClientFrame::Hello {
            version: PROTOCOL_VERSION,
            client_id: "plain".into(),
            token: None,
            keepalive_secs: 30,
        })
        .await;
    let frames = plain.until_closed().await;
    assert!(
        !frames.iter().any(|f| matches!(f, BrokerFrame::Hi { .. })),
        "{frames:?}"
    );
}

#[tokio::test]
async fn a_client_certificate_is_required_when_a_client_ca_is_set() {
    let pki = Pki::new();
    let fx = pki.broker(true).await;
    tls_hello(&fx, &pki.connector(true), "alice")
        .await
        .expect("with a client certificate");
    let refused = tls_hello(&fx, &pki.connector(false), "mallory").await;
    assert!(refused.is_err(), "connected without a client certificate");
}

#[tokio::test]
async fn a_missing_key_file_stops_the_start_naming_it() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = settings(dir.path());
    s.tls.cert_file = pki.server_cert.clone();
    s.tls.key_file = dir.path().join("nope.key");
    let result = tokio::task::spawn_blocking(move || {
        actix_rt::System::new().block_on(switchboard_broker::Broker::start(s))
    })
    .await
    .expect("join");
    let err = result.err().expect("refused").to_string();
    assert!(err.contains("nope.key"), "{err}");
}

#[tokio::test]
async fn the_library_and_the_cli_speak_tls_with_a_ca_file_and_a_client_certificate() {
    // Built (a blocking `cargo build`) before anyone connects: while it runs this test's runtime
    // cannot answer bob's keepalive, and a slow build would have the broker drop him.
    let cli = switchboard_tests::binary("switchboard");
    let pki = Pki::new();
    let fx = pki.broker(true).await;
    let tls = Tls::with_ca_file(&pki.ca)
        .expect("ca")
        .with_client_certificate(&pki.client_cert, &pki.client_key)
        .expect("client certificate");
    let mut opts = ClientOptions::new(fx.addr().to_string(), "bob");
    opts.tls = Some(tls);
    let (bob, mut bob_events) = within("bob connects over tls", Client::connect(opts))
        .await
        .expect("connect");

    let addr = fx.addr().to_string();
    let mut cmd = tokio::process::Command::new(&cli);
    cmd.args(["--server", &addr, "--id", "alice", "--ca"])
        .arg(&pki.ca)
        .arg("--cert")
        .arg(&pki.client_cert)
        .arg("--key")
        .arg(&pki.client_key)
        .args(["send", "--to", "bob", "over tls"])
        .env_remove("SWITCHBOARD_TOKEN");
    let out = within("the cli", cmd.output()).await.expect("run the cli");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    match next_event(&mut bob_events).await {
        Event::Message(m) => {
            assert_eq!(&m.body[..], b"over tls");
            bob.ack(m.message_id).await.expect("ack");
        }
        other => panic!("expected the message, got {other:?}"),
    }

    // Without a client certificate the handshake fails, and the CLI says so in one line.
    let mut cmd = tokio::process::Command::new(&cli);
    cmd.args(["--server", &addr, "--id", "alice", "--ca"])
        .arg(&pki.ca)
        .args(["send", "--to", "bob", "refused"]);
    let out = within("the cli", cmd.output()).await.expect("run the cli");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: ") && stderr.lines().count() == 1,
        "{stderr}"
    );
}

/// A mismatch says what it is, on both sides: a plain client against a TLS broker hears that the
/// broker answered in TLS (not "frame larger than the limit"), and a TLS client against a plain
/// broker hears that it did not answer in TLS (not "corrupt message of type InvalidContentType").
#[tokio::test]
async fn a_tls_plain_mismatch_is_named_on_both_sides() {
    let pki = Pki::new();
    let tls_broker = pki.broker(false).await;
    let plain_client = ClientOptions::new(tls_broker.addr().to_string(), "alice");
    let Err(err) = within("the plain client", Client::connect(plain_client)).await else {
        panic!("the plain client was let in");
    };
    assert!(err.to_string().contains("answered in TLS"), "{err}");

    let plain_broker = Fixture::new().await;
    let mut tls_client = ClientOptions::new(plain_broker.addr().to_string(), "alice");
    tls_client.tls = Some(Tls::with_ca_file(&pki.ca).expect("ca"));
    let Err(err) = within("the tls client", Client::connect(tls_client)).await else {
        panic!("the tls client was let in");
    };
    assert!(err.to_string().contains("did not answer in TLS"), "{err}");
}

/// `hi` as a TLS client sees it.
async fn tls_hi(fx: &Fixture, connector: &TlsConnector) -> BrokerFrame {
    let tcp = TcpStream::connect(fx.addr()).await.expect("connect");
    let name = ServerName::try_from("127.0.0.1").expect("server name");
    let tls = within("tls handshake", connector.connect(name, tcp))
        .await
        .expect("tls");
    let mut framed = Framed::new(tls, ClientCodec::default());
    let hello = ClientFrame::Hello {
        version: PROTOCOL_VERSION,
        client_id: "carol".into(),
        token: None,
        keepalive_secs: 30,
    };
    within("hello", framed.send(hello)).await.expect("hello");
    match within("hi", framed.next()).await {
        Some(Ok(hi @ BrokerFrame::Hi { .. })) => hi,
        other => panic!("no hi: {other:?}"),
    }
}

/// What `hi` offers for UDP (a port, a key) to a TLS client of a broker with this `udp.listen`.
async fn udp_offer_under_tls(pki: &Pki, listen: Option<&str>) -> (bool, bool) {
    let fx = Fixture::with(|s| {
        s.tls.cert_file = pki.server_cert.clone();
        s.tls.key_file = pki.server_key.clone();
        s.udp.listen = listen.map(str::to_owned);
    })
    .await;
    match tls_hi(&fx, &pki.connector(false)).await {
        BrokerFrame::Hi {
            udp_port,
            datagram_key,
            ..
        } => (udp_port.is_some(), datagram_key.is_some()),
        other => panic!("no hi: {other:?}"),
    }
}

#[tokio::test]
async fn under_tls_udp_is_off_unless_udp_listen_names_an_address() {
    let pki = Pki::new();
    // Unset, as in a deployment's settings (the fixture sets it to port 0 otherwise).
    let unset = udp_offer_under_tls(&pki, None).await;
    assert_eq!(
        unset,
        (false, false),
        "no cleartext datagrams beside TLS by default"
    );
    let set = udp_offer_under_tls(&pki, Some("127.0.0.1:0")).await;
    assert_eq!(set, (true, true), "an address set by hand opens it");
}
