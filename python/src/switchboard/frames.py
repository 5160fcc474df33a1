"""What a frame says, and how it becomes bytes: PROTOCOL.md's frames as dataclasses.

Every frame is a 4-byte big-endian length, then a MessagePack map whose ``type`` key names the kind.
Client frames (``Hello``, ``Send``, ``Ack``, ``Ping``, ``Bye``, ``SendDatagram``) are encoded here exactly as the Rust
encoder writes them (``type`` first, then the fields in table order, smallest integer encodings), so
that PROTOCOL.md's test vectors hold byte for byte. Broker frames are decoded leniently where the
protocol asks for it (any key order, unknown keys ignored, any integer encoding of a value in range,
unknown codes kept as they came) and strictly everywhere else: a negative, out-of-range or float
integer, a missing field or an unknown ``type`` is a :class:`~switchboard.errors.ProtocolError`.

Codes (``reason``, ``status``, ``code``) stay strings, so a code this package does not know is kept
as the broker sent it; :mod:`switchboard.errors` turns each into an exception class.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple, Type, TypeVar, Union

import msgpack

from .errors import FrameLimitError, ProtocolError, TlsError

PROTOCOL_VERSION = 1
"""The protocol version this package speaks."""

DEFAULT_MAX_FRAME = 1024 * 1024
"""The frame limit before ``hi`` announces one (and from brokers too old to announce one): 1 MiB."""

DELIVER_OVERHEAD = 216
"""The most a ``deliver`` adds to its body (PROTOCOL.md, "Broker limits"): frame limit = body + 216."""

MAX_ANNOUNCED_FRAME = 64 << 20
"""The largest frame limit a broker may be configured with; a larger announcement is taken as this,
so a broker cannot make the client buffer gigabytes."""

PREFIX = struct.Struct(">I")

_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1
#: The values of ``send.receipts``.
RECEIPTS = ("all", "delivered", "none")


@dataclass(frozen=True)
class Hello:
    client_id: str
    token: Optional[str] = None
    keepalive_secs: int = 30
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class Send:
    send_id: int
    to: str
    body: bytes
    ttl_ms: Optional[int] = None
    fresh: bool = False
    #: Which receipts the sender asks for: ``"all"`` (the default), ``"delivered"`` or ``"none"``.
    receipts: str = "all"


@dataclass(frozen=True)
class Ack:
    id: int


@dataclass(frozen=True)
class Ping:
    pass


@dataclass(frozen=True)
class Bye:
    pass


@dataclass(frozen=True)
class SendDatagram:
    """A ``datagram`` to ``to``: never stored, never answered (PROTOCOL.md, "Datagrams")."""

    to: str
    body: bytes


@dataclass(frozen=True)
class Hi:
    version: int
    keepalive_secs: int
    address: str
    pending: int
    max_body_bytes: int = 0
    udp_port: Optional[int] = None
    """The broker's UDP datagram port, on the host this connection reached; ``None``: TCP only."""
    datagram_session: Optional[int] = None
    datagram_key: Optional[bytes] = None


@dataclass(frozen=True)
class Accepted:
    send_id: int
    message_id: int


@dataclass(frozen=True)
class Rejected:
    send_id: int
    reason: str
    text: str


@dataclass(frozen=True)
class Deliver:
    message_id: int
    sender: str
    send_id: int
    sent_at_ms: int
    body: bytes


@dataclass(frozen=True)
class Receipt:
    """News about a message this client sent (also the event the client hands the program)."""

    receipt_id: int
    """The mailbox entry holding the receipt; the id to acknowledge."""
    send_id: int
    message_id: int
    to: str
    status: str
    """``"delivered"``, ``"expired"``, ``"undeliverable"`` (the broker's frame limit was lowered
    below the message's ``deliver`` after it was accepted, and it was removed), ``"removed"`` (an
    operator removed the message undelivered), or a status this package does not know, as the broker
    sent it."""

    @property
    def delivered(self) -> bool:
        return self.status == "delivered"


@dataclass(frozen=True)
class Pong:
    pass


@dataclass(frozen=True)
class Error:
    code: str
    text: str


@dataclass(frozen=True)
class Datagram:
    """A datagram from ``sender``, sent while this client was online (also the event handed out)."""

    sender: str
    body: bytes


ClientFrame = Union[Hello, Send, Ack, Ping, Bye, SendDatagram]
BrokerFrame = Union[Hi, Accepted, Rejected, Deliver, Receipt, Pong, Error, Datagram]
Frame = Union[ClientFrame, BrokerFrame]


