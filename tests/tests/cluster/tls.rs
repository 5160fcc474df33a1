//! TLS to PostgreSQL: brokers that reach their database over verified TLS with every connection
//! they make, and one that cannot verify the server and refuses to start.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use switchboard_broker::store::postgres::harness::TestDatabase;
use switchboard_client::Event;
use switchboard_tests::binary;

use crate::support::*;

/// A CA and a server certificate for 127.0.0.1 signed by it; the CA as a file.
struct Pki {
    _dir: tempfile::TempDir,
    ca_file: PathBuf,
    server_cert: String,
    server_key: String,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("server params")
        .signed_by(&key, &ca)
        .expect("server cert");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("write the CA");
    Pki {
        ca_file,
        server_cert: cert.pem(),
        server_key: key.serialize_pem(),
        _dir: dir,
    }
}

/// A database on a server of the test's own serving TLS with `pki`'s certificate (the database
/// holds the server up), or `None` to skip.
async fn tls_database(test: &str, pki: &Pki) -> Option<TestDatabase> {
    let server = own_server(test).await?;
    let (cert, key) = (pki.server_cert.clone(), pki.server_key.clone());
    let db = blocking(move || {
        server.enable_tls(&cert, &key)?;
        server.database()
    })
    .await
    .expect("turn TLS on and make a database");
    Some(db)
}

/// Two brokers on `sslmode=require` with the CA: a message crosses between them (the store, the
/// wake-up listener and the presence thread all connected), and every connection of theirs to
/// the database is TLS.
#[tokio::test]
async fn brokers_reach_their_database_over_verified_tls() {
    let pki = pki();
    let Some(db) = tls_database("postgres over TLS", &pki).await else {
        return;
    };
    let (name, plain_url) = (db.name.clone(), db.url.clone());
    let url = format!("{} sslmode=require", db.url);
    let ca = pki.ca_file.to_string_lossy().into_owned();
    let extra = [("SWITCHBOARD_BROKER_POSTGRES__CA_FILE", ca.as_str())];
    let cluster = Cluster::on(url, 2, &extra, Box::new(db)).await;
    let (_bob, mut bob_events) = cluster.connect(1, "bob").await;
    let (alice, _alice_events) = cluster.connect(0, "alice").await;
    alice.send("bob", "over tls").await.expect("accepted");
    match next_event(&mut bob_events).await {
        Event::Message(m) => assert_eq!(&m.body[..], b"over tls"),
        other => panic!("expected the message, got {other:?}"),
    }
    let (total, encrypted) = blocking(move || {
        let mut db = postgres::Client::connect(&plain_url, postgres::NoTls).expect("connect");
        let row = db
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE s.ssl)
                 FROM pg_stat_activity a JOIN pg_stat_ssl s ON s.pid = a.pid
                 WHERE a.datname = $1 AND a.pid <> pg_backend_pid()",
                &[&name],
            )
            .expect("pg_stat_ssl");
        (row.get::<_, i64>(0), row.get::<_, i64>(1))
    })
    .await;
    // Each broker: the store's commits, the wake-up listener, the presence thread, and the page
    // reads' connection once it has read.
    assert!(total >= 6, "the brokers' connections: {total}");
    assert_eq!(encrypted, total, "every broker connection is TLS");
}

/// `sslmode=require` without the CA: the system's roots do not vouch for the test's server, so the
/// broker refuses to start, saying why, instead of talking to a server nobody verified.
#[tokio::test]
async fn a_broker_that_cannot_verify_its_database_refuses_to_start() {
    let pki = pki();
    let Some(db) = tls_database("postgres over unverified TLS", &pki).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let out = within(
        "a refused start",
        tokio::process::Command::new(binary("switchboard-broker"))
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .env("SWITCHBOARD_BROKER_STORE", "postgres")
            .env(
                "SWITCHBOARD_BROKER_POSTGRES__URL",
                format!("{} sslmode=require", db.url),
            )
            .env("SWITCHBOARD_BROKER_ADMIN__LISTEN", "")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("run the broker");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started unverified:\n{stderr}");
    assert!(
        stderr.contains("certificate") && !stderr.contains("listening on"),
        "the refusal says the certificate was not trusted:\n{stderr}"
    );
}
