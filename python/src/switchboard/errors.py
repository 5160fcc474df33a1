"""What can go wrong, as exceptions named for it.

Two families mirror the protocol's two code tables. A ``send`` the broker turned away raises a
:class:`Rejected` subclass, one per reject reason (nothing was stored; the connection carries on). A
connection the broker ended, or refused at the handshake, raises a :class:`BrokerError` subclass, one
per error code. A code this package does not know raises :class:`UnknownRejection` or
:class:`UnknownBrokerError`, with the code kept as the broker sent it, so a newer broker never breaks
an older client.

Which failures are worth another connection follows the Rust library: a network failure, a hang-up,
``shutting-down``, ``keepalive-timeout``, ``internal``, ``overloaded`` and (while reconnecting)
``handshake-timeout`` are passing (``retryable``). ``session-taken-over`` is final: another process
holds the id now, and taking it back would start a tug of war (PROTOCOL.md, "Takeover"). So is
``kicked``: an operator disconnected the client on purpose.
"""

from __future__ import annotations

from typing import Dict, Optional, Type


class SwitchboardError(Exception):
    """Everything this package raises."""

    retryable: bool = False
    """Whether the same call may succeed on another connection."""


class ConnectError(SwitchboardError):
    """The TCP connection to the broker could not be opened."""

    retryable = True


class Timeout(SwitchboardError, TimeoutError):
    """A wait ran out of time: connecting, an answer, a receipt, a poll of the sync client."""

    retryable = True


class ConnectTimeout(Timeout):
    """Connecting and the handshake together took longer than ``connect_timeout``."""

    retryable = True


class TlsError(SwitchboardError):
    """TLS could not be set up: an unreadable certificate, or a handshake the broker refused."""


class ProtocolError(SwitchboardError):
    """The broker sent bytes that are not a frame, or a frame that makes no sense at this point."""


class FrameLimitError(SwitchboardError):
    """A frame over the frame limit: one this client will not send, or one the broker announced."""


class InvalidIdError(SwitchboardError, ValueError):
    """A client id that breaks the rules of PROTOCOL.md ("Client ids"); caught before connecting."""


class DuplicateIdError(SwitchboardError):
    """``send_with_id`` was given the send id of a send still waiting for its answer; nothing sent."""


class ClosedError(SwitchboardError):
    """The client ended before the call completed. For a send: whether it was stored is unknown.

    ``reason`` is what ended it: ``None`` when this side closed, else the error that did.
    """

    retryable = True

    def __init__(self, message: str = "the connection to the broker is closed",
                 reason: Optional[SwitchboardError] = None) -> None:
        super().__init__(message if reason is None else f"{message}: {reason}")
        self.reason = reason


class ConnectionLost(SwitchboardError):
    """The broker closed the connection without saying why, or the socket failed."""

    retryable = True


class Rejected(SwitchboardError):
    """The broker did not take a message; nothing was stored, and the connection carries on."""

    reason: str = ""

    def __init__(self, text: str, reason: Optional[str] = None) -> None:
        self.reason = reason if reason is not None else type(self).reason
        self.text = text
        super().__init__(f"message rejected: {self.reason}: {text}")


class InvalidRecipient(Rejected):
    """``to`` breaks the client id rules."""

    reason = "invalid-recipient"


class TooLarge(Rejected):
    """The body is longer than ``hi.max_body_bytes``, or larger than a whole mailbox may hold."""

    reason = "too-large"


class Unavailable(Rejected):
    """The broker could not store the message (a disk failure, shutting down); try again later."""

    reason = "unavailable"


class Forbidden(Rejected):
    """The broker's send rules do not let this client send to ``to``."""

    reason = "forbidden"


class RateLimited(Rejected):
    """This connection sends faster than ``limits.max_sends_per_sec``; slow down and send again."""

    reason = "rate-limited"


class MailboxFull(Rejected):
    """The recipient's mailbox is at its limit; send again once the recipient has caught up."""

    reason = "mailbox-full"


