"""What the broker tells a client without being asked: messages, receipts, datagrams, and the
connection's state.

Events come in the order the broker sent them, which within a mailbox is entry id order. The queue
is bounded: a program that stops reading events stops the client from reading the socket, so memory
stays bounded and the broker's window (``limits.window``) does the rest.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Deque, Optional, Union

from . import frames
from .errors import SwitchboardError
from .link import Welcome

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Message:
    """A message for this client; acknowledge it with ``ack(message_id)`` once handled."""

    message_id: int
    """The broker's id for the message; the id to acknowledge."""
    sender: str
    """The sender's client id (``from`` on the wire)."""
    send_id: int
    """The sender's send id. With ``sender`` it names the message across broker crashes: a message
    handed out before it was on disk can come again under a new ``message_id`` (GUARANTEES.md)."""
    sent_at_ms: int
    """When the broker accepted the message, in milliseconds since the Unix epoch."""
    body: bytes
    """The message exactly as the sender sent it."""

    @property
    def sent_at(self) -> datetime:
        """``sent_at_ms`` as an aware UTC datetime."""
        return _EPOCH + timedelta(milliseconds=self.sent_at_ms)


Receipt = frames.Receipt
"""News about a message this client sent; acknowledge it with ``ack(receipt_id)``. The event is the
``receipt`` frame itself."""


@dataclass(frozen=True)
class Disconnected:
    """The connection was lost and the client is reconnecting (only with ``reconnect``). Sends keep
    waiting; what was not acknowledged comes again after :class:`Reconnected`."""

    reason: SwitchboardError


@dataclass(frozen=True)
class Reconnected:
    """The client is connected again; ``welcome.pending`` counts what waits now, redeliveries too."""

    welcome: Welcome


@dataclass(frozen=True)
class Closed:
    """The client has ended for good; always the last event. ``reason`` is ``None`` after ``close``."""

    reason: Optional[SwitchboardError]


Datagram = frames.Datagram
"""A datagram for this client (``sender``, ``body``): never stored, nothing to acknowledge."""

Event = Union[Message, Receipt, Datagram, Disconnected, Reconnected, Closed]

EVENTS_CAPACITY = 1024
"""Events waiting to be read before the client stops reading the socket. The broker's window caps
unacknowledged deliveries (256 by default), so with such a window this never fills."""


class EventQueue:
    """Events in order; :meth:`put` waits while the queue is full, :meth:`close` never waits."""

    def __init__(self, capacity: int = EVENTS_CAPACITY) -> None:
        self._items: Deque[Event] = collections.deque()
        self._capacity = capacity
        self._changed = asyncio.Event()
        self._closed = False

    async def put(self, event: Event) -> None:
        while len(self._items) >= self._capacity:
            self._changed.clear()
            await self._changed.wait()
        self._items.append(event)
        self._changed.set()

    def report(self, event: Union[Disconnected, Reconnected]) -> None:
        """Appends an event about the connection, past the capacity if need be: the few of them
        never wait for the program, so closing is never held up behind unread events."""
        self._items.append(event)
        self._changed.set()

    def close(self, event: Closed) -> None:
        """Appends the last event, past the capacity if need be."""
        if not self._closed:
            self._closed = True
            self._items.append(event)
            self._changed.set()

    def __len__(self) -> int:
        return len(self._items)

    async def get(self) -> Optional[Event]:
        """The next event; ``None`` once :class:`Closed` has been taken."""
        while not self._items:
            if self._closed:
                return None
            self._changed.clear()
            await self._changed.wait()
        return self.take()

    def ready(self) -> bool:
        """Whether :meth:`take` has an answer now (an event, or the end)."""
        return bool(self._items) or self._closed

    def take(self) -> Optional[Event]:
        """The next event without waiting; ``None`` if there is none (or the end was taken)."""
        if not self._items:
            return None
        event = self._items.popleft()
        if isinstance(event, Closed):
            # Stay ended: every later get answers None.
            self._items.clear()
        self._changed.set()
        return event
