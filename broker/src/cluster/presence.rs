//! One client id, one live session across every broker on the database: who holds which id, kept
//! in `switchboard_sessions` by one thread per broker.
//!
//! The Registry still decides among this broker's own connections; in cluster mode it also hands
//! each admitted session to [`Presence`], whose thread claims the id in the database before the
//! session is greeted (one statement; it takes the row over whatever its age, so a client whose
//! broker died is admitted elsewhere at once) and gives it back when the session ends. The broker
//! that held the id hears of the takeover twice over: at once through the claim's notification
//! (`super::WakeListener` passes it to the Registry as a [`TakenOver`]) and, should that be lost, at
//! its next renewal, which finds the row no longer its own. Every third of `cluster.lease_secs` the
//! thread renews all its rows in one statement and deletes the rows whose lease ran out (brokers
//! that died): those rows only ever answer presence queries, never a `hello`.

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix::{Actor, Addr, Recipient};
use postgres::Client;

use super::lease::{self, Held, Holder};
use super::Takeovers;
use crate::registry::{Registry, TakenOver};
use crate::store::postgres::Database;

/// How long a `hello` waits for its claim before the session is admitted anyway (the claim still
/// goes ahead, and the renewals catch up): a database that hangs must not hold every `hello`.
const CLAIM_WAIT: Duration = Duration::from_secs(2);

/// What the Registry asks of the presence thread.
enum Request {
    /// Claim `client` for connection `session`; `done` is answered once the claim committed or
    /// failed (a failure is logged and the next renewal tries again).
    Claim {
        client: String,
        session: u64,
        done: tokio::sync::oneshot::Sender<()>,
    },
    /// Connection `session` of `client` ended.
    Release {
        client: String,
        session: u64,
    },
    Stop,
}

/// The Registry's handle on the presence thread; cheap to clone.
///
/// The channel is unbounded, yet bounded in practice: each connection sends at most one claim and
/// one release, and connections are capped by `limits.max_connections`.
#[derive(Clone)]
pub struct Presence {
    requests: Sender<Request>,
}

impl std::fmt::Debug for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presence").finish_non_exhaustive()
    }
}

impl Presence {
    /// Claims `client` for connection `session`; resolves once the database has the claim, or the
    /// claim failed or took longer than [`CLAIM_WAIT`] (logged: the session is admitted, and
    /// renewals keep trying).
    pub fn claim(&self, client: &str, session: u64) -> impl std::future::Future<Output = ()> {
        let (done, answered) = tokio::sync::oneshot::channel();
        let sent = self.requests.send(Request::Claim {
            client: client.to_owned(),
            session,
            done,
        });
        if sent.is_err() {
            tracing::warn!(%client, "presence thread gone; session not claimed in the database");
        }
        let client = client.to_owned();
        async move {
            if tokio::time::timeout(CLAIM_WAIT, answered).await.is_err() {
                tracing::warn!(%client, "the database did not take the claim in time; admitted anyway");
            }
        }
    }

    /// Gives `client` back once connection `session` has ended.
    pub fn release(&self, client: &str, session: u64) {
        let _ = self.requests.send(Request::Release {
            client: client.to_owned(),
            session,
        });
    }
}

/// The Registry of a broker in cluster mode, with its presence thread on the database `db` and
/// what the wake-up listener needs to pass takeovers to it.
pub fn start_registry(
    db: &Database,
    lease: Duration,
) -> std::io::Result<(Addr<Registry>, PresenceThread, Takeovers)> {
    let node = node_id();
    let (presence, requests) = PresenceThread::channel();
    let registry = Registry::clustered(presence.clone()).start();
    let recipient = registry.clone().recipient();
    let thread = PresenceThread::spawn(
        &presence,
        requests,
        db.clone(),
        node.clone(),
        lease,
        recipient.clone(),
    )?;
    let takeovers = Takeovers {
        node,
        registry: recipient,
    };
    Ok((registry, thread, takeovers))
}

/// A name for this broker process in the database: its pid and a random part, fresh at every start.
pub fn node_id() -> String {
    format!("{}-{:08x}", std::process::id(), rand::random::<u32>())
}

/// The presence thread; stopped by [`PresenceThread::stop`] once no session is left.
pub struct PresenceThread {
    requests: Sender<Request>,
    thread: JoinHandle<()>,
}

impl PresenceThread {
    /// A handle for the Registry and the requests it will send, before the thread exists (the
    /// thread needs the Registry's address, the Registry needs the handle).
    pub fn channel() -> (Presence, PresenceRequests) {
        let (requests, receiver) = mpsc::channel();
        (Presence { requests }, PresenceRequests(receiver))
    }

