"""The asyncio client: connect, send, track, acknowledge, listen, close, and reconnect in between.

One task of the client's own (``_run``) owns the connection: it reads frames, answers the keepalive,
matches ``accepted``/``rejected`` and receipts to the calls waiting for them, and with ``reconnect``
set replaces a lost connection with the next one. The semantics are the Rust library's
(``client/src``):

- A send the client numbers goes out the first time with ``fresh: true``; once a connection that
  carried it is lost the broker may have it, so it is re-encoded once with ``fresh: false`` and sent
  again with its original send id on the next connection, before any newer send. The broker's dedupe
  stores it once and answers with the original ``message_id``. A send with a caller-chosen id
  (``send_with_id``) may itself be a resend and never says ``fresh``.
- At most :data:`MAX_UNANSWERED` sends wait for an answer (the broker's ``max_unaccepted_sends``
  default); more wait for room. Frames are read while sends are written, so pipelining never
  deadlocks against the broker.
- The frame limit is what ``hi`` announces (``max_body_bytes`` + 216, capped at 64 MiB), or the
  client's own ``max_frame``; a send over it is refused before anything is written.
- The client pings after half the agreed keepalive without writing anything.
- Reconnect attempts wait with jittered exponential backoff (:class:`Reconnect`); only passing
  troubles are retried (see :mod:`switchboard.errors`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import AsyncIterator, Dict, List, Optional, Set, Tuple, TypeVar, Union

from . import frames
from .errors import (
    ClosedError,
    DuplicateIdError,
    SwitchboardError,
    Timeout,
    may_retry_connect,
    rejection,
    broker_error,
)
from .events import Closed, Disconnected, Event, EventQueue, Message, Receipt, Reconnected
from .ids import check_client_id
from .link import Link, TlsOption, Welcome, open_link
from .reconnect import Reconnect
from .sent import Body, Pending, Tracked, as_bytes, next_send_id, ttl_ms

log = logging.getLogger("switchboard")

_T = TypeVar("_T")

MAX_UNANSWERED = 1024
"""Sends waiting for ``accepted``/``rejected`` at once; the broker's ``max_unaccepted_sends`` default."""

CLOSE_GRACE = 5.0
"""How long ``close`` waits for the broker to hang up after ``bye``, in seconds."""

