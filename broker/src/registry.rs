//! The Registry: who is connected, from where, since when.
//!
//! A session registers once its `Hello` checks out. An id belongs to one connection at a time: when the
//! same id connects again, the newer connection takes over and the older one is told to leave
//! (`session-taken-over`). The Registry is also how shutdown reaches every connected client, and how
//! the admin API lists the connected clients and disconnects one (`kicked`).
//!
//! In cluster mode (`store = "postgres"`) the id is also claimed across brokers: a registration
//! answers once [`crate::cluster::Presence`] has the claim in the database, and another broker's
//! claim reaches this Registry as [`TakenOver`]. On one broker there is no presence and no cost.

use foldhash::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use actix::prelude::*;
use actix::WeakRecipient;
use switchboard_proto::{ClientId, ErrorCode};

use crate::cluster::Presence;
use crate::session::Traffic;

/// Tells a session to send `Error { code, text }` and close.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Kick {
    pub code: ErrorCode,
    pub text: String,
}

/// A session's claim to an id.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Register {
    pub client: ClientId,
    pub conn_id: u64,
    pub peer: SocketAddr,
    pub session: Recipient<Kick>,
    /// The connection's byte counters, for the admin API.
    pub(crate) traffic: Arc<Traffic>,
}

/// The session `conn_id` has ended. Ignored if a newer session holds the id by now.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unregister {
    pub client: ClientId,
    pub conn_id: u64,
}

/// What the Registry knows about a connected client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub conn_id: u64,
    pub peer: SocketAddr,
    pub since: SystemTime,
}

/// Looks up one client (tests ask this; the feature `test-support`).
#[cfg(feature = "test-support")]
#[derive(Message)]
#[rtype(result = "Option<Connection>")]
pub struct Lookup(pub ClientId);

/// Kicks every connected client with `shutting-down`; answers how many were told.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct KickAll;

struct Registered {
    info: Connection,
    /// Weak: a strong `Recipient` costs two more allocations per connected client, and a session that
    /// is gone cannot be kicked anyway.
    session: WeakRecipient<Kick>,
    traffic: Arc<Traffic>,
}

impl Registered {
    /// Tells the session to go, if it is still there.
    fn kick(&self, kick: Kick) {
        if let Some(session) = self.session.upgrade() {
            session.do_send(kick);
        }
    }
}

/// Answers at once: the watchdog asks it to learn that the Registry still handles messages.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Ping;

/// Disconnects these clients with `unauthorized`: a reload removed their ids from the credentials.
/// Answers how many were connected.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Revoke(pub Vec<ClientId>);

/// Resolves once no client is connected (used by shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AwaitEmpty;

/// Resolves once the client id has no connection (at once if it has none now). Tests wait on it
/// instead of polling (the feature `test-support`).
#[cfg(feature = "test-support")]
#[derive(Message)]
#[rtype(result = "()")]
pub struct AwaitGone(pub ClientId);

#[derive(Default)]
pub struct Registry {
    clients: HashMap<ClientId, Registered>,
    /// Cluster mode: the id's claim across brokers.
    presence: Option<Presence>,
    empty_waiters: Vec<tokio::sync::oneshot::Sender<()>>,
    #[cfg(feature = "test-support")]
    gone_waiters: HashMap<ClientId, Vec<tokio::sync::oneshot::Sender<()>>>,
}

impl Registry {
    /// A Registry whose clients are also claimed across the brokers of one database.
    pub fn clustered(presence: Presence) -> Self {
        Self {
            presence: Some(presence),
            ..Self::default()
        }
    }

    fn notify_if_empty(&mut self) {
        if self.clients.is_empty() {
            for tx in self.empty_waiters.drain(..) {
                let _ = tx.send(());
            }
        }
    }
}

impl Actor for Registry {
    type Context = Context<Self>;
}

impl Handler<Register> for Registry {
    /// At once on one broker; in cluster mode once the claim is in the database.
    type Result = Response<()>;

    fn handle(&mut self, msg: Register, _: &mut Context<Self>) -> Response<()> {
        let claim = self
            .presence
            .as_ref()
            .map(|presence| presence.claim(msg.client.as_str(), msg.conn_id));
        let entry = Registered {
            info: Connection {
                conn_id: msg.conn_id,
                peer: msg.peer,
                since: SystemTime::now(),
            },
            session: msg.session.downgrade(),
            traffic: msg.traffic,
        };
        if let Some(old) = self.clients.insert(msg.client.clone(), entry) {
            tracing::info!(client = %msg.client, old_peer = %old.info.peer, new_peer = %msg.peer, "session taken over");
            let kick = Kick {
                code: ErrorCode::SessionTakenOver,
                text: format!("client id {} connected again from {}", msg.client, msg.peer),
            };
            // A control message, at most one per takeover: `do_send` so that a session whose mailbox is
            // full of deliveries still learns it must go. If it is already gone, nothing is lost.
            old.kick(kick);
        }
        match claim {
            None => Response::reply(()),
            Some(claim) => Response::fut(claim),
        }
    }
}

