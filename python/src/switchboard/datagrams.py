"""What one UDP datagram carries, and how a receiver knows it is genuine (PROTOCOL.md, "Datagrams
over UDP").

A datagram is a 17-byte header (direction, session number, sequence number), a payload (empty, or one
frame map) and the first 16 bytes of HMAC-SHA256 under the session's key from ``hi``. The MAC is
compared in constant time, and a :class:`ReplayWindow` takes each sequence number once.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

from .errors import ProtocolError

HEADER = struct.Struct(">BQQ")
MAC_LEN = 16
OVERHEAD = HEADER.size + MAC_LEN
WINDOW = 64
TO_BROKER = 1
TO_CLIENT = 2


class DatagramRefused(ProtocolError):
    """Bytes that are not a genuine datagram of this session: dropped without a reply."""


@dataclass(frozen=True)
class Opened:
    session: int
    sequence: int
    payload: bytes


def _mac(key: bytes, signed: bytes) -> bytes:
    return hmac.new(key, signed, hashlib.sha256).digest()[:MAC_LEN]


def seal(to_broker: bool, session: int, sequence: int, key: bytes, payload: bytes) -> bytes:
    """The datagram carrying ``payload`` (empty for a bind)."""
    signed = HEADER.pack(TO_BROKER if to_broker else TO_CLIENT, session, sequence) + payload
    return signed + _mac(key, signed)


def open_datagram(data: bytes, key: bytes, *, to_broker: bool) -> Opened:
    """The header and payload of ``data`` once its MAC checks out under ``key``."""
    if len(data) < OVERHEAD:
        raise DatagramRefused(f"{len(data)} bytes are shorter than a datagram")
    signed, mac = data[:-MAC_LEN], data[-MAC_LEN:]
    direction, session, sequence = HEADER.unpack_from(signed)
    if direction != (TO_BROKER if to_broker else TO_CLIENT):
        raise DatagramRefused(f"direction byte {direction}")
    if sequence == 0:
        raise DatagramRefused("sequence number 0")
    if not hmac.compare_digest(_mac(key, signed), mac):
        raise DatagramRefused("wrong MAC")
    return Opened(session, sequence, signed[HEADER.size:])


class ReplayWindow:
    """The newest sequence number taken and a bitmap of the 64 before it (RFC 4303, 3.4.3)."""

    def __init__(self) -> None:
        self.newest = 0
        self.seen = 0

    def accept(self, sequence: int) -> bool:
        """Takes ``sequence`` if it is new; ``False`` for a replay or one older than the window."""
        if sequence > self.newest:
            shift = sequence - self.newest
            self.seen = 1 if shift >= WINDOW else ((self.seen << shift) | 1) & ((1 << WINDOW) - 1)
            self.newest = sequence
            return True
        age = self.newest - sequence
        if age >= WINDOW or self.seen & (1 << age):
            return False
        self.seen |= 1 << age
        return True