class Client:
    """A connected client. Make one with :meth:`Client.connect` (or ``async with await ...``)."""

    def __init__(self, server: str, hello: frames.Hello, tls: TlsOption, max_frame: Optional[int],
                 connect_timeout: float, reconnect: Optional[Reconnect], link: Link) -> None:
        self._server = server
        self._hello = hello
        self._tls = tls
        self._own_max_frame = max_frame
        self._connect_timeout = connect_timeout
        self._reconnect = reconnect
        self._link: Optional[Link] = link
        self._welcome = link.welcome
        self._entries = 0
        self._unanswered: Dict[int, Pending] = {}
        self._room = asyncio.Semaphore(MAX_UNANSWERED)
        self._tracked: Dict[int, "asyncio.Future[Receipt]"] = {}
        self._waiting_acks: List[Tuple[int, "asyncio.Future[None]"]] = []
        self._library_acked: Set[int] = set()
        self._events = EventQueue()
        self._close_asked = asyncio.Event()
        self._ended: Optional[ClosedError] = None
        self._attempt = 0
        """Reconnect attempts in the current outage."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    @classmethod
    async def connect(cls, server: str, client_id: str, *, token: Optional[str] = None,
                      tls: TlsOption = None, keepalive: float = 30.0,
                      reconnect: Optional[Reconnect] = None, max_frame: Optional[int] = None,
                      connect_timeout: float = 10.0) -> "Client":
        """Connects to ``server`` (``host:port``) as ``client_id``, says ``hello`` and waits for ``hi``.

        ``tls``: ``True`` for the system's CAs, or an ``ssl.SSLContext`` (see :func:`tls_context`
        for a given CA and client certificates). ``reconnect``: a :class:`Reconnect` policy to ride
        out lost connections; without it, the first loss ends the client. This first connection is
        never retried: its failure is raised (a :class:`~switchboard.errors.BrokerError` if the
        broker refused it).
        """
        keepalive_secs = min(max(1, int(keepalive)), (1 << 32) - 1)  # whole seconds, a u32, never 0
        hello = frames.Hello(check_client_id(client_id), token, keepalive_secs)
        link = await open_link(server, hello, tls, max_frame, connect_timeout)
        return cls(server, hello, tls, max_frame, connect_timeout, reconnect, link)

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    @property
    def welcome(self) -> Welcome:
        """What the latest ``hi`` said: the first connection's, or after a reconnect the new one's."""
        return self._welcome

    @property
    def entries_received(self) -> int:
        """Messages and receipts received on the current connection, to compare with ``pending``."""
        return self._entries

    @property
    def max_frame(self) -> int:
        """The frame limit of the current connection."""
        return self._link.max_frame if self._link else frames.max_frame_for(
            self._welcome.max_body_bytes, self._own_max_frame)

    # --- sending ---------------------------------------------------------------------------------

    async def send(self, to: str, body: Body, ttl: Optional[float] = None, *,
                   receipts: str = "all") -> int:
        """Sends ``body`` to ``to``; returns the broker's message id once it is on the broker's disk
        (or already acknowledged by its recipient). ``ttl`` in seconds: an undelivered message is
        removed then and its sender gets an ``expired`` receipt. ``receipts``: ``"all"``,
        ``"delivered"`` (no ``expired``) or ``"none"``, for a sender that never reads them. Raises a
        :class:`~switchboard.errors.Rejected` subclass if the broker did not take it."""
        return (await self._send(to, body, ttl, None, None, receipts))[1]

    async def send_with_id(self, to: str, body: Body, send_id: int,
                           ttl: Optional[float] = None, *, receipts: str = "all") -> int:
        """Sends like :meth:`send` under a send id the caller chose (see :func:`next_send_id`), for a
        message kept elsewhere before it could be sent: every attempt with that id is stored once.
        Any attempt may be a resend, so it never says ``fresh``."""
        return (await self._send(to, body, ttl, send_id, None, receipts))[1]

    async def send_and_track(self, to: str, body: Body, ttl: Optional[float] = None) -> Tracked:
        """Sends like :meth:`send` and returns once accepted; ``await tracked.receipt()`` waits for
        the receipt, which the client acknowledges itself."""
        receipt: "asyncio.Future[Receipt]" = asyncio.get_running_loop().create_future()
        send_id, message_id = await self._send(to, body, ttl, None, receipt)
        return Tracked(send_id, message_id, receipt)

    async def _send(self, to: str, body: Body, ttl: Optional[float], send_id: Optional[int],
                    receipt: "Optional[asyncio.Future[Receipt]]",
                    receipts: str = "all") -> Tuple[int, int]:
        if receipts not in frames.RECEIPTS:
            raise ValueError(f"receipts must be one of {', '.join(frames.RECEIPTS)}, not {receipts!r}")
        self._check_open()
        await self._room.acquire()
        try:
            self._check_open()
            if send_id is not None and send_id in self._unanswered:
                raise DuplicateIdError(f"send id {send_id} is in use by a send waiting for its answer")
            frame = frames.Send(send_id if send_id is not None else next_send_id(), to,
                                as_bytes(body), ttl_ms(ttl), fresh=send_id is None,
                                receipts=receipts)
            data = frames.encode(frame, self.max_frame)
        except BaseException:
            self._room.release()
            raise
        answer: "asyncio.Future[int]" = asyncio.get_running_loop().create_future()
        pending = Pending(frame, data, answer)
        self._unanswered[frame.send_id] = pending
        if receipt is not None:
            self._tracked[frame.send_id] = receipt
        if self._link is not None:
            self._link.write(data)
            pending.written = True
        return frame.send_id, await answer

    def _answer(self, send_id: int, result: Union[int, SwitchboardError]) -> None:
        pending = self._unanswered.pop(send_id, None)
        if pending is None:
            log.warning("an answer for a send this client did not make: %s", send_id)
            return
        self._room.release()
        if isinstance(result, SwitchboardError):
            self._tracked.pop(send_id, None)
            if not pending.answer.done():
                pending.answer.set_exception(result)
        elif not pending.answer.done():
            pending.answer.set_result(result)

    # --- acknowledging ---------------------------------------------------------------------------

    async def send_datagram(self, to: str, body: Body) -> None:
        """Sends a datagram to ``to`` on this connection: fire and forget (PROTOCOL.md,
        "Datagrams"). It reaches ``to`` only if ``to`` is connected now; no answer, no receipt,
        nothing stored. While disconnected it is dropped."""
        self._check_open()
        data = frames.encode(frames.SendDatagram(to, as_bytes(body)), self.max_frame)
        if self._link is None:
            log.debug("not connected; the datagram to %s is dropped", to)
            return
        self._link.write(data)
        try:
            await self._link.drain()
        except (OSError, RuntimeError):
            log.debug("the connection ended; the datagram to %s may be lost", to)

    async def ack(self, entry_id: int) -> None:
        """Acknowledges a message (``message_id``) or a receipt (``receipt_id``) so the broker can
        forget it. Returns once the ``ack`` is handed to the socket. While reconnecting it waits for
        the next connection; the broker redelivers the entry meanwhile, so an ack may also have to be
        repeated for the redelivery (at least once, as always)."""
        self._check_open()
        if self._link is not None:
            link = self._link
            link.write(frames.encode(frames.Ack(entry_id)))
            try:
                await link.drain()
                return
            except (OSError, RuntimeError):
                if self._reconnect is None:
                    raise ClosedError(reason=self._ended.reason if self._ended else None) from None
        done: "asyncio.Future[None]" = asyncio.get_running_loop().create_future()
        self._waiting_acks.append((entry_id, done))
        await done

    # --- events ----------------------------------------------------------------------------------

    async def next_event(self, timeout: Optional[float] = None) -> Optional[Event]:
        """The next event, ``None`` once :class:`~switchboard.events.Closed` has been read; raises
        :class:`~switchboard.errors.Timeout` if none comes within ``timeout`` seconds."""
        if self._events.ready() or timeout is None:
            return await self._events.get()  # no timer for what is already there
        try:
            return await asyncio.wait_for(self._events.get(), timeout)
        except asyncio.TimeoutError:
            raise Timeout(f"no event within {timeout} s") from None

    def __aiter__(self) -> AsyncIterator[Event]:
        return self.events()

    async def events(self) -> AsyncIterator[Event]:
        """Every event in order: messages, receipts, ``Disconnected``/``Reconnected``, and ``Closed``
        last. Messages and receipts must be acknowledged, or they come again next connection."""
        while True:
            event = await self._events.get()
            if event is None:
                return
            yield event

    def events_waiting(self) -> int:
        """How many events wait to be read."""
        return len(self._events)

    # --- closing ---------------------------------------------------------------------------------

    async def close(self) -> None:
        """Says ``bye`` after everything written before it and waits (at most a few seconds) for the
        broker to close its side, so acknowledgements just sent are not lost. Closing twice is fine."""
        self._close_asked.set()
        await asyncio.shield(self._task)

    @property
    def closed(self) -> bool:
        return self._ended is not None

    def _check_open(self) -> None:
        if self._ended is not None:
            raise self._ended

    # --- the connection task ---------------------------------------------------------------------

    async def _run(self) -> None:
        reason: Optional[SwitchboardError] = None
        try:
            while True:
                link = self._link
                assert link is not None
                reason = await self._serve(link)
                if reason is None or self._reconnect is None or not reason.retryable:
                    break
                self._carry_over(link)
                log.warning("connection lost (%s); reconnecting", reason)
                self._events.report(Disconnected(reason))
                reason = await self._reconnect_loop(self._reconnect, link.opened)
                if reason is not None or self._link is None:
                    break
        except asyncio.CancelledError:
            reason = None
            raise
        except Exception as e:  # a bug here must end the client, not hang its callers
            log.exception("the client's connection task failed")
            reason = SwitchboardError(f"internal error: {e}")
        finally:
            self._finish(reason)

    async def _serve(self, link: Link) -> Optional[SwitchboardError]:
        """Serves one connection until it is lost (its reason) or the client closes (``None``)."""
        self._entries = 0
        reading = asyncio.ensure_future(self._read_loop(link))
        pinging = asyncio.ensure_future(self._keepalive(link))
        closing = asyncio.ensure_future(self._close_asked.wait())
        try:
            await asyncio.wait({reading, closing}, return_when=asyncio.FIRST_COMPLETED)
            if reading.done():
                return reading.result()
            pinging.cancel()
            await self._say_bye(link, reading)
            return None
        finally:
            for task in (reading, pinging, closing):
                task.cancel()
            link.close()

    async def _say_bye(self, link: Link, reading: "asyncio.Future[SwitchboardError]") -> None:
        try:
            link.write(frames.encode(frames.Bye()))
            await link.drain()
            await asyncio.wait_for(asyncio.shield(reading), CLOSE_GRACE)
        except (OSError, RuntimeError, asyncio.TimeoutError):
            pass

    async def _keepalive(self, link: Link) -> None:
        half = max(link.welcome.keepalive_secs, 1) / 2
        while True:
            idle = time.monotonic() - link.last_write
            if idle >= half:
                link.write(frames.encode(frames.Ping()))
                idle = 0.0
            await asyncio.sleep(half - idle)

    async def _read_loop(self, link: Link) -> SwitchboardError:
        while True:
            try:
                frame = await link.read_frame()
            except SwitchboardError as e:
                return e
            if isinstance(frame, frames.Accepted):
                self._answer(frame.send_id, frame.message_id)
            elif isinstance(frame, frames.Rejected):
                self._answer(frame.send_id, rejection(frame.reason, frame.text))
            elif isinstance(frame, frames.Deliver):
                self._entry_arrived(frame.message_id)
                if not self._close_asked.is_set():
                    await self._events.put(Message(frame.message_id, frame.sender, frame.send_id,
                                                   frame.sent_at_ms, frame.body))
            elif isinstance(frame, frames.Receipt):
                await self._on_receipt(link, frame)
            elif isinstance(frame, frames.Datagram):
                if not self._close_asked.is_set():
                    await self._events.put(frame)
            elif isinstance(frame, frames.Error):
                return broker_error(frame.code, frame.text)
            elif isinstance(frame, frames.Hi):
                log.warning("ignoring a second hi from the broker")

    async def _on_receipt(self, link: Link, frame: frames.Receipt) -> None:
        self._entry_arrived(frame.receipt_id)
        receipt = frame
        waiter = self._tracked.pop(frame.send_id, None)
        if waiter is not None or frame.receipt_id in self._library_acked:
            # A tracked receipt is the client's to acknowledge (again, if it comes again).
            self._library_acked.discard(frame.receipt_id)
            link.write(frames.encode(frames.Ack(frame.receipt_id)))
            link.library_acks.append(frame.receipt_id)
            if waiter is not None and not waiter.done():
                waiter.set_result(receipt)
        elif not self._close_asked.is_set():
            await self._events.put(receipt)

    def _entry_arrived(self, entry_id: int) -> None:
        """Entries arrive in id order: a library-acknowledged receipt below this one never comes."""
        self._entries += 1
        if self._library_acked:
            self._library_acked = {i for i in self._library_acked if i >= entry_id}

    def _carry_over(self, link: Link) -> None:
        """What a lost link leaves behind: its sends are resends from now on."""
        self._link = None
        self._library_acked.update(link.library_acks)
        for pending in self._unanswered.values():
            if pending.written and pending.frame.fresh:
                pending.frame = dataclasses.replace(pending.frame, fresh=False)
                pending.data = frames.encode(pending.frame, link.max_frame)
            pending.written = False

    async def _reconnect_loop(self, policy: Reconnect,
                              last_opened: float) -> Optional[SwitchboardError]:
        """Tries until a connection is back (``None``) or an attempt fails for good (its error)."""
        if time.monotonic() - last_opened >= policy.cap:
            self._attempt = 0
        while True:
            self._attempt += 1
            attempt = self._attempt
            delay = policy.delay(attempt)
            log.info("reconnecting to %s (attempt %d, in %.3f s)", self._server, attempt, delay)
            try:
                await asyncio.wait_for(self._close_asked.wait(), delay)
                return None  # closed while waiting
            except asyncio.TimeoutError:
                pass
            try:
                link = await open_link(self._server, self._hello, self._tls, self._own_max_frame,
                                       self._connect_timeout)
            except SwitchboardError as e:
                if may_retry_connect(e):
                    log.info("reconnect attempt %d failed: %s", attempt, e)
                    continue
                return e
            if self._close_asked.is_set():
                link.close()
                return None
            self._resume(link)
            self._events.report(Reconnected(link.welcome))
            return None

    def _resume(self, link: Link) -> None:
        """Puts a new link to work: waiting acks, then every unanswered send in order, as one write
        with no await in between, so that any newer send goes out after them."""
        for entry_id, done in self._waiting_acks:
            link.write(frames.encode(frames.Ack(entry_id)))
            if not done.done():
                done.set_result(None)
        self._waiting_acks.clear()
        for pending in self._unanswered.values():
            link.write(pending.data)
            pending.written = True
        self._welcome = link.welcome
        self._link = link

    def _finish(self, reason: Optional[SwitchboardError]) -> None:
        """Fails every pending call with :class:`ClosedError` and queues ``Closed`` as the last event."""
        self._link = None
        ended = ClosedError(reason=reason)
        self._ended = ended
        for pending in self._unanswered.values():
            _fail(pending.answer, ended)
        for receipt in self._tracked.values():
            _fail(receipt, ended)
        for _, done in self._waiting_acks:
            _fail(done, ended)
        for _ in self._unanswered:
            self._room.release()
        self._unanswered.clear()
        self._tracked.clear()
        self._waiting_acks.clear()
        log.debug("client ended: %s", reason)
        self._events.close(Closed(reason))


def _fail(future: "asyncio.Future[_T]", error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
        # Marked retrieved: a caller that gave up waiting must not make asyncio log it.
        future.exception()