/// Another broker took `client` over from connection `session` of this one (cluster mode).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct TakenOver {
    pub client: String,
    pub session: u64,
}

impl Handler<TakenOver> for Registry {
    type Result = ();

    fn handle(&mut self, msg: TakenOver, _: &mut Context<Self>) {
        // A hint may come late, after a newer session of this broker took the id back.
        let Some(registered) = self
            .clients
            .get(msg.client.as_str())
            .filter(|r| r.info.conn_id == msg.session)
        else {
            return;
        };
        tracing::info!(client = %msg.client, "session taken over by another broker");
        registered.kick(Kick {
            code: ErrorCode::SessionTakenOver,
            text: format!("client id {} connected to another broker", msg.client),
        });
    }
}

impl Handler<Unregister> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Unregister, _: &mut Context<Self>) {
        if self
            .clients
            .get(&msg.client)
            .is_some_and(|r| r.info.conn_id == msg.conn_id)
        {
            self.clients.remove(&msg.client);
            if let Some(presence) = &self.presence {
                presence.release(msg.client.as_str(), msg.conn_id);
            }
            #[cfg(feature = "test-support")]
            for tx in self.gone_waiters.remove(&msg.client).into_iter().flatten() {
                let _ = tx.send(());
            }
            self.notify_if_empty();
        }
    }
}

#[cfg(feature = "test-support")]
impl Handler<AwaitGone> for Registry {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: AwaitGone, _: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.clients.contains_key(&msg.0) {
            self.gone_waiters.entry(msg.0).or_default().push(tx);
        } else {
            let _ = tx.send(());
        }
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

#[cfg(feature = "test-support")]
impl Handler<Lookup> for Registry {
    type Result = Option<Connection>;

    fn handle(&mut self, msg: Lookup, _: &mut Context<Self>) -> Self::Result {
        self.clients.get(&msg.0).map(|r| r.info.clone())
    }
}

impl Handler<KickAll> for Registry {
    type Result = usize;

    fn handle(&mut self, _: KickAll, _: &mut Context<Self>) -> usize {
        let kick = Kick {
            code: ErrorCode::ShuttingDown,
            text: "the broker is shutting down".into(),
        };
        // One control message per session (see `Register`).
        for registered in self.clients.values() {
            registered.kick(kick.clone());
        }
        self.clients.len()
    }
}

impl Handler<Ping> for Registry {
    type Result = ();

    fn handle(&mut self, _: Ping, _: &mut Context<Self>) {}
}

impl Handler<Revoke> for Registry {
    type Result = usize;

    fn handle(&mut self, msg: Revoke, _: &mut Context<Self>) -> usize {
        let mut told = 0;
        for client in msg.0 {
            // Unregistered when the session ends, as after any kick.
            if let Some(registered) = self.clients.get(&client) {
                tracing::info!(%client, "client id removed from the credentials; disconnecting");
                registered.kick(Kick {
                    code: ErrorCode::Unauthorized,
                    text: "this client id was removed from the broker's credentials".into(),
                });
                told += 1;
            }
        }
        told
    }
}

impl Handler<AwaitEmpty> for Registry {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: AwaitEmpty, _: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.empty_waiters.push(tx);
        self.notify_if_empty();
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

/// Asks for every connected client (the admin API's `GET /api/v1/clients`).
#[derive(Message, Debug)]
#[rtype(result = "Vec<ClientRow>")]
pub struct ListClients;

/// One connected client as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRow {
    pub client: ClientId,
    pub info: Connection,
    /// Bytes read from it and written to it on this connection.
    pub received: u64,
    pub sent: u64,
}

impl Handler<ListClients> for Registry {
    type Result = Vec<ClientRow>;

    fn handle(&mut self, _: ListClients, _: &mut Context<Self>) -> Vec<ClientRow> {
        self.clients
            .iter()
            .map(|(client, r)| ClientRow {
                client: client.clone(),
                info: r.info.clone(),
                received: r.traffic.received(),
                sent: r.traffic.sent(),
            })
            .collect()
    }
}

/// An operator disconnects `client` (the admin API's kick): its session is sent `kicked` and
/// closes. Answers whether the client was connected.
#[derive(Message, Debug)]
#[rtype(result = "bool")]
pub struct KickClient {
    pub client: ClientId,
    /// Who asked, for the client's error text.
    pub by: String,
}

impl Handler<KickClient> for Registry {
    type Result = bool;

    fn handle(&mut self, msg: KickClient, _: &mut Context<Self>) -> bool {
        let Some(registered) = self.clients.get(&msg.client) else {
            return false;
        };
        // A control message (see `Register`); the session unregisters itself as it closes.
        registered.kick(Kick {
            code: ErrorCode::Kicked,
            text: format!("disconnected by an operator ({})", msg.by),
        });
        true
    }
}
