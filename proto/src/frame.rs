//! What a frame says.
//!
//! Every frame is a MessagePack map with a `type` key naming the frame kind in snake case, plus the
//! kind's own fields. [`ClientFrame`]s travel from a client to the broker, [`BrokerFrame`]s back.
//! Message bodies are MessagePack `bin`. Enumerated codes (`reason`, `code`, `status`) are kebab-case
//! strings; a peer meeting a value it does not know reads it as `unknown` rather than failing, so the
//! broker can add codes without breaking older clients.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The protocol version this crate speaks. `Hello` and `Hi` carry it; a mismatch ends the handshake.
pub const PROTOCOL_VERSION: u32 = 1;

/// `fresh: nil` reads as absent, which is `false`, as PROTOCOL.md says of every optional field.
fn nil_is_false<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(false))
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// Frames a client sends to the broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// The first frame of every connection.
    Hello {
        version: u32,
        /// Checked by the broker against the client id rules; kept a plain string here so that a bad
        /// id earns a precise `Error` rather than a generic decoding failure.
        client_id: String,
        /// Credential for brokers that require one; `nil` when absent.
        token: Option<String>,
        /// How often the client intends to show a sign of life, in seconds; the broker may clamp it.
        keepalive_secs: u32,
    },
    /// Hand a message to the broker for `to`.
    Send {
        /// The send id (`id` on the wire): chosen by the sender, unique among its own sends; echoed
        /// in `Accepted`, `Rejected` and `Receipt`.
        #[serde(rename = "id")]
        send_id: u64,
        to: String,
        body: Bytes,
        /// Time to live in milliseconds from acceptance: a message still undelivered by then is removed
        /// and its sender gets a `Receipt` with status `expired`. Absent (or `nil`) means the broker's
        /// default, which is to keep the message until it is delivered.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_ms: Option<u64>,
        /// The sender promises this is the first time it sends `send_id`: not a resend after a lost
        /// answer. The broker may then hand the message to its recipient before it is on disk (it
        /// still answers `Accepted` only once the message is on disk or acknowledged by the recipient).
        /// A resend must say `false` (the default, and what an absent key means), so the broker first
        /// checks whether it already has the message.
        #[serde(
            default,
            deserialize_with = "nil_is_false",
            skip_serializing_if = "is_false"
        )]
        fresh: bool,
        /// Which receipts the sender wants for this message. Absent (or `nil`) means
        /// [`Receipts::All`], what every broker did before the field existed; encoders omit it then.
        #[serde(
            default,
            deserialize_with = "nil_is_all",
            skip_serializing_if = "Receipts::is_all"
        )]
        receipts: Receipts,
    },
    /// The delivery (`Deliver.message_id` or `Receipt.receipt_id`) has been handled and may be forgotten.
    Ack { id: u64 },
    /// Keepalive probe; the broker answers `Pong`.
    Ping,
    /// The client is leaving; the broker closes the connection.
    Bye,
    /// A datagram for `to`: delivered only if `to` is online now, never stored, never answered
    /// (PROTOCOL.md, "Datagrams"). The same map is the payload of a UDP datagram.
    Datagram { to: String, body: Bytes },
}

/// Frames the broker sends to a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BrokerFrame {
    /// The answer to a good `Hello`.
    Hi {
        version: u32,
        /// The keepalive the broker will enforce: silence for 1.5 times this closes the connection.
        keepalive_secs: u32,
        /// The client's address as the broker sees it (`ip:port`).
        address: String,
        /// Entries waiting in the client's mailbox at the time of the handshake.
        pending: u64,
        /// The largest body the broker accepts in a `send` (see `max_body_len`), so a client can
        /// refuse a larger one before sending it. Absent (0) from brokers older than this field.
        #[serde(default)]
        max_body_bytes: u64,
        /// The UDP port of the broker's datagram listener, on the host this connection reached;
        /// absent when the broker listens for no datagrams over UDP (then only the TCP session
        /// carries them). Older clients ignore this key and the two below.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        udp_port: Option<u16>,
        /// The session number every UDP datagram of this session carries; with `udp_port`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        datagram_session: Option<u64>,
        /// The session's datagram key (32 bytes, `bin`) that MACs its UDP datagrams both ways; it
        /// ends with this connection. With `udp_port`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        datagram_key: Option<Bytes>,
    },
    /// The message is stored durably; from now on the broker answers for it.
    Accepted {
        /// The sender's send id (`id` on the wire), as in `Send`.
        #[serde(rename = "id")]
        send_id: u64,
        /// The broker's id for the message, the one the recipient sees in `Deliver`.
        message_id: u64,
    },
    /// The message was not taken; nothing was stored.
    Rejected {
        /// The sender's send id (`id` on the wire), as in `Send`.
        #[serde(rename = "id")]
        send_id: u64,
        reason: RejectReason,
        text: String,
    },
    /// A message for this client. Acknowledge it with `Ack { id: message_id }`.
    Deliver {
        message_id: u64,
        from: String,
        /// The sender's send id, as in `Send` (which calls it `id` on the wire). With `from` it names
        /// the message across broker restarts: after a broker crash a message handed out before it
        /// reached the disk can come again, resent by its sender, under a new `message_id` but with
        /// the same `from` and `send_id`. Absent (0) from brokers older than this field.
        #[serde(default)]
        send_id: u64,
        /// When the broker accepted the message, in milliseconds since the Unix epoch.
        sent_at_ms: u64,
        body: Bytes,
    },
    /// News about a message this client sent. Acknowledge it with `Ack { id: receipt_id }`.
    Receipt {
        /// The mailbox entry holding this receipt.
        receipt_id: u64,
        /// The sender's send id (`id` on the wire), as in `Send`.
        #[serde(rename = "id")]
        send_id: u64,
        /// The broker's id for the message.
        message_id: u64,
        /// The recipient the message was sent to.
        to: String,
        status: ReceiptStatus,
    },
    /// The answer to `Ping`.
    Pong,
    /// Something is wrong with the connection. Unless the code says otherwise the broker closes the
    /// connection after sending it.
    Error { code: ErrorCode, text: String },
    /// A datagram from `from`, sent while this client was online; nothing to acknowledge.
    Datagram { from: String, body: Bytes },
}

