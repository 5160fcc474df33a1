//! A cluster for one test: broker processes on one PostgreSQL database, which the suite starts.

use std::any::Any;
use std::net::SocketAddr;

use switchboard_broker::store::postgres::harness::TestPostgres;
use switchboard_client::{Client, ClientOptions, Event, Events};
use switchboard_tests::BrokerProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub(crate) use switchboard_tests::within;

/// Brokers sharing one database; dropping it kills them, then releases the database.
pub(crate) struct Cluster {
    pub nodes: Vec<BrokerProcess>,
    /// The connection string every node is given (`postgres.url`).
    url: String,
    dirs: Vec<tempfile::TempDir>,
    /// Settings every node is given beside the store's (as environment).
    extra: Vec<(String, String)>,
    /// Whatever keeps the database up (a database on the shared server, a server of the test's).
    _db: Box<dyn Any + Send>,
}

impl Cluster {
    /// `n` brokers on a fresh database of the suite's shared server, or `None` when the test must
    /// skip (said on stderr).
    pub(crate) async fn start(test: &str, n: usize) -> Option<Cluster> {
        Self::start_with(test, n, &[]).await
    }

    /// Like [`Cluster::start`], every broker with the settings `extra` too (as environment).
    pub(crate) async fn start_with(
        test: &str,
        n: usize,
        extra: &[(&str, &str)],
    ) -> Option<Cluster> {
        let test = test.to_owned();
        let db = blocking(move || TestPostgres::shared_or_skip(&test)).await?;
        let url = db.url.clone();
        Some(Cluster::on(url, n, extra, Box::new(db)).await)
    }

    /// `n` brokers given `url` and the settings `extra`; `db` is kept alive as long as they are.
    pub(crate) async fn on(
        url: String,
        n: usize,
        extra: &[(&str, &str)],
        db: Box<dyn Any + Send>,
    ) -> Cluster {
        let mut cluster = Cluster {
            nodes: Vec::with_capacity(n),
            url,
            dirs: Vec::with_capacity(n),
            extra: extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            _db: db,
        };
        for _ in 0..n {
            cluster.dirs.push(tempfile::tempdir().expect("tempdir"));
            let node = cluster.start_node(cluster.dirs.len() - 1).await;
            cluster.nodes.push(node);
        }
        cluster
    }

    /// The connection string every node is given.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Starts node `i`'s broker (again) on its data directory.
    pub(crate) async fn start_node(&self, i: usize) -> BrokerProcess {
        let mut env = vec![
            ("SWITCHBOARD_BROKER_STORE", "postgres"),
            ("SWITCHBOARD_BROKER_POSTGRES__URL", self.url.as_str()),
        ];
        env.extend(self.extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        BrokerProcess::start_with_env(self.dirs[i].path(), &env).await
    }

    /// Connects `id` to node `node`.
    pub(crate) async fn connect(&self, node: usize, id: &str) -> (Client, Events) {
        let addr = self.nodes[node].addr().to_string();
        within("connect", Client::connect(ClientOptions::new(addr, id)))
            .await
            .unwrap_or_else(|e| panic!("{id} cannot connect to node {node}: {e}"))
    }
}

/// A test server of the test's own (for tests that stop it), or `None` when the test must skip.
pub(crate) async fn own_server(test: &str) -> Option<std::sync::Arc<TestPostgres>> {
    let test = test.to_owned();
    blocking(move || TestPostgres::start_or_skip(&test)).await
}

/// Runs blocking harness work (starting, stopping PostgreSQL) on the blocking pool, so the
/// test's runtime keeps serving its clients meanwhile.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("the harness")
}

/// The status `GET /readyz` on the admin listener at `admin` answers.
pub(crate) async fn readyz(admin: SocketAddr) -> u16 {
    let mut stream = within("admin connect", tokio::net::TcpStream::connect(admin))
        .await
        .expect("admin connect");
    let request = format!("GET /readyz HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    within("the /readyz answer", stream.read_to_string(&mut response))
        .await
        .expect("read");
    response
        .split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

/// The next event, which must come within the shared bound.
pub(crate) async fn next_event(events: &mut Events) -> Event {
    within("an event", events.next())
        .await
        .expect("event stream ended")
}

/// Reads `n` messages, acknowledging each; returns (sender, body) in arrival order.
pub(crate) async fn receive_and_ack(
    client: &Client,
    events: &mut Events,
    n: usize,
) -> Vec<(String, String)> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match next_event(events).await {
            Event::Message(m) => {
                let body = String::from_utf8(m.body.to_vec()).expect("utf-8 body");
                got.push((m.from.clone(), body));
                client.ack(m.message_id).await.expect("ack");
            }
            other => panic!("expected a message, got {other:?}"),
        }
    }
    got
}
