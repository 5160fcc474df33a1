"""The synchronous wrapper, for scripts and cron jobs: the asyncio client on a thread of its own.

```python
with switchboard.connect("127.0.0.1:7878", "alice") as c:
    c.send("bob", b"hi")                 # the message id, once the broker has it
    for m in c.poll(timeout=5):          # what was waiting, acknowledged
        print(m.sender, m.body)
```

Every call is the asyncio client's, run on a private event loop in a daemon thread and waited for
with a timeout (:class:`~switchboard.errors.Timeout` when it runs out), so the semantics (resends,
``fresh``, receipts, reconnects) are the same.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from types import TracebackType
from typing import Any, Coroutine, Iterator, List, Optional, Type, TypeVar

from .client import Client
from .reconnect import Reconnect
from .sent import Body
from .errors import Timeout
from .events import Closed, Message, Receipt
from .link import TlsOption, Welcome

_T = TypeVar("_T")


class SyncClient:
    """A connected client for synchronous code; see :func:`connect`."""

    def __init__(self, server: str, client_id: str, token: Optional[str], tls: TlsOption,
                 timeout: float, reconnect: Optional[Reconnect], keepalive: float,
                 max_frame: Optional[int]) -> None:
        self.timeout = timeout
        """The bound on each call that waits for the broker, in seconds."""
        self.receipts: List[Receipt] = []
        """Receipts that arrived during :meth:`poll` or :meth:`listen`, already acknowledged."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="switchboard",
                                        daemon=True)
        self._thread.start()
        try:
            self._client: Client = self._call(Client.connect(
                server, client_id, token=token, tls=tls, keepalive=keepalive,
                reconnect=reconnect, max_frame=max_frame, connect_timeout=timeout), None)
        except BaseException:
            self._stop_loop()
            raise

    def _call(self, coro: Coroutine[Any, Any, _T], timeout: Optional[float]) -> _T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise Timeout(f"no answer from the broker within {timeout} s") from None

    @property
    def welcome(self) -> Welcome:
        return self._client.welcome

    def send(self, to: str, body: Body, ttl: Optional[float] = None, *,
             receipts: str = "all") -> int:
        """Sends and returns the broker's message id once accepted (see ``Client.send``)."""
        return self._call(self._client.send(to, body, ttl, receipts=receipts), self.timeout)

    def send_and_wait(self, to: str, body: Body, ttl: Optional[float] = None) -> Receipt:
        """Sends and waits for the receipt (``delivered``, or ``expired`` with a ttl)."""
        async def tracked() -> Receipt:
            sent = await self._client.send_and_track(to, body, ttl)
            return await sent.receipt()
        return self._call(tracked(), self.timeout)

    def ack(self, entry_id: int) -> None:
        self._call(self._client.ack(entry_id), self.timeout)

    def poll(self, timeout: float = 5.0) -> List[Message]:
        """The messages waiting for this client, acknowledged: everything the mailbox held at the
        handshake (``welcome.pending``) plus whatever came meanwhile, or what arrived within
        ``timeout`` seconds if the backlog takes longer. Receipts are acknowledged and kept in
        :attr:`receipts`."""
        return self._call(self._poll(timeout), timeout + self.timeout)

    async def _poll(self, timeout: float) -> List[Message]:
        messages: List[Message] = []
        deadline = self._loop.time() + timeout
        while True:
            caught_up = self._client.entries_received >= self._client.welcome.pending
            if caught_up and self._client.events_waiting() == 0:
                return messages
            left = deadline - self._loop.time()
            if left <= 0:
                return messages
            try:
                event = await self._client.next_event(left)
            except Timeout:
                return messages
            if event is None or isinstance(event, Closed):
                return messages
            message = await self._handle(event)
            if message is not None:
                messages.append(message)

    async def _handle(self, event: object) -> Optional[Message]:
        if isinstance(event, Message):
            await self._client.ack(event.message_id)
            return event
        if isinstance(event, Receipt):
            await self._client.ack(event.receipt_id)
            self.receipts.append(event)
        return None

    def listen(self, count: Optional[int] = None,
               timeout: Optional[float] = None) -> Iterator[Message]:
        """Messages as they come. Each is acknowledged when the loop asks for the next one, so one
        left with ``break`` comes again next time; ``count`` leaves after that many, all of them
        acknowledged. ``timeout`` bounds the wait for each message (``Timeout``). Ends when the
        client does (``close``, or a connection lost without ``reconnect``)."""
        seen = 0
        while count is None or seen < count:
            event = self._call(self._client.next_event(timeout), None)
            if event is None or isinstance(event, Closed):
                return
            if isinstance(event, Message):
                seen += 1
                yield event
                self._call(self._client.ack(event.message_id), self.timeout)
            else:
                self._call(self._handle(event), self.timeout)

    def close(self) -> None:
        """Says ``bye`` and stops the client's thread; closing twice is fine."""
        if self._loop.is_closed():
            return
        try:
            self._call(self._client.close(), self.timeout)
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(self.timeout)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> "SyncClient":
        return self

    def __exit__(self, kind: Optional[Type[BaseException]], value: Optional[BaseException],
                 traceback: Optional[TracebackType]) -> None:
        self.close()


def connect(server: str, client_id: str, token: Optional[str] = None, *, tls: TlsOption = None,
            timeout: float = 30.0, reconnect: Optional[Reconnect] = None, keepalive: float = 30.0,
            max_frame: Optional[int] = None) -> SyncClient:
    """Connects synchronously; use it as a context manager so the connection is closed with ``bye``.

    ``timeout`` bounds connecting and every later call that waits for the broker.
    """
    return SyncClient(server, client_id, token, tls, timeout, reconnect, keepalive, max_frame)