def to_wire(frame: Frame) -> Dict[str, Any]:
    """The frame as the map on the wire, keys in the order the Rust encoder writes them."""
    if isinstance(frame, Hello):
        return {"type": "hello", "version": frame.version, "client_id": frame.client_id,
                "token": frame.token, "keepalive_secs": frame.keepalive_secs}
    if isinstance(frame, Send):
        wire: Dict[str, Any] = {"type": "send", "id": frame.send_id, "to": frame.to,
                                "body": frame.body}
        # Encoders omit both keys at their defaults (PROTOCOL.md, `send`).
        if frame.ttl_ms is not None:
            wire["ttl_ms"] = frame.ttl_ms
        if frame.fresh:
            wire["fresh"] = True
        if frame.receipts != "all":
            wire["receipts"] = frame.receipts
        return wire
    if isinstance(frame, Ack):
        return {"type": "ack", "id": frame.id}
    if isinstance(frame, SendDatagram):
        return {"type": "datagram", "to": frame.to, "body": frame.body}
    if isinstance(frame, Datagram):
        return {"type": "datagram", "from": frame.sender, "body": frame.body}
    if isinstance(frame, Hi):
        hi: Dict[str, Any] = {"type": "hi", "version": frame.version,
                              "keepalive_secs": frame.keepalive_secs, "address": frame.address,
                              "pending": frame.pending, "max_body_bytes": frame.max_body_bytes}
        for key in ("udp_port", "datagram_session", "datagram_key"):
            if getattr(frame, key) is not None:
                hi[key] = getattr(frame, key)
        return hi
    if isinstance(frame, Accepted):
        return {"type": "accepted", "id": frame.send_id, "message_id": frame.message_id}
    if isinstance(frame, Rejected):
        return {"type": "rejected", "id": frame.send_id, "reason": frame.reason, "text": frame.text}
    if isinstance(frame, Deliver):
        return {"type": "deliver", "message_id": frame.message_id, "from": frame.sender,
                "send_id": frame.send_id, "sent_at_ms": frame.sent_at_ms, "body": frame.body}
    if isinstance(frame, Receipt):
        return {"type": "receipt", "receipt_id": frame.receipt_id, "id": frame.send_id,
                "message_id": frame.message_id, "to": frame.to, "status": frame.status}
    if isinstance(frame, Error):
        return {"type": "error", "code": frame.code, "text": frame.text}
    return {"type": _FIELDLESS_NAMES[type(frame)]}


_FIELDLESS_NAMES: Dict[type, str] = {Ping: "ping", Bye: "bye", Pong: "pong"}


