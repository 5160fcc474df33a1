//! Where a session is in its life, and what that allows: which frames it acts on, whether it writes
//! deliveries, whether it takes new sends.
//!
//! A connection greets (`Hello` expected), is open once the client is identified and registered, and
//! ends closing. Two side roads: a refused `Hello` waits out the constant refusal delay before its
//! `Error`, and a broker shutting down drains an open session (no new deliveries or sends, but acks of
//! what was delivered still count). Closing wins over everything and keeps the client's id, so that
//! the session can still detach and unregister when it stops.

use switchboard_proto::ClientId;

/// The session's phase: one value instead of an optional client id and three flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for `Hello` (and, with credentials, for its check).
    Greeting,
    /// The `Hello` was refused; the `Error` follows after the constant delay. Nothing is read meanwhile.
    Refusing,
    /// `Hello` checked out: the id this connection is registered under.
    Open { client: ClientId },
    /// The broker is shutting down and said so: no more deliveries or sends, but acknowledgements for
    /// what was already delivered are still recorded until the client hangs up.
    Draining { client: ClientId },
    /// An `Error` has been written or the socket failed: nothing more is read or delivered. `client`
    /// is kept (when there was one) so that stopping detaches it.
    Closing { client: Option<ClientId> },
}

impl Phase {
    /// The identified client, in every phase after `Hello` checked out.
    pub(crate) fn client(&self) -> Option<&ClientId> {
        match self {
            Phase::Open { client } | Phase::Draining { client } => Some(client),
            Phase::Closing { client } => client.as_ref(),
            Phase::Greeting | Phase::Refusing => None,
        }
    }

    /// Whether frames read from the peer are acted on (otherwise they are read and dropped).
    pub(crate) fn may_read(&self) -> bool {
        !matches!(self, Phase::Refusing | Phase::Closing { .. })
    }

    /// Whether a `Send` may go to the Router; otherwise it is answered `Rejected` at once.
    pub(crate) fn may_accept_sends(&self) -> bool {
        matches!(self, Phase::Open { .. })
    }

    /// Whether entries handed over by the Router are written; otherwise they stay in the mailbox for
    /// the next connection.
    pub(crate) fn may_deliver(&self) -> bool {
        matches!(self, Phase::Open { .. })
    }

    pub(crate) fn is_closing(&self) -> bool {
        matches!(self, Phase::Closing { .. })
    }

    /// `Hello` checked out for `client`. A session already closing stays closing, but now knows whom to
    /// detach.
    pub(crate) fn identify(&mut self, client: ClientId) {
        *self = match self {
            Phase::Closing { .. } => Phase::Closing {
                client: Some(client),
            },
            _ => Phase::Open { client },
        };
    }

    /// The `Hello` was refused: nothing more is read while the refusal delay runs.
    pub(crate) fn refuse(&mut self) {
        if matches!(self, Phase::Greeting) {
            *self = Phase::Refusing;
        }
    }

    /// Starts draining an open session; `false` (and no change) in any other phase.
    pub(crate) fn drain(&mut self) -> bool {
        let Phase::Open { client } = self else {
            return false;
        };
        *self = Phase::Draining {
            client: client.clone(),
        };
        true
    }

    /// Starts closing, keeping the client; `false` if the session was already closing.
    pub(crate) fn close(&mut self) -> bool {
        if self.is_closing() {
            return false;
        }
        let client = self.take_client();
        *self = Phase::Closing { client };
        true
    }

    /// The client to detach as the session stops; `None` from then on (the phase becomes closing).
    pub(crate) fn take_client(&mut self) -> Option<ClientId> {
        match std::mem::replace(self, Phase::Closing { client: None }) {
            Phase::Open { client } | Phase::Draining { client } => Some(client),
            Phase::Closing { client } => client,
            Phase::Greeting | Phase::Refusing => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> ClientId {
        ClientId::new("alice".to_string()).unwrap()
    }

    fn open() -> Phase {
        let mut phase = Phase::Greeting;
        phase.identify(alice());
        phase
    }

    /// (may read, may accept sends, may deliver, identified)
    fn allows(phase: &Phase) -> (bool, bool, bool, bool) {
        (
            phase.may_read(),
            phase.may_accept_sends(),
            phase.may_deliver(),
            phase.client().is_some(),
        )
    }

    #[test]
    fn a_greeting_session_reads_the_hello_and_nothing_else_is_possible_yet() {
        assert_eq!(allows(&Phase::Greeting), (true, false, false, false));
    }

    #[test]
    fn an_open_session_does_everything_for_its_client() {
        let phase = open();
        assert_eq!(phase, Phase::Open { client: alice() });
        assert_eq!(allows(&phase), (true, true, true, true));
    }

    #[test]
    fn a_refused_hello_reads_nothing_until_the_error_goes_out() {
        let mut phase = Phase::Greeting;
        phase.refuse();
        assert_eq!(phase, Phase::Refusing);
        assert_eq!(allows(&phase), (false, false, false, false));
    }

    #[test]
    fn a_draining_session_still_reads_acks_but_takes_no_sends_and_delivers_nothing() {
        let mut phase = open();
        assert!(phase.drain());
        assert_eq!(allows(&phase), (true, false, false, true));
        assert!(!phase.drain(), "draining twice is no change");
    }

    #[test]
    fn only_an_open_session_drains() {
        let others = [
            Phase::Greeting,
            Phase::Refusing,
            Phase::Draining { client: alice() },
            Phase::Closing { client: None },
            Phase::Closing {
                client: Some(alice()),
            },
        ];
        for mut phase in others {
            let before = phase.clone();
            assert!(!phase.drain());
            assert_eq!(phase, before);
        }
    }

    #[test]
    fn closing_keeps_the_client_to_detach_and_allows_nothing_else() {
        for mut phase in [open(), {
            let mut draining = open();
            draining.drain();
            draining
        }] {
            assert!(phase.close());
            assert_eq!(allows(&phase), (false, false, false, true));
            assert!(!phase.close(), "already closing");
            assert_eq!(phase.take_client(), Some(alice()));
            assert_eq!(phase.take_client(), None, "detached once");
        }
    }

    #[test]
    fn closing_before_hello_has_no_client_and_a_late_identify_keeps_it_closing() {
        let mut phase = Phase::Greeting;
        assert!(phase.close());
        assert_eq!(phase.client(), None);
        phase.identify(alice());
        assert!(phase.is_closing());
        assert_eq!(phase.client(), Some(&alice()));
    }
}
