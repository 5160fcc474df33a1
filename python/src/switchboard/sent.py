"""What a send is made of and gives back: the send id, the body and ttl as the wire wants them, the
kept frame of a send awaiting its answer, and the :class:`Tracked` handle of a tracked send."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from dataclasses import dataclass
from typing import Optional, Union

from . import frames
from .errors import Timeout
from .events import Receipt

Body = Union[bytes, bytearray, memoryview, str]
"""A message body; ``str`` is sent as its UTF-8 bytes."""


_last_send_id = 0
_send_id_lock = threading.Lock()


def next_send_id() -> int:
    """A fresh send id: the Unix time in microseconds, or one more than the last one handed out in
    this process if that is larger, as the Rust library numbers its sends. Unique across reconnects
    and, unless a process sends faster than one message per microsecond, across restarts."""
    global _last_send_id
    with _send_id_lock:
        _last_send_id = max(time.time_ns() // 1000, _last_send_id + 1)
        return _last_send_id


def as_bytes(body: Body) -> bytes:
    return body.encode("utf-8") if isinstance(body, str) else bytes(body)


def ttl_ms(ttl: Optional[float]) -> Optional[int]:
    """Seconds as whole milliseconds, rounded up so a short ttl is not zero."""
    if ttl is None:
        return None
    return max(0, math.ceil(ttl * 1000))


class Pending:
    """A send waiting for its answer, kept encoded so a resend is the same bytes but ``fresh``."""

    def __init__(self, frame: frames.Send, data: bytes, answer: "asyncio.Future[int]") -> None:
        self.frame = frame
        self.data = data
        self.answer = answer
        self.written = False
        """Whether a connection carried it; once that one is lost it is a resend."""


@dataclass(frozen=True)
class Tracked:
    """A sent message whose receipt the client waits for; the receipt is acknowledged by the client
    and does not appear among the events."""

    send_id: int
    message_id: int
    _receipt: "asyncio.Future[Receipt]"

    async def receipt(self, timeout: Optional[float] = None) -> Receipt:
        """The message's receipt (``status`` ``delivered``, ``expired``, ``undeliverable`` or
        ``removed``)."""
        try:
            return await asyncio.wait_for(asyncio.shield(self._receipt), timeout)
        except asyncio.TimeoutError:
            raise Timeout(f"no receipt for message {self.message_id} within {timeout} s") from None