/// Why a `Send` was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RejectReason {
    /// `to` is not a valid client id.
    InvalidRecipient,
    /// The body is larger than the broker accepts.
    TooLarge,
    /// The broker could not store the message (disk failure, shutting down). Nothing was stored.
    Unavailable,
    /// The recipient's mailbox holds as many messages or bytes as the broker allows. Nothing was
    /// stored; try again once the recipient has caught up.
    MailboxFull,
    /// This client may not send to that recipient (the broker's send rules).
    Forbidden,
    /// This connection sends faster than the broker allows; nothing was stored. Slow down and resend.
    RateLimited,
    /// A code this build does not know.
    #[serde(other)]
    Unknown,
}

/// What happened to a message, as told to its sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReceiptStatus {
    /// The recipient acknowledged the message.
    Delivered,
    /// The message's time to live ran out before it was delivered; the broker removed it.
    Expired,
    /// The message could not be delivered (its `deliver` frame exceeds the broker's current
    /// `max_frame_bytes`, which was lowered after it was accepted); the broker removed it so that the
    /// rest of the mailbox flows.
    Undeliverable,
    /// An operator removed the message, undelivered (the admin API's remove or purge).
    Removed,
    #[serde(other)]
    Unknown,
}

/// Which receipts a sender asks for with one `Send` (`receipts` on the wire).
///
/// A client that only sends and never reads its receipts asks for none, so its mailbox holds nothing
/// for it; one that waits for delivery asks for all. Unlike the codes the broker sends, a value the
/// broker does not know is `bad-frame`: a sender must not believe it chose something it did not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Receipts {
    /// A receipt for every outcome: `delivered`, `expired`, and whatever a later status adds.
    #[default]
    All,
    /// Only the `delivered` receipt; a message that expires (or is otherwise removed) undelivered
    /// goes without a word.
    Delivered,
    /// No receipt at all.
    None,
}

impl Receipts {
    /// The name this choice has on the wire.
    pub fn as_str(&self) -> &'static str {
        match self {
            Receipts::All => "all",
            Receipts::Delivered => "delivered",
            Receipts::None => "none",
        }
    }

    /// The choice named `name` on the wire, if it is one.
    pub fn from_wire(name: &[u8]) -> Option<Self> {
        match name {
            b"all" => Some(Receipts::All),
            b"delivered" => Some(Receipts::Delivered),
            b"none" => Some(Receipts::None),
            _ => None,
        }
    }

    /// Whether a receipt with `status` goes to the sender: a `delivered` one unless it asked for
    /// none, any other only if it asked for all.
    pub fn wants(&self, status: ReceiptStatus) -> bool {
        match self {
            Receipts::All => true,
            Receipts::Delivered => status == ReceiptStatus::Delivered,
            Receipts::None => false,
        }
    }

    fn is_all(&self) -> bool {
        *self == Receipts::All
    }
}

impl std::fmt::Display for Receipts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `receipts: nil` reads as absent, which is every receipt.
fn nil_is_all<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Receipts, D::Error> {
    Ok(Option::<Receipts>::deserialize(d)?.unwrap_or_default())
}

