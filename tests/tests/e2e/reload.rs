//! SIGHUP on a real `switchboard-broker` process: new credentials, a new certificate and a new log
//! level take effect without dropping anyone who may stay; a broken file changes nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{CertificateParams, KeyPair};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, ServerName};
use switchboard_broker::auth::{hash_token, ClientEntry, CredentialsFile};
use switchboard_client::{Client, ClientError, ClientOptions, CloseReason, Event, Events};
use switchboard_proto::ErrorCode;
use switchboard_tests::BrokerProcess;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::support::{next_event, within};

/// Writes a credentials file naming `clients` (id, token) at `path`.
fn write_credentials(path: &Path, clients: &[(&str, &str)]) {
    let file = CredentialsFile {
        clients: clients
            .iter()
            .map(|(id, token)| {
                let entry = ClientEntry {
                    hash: hash_token(token).expect("hash"),
                    networks: Vec::new(),
                    may_send_to: None,
                };
                (id.to_string(), entry)
            })
            .collect(),
    };
    file.save(path).expect("save credentials");
}

/// A broker process reading `settings` from `dir/settings.toml`, with `log.level` in force (no
/// `RUST_LOG`). `log.level` must keep the `listening on` line of `switchboard_broker::server`.
pub(crate) async fn broker(dir: &Path, settings: &str) -> (BrokerProcess, PathBuf) {
    let path = dir.join("settings.toml");
    std::fs::write(&path, settings).expect("write settings");
    let config = path.clone();
    let broker = BrokerProcess::start_configured(&dir.join("data"), move |cmd| {
        cmd.arg("--config").arg(config).env_remove("RUST_LOG");
    })
    .await;
    (broker, path)
}

/// `kill -HUP`, then waits for the broker's `n`th line saying how the reload went (`what`).
pub(crate) async fn hangup(broker: &BrokerProcess, n: usize, what: &str) {
    let status = within(
        "kill -HUP",
        tokio::process::Command::new("kill")
            .args(["-HUP", &broker.pid().to_string()])
            .status(),
    )
    .await
    .expect("run kill");
    assert!(status.success(), "kill -HUP failed");
    broker.output().wait_for(n, &[what]).await;
}

async fn connect_as(
    broker: &BrokerProcess,
    id: &str,
    token: &str,
) -> Result<(Client, Events), ClientError> {
    let mut options = ClientOptions::new(broker.addr().to_string(), id);
    options.token = Some(token.into());
    within("connect", Client::connect(options)).await
}

#[track_caller]
fn assert_unauthorized(result: Result<(Client, Events), ClientError>) {
    match result {
        Err(ClientError::Refused {
            code: ErrorCode::Unauthorized,
            ..
        }) => {}
        Err(other) => panic!("expected unauthorized, got {other}"),
        Ok(_) => panic!("expected unauthorized, got admitted"),
    }
}

fn auth_settings(credentials: &Path) -> String {
    format!("[auth]\ncredentials_file = {credentials:?}\nfailure_delay_ms = 10\n")
}

/// alice and bob are connected; the file then names alice and carol. After SIGHUP carol gets in,
/// bob is told `unauthorized` and cannot come back, and alice's connection carries on untouched.
#[tokio::test]
async fn sighup_admits_the_new_client_and_disconnects_only_the_removed_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let credentials = dir.path().join("credentials.toml");
    write_credentials(&credentials, &[("alice", "a-token"), ("bob", "b-token")]);
    let (broker, _) = broker(dir.path(), &auth_settings(&credentials)).await;
    let (alice, _alice_events) = connect_as(&broker, "alice", "a-token")
        .await
        .expect("alice");
    let (_bob, mut bob_events) = connect_as(&broker, "bob", "b-token").await.expect("bob");
    assert_unauthorized(connect_as(&broker, "carol", "c-token").await);

    write_credentials(&credentials, &[("alice", "a-token"), ("carol", "c-token")]);
    hangup(&broker, 1, "reloaded").await;

    match next_event(&mut bob_events).await {
        Event::Closed(CloseReason::Broker {
            code: ErrorCode::Unauthorized,
            ..
        }) => {}
        other => panic!("bob should be told unauthorized, got {other:?}"),
    }
    let (_carol, mut carol_events) = connect_as(&broker, "carol", "c-token")
        .await
        .expect("carol is admitted after the reload");
    alice
        .send("carol", "still here")
        .await
        .expect("alice sends on her first connection");
    match next_event(&mut carol_events).await {
        Event::Message(m) => assert_eq!(
            (m.from.as_str(), &m.body[..]),
            ("alice", &b"still here"[..])
        ),
        other => panic!("carol should get alice's message, got {other:?}"),
    }
    assert_eq!(
        broker.sessions("alice", "client connected"),
        1,
        "{}",
        broker.log()
    );
    assert_unauthorized(connect_as(&broker, "bob", "b-token").await);
    broker.terminate().await;
}

