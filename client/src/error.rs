//! What can go wrong for a client, as one enum.
//!
//! The variants follow the life of a connection: reaching the broker ([`ClientError::Connect`],
//! [`ClientError::Timeout`]), being let in ([`ClientError::Refused`]), having a message taken
//! ([`ClientError::Rejected`]), and the connection ending under a pending call ([`ClientError::Closed`]).
//! Messages are written to be printed as they are, on one line, after `error: `.

use std::io;

use switchboard_proto::{CodecError, ErrorCode, InvalidClientId, RejectReason};

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The TLS settings cannot be used (unreadable certificate or key, bad server name).
    #[error("tls: {0}")]
    Tls(String),
    /// The TCP connection to the broker could not be opened.
    #[error("cannot connect to {addr}: {}", io_reason(source))]
    Connect {
        /// The server address as given in the options.
        addr: String,
        /// Why the connection could not be opened.
        source: io::Error,
    },
    /// The broker did not complete the handshake within `connect_timeout`.
    #[error("timed out connecting to the broker")]
    Timeout,
    /// The broker answered the `Hello` with an `Error` frame instead of `Hi`.
    #[error("the broker refused the connection: {code}: {text}")]
    Refused {
        /// The broker's error code.
        code: ErrorCode,
        /// The broker's explanation, for people.
        text: String,
    },
    /// The broker answered a `Send` with `Rejected`; nothing was stored and the connection carries on.
    #[error("message rejected: {reason}: {text}")]
    Rejected {
        /// Why the broker did not take the message.
        reason: RejectReason,
        /// The broker's explanation, for people.
        text: String,
    },
    /// [`Client::send_with_id`](crate::Client::send_with_id) was given the client message id of a
    /// send of this client still waiting for its answer; nothing was sent.
    #[error("client message id {0} is already in use by a send waiting for its answer")]
    DuplicateId(u64),
    /// The connection ended before the call could complete. For a send this means the client cannot
    /// tell whether the message was stored.
    #[error("the connection to the broker is closed")]
    Closed,
    /// Bytes could not become a frame or a frame could not become bytes (a send over `max_frame`,
    /// say).
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The client id breaks the rules; caught before connecting.
    #[error("invalid client id: {0}")]
    InvalidId(#[from] InvalidClientId),
    /// The broker sent a frame that makes no sense at this point.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl ClientError {
    /// Whether the same call may succeed later: the broker could not be reached, did not answer in
    /// time, or turned the connection away for a passing reason (`shutting-down`, `internal`,
    /// `handshake-timeout`, `keepalive-timeout`), or the connection broke. This is the rule the
    /// library itself follows when reconnecting; a program retrying a first connection can use it.
    pub fn is_retryable(&self) -> bool {
        crate::reconnect::may_retry_connect(self)
    }
}

/// A short, lowercase reason for an I/O error, fit to follow a colon: `connection refused` rather than
/// `Connection refused (os error 111)`.
pub(crate) fn io_reason(error: &io::Error) -> String {
    let short = match error.kind() {
        io::ErrorKind::ConnectionRefused => Some("connection refused"),
        io::ErrorKind::ConnectionReset => Some("connection reset"),
        io::ErrorKind::ConnectionAborted => Some("connection aborted"),
        io::ErrorKind::TimedOut => Some("timed out"),
        io::ErrorKind::AddrNotAvailable => Some("address not available"),
        io::ErrorKind::HostUnreachable => Some("host unreachable"),
        io::ErrorKind::NetworkUnreachable => Some("network unreachable"),
        io::ErrorKind::PermissionDenied => Some("permission denied"),
        _ => None,
    };
    if let Some(short) = short {
        return short.to_owned();
    }
    let text = error.to_string();
    let text = match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => &text[..at],
        _ => &text[..],
    };
    lowercase_first(text)
}

/// Lowercases the first letter unless the second is uppercase too, so `IPv6` stays as it is.
fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (Some(first), second)
            if first.is_uppercase() && !second.is_some_and(char::is_uppercase) =>
        {
            first
                .to_lowercase()
                .chain(text[first.len_utf8()..].chars())
                .collect()
        }
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_io_errors_read_in_lowercase() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(io_reason(&refused), "connection refused");
        let os = io::Error::from_raw_os_error(111);
        assert_eq!(io_reason(&os), "connection refused");
    }

    #[test]
    fn other_errors_lose_the_os_code_and_the_capital() {
        let custom = io::Error::other("Name or service not known (os error -2)");
        assert_eq!(io_reason(&custom), "name or service not known");
        let acronym = io::Error::other("IPv6 is off");
        assert_eq!(io_reason(&acronym), "IPv6 is off");
    }

    #[test]
    fn connect_errors_name_the_address() {
        let err = ClientError::Connect {
            addr: "127.0.0.1:7878".into(),
            source: io::Error::from(io::ErrorKind::ConnectionRefused),
        };
        assert_eq!(
            err.to_string(),
            "cannot connect to 127.0.0.1:7878: connection refused"
        );
    }
}