def encode(frame: Frame, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """The complete frame, length prefix included; a body over ``max_frame`` is refused, never cut."""
    body: bytes = msgpack.packb(to_wire(frame), use_bin_type=True)
    if len(body) > max_frame:
        raise FrameLimitError(f"a {len(body)}-byte frame is over the {max_frame}-byte limit")
    return PREFIX.pack(len(body)) + body


_T = TypeVar("_T")


class _Fields:
    """The fields of one decoded map, each read with its type checked."""

    def __init__(self, kind: str, wire: Mapping[str, Any]) -> None:
        self.kind = kind
        self.wire = wire

    def _get(self, key: str, expected: Type[_T], default: Optional[_T]) -> _T:
        if key not in self.wire:
            if default is None:
                raise ProtocolError(f"{self.kind} without `{key}`")
            return default
        value = self.wire[key]
        # `bool` is an `int` in Python; on the wire it is not.
        if type(value) is not expected:
            raise ProtocolError(f"{self.kind}.{key} is {type(value).__name__}, not {expected.__name__}")
        return value

    def uint(self, key: str, top: int = _U64, default: Optional[int] = None) -> int:
        value = self._get(key, int, default)
        if not 0 <= value <= top:
            raise ProtocolError(f"{self.kind}.{key} = {value} is out of range")
        return value

    def text(self, key: str) -> str:
        return self._get(key, str, None)

    def binary(self, key: str) -> bytes:
        return self._get(key, bytes, None)

    def opt_text(self, key: str) -> Optional[str]:
        return None if self.wire.get(key) is None else self.text(key)

    def opt_uint(self, key: str) -> Optional[int]:
        return None if self.wire.get(key) is None else self.uint(key)

    def opt_binary(self, key: str) -> Optional[bytes]:
        return None if self.wire.get(key) is None else self.binary(key)

    def flag(self, key: str) -> bool:
        """An optional bool: absent and `nil` are `False`."""
        return False if self.wire.get(key) is None else self._get(key, bool, False)


def _broker_frame(f: _Fields) -> BrokerFrame:
    kind = f.kind
    if kind == "hi":
        return Hi(f.uint("version", _U32), f.uint("keepalive_secs", _U32), f.text("address"),
                  f.uint("pending"), f.uint("max_body_bytes", default=0),
                  None if f.wire.get("udp_port") is None else f.uint("udp_port", (1 << 16) - 1),
                  f.opt_uint("datagram_session"), f.opt_binary("datagram_key"))
    if kind == "accepted":
        return Accepted(f.uint("id"), f.uint("message_id"))
    if kind == "rejected":
        return Rejected(f.uint("id"), f.text("reason"), f.text("text"))
    if kind == "deliver":
        return Deliver(f.uint("message_id"), f.text("from"), f.uint("send_id", default=0),
                       f.uint("sent_at_ms"), f.binary("body"))
    if kind == "receipt":
        return Receipt(f.uint("receipt_id"), f.uint("id"), f.uint("message_id"), f.text("to"),
                       f.text("status"))
    if kind == "pong":
        return Pong()
    if kind == "error":
        return Error(f.text("code"), f.text("text"))
    if kind == "datagram":
        return Datagram(f.text("from"), f.binary("body"))
    raise ProtocolError(f"unknown frame type `{kind}`")


def _client_frame(f: _Fields) -> ClientFrame:
    kind = f.kind
    if kind == "hello":
        return Hello(version=f.uint("version", _U32), client_id=f.text("client_id"),
                     token=f.opt_text("token"), keepalive_secs=f.uint("keepalive_secs", _U32))
    if kind == "send":
        ttl = f.opt_uint("ttl_ms")
        receipts = "all" if f.wire.get("receipts") is None else f.text("receipts")
        if receipts not in RECEIPTS:
            raise ProtocolError(f"send.receipts = {receipts!r} is not one of {', '.join(RECEIPTS)}")
        return Send(f.uint("id"), f.text("to"), f.binary("body"), ttl, f.flag("fresh"), receipts)
    if kind == "ack":
        return Ack(f.uint("id"))
    if kind == "ping":
        return Ping()
    if kind == "bye":
        return Bye()
    if kind == "datagram":
        return SendDatagram(f.text("to"), f.binary("body"))
    raise ProtocolError(f"unknown frame type `{kind}`")


def _fields(body: bytes) -> _Fields:
    try:
        wire = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException) as e:
        # ExtraData, FormatError, StackError and invalid UTF-8 all derive from ValueError.
        raise ProtocolError(f"the frame is not one MessagePack map: {e}") from None
    if not isinstance(wire, dict):
        raise ProtocolError(f"the frame is a {type(wire).__name__}, not a map")
    kind = wire.get("type")
    if type(kind) is not str:
        raise ProtocolError("the frame has no `type`")
    return _Fields(kind, wire)


def decode_broker_frame(body: bytes) -> BrokerFrame:
    """A frame from the broker, from its body (the bytes after the length prefix)."""
    return _broker_frame(_fields(body))


def decode_client_frame(body: bytes) -> ClientFrame:
    """A frame a client sent, from its body; the broker's side, for tests and tools."""
    return _client_frame(_fields(body))


def looks_like_tls(prefix: bytes) -> bool:
    """Whether a length prefix is really the start of a TLS record (content type 20..23, then 3)."""
    return len(prefix) >= 2 and 0x14 <= prefix[0] <= 0x17 and prefix[1] == 0x03


def check_prefix(prefix: bytes, max_frame: int) -> int:
    """The body length a 4-byte prefix announces, refused before reading the body if over the limit."""
    length: int = PREFIX.unpack(prefix)[0]
    if length > max_frame:
        if looks_like_tls(prefix):
            raise TlsError("the broker answered in TLS, and this client connected without it "
                                "(pass tls=...)")
        raise FrameLimitError(f"the broker announced a {length}-byte frame, over the "
                              f"{max_frame}-byte limit")
    if length == 0:
        raise ProtocolError("an empty frame")
    return length


def max_frame_for(max_body_bytes: int, own: Optional[int] = None) -> int:
    """The frame limit for a connection: the client's own, else what ``hi`` announced (capped)."""
    if own is not None:
        return own
    if max_body_bytes == 0:
        return DEFAULT_MAX_FRAME
    return min(max_body_bytes + DELIVER_OVERHEAD, MAX_ANNOUNCED_FRAME)


def split_frames(data: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> Tuple[bytes, ...]:
    """The bodies of the complete frames in ``data``, which must hold nothing else."""
    bodies = []
    at = 0
    while at < len(data):
        if len(data) - at < PREFIX.size:
            raise ProtocolError("a partial length prefix")
        length = check_prefix(data[at:at + PREFIX.size], max_frame)
        at += PREFIX.size
        if len(data) - at < length:
            raise ProtocolError("a partial frame")
        bodies.append(data[at:at + length])
        at += length
    return tuple(bodies)