/// A credentials file that no longer parses is refused whole: the old one stays in force. A later
/// reload of a good file goes through, and a changed setting that needs a restart is named.
#[tokio::test]
async fn a_broken_reload_keeps_the_configuration_in_force() {
    let dir = tempfile::tempdir().expect("tempdir");
    let credentials = dir.path().join("credentials.toml");
    write_credentials(&credentials, &[("alice", "a-token")]);
    let (broker, settings) = broker(dir.path(), &auth_settings(&credentials)).await;
    let (alice, _alice_events) = connect_as(&broker, "alice", "a-token")
        .await
        .expect("alice");

    std::fs::write(&credentials, "[clients.alice\nhash = ").expect("break the file");
    hangup(&broker, 1, "reload failed").await;
    assert_eq!(broker.output().count(&["reload failed", "credentials"]), 1);
    connect_as(&broker, "alice", "a-token")
        .await
        .expect("the old credentials still admit alice");

    write_credentials(&credentials, &[("alice", "a-token"), ("carol", "c-token")]);
    let more = format!("{}\n[limits]\nwindow = 7\n", auth_settings(&credentials));
    std::fs::write(&settings, more).expect("change a setting");
    hangup(&broker, 1, "reloaded").await;
    assert_eq!(
        broker.output().count(&["only after a restart", "limits"]),
        1,
        "{}",
        broker.log()
    );
    connect_as(&broker, "carol", "c-token")
        .await
        .expect("carol");
    drop(alice);
    broker.terminate().await;
}

/// A self-signed certificate for 127.0.0.1, written as `name.pem` and `name.key`.
pub(crate) fn certificate(dir: &Path, name: &str) -> CertificateDer<'static> {
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).expect("write cert");
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).expect("write key");
    cert.der().clone()
}

/// Replaces `name.pem` and `name.key` with a new certificate and key (each file renamed into
/// place, as a certificate renewal does), and returns the new certificate.
pub(crate) fn renew(dir: &Path, name: &str) -> CertificateDer<'static> {
    let new = certificate(dir, "renewed");
    for ext in ["pem", "key"] {
        let to = dir.join(format!("{name}.{ext}"));
        std::fs::rename(dir.join(format!("renewed.{ext}")), to).expect("swap");
    }
    new
}

/// A TLS connection to `addr` (as `127.0.0.1`) trusting only `trusted`.
pub(crate) async fn tls_to(
    addr: std::net::SocketAddr,
    trusted: &[CertificateDer<'static>],
) -> TlsStream<TcpStream> {
    let mut roots = RootCertStore::empty();
    for cert in trusted {
        roots.add(cert.clone()).expect("trust");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    let name = ServerName::try_from("127.0.0.1").expect("name");
    within(
        "handshake",
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("handshake")
}

/// The certificate the broker presents to a new TLS connection (trusting `trusted`).
async fn served_certificate(
    broker: &BrokerProcess,
    trusted: &[CertificateDer<'static>],
) -> CertificateDer<'static> {
    let tls = tls_to(broker.addr(), trusted).await;
    tls.get_ref().1.peer_certificates().expect("a certificate")[0].clone()
}

/// The `[tls]` section serving `dir/server.pem` with `dir/server.key`.
pub(crate) fn main_tls(dir: &Path) -> String {
    format!(
        "[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        dir.join("server.pem"),
        dir.join("server.key")
    )
}

/// The certificate and key files are replaced; after SIGHUP new connections get the new
/// certificate, and a connection made before goes on with its session.
#[tokio::test]
async fn a_new_certificate_is_served_to_new_connections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = certificate(dir.path(), "server");
    let settings = main_tls(dir.path());
    let (broker, _) = broker(dir.path(), &settings).await;
    let trusted = [old.clone()];
    assert_eq!(served_certificate(&broker, &trusted).await, old);
    let ca = dir.path().join("server.pem");
    let mut options = ClientOptions::new(broker.addr().to_string(), "alice");
    options.tls = Some(switchboard_client::Tls::with_ca_file(&ca).expect("tls options"));
    let (alice, _alice_events) = within("connect", Client::connect(options))
        .await
        .expect("alice");

    let new = renew(dir.path(), "server");
    hangup(&broker, 1, "reloaded").await;
    assert_eq!(served_certificate(&broker, &[old, new.clone()]).await, new);
    alice
        .send("alice", "over the old connection")
        .await
        .expect("alice still sends");
    broker.terminate().await;
}

/// At `warn` the broker does not log sessions; after SIGHUP with `info` it does.
#[tokio::test]
async fn the_log_level_follows_a_reload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let quiet = "[log]\nlevel = \"warn,switchboard_broker::server=info\"\nformat = \"text\"\n";
    let (broker, settings) = broker(dir.path(), quiet).await;
    let (_alice, _) = crate::support::connect(broker.addr(), "alice").await;

    std::fs::write(&settings, "[log]\nlevel = \"info\"\nformat = \"text\"\n").expect("settings");
    hangup(&broker, 1, "log level changed").await;
    let (_bob, _) = crate::support::connect(broker.addr(), "bob").await;
    broker
        .output()
        .wait_for(1, &["client connected", "bob"])
        .await;
    // The log is one ordered stream: had alice's line been written, it would have come before bob's.
    assert_eq!(
        broker.sessions("alice", "client connected"),
        0,
        "{}",
        broker.log()
    );
    broker.terminate().await;
}
