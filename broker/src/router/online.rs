//! Who is online, and what each one holds unacknowledged.
//!
//! One [`Window`] per connected client, replaced by a takeover. Beside them, the entries handed out
//! early that their commit did not store (it failed, or the store recognised a resend): when such an
//! entry is acknowledged there is nothing to delete and no delivery to report.

use foldhash::HashMap;
use rustc_hash::FxHashSet;
use switchboard_proto::ClientId;

use super::window::{InFlight, Outlet, Window};
use crate::store::Entry;

/// What an acknowledgement was for.
#[derive(Debug)]
pub(super) enum Acked {
    /// An entry its commit did not store: nothing to delete, no receipt.
    NeverStored,
    /// An entry queued or stored, with what its receipt needs.
    Entry(InFlight),
}

/// The windows of the connected clients. Keyed by client ids, which peers choose, so a hash seeded per
/// process (foldhash: a fraction of std's SipHash cost, and no fixed collisions to aim at); the set
/// of broker ids uses the unseeded Fx hash, since ids are ours.
pub(super) struct Online<S> {
    clients: HashMap<ClientId, Window<S>>,
    /// Entries handed out early that their commit did not store.
    never_stored: FxHashSet<u64>,
}

impl<S: Outlet> Online<S> {
    pub(super) fn new() -> Self {
        Self {
            clients: HashMap::default(),
            never_stored: FxHashSet::default(),
        }
    }

    /// `client` came online with `window`; a session it replaces takes what it held with it (that
    /// stays in the store and is handed out again).
    pub(super) fn attach(&mut self, client: ClientId, window: Window<S>) {
        if let Some(old) = self.clients.insert(client, window) {
            self.forget(&old);
        }
    }

    /// `client` went away; returns whether it was online.
    pub(super) fn remove(&mut self, client: &str) -> bool {
        match self.clients.remove(client) {
            Some(gone) => {
                self.forget(&gone);
                true
            }
            None => false,
        }
    }

    /// The online client named `client`, as its id.
    pub(super) fn id_of(&self, client: &str) -> Option<ClientId> {
        self.clients.get_key_value(client).map(|(id, _)| id.clone())
    }

    /// Every online client.
    pub(super) fn ids(&self) -> Vec<ClientId> {
        self.clients.keys().cloned().collect()
    }

    /// Whether `client` is online.
    pub(super) fn contains(&self, client: &str) -> bool {
        self.clients.contains_key(client)
    }

    /// Entries and body bytes each online client holds unacknowledged (for the admin listener).
    pub(super) fn in_use(&self) -> impl Iterator<Item = (String, (u64, u64))> + '_ {
        self.clients
            .iter()
            .map(|(client, w)| (client.to_string(), w.in_use()))
    }

    pub(super) fn get_mut(&mut self, client: &str) -> Option<&mut Window<S>> {
        self.clients.get_mut(client)
    }

    /// The window of `client`, if it still belongs to connection `conn_id` (not taken over since).
    pub(super) fn current_mut(&mut self, client: &str, conn_id: u64) -> Option<&mut Window<S>> {
        self.clients
            .get_mut(client)
            .filter(|w| w.conn_id == conn_id)
    }

    pub(super) fn is_current(&self, client: &str, conn_id: u64) -> bool {
        self.clients
            .get(client)
            .is_some_and(|w| w.conn_id == conn_id)
    }

    /// Whether entry `id` is with the current session of `owner`, not acknowledged.
    pub(super) fn is_out(&self, owner: &str, id: u64) -> bool {
        self.clients.get(owner).is_some_and(|w| w.is_out(id))
    }

    /// `entry` did not reach the store. If it went out early, its ack must not delete (and uncount)
    /// an entry that is not there, nor report a delivery for it.
    pub(super) fn not_stored(&mut self, entry: &Entry) {
        if self.is_out(&entry.mailbox, entry.id) {
            self.never_stored.insert(entry.id);
        }
    }

    /// Connection `conn_id` of `client` acknowledged `id`: takes it out of the window. `None` for a
    /// stale connection or an entry not in flight.
    pub(super) fn ack(&mut self, client: &str, conn_id: u64, id: u64) -> Option<Acked> {
        let window = self.current_mut(client, conn_id)?;
        let Some(done) = window.acked(id) else {
            tracing::debug!(
                client = %client,
                entry = id,
                "ack for an entry not in flight; ignored"
            );
            return None;
        };
        if !self.never_stored.is_empty() && self.never_stored.remove(&id) {
            return Some(Acked::NeverStored);
        }
        Some(Acked::Entry(done))
    }

    /// A window is gone: what it held out is no longer anyone's to acknowledge.
    fn forget(&mut self, gone: &Window<S>) {
        if !self.never_stored.is_empty() {
            for id in gone.in_flight_ids() {
                self.never_stored.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{entry, FakeSession};
    use super::super::window::{Handed, WindowSize};
    use super::*;

    const SIZE: WindowSize = WindowSize {
        entries: 4,
        bytes: 100,
        page: 4,
    };

    fn bob() -> ClientId {
        ClientId::new("bob").unwrap()
    }

    /// Bob online on connection `conn_id`, holding `ids` unacknowledged.
    fn bob_holding(online: &mut Online<FakeSession>, conn_id: u64, ids: &[u64]) {
        let mut window = Window::new(conn_id, FakeSession::default(), SIZE);
        for &id in ids {
            assert_eq!(window.hand_out(entry(id, "bob", 1)), Handed::Yes);
        }
        online.attach(bob(), window);
    }

    #[test]
    fn an_entry_is_out_only_with_its_owners_current_session() {
        let mut online = Online::new();
        bob_holding(&mut online, 1, &[7]);
        assert!(online.is_out("bob", 7));
        assert!(!online.is_out("carol", 7));
        assert!(!online.is_out("bob", 8));
        bob_holding(&mut online, 2, &[]);
        assert!(
            !online.is_out("bob", 7),
            "taken over: the new session holds nothing"
        );
        assert!(
            online.ack("bob", 1, 7).is_none(),
            "a stale connection's ack is ignored"
        );
    }

    #[test]
    fn an_ack_for_an_entry_never_stored_deletes_nothing() {
        let mut online = Online::new();
        bob_holding(&mut online, 1, &[7, 8]);
        online.not_stored(&entry(7, "bob", 1));
        online.not_stored(&entry(9, "bob", 1)); // not out: nothing to remember
        assert!(matches!(online.ack("bob", 1, 7), Some(Acked::NeverStored)));
        assert!(matches!(online.ack("bob", 1, 8), Some(Acked::Entry(_))));
        assert!(online.ack("bob", 1, 8).is_none(), "acknowledged once only");
        assert!(online.never_stored.is_empty());
    }

    #[test]
    fn what_a_session_leaves_behind_is_forgotten() {
        let mut online = Online::new();
        bob_holding(&mut online, 1, &[7]);
        online.not_stored(&entry(7, "bob", 1));
        assert!(online.remove("bob"));
        assert!(!online.remove("bob"));
        assert!(online.never_stored.is_empty());

        bob_holding(&mut online, 2, &[8]);
        online.not_stored(&entry(8, "bob", 1));
        bob_holding(&mut online, 3, &[]);
        assert!(online.never_stored.is_empty(), "a takeover forgets too");
        assert!(online.is_current("bob", 3) && !online.is_current("bob", 2));
    }
}
