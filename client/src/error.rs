//! What can go wrong for a client, as one enum, and which failures are worth another try.
//!
//! The variants follow the life of a connection: reaching the broker ([`ClientError::Connect`],
//! [`ClientError::Timeout`]), being let in ([`ClientError::Refused`]), having a message taken
//! ([`ClientError::Rejected`]), and the connection ending under a pending call ([`ClientError::Closed`]).
//! Messages are written to be printed as they are, on one line, after `error: `.
//!
//! Beside the type lives the rule of which failures are worth another try ([`ClientError::is_retryable`]
//! and the `may_retry_*` functions the driver reconnects by). A network failure, a broker that hangs
//! up, `shutting-down`, `keepalive-timeout`, `internal`, `overloaded` and (during a reconnect)
//! `handshake-timeout` are passing troubles. Everything else is final: `session-taken-over` means
//! another process now holds our id and reconnecting would take it back and forth forever (see
//! "Takeover" in `PROTOCOL.md`); `invalid-client-id` and `unsupported-version` would be answered the
//! same way every time; `bad-frame`, `frame-too-large`, `hello-required` and `unexpected-frame` mean
//! this client and the broker disagree about the protocol, and replaying the same frames would only
//! repeat that; a code this build does not know is not guessed at.

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
    /// [`Client::send_with_id`](crate::Client::send_with_id) was given the send id of a
    /// send of this client still waiting for its answer; nothing was sent.
    #[error("send id {0} is already in use by a send waiting for its answer")]
    DuplicateId(u64),
    /// A tracked send ([`Client::send_and_track_with`](crate::Client::send_and_track_with)) asked
    /// for fewer receipts than every one: its receipt might never come. Nothing was sent.
    #[error(
        "a tracked send waits for its receipt, so it must ask for every receipt (receipts: {0})"
    )]
    ReceiptsNotAsked(crate::Receipts),
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
        may_retry_connect(self)
    }
}

/// Whether a connection that the broker ended with `code` is worth reconnecting.
pub(crate) fn may_retry_after(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::ShuttingDown
            | ErrorCode::KeepaliveTimeout
            | ErrorCode::Internal
            | ErrorCode::Overloaded
            // The broker's store could not read the mailbox; it tries again on the next connection.
            | ErrorCode::MailboxUnreadable
    )
}

/// Whether a reconnect attempt that failed with `error` is worth another.
pub(crate) fn may_retry_connect(error: &ClientError) -> bool {
    match error {
        ClientError::Connect { .. } | ClientError::Timeout | ClientError::Closed => true,
        ClientError::Refused { code, .. } => {
            may_retry_after(*code) || *code == ErrorCode::HandshakeTimeout
        }
        ClientError::Codec(e) => may_retry_read(e),
        ClientError::Rejected { .. }
        | ClientError::DuplicateId(_)
        | ClientError::ReceiptsNotAsked(_)
        | ClientError::InvalidId(_)
        | ClientError::Tls(_)
        | ClientError::Protocol(_) => false,
    }
}

/// Whether a connection whose reading failed with `error` is worth reconnecting: a network failure
/// is, bytes that are not a frame (which the broker would send again) are not.
pub(crate) fn may_retry_read(error: &CodecError) -> bool {
    matches!(error, CodecError::Io(_))
}

/// A short reason for a failed read, as [`io_reason`] words it for an I/O error.
pub(crate) fn codec_reason(error: &CodecError) -> String {
    match error {
        CodecError::Io(e) => io_reason(e),
        other => other.to_string(),
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

    #[test]
    fn only_passing_troubles_are_retried() {
        for code in [
            ErrorCode::ShuttingDown,
            ErrorCode::KeepaliveTimeout,
            ErrorCode::Internal,
            ErrorCode::MailboxUnreadable,
        ] {
            assert!(may_retry_after(code), "{code}");
        }
        for code in [
            ErrorCode::SessionTakenOver,
            ErrorCode::InvalidClientId,
            ErrorCode::UnsupportedVersion,
            ErrorCode::BadFrame,
            ErrorCode::FrameTooLarge,
            ErrorCode::HelloRequired,
            ErrorCode::UnexpectedFrame,
            ErrorCode::Unknown,
        ] {
            assert!(!may_retry_after(code), "{code}");
        }
        let refused = |code| ClientError::Refused {
            code,
            text: String::new(),
        };
        assert!(may_retry_connect(&ClientError::Timeout));
        assert!(may_retry_connect(&refused(ErrorCode::HandshakeTimeout)));
        assert!(may_retry_connect(&refused(ErrorCode::ShuttingDown)));
        assert!(!may_retry_connect(&refused(ErrorCode::SessionTakenOver)));
        assert!(!may_retry_connect(&refused(ErrorCode::InvalidClientId)));
        assert!(!may_retry_connect(&refused(ErrorCode::UnsupportedVersion)));
        assert!(!may_retry_connect(&ClientError::Protocol("hi v2".into())));
        assert!(!may_retry_read(&CodecError::FrameTooLarge { max: 1 }));
        assert!(may_retry_read(&CodecError::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset
        ))));
    }
}