    /// Starts the thread on the database `database`, as broker `node`; `registry` hears of every
    /// session this broker lost to another at renewal time.
    pub fn spawn(
        presence: &Presence,
        requests: PresenceRequests,
        database: Database,
        node: String,
        lease: Duration,
        registry: Recipient<TakenOver>,
    ) -> std::io::Result<Self> {
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let mut state = State {
            database,
            db: None,
            holder: Holder { node, lease_ms },
            held: HashMap::new(),
            registry,
        };
        let thread = std::thread::Builder::new()
            .name("switchboard-presence".into())
            .spawn(move || state.run(&requests.0, lease / 3))?;
        Ok(Self {
            requests: presence.requests.clone(),
            thread,
        })
    }

    /// Stops the thread after the requests already sent (the last sessions' releases).
    pub fn stop(self) {
        let _ = self.requests.send(Request::Stop);
        if self.thread.join().is_err() {
            tracing::error!("the presence thread panicked");
        }
    }
}

/// The receiving end of a [`Presence`], until [`PresenceThread::spawn`] takes it.
pub struct PresenceRequests(Receiver<Request>);

/// What the presence thread keeps.
struct State {
    database: Database,
    /// `None` after the connection broke, until the next statement connects again.
    db: Option<Client>,
    holder: Holder,
    /// The sessions of this broker, client id to connection: what renewals renew.
    held: HashMap<String, u64>,
    registry: Recipient<TakenOver>,
}

impl State {
    fn run(&mut self, requests: &Receiver<Request>, period: Duration) {
        tracing::info!(node = %self.holder.node, "presence in the database");
        let mut renewal = Instant::now() + period;
        loop {
            let wait = renewal.saturating_duration_since(Instant::now());
            match requests.recv_timeout(wait) {
                Ok(Request::Claim {
                    client,
                    session,
                    done,
                }) => {
                    self.claim(client, session);
                    let _ = done.send(());
                }
                Ok(Request::Release { client, session }) => self.release(&client, session),
                Ok(Request::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {
                    self.renew();
                    renewal = Instant::now() + period;
                }
            }
        }
    }

    fn claim(&mut self, client: String, session: u64) {
        self.held.insert(client.clone(), session);
        let holder = self.holder.clone();
        match self.with(|db| holder.claim(db, &client, session)) {
            Ok(Some((node, old))) => {
                tracing::info!(%client, from_node = %node, from_session = old, "session taken over from another broker");
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%client, %error, "cannot claim the session in the database; renewals will retry")
            }
        }
    }

    fn release(&mut self, client: &str, session: u64) {
        if self.held.get(client) == Some(&session) {
            self.held.remove(client);
        }
        let holder = self.holder.clone();
        if let Err(error) = self.with(|db| holder.release(db, client, session)) {
            // Left to the lease: the row is reaped, or taken over by the next hello.
            tracing::warn!(%client, %error, "cannot release the session in the database");
        }
    }

    /// Renews this broker's rows, tells the Registry about those another broker took, and reaps.
    fn renew(&mut self) {
        if !self.held.is_empty() {
            let held: Vec<Held> = self.held.iter().map(|(c, s)| (c.clone(), *s)).collect();
            let holder = self.holder.clone();
            match self.with(|db| holder.renew(db, &held)) {
                Ok(ours) => self.lost(held.into_iter().filter(|(c, _)| !ours.contains(c))),
                Err(error) => tracing::warn!(%error, "cannot renew the session leases"),
            }
        }
        match self.with(lease::reap) {
            Ok(0) => {}
            Ok(reaped) => tracing::info!(reaped, "reaped session rows whose lease ran out"),
            Err(error) => tracing::warn!(%error, "cannot reap expired session rows"),
        }
    }

    /// These sessions are another broker's now: the Registry closes them. They stay in `held`
    /// until their release, so a message a full Registry mailbox refused is sent again next time.
    fn lost(&self, sessions: impl Iterator<Item = Held>) {
        for (client, session) in sessions {
            tracing::info!(%client, session, "session found taken over at renewal");
            let _ = self.registry.try_send(TakenOver { client, session });
        }
    }

    /// Runs `f` on the connection, connecting first if there is none; a failure that broke the
    /// connection drops it, so the next statement connects again.
    fn with<T>(
        &mut self,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, postgres::Error> {
        if self.db.as_ref().is_some_and(Client::is_closed) {
            self.db = None;
        }
        let db = match self.db.take() {
            Some(db) => db,
            None => connect(&self.database)?,
        };
        let db = self.db.insert(db);
        let result = f(db);
        if result.is_err() && db.is_closed() {
            self.db = None;
        }
        result
    }
}

/// The presence connection. Its rows are soft state: a claim lost in a crash of the database server
/// is put back by the next renewal, so its commits need not wait for the WAL to reach the disk
/// (`synchronous_commit = off`), which would cost every `hello` a flush.
fn connect(database: &Database) -> Result<Client, postgres::Error> {
    let mut db = database.connect()?;
    db.batch_execute("SET synchronous_commit = off")?;
    Ok(db)
}