class UnknownRejection(Rejected):
    """A reject reason this package does not know (``reason`` holds it); the message was not sent."""


class BrokerError(SwitchboardError):
    """The broker sent ``error`` and closed the connection (or refused the handshake)."""

    code: str = ""

    def __init__(self, text: str, code: Optional[str] = None) -> None:
        self.code = code if code is not None else type(self).code
        self.text = text
        super().__init__(f"{self.code}: {text}")


class BadFrame(BrokerError):
    """The broker could not decode what this client sent."""

    code = "bad-frame"


class FrameTooLarge(BrokerError):
    """A length prefix this client sent is above the broker's ``max_frame_bytes``."""

    code = "frame-too-large"


class HelloRequired(BrokerError):
    """The first frame was not ``hello``."""

    code = "hello-required"


class HandshakeTimeout(BrokerError):
    """No ``hello`` arrived within the broker's handshake timeout."""

    code = "handshake-timeout"


class UnsupportedVersion(BrokerError):
    """The broker does not speak this protocol version."""

    code = "unsupported-version"


class InvalidClientId(BrokerError):
    """The broker found the client id against the rules."""

    code = "invalid-client-id"


class UnexpectedFrame(BrokerError):
    """A valid frame that makes no sense at this point, such as a second ``hello``."""

    code = "unexpected-frame"


class SessionTakenOver(BrokerError):
    """Another connection said ``hello`` with this client id; this one is over, for good."""

    code = "session-taken-over"


class KeepaliveTimeout(BrokerError):
    """The broker heard nothing from this client for 1.5 x the keepalive."""

    code = "keepalive-timeout"
    retryable = True


class ShuttingDown(BrokerError):
    """The broker is shutting down; connect again later."""

    code = "shutting-down"
    retryable = True


class InternalError(BrokerError):
    """The broker failed internally; nothing already stored is lost."""

    code = "internal"
    retryable = True


class Unauthorized(BrokerError):
    """The token is missing or wrong for this id, the id is unknown, or not allowed from here."""

    code = "unauthorized"


class Overloaded(BrokerError):
    """The broker is at its connection limit; try again later."""

    code = "overloaded"
    retryable = True


class Kicked(BrokerError):
    """An operator disconnected this client (the admin API's kick); final: the operator wanted it gone."""

    code = "kicked"


class MailboxUnreadable(BrokerError):
    """The broker cannot read this client's mailbox from its store (damaged storage); it tries again on the next connection."""

    code = "mailbox-unreadable"
    retryable = True


class UnknownBrokerError(BrokerError):
    """An error code this package does not know (``code`` holds it); not retried."""


REJECTIONS: Dict[str, Type[Rejected]] = {
    cls.reason: cls
    for cls in (InvalidRecipient, TooLarge, Unavailable, Forbidden, RateLimited, MailboxFull)
}
"""The exception for each reject reason of protocol version 1."""

BROKER_ERRORS: Dict[str, Type[BrokerError]] = {
    cls.code: cls
    for cls in (BadFrame, FrameTooLarge, HelloRequired, HandshakeTimeout, UnsupportedVersion,
                InvalidClientId, UnexpectedFrame, SessionTakenOver, KeepaliveTimeout, ShuttingDown,
                InternalError, Unauthorized, Overloaded, Kicked, MailboxUnreadable)
}
"""The exception for each error code of protocol version 1."""


def rejection(reason: str, text: str) -> Rejected:
    """The exception for a ``rejected`` frame."""
    cls = REJECTIONS.get(reason)
    return cls(text) if cls is not None else UnknownRejection(text, reason)


def broker_error(code: str, text: str) -> BrokerError:
    """The exception for an ``error`` frame."""
    cls = BROKER_ERRORS.get(code)
    return cls(text) if cls is not None else UnknownBrokerError(text, code)


def may_retry_connect(error: BaseException) -> bool:
    """Whether a failed reconnect attempt is worth another: also after ``handshake-timeout``."""
    if isinstance(error, HandshakeTimeout):
        return True
    return isinstance(error, SwitchboardError) and error.retryable
