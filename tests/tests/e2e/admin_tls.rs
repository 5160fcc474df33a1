//! TLS on the admin listener, with real `switchboard-broker` processes: the admin CLI speaks
//! https with `--ca` and is refused by a broker whose certificate it does not trust; a missing or
//! bad certificate refuses the start and names its key; a SIGHUP reloads the certificate for new
//! connections while a connection made before goes on serving.

use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls_pki_types::CertificateDer;
use switchboard_tests::binary;

use crate::admin_cli::{admin, built};
use crate::reload::{broker, certificate, hangup, main_tls, renew, tls_to};
use crate::support::within;

const TOKEN: &str = "tls-admin-token";
const LOOPBACK: &str = "127.0.0.1:0";

/// The `[admin]` section of a broker with a token and its own admin certificate `name`.
fn own_certificate(dir: &Path, name: &str) -> String {
    format!(
        "[admin]\ntoken = {TOKEN:?}\n[admin.tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key"))
    )
}

/// An open HTTPS connection to the admin listener, and the certificate it was served.
struct Https {
    sender: SendRequest<Empty<Bytes>>,
    certificate: CertificateDer<'static>,
}

impl Https {
    /// Connects trusting only `trusted`.
    async fn connect(addr: SocketAddr, trusted: &[CertificateDer<'static>]) -> Https {
        let tls = tls_to(addr, trusted).await;
        let certificate = tls.get_ref().1.peer_certificates().expect("a certificate")[0].clone();
        let (sender, connection) = within(
            "http",
            hyper::client::conn::http1::handshake(TokioIo::new(tls)),
        )
        .await
        .expect("http handshake");
        tokio::spawn(connection);
        Https {
            sender,
            certificate,
        }
    }

    /// `GET path` with the token, on this connection: the status and the body.
    async fn get(&mut self, path: &str) -> (u16, String) {
        let request = Request::get(path)
            .header("host", "127.0.0.1")
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Empty::new())
            .expect("request");
        let response = within("request", self.sender.send_request(request))
            .await
            .expect("an answer on this connection");
        let status = response.status().as_u16();
        let body = within("body", response.into_body().collect())
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

/// The admin CLI reaches the broker's https admin listener with `--ca` naming its certificate;
/// with another CA it is refused (exit 3, the broker logs the failed handshake); plain HTTP to the
/// TLS port gets no answer, and `--ca` on a plain address is a usage error (exit 2).
#[tokio::test]
async fn the_cli_speaks_tls_and_a_client_not_trusting_the_ca_is_refused() {
    built();
    let dir = tempfile::tempdir().expect("tempdir");
    certificate(dir.path(), "admin");
    certificate(dir.path(), "stranger");
    let (broker, _) = broker(dir.path(), &own_certificate(dir.path(), "admin")).await;
    let url = format!("https://{}", broker.admin_addr());
    let ca = dir.path().join("admin.pem").display().to_string();
    let stranger = dir.path().join("stranger.pem").display().to_string();

    let status = admin(&url, Some(TOKEN), &["--ca", &ca, "status"])
        .await
        .ok();
    assert!(status.contains("connections 0 "), "{status}");

    let refused = admin(&url, Some(TOKEN), &["--ca", &stranger, "status"]).await;
    assert_eq!(refused.code, Some(3), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("no TLS with the admin listener")
            && refused.stderr.contains("invalid peer certificate"),
        "{}",
        refused.stderr
    );
    broker
        .output()
        .wait_for(1, &["admin TLS handshake failed"])
        .await;

    let plain = admin(&broker.admin_addr().to_string(), Some(TOKEN), &["status"]).await;
    assert_eq!(plain.code, Some(3), "{}{}", plain.stdout, plain.stderr);
    let misused = admin(
        &broker.admin_addr().to_string(),
        Some(TOKEN),
        &["--ca", &ca, "status"],
    )
    .await;
    assert_eq!(misused.code, Some(2), "{}", misused.stderr);
    broker.terminate().await;
}

/// Runs the broker with `settings` and its admin listener on `listen`, and expects it to refuse
/// the start naming `key`.
async fn refused_start(dir: &Path, settings: &str, listen: &str, key: &str) {
    let path = dir.join("refused.toml");
    std::fs::write(&path, settings).expect("write settings");
    let out = within(
        "a refused start",
        tokio::process::Command::new(binary("switchboard-broker"))
            .arg("--config")
            .arg(&path)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.join("data"))
            .env("SWITCHBOARD_BROKER_ADMIN__LISTEN", listen)
            .env("RUST_LOG", "info")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("run the broker");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with {settings}:\n{stderr}");
    assert!(
        stderr.contains(key) && !stderr.contains("listening on"),
        "{settings}: the refusal names {key}:\n{stderr}"
    );
}

/// A certificate file that is missing, one that holds no certificate, a key that does not fit, and
/// `use_main` without a main certificate: each refuses the start before anything listens, naming
/// the key to fix. Off loopback without TLS the start is refused too.
#[tokio::test]
async fn a_missing_or_bad_admin_certificate_refuses_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    certificate(d, "admin");
    certificate(d, "other");
    std::fs::write(d.join("garbage.pem"), "not a certificate\n").expect("write");
    let files = |cert: &str, key: &str| {
        format!(
            "[admin]\ntoken = {TOKEN:?}\n[admin.tls]\ncert_file = {:?}\nkey_file = {:?}\n",
            d.join(cert),
            d.join(key)
        )
    };
    refused_start(
        d,
        &files("missing.pem", "admin.key"),
        LOOPBACK,
        "admin.tls.cert_file",
    )
    .await;
    refused_start(
        d,
        &files("garbage.pem", "admin.key"),
        LOOPBACK,
        "admin.tls.cert_file",
    )
    .await;
    refused_start(
        d,
        &files("admin.pem", "missing.key"),
        LOOPBACK,
        "admin.tls.key_file",
    )
    .await;
    refused_start(d, &files("admin.pem", "other.key"), LOOPBACK, "do not fit").await;
    refused_start(
        d,
        "[admin.tls]\nuse_main = true\n",
        LOOPBACK,
        "admin.tls.use_main",
    )
    .await;
    let exposed = format!("[admin]\ntoken = {TOKEN:?}\n");
    refused_start(d, &exposed, "0.0.0.0:0", "admin.allow_plaintext").await;
}

/// The admin listener serves the main listener's certificate (`use_main`). A connection is open;
/// the certificate and key are replaced and SIGHUP sent: a new connection gets the new
/// certificate, and the open one still answers, on the certificate it negotiated.
#[tokio::test]
async fn a_reloaded_certificate_reaches_new_connections_and_spares_the_open_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = certificate(dir.path(), "server");
    let settings = format!(
        "{}[admin]\ntoken = {TOKEN:?}\n[admin.tls]\nuse_main = true\n",
        main_tls(dir.path())
    );
    let (broker, _) = broker(dir.path(), &settings).await;
    let mut open = Https::connect(broker.admin_addr(), std::slice::from_ref(&old)).await;
    assert_eq!(open.certificate, old);
    assert_eq!(open.get("/api/v1/status").await.0, 200);

    let new = renew(dir.path(), "server");
    hangup(&broker, 1, "reloaded").await;
    assert_eq!(
        broker
            .output()
            .count(&["reloaded", "admin_tls_reloaded=true"]),
        1,
        "{}",
        broker.log()
    );

    let mut fresh = Https::connect(broker.admin_addr(), &[old.clone(), new.clone()]).await;
    assert_eq!(
        fresh.certificate, new,
        "a new connection gets the new certificate"
    );
    assert_eq!(fresh.get("/api/v1/status").await.0, 200);
    let (status, body) = open.get("/api/v1/clients").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "[]"),
        "the open connection still serves"
    );
    broker.terminate().await;
}
