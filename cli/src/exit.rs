//! What the process's exit status says: 0 done, 1 an error, 2 a usage error, and two statuses for
//! the broker's final word, so a supervisor can tell "try again" from "stop".
//!
//! Another process taking the client id over (`session-taken-over`) and a refused token
//! (`unauthorized`) do not get better by retrying: a daemon restarted by systemd after the first
//! would take the id back from whoever took it, every `RestartSec`. The units list both statuses in
//! `RestartPreventExitStatus`.

use std::fmt;

use switchboard_client::{ClientError, CloseReason, ErrorCode};

/// Another connection took this client id over.
pub const EXIT_TAKEN_OVER: u8 = 3;
/// The broker refused the credentials (or the address) for this client id.
pub const EXIT_UNAUTHORIZED: u8 = 4;

/// The broker ended the connection: an error that keeps its reason, so the exit status can say it.
#[derive(Debug)]
pub(crate) struct BrokerClosed(pub(crate) CloseReason);

impl fmt::Display for BrokerClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for BrokerClosed {}

/// The exit status for `error`: [`EXIT_TAKEN_OVER`] or [`EXIT_UNAUTHORIZED`] where the broker said
/// so, 1 otherwise.
pub fn status(error: &anyhow::Error) -> u8 {
    let code = error.chain().find_map(|cause| {
        if let Some(ClientError::Refused { code, .. }) = cause.downcast_ref::<ClientError>() {
            return Some(*code);
        }
        match cause.downcast_ref::<BrokerClosed>() {
            Some(BrokerClosed(CloseReason::Broker { code, .. })) => Some(*code),
            _ => None,
        }
    });
    match code {
        Some(ErrorCode::SessionTakenOver) => EXIT_TAKEN_OVER,
        Some(ErrorCode::Unauthorized) => EXIT_UNAUTHORIZED,
        _ => 1,
    }
}

/// What a supervisor should know about a final status, to follow the error line.
pub fn hint(status: u8) -> Option<&'static str> {
    match status {
        EXIT_TAKEN_OVER => {
            Some("another process uses this client id; not retrying (exit status 3)")
        }
        EXIT_UNAUTHORIZED => {
            Some("the broker refuses this client id's credentials; not retrying (exit status 4)")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed(code: ErrorCode) -> anyhow::Error {
        anyhow::Error::new(BrokerClosed(CloseReason::Broker {
            code,
            text: "bye".into(),
        }))
    }

    #[test]
    fn the_brokers_final_word_has_a_status_of_its_own() {
        assert_eq!(
            status(&closed(ErrorCode::SessionTakenOver)),
            EXIT_TAKEN_OVER
        );
        assert_eq!(status(&closed(ErrorCode::Unauthorized)), EXIT_UNAUTHORIZED);
        assert_eq!(status(&closed(ErrorCode::ShuttingDown)), 1);
        let refused = anyhow::Error::new(ClientError::Refused {
            code: ErrorCode::Unauthorized,
            text: "not authorized".into(),
        })
        .context("cannot connect");
        assert_eq!(status(&refused), EXIT_UNAUTHORIZED);
        assert_eq!(status(&anyhow::anyhow!("anything else")), 1);
    }
}
