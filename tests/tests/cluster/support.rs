//! A cluster for one test: a fresh database on the suite's PostgreSQL and broker processes on it.

use switchboard_broker::store::postgres::harness::{TestDatabase, TestPostgres};
use switchboard_client::{Client, ClientOptions, Event, Events};
use switchboard_tests::BrokerProcess;

pub(crate) use switchboard_tests::within;

/// Brokers sharing one database; dropping it kills them, then releases the database.
pub(crate) struct Cluster {
    pub nodes: Vec<BrokerProcess>,
    _dirs: Vec<tempfile::TempDir>,
    /// The database they share, for tests that look at its rows.
    pub db: TestDatabase,
}

impl Cluster {
    /// `n` brokers on a fresh database, or `None` when the test must skip (said on stderr).
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
        let db = tokio::task::spawn_blocking(move || TestPostgres::shared_or_skip(&test))
            .await
            .expect("the harness")?;
        let mut nodes = Vec::with_capacity(n);
        let mut dirs = Vec::with_capacity(n);
        for _ in 0..n {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut env = vec![
                ("SWITCHBOARD_BROKER_STORE", "postgres"),
                ("SWITCHBOARD_BROKER_POSTGRES__URL", db.url.as_str()),
            ];
            env.extend_from_slice(extra);
            nodes.push(BrokerProcess::start_with_env(dir.path(), &env).await);
            dirs.push(dir);
        }
        Some(Cluster {
            nodes,
            _dirs: dirs,
            db,
        })
    }

    /// Connects `id` to node `node`.
    pub(crate) async fn connect(&self, node: usize, id: &str) -> (Client, Events) {
        let addr = self.nodes[node].addr().to_string();
        within("connect", Client::connect(ClientOptions::new(addr, id)))
            .await
            .unwrap_or_else(|e| panic!("{id} cannot connect to node {node}: {e}"))
    }
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
