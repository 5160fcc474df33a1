//! The unconfirmed path: datagrams, from sender to recipient, never stored and never answered.
//!
//! [`Datagrams`] is the directory of connected clients as this path sees them ([`Peer`]): a session
//! joins it when its `hello` is admitted (getting the session number and key `hi` announces) and
//! leaves when it ends, which ends its key. A datagram, from a `datagram` frame on a TCP session or
//! from the UDP listener (`udp.rs`), is checked (size, recipient, send rules, the sender's rate) and
//! handed straight to the recipient: over UDP to the address it bound (sealed into an [`Outbox`],
//! sent at the end of the listener's batch, `outbox.rs`), else into its [`Peer`]'s small queue,
//! which its session writes out beside (never behind) its mailbox. The Router and the store
//! never see a datagram. Whatever is dropped is counted by reason (`metrics::Dropped`).

mod outbox;
mod peer;
pub(crate) mod udp;

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use bytes::Bytes;
use rand::RngCore;
use switchboard_proto::{BrokerFrame, ClientId, DatagramKey};

pub(crate) use self::outbox::{Outbox, UdpOut};
use self::peer::lock;
pub(crate) use self::peer::{Peer, Queued};
use crate::auth::Grant;
use crate::metrics::{Dropped, Metrics, Via};
use crate::settings::DatagramSettings;

/// Every connected client's datagram side, by client id and by session number.
pub(crate) struct Datagrams {
    limits: DatagramSettings,
    metrics: Arc<Metrics>,
    by_client: RwLock<HashMap<ClientId, Arc<Peer>>>,
    by_session: RwLock<HashMap<u64, Arc<Peer>>>,
    /// The UDP socket, for sending; `None` when the broker listens for no datagrams over UDP.
    udp: Option<UdpOut>,
}

impl Datagrams {
    pub(crate) fn new(
        limits: DatagramSettings,
        metrics: Arc<Metrics>,
        udp: Option<UdpOut>,
    ) -> Self {
        Self {
            limits,
            metrics,
            by_client: RwLock::default(),
            by_session: RwLock::default(),
            udp,
        }
    }

    /// The UDP port `hi` announces, when there is a listener.
    pub(crate) fn udp_port(&self) -> Option<u16> {
        let addr = self.udp.as_ref()?.local_addr().ok()?;
        Some(addr.port())
    }

    /// Admits a session: a fresh session number and key. A newer session of the same client takes
    /// the older one's place (the Registry's takeover); the older one's key ends at once.
    pub(crate) fn join(&self, client: ClientId, conn_id: u64, grant: Grant) -> Arc<Peer> {
        let mut rng = rand::thread_rng();
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        let limits = (self.limits.max_per_sec, self.limits.queue);
        let mut sessions = write(&self.by_session);
        let session = loop {
            let n = rng.next_u64();
            if n != 0 && !sessions.contains_key(&n) {
                break n;
            }
        };
        let peer = Arc::new(Peer::new(
            client.clone(),
            conn_id,
            session,
            DatagramKey::new(key),
            grant,
            limits,
        ));
        sessions.insert(session, peer.clone());
        if let Some(old) = write(&self.by_client).insert(client, peer.clone()) {
            sessions.remove(&old.session);
        }
        peer
    }

    /// The session ended: its number and key end with it.
    pub(crate) fn leave(&self, peer: &Peer) {
        let mut sessions = write(&self.by_session);
        sessions.remove(&peer.session);
        let mut clients = write(&self.by_client);
        if clients
            .get(&peer.client)
            .is_some_and(|p| p.conn_id == peer.conn_id)
        {
            clients.remove(&peer.client);
        }
    }

    /// The directory as a UDP reader's batch sees it: both maps read-locked once for the whole
    /// batch (in the order `join` and `leave` lock them), not twice per datagram, so the reader
    /// threads do not pass the locks' counters to and fro for every datagram. A session joining or
    /// leaving waits for the batch under way, tens of microseconds.
    pub(crate) fn directory(&self) -> Directory<'_> {
        let sessions = read(&self.by_session);
        let clients = read(&self.by_client);
        Directory { sessions, clients }
    }

    /// A `datagram` frame from a TCP session: routed, and sent at once if it goes over UDP.
    pub(crate) fn route_from_session(&self, from: &Peer, to: String, body: Bytes) {
        let mut out = Outbox::default();
        self.route(&read(&self.by_client), from, to, body, Via::Tcp, &mut out);
        self.flush(&mut out);
    }

    /// Sends what `out` holds (the end of a batch).
    pub(crate) fn flush(&self, out: &mut Outbox) {
        if let Some(udp) = &self.udp {
            out.flush(udp, &self.metrics);
        }
    }

    /// A datagram from `from` for `to`: checked, then handed to the recipient (over UDP: sealed into
    /// `out`), or dropped and counted.
    fn route(
        &self,
        clients: &Clients,
        from: &Peer,
        to: String,
        body: Bytes,
        via: Via,
        out: &mut Outbox,
    ) {
        self.metrics.datagrams.received(via);
        if let Err(reason) = self.check_and_deliver(clients, from, to, body, out) {
            self.metrics.datagrams.dropped(reason);
        }
    }

    fn check_and_deliver(
        &self,
        clients: &Clients,
        from: &Peer,
        to: String,
        body: Bytes,
        out: &mut Outbox,
    ) -> Result<(), Dropped> {
        if body.len() > self.limits.max_body_bytes {
            return Err(Dropped::TooLarge);
        }
        let to = ClientId::new(to).map_err(|_| Dropped::InvalidRecipient)?;
        if !from.grant.may_send_to(to.as_str()) {
            return Err(Dropped::Forbidden);
        }
        if !from.take_rate() {
            return Err(Dropped::RateLimited);
        }
        let recipient = clients.get(&to).cloned().ok_or(Dropped::Offline)?;
        let from = from.client.to_string();
        let bound = lock(&recipient.udp).addr;
        match (bound, &self.udp) {
            (Some(addr), Some(_)) => {
                let frame = BrokerFrame::Datagram { from, body };
                out.push(recipient, addr, Some(frame));
                Ok(())
            }
            _ => {
                if recipient.queue(Queued { from, body }) {
                    self.metrics.datagrams.dropped(Dropped::RecipientSlow);
                }
                Ok(())
            }
        }
    }

    /// Counts a datagram a session wrote to its connection.
    pub(crate) fn written(&self) {
        self.metrics.datagrams.delivered(Via::Tcp);
    }

    /// Counts a datagram dropped for `reason`.
    pub(crate) fn dropped(&self, reason: Dropped) {
        self.metrics.datagrams.dropped(reason);
    }
}

/// Who receives datagrams, by client id.
type Clients = HashMap<ClientId, Arc<Peer>>;

/// Both maps of the directory, read-locked for one batch ([`Datagrams::directory`]).
pub(crate) struct Directory<'a> {
    sessions: RwLockReadGuard<'a, HashMap<u64, Arc<Peer>>>,
    clients: RwLockReadGuard<'a, Clients>,
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
