"""Switchboard client: send messages to other clients by id through a Switchboard broker.

``Client`` is the asyncio client; ``connect`` the synchronous wrapper for scripts. The wire protocol
is PROTOCOL.md in the Switchboard repository, the guarantees GUARANTEES.md.
"""

from .client import Client
from .reconnect import Reconnect
from .sent import Tracked, next_send_id
from .errors import (
    BadFrame,
    BrokerError,
    ClosedError,
    ConnectError,
    ConnectTimeout,
    ConnectionLost,
    DuplicateIdError,
    Forbidden,
    FrameLimitError,
    FrameTooLarge,
    HandshakeTimeout,
    HelloRequired,
    InternalError,
    InvalidClientId,
    InvalidIdError,
    InvalidRecipient,
    KeepaliveTimeout,
    Kicked,
    MailboxFull,
    MailboxUnreadable,
    Overloaded,
    ProtocolError,
    RateLimited,
    Rejected,
    SessionTakenOver,
    ShuttingDown,
    SwitchboardError,
    Timeout,
    TlsError,
    TooLarge,
    Unauthorized,
    Unavailable,
    UnexpectedFrame,
    UnknownBrokerError,
    UnknownRejection,
    UnsupportedVersion,
)
from .events import Closed, Datagram, Disconnected, Event, Message, Receipt, Reconnected
from .link import Welcome, tls_context
from .sync import SyncClient, connect

__all__ = [
    "BadFrame", "BrokerError", "Client", "Closed", "ClosedError", "ConnectError", "ConnectTimeout",
    "ConnectionLost", "Datagram", "Disconnected", "DuplicateIdError", "Event", "Forbidden", "FrameLimitError",
    "FrameTooLarge", "HandshakeTimeout", "HelloRequired", "InternalError", "InvalidClientId",
    "InvalidIdError", "InvalidRecipient", "KeepaliveTimeout", "Kicked", "MailboxFull", "MailboxUnreadable",
    "Message",
    "Overloaded", "ProtocolError", "RateLimited", "Receipt", "Reconnect", "Reconnected", "Rejected",
    "SessionTakenOver", "ShuttingDown", "SwitchboardError", "SyncClient", "Timeout", "TlsError",
    "TooLarge", "Tracked", "Unauthorized", "Unavailable", "UnexpectedFrame", "UnknownBrokerError",
    "UnknownRejection", "UnsupportedVersion", "Welcome", "connect", "next_send_id", "tls_context",
]

__version__ = "0.1.0"