/// Machine-readable reason in an `Error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// The bytes received are not a valid frame.
    BadFrame,
    /// A length prefix announced more than the broker's maximum frame size.
    FrameTooLarge,
    /// The first frame was not `Hello`.
    HelloRequired,
    /// No `Hello` arrived within the handshake timeout.
    HandshakeTimeout,
    /// `Hello.version` is not one the broker speaks.
    UnsupportedVersion,
    /// `Hello.client_id` breaks the client id rules.
    InvalidClientId,
    /// A frame that makes no sense at this point (a second `Hello`, say).
    UnexpectedFrame,
    /// Another connection logged in with the same client id and took this one's place.
    SessionTakenOver,
    /// Nothing arrived for 1.5 times the keepalive.
    KeepaliveTimeout,
    /// The broker is shutting down.
    ShuttingDown,
    /// The broker failed internally; the connection is closed, nothing stored is lost.
    Internal,
    /// The token is missing or wrong for this client id, or the client may not connect from this
    /// address.
    Unauthorized,
    /// The broker is at its connection limit; try again later.
    Overloaded,
    /// An operator disconnected this client (the admin API's kick).
    Kicked,
    /// The broker cannot read this client's mailbox back from its store (damaged storage); what
    /// is stored stays, and the broker tries again on the next connection.
    MailboxUnreadable,
    #[serde(other)]
    Unknown,
}

/// Wire names of the code enums, for logs and CLI output; `tests` checks them against serde's.
macro_rules! wire_names {
    ($t:ty { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $t {
            /// The name this value has on the wire.
            pub fn as_str(&self) -> &'static str {
                match self { $(Self::$variant => $name),* }
            }

            /// The value named `name` on the wire; a name this build does not know is `Unknown`.
            pub(crate) fn from_wire(name: &[u8]) -> Self {
                match name {
                    $(n if n == $name.as_bytes() => Self::$variant,)*
                    _ => Self::Unknown,
                }
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_names!(RejectReason {
    InvalidRecipient => "invalid-recipient",
    TooLarge => "too-large",
    Unavailable => "unavailable",
    MailboxFull => "mailbox-full",
    Forbidden => "forbidden",
    RateLimited => "rate-limited",
    Unknown => "unknown",
});
wire_names!(ReceiptStatus {
    Delivered => "delivered",
    Expired => "expired",
    Undeliverable => "undeliverable",
    Removed => "removed",
    Unknown => "unknown",
});
wire_names!(ErrorCode {
    BadFrame => "bad-frame",
    FrameTooLarge => "frame-too-large",
    HelloRequired => "hello-required",
    HandshakeTimeout => "handshake-timeout",
    UnsupportedVersion => "unsupported-version",
    InvalidClientId => "invalid-client-id",
    UnexpectedFrame => "unexpected-frame",
    SessionTakenOver => "session-taken-over",
    KeepaliveTimeout => "keepalive-timeout",
    ShuttingDown => "shutting-down",
    Internal => "internal",
    Unauthorized => "unauthorized",
    Overloaded => "overloaded",
    Kicked => "kicked",
    MailboxUnreadable => "mailbox-unreadable",
    Unknown => "unknown",
});

#[cfg(test)]
mod tests {
    use super::*;

    fn serde_name<T: Serialize>(value: &T) -> String {
        let bytes = rmp_serde::to_vec_named(value).unwrap();
        rmp_serde::from_slice::<String>(&bytes).unwrap()
    }

    #[test]
    fn display_names_are_the_wire_names() {
        use ErrorCode::*;
        for code in [
            BadFrame,
            FrameTooLarge,
            HelloRequired,
            HandshakeTimeout,
            UnsupportedVersion,
            InvalidClientId,
            UnexpectedFrame,
            SessionTakenOver,
            KeepaliveTimeout,
            ShuttingDown,
            Internal,
            Kicked,
            MailboxUnreadable,
        ] {
            assert_eq!(code.as_str(), serde_name(&code));
        }
        for reason in [
            RejectReason::InvalidRecipient,
            RejectReason::TooLarge,
            RejectReason::Unavailable,
        ] {
            assert_eq!(reason.as_str(), serde_name(&reason));
        }
        assert_eq!(
            ReceiptStatus::Delivered.as_str(),
            serde_name(&ReceiptStatus::Delivered)
        );
    }

    #[test]
    fn bodies_travel_as_bin() {
        let send = ClientFrame::Send {
            send_id: 7,
            to: "bob".into(),
            body: Bytes::from_static(b"\x00\xffhi"),
            ttl_ms: None,
            fresh: false,
            receipts: Receipts::All,
        };
        let bytes = rmp_serde::to_vec_named(&send).unwrap();
        // 0xc4 0x04: MessagePack bin 8 of four bytes.
        assert!(bytes.windows(6).any(|w| w == b"\xc4\x04\x00\xffhi"));
        assert_eq!(rmp_serde::from_slice::<ClientFrame>(&bytes).unwrap(), send);
    }
}
