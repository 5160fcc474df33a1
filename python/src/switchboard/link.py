"""One connection to the broker: TCP (or TLS), ``hello``, ``hi``, then frames in and out.

Used for the first connection and for every reconnect. A :class:`Link` knows nothing about sends or
events; the client (``client.py``) decides what its frames mean.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from typing import Optional, Tuple, Union

from . import frames
from .errors import (
    ConnectError,
    ConnectTimeout,
    ConnectionLost,
    ProtocolError,
    SwitchboardError,
    TlsError,
    broker_error,
)

TlsOption = Union[None, bool, ssl.SSLContext]
"""``None``/``False``: plain TCP; ``True``: TLS trusting the system's CAs; a context: as configured."""


def tls_context(ca_file: Optional[str] = None, cert_file: Optional[str] = None,
                key_file: Optional[str] = None) -> ssl.SSLContext:
    """A TLS context trusting ``ca_file`` (PEM), else the system's CAs, presenting ``cert_file`` with
    ``key_file`` to brokers that ask for a client certificate."""
    try:
        context = ssl.create_default_context(cafile=ca_file)
        if cert_file is not None:
            context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as e:
        raise TlsError(f"cannot set up TLS: {e}") from e
    return context


@dataclass(frozen=True)
class Welcome:
    """What the broker said in ``hi``."""

    keepalive_secs: int
    """The agreed keepalive; the client pings after half of it without sending anything."""
    address: str
    """This client's address as the broker sees it, ``ip:port``."""
    pending: int
    """Entries (messages and receipts) waiting in the mailbox at the handshake; they arrive first."""
    max_body_bytes: int
    """The largest body the broker accepts in a send; 0 from a broker too old to say."""
    udp_port: Optional[int] = None
    """The broker's UDP datagram port on the same host, with the session's number and key below
    (:mod:`switchboard.datagrams` seals datagrams with them); ``None``: datagrams over TCP only."""
    datagram_session: Optional[int] = None
    datagram_key: Optional[bytes] = None


def split_server(server: str) -> Tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) as host and port."""
    host, sep, port = server.rpartition(":")
    if not sep or not port.isdigit():
        raise ConnectError(f"cannot connect to {server}: the address is not host:port")
    return host.strip("[]"), int(port)


class Link:
    """An open connection after ``hi``: reads broker frames, writes encoded client frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 welcome: Welcome, max_frame: int) -> None:
        self.reader = reader
        self.writer = writer
        self.welcome = welcome
        self.max_frame = max_frame
        self.opened = time.monotonic()
        self.last_write = self.opened
        self._out: list[bytes] = []
        self.library_acks: list[int] = []
        """Receipts the client acknowledged itself on this link (tracked sends)."""

    def write(self, data: bytes) -> None:
        """Queues ``data``; everything queued in one turn of the event loop goes out as one write
        (one system call instead of one per frame), in order."""
        if not self._out:
            asyncio.get_running_loop().call_soon(self.flush)
        self._out.append(data)
        self.last_write = time.monotonic()

    def flush(self) -> None:
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            if not self.writer.is_closing():
                self.writer.write(data)

    async def drain(self) -> None:
        """Waits until what was written is handed to the socket (or below its high-water mark)."""
        self.flush()
        await self.writer.drain()

    async def read_frame(self) -> frames.BrokerFrame:
        """The next frame; raises :class:`Disconnected` at the end of the stream or on a socket error."""
        return await read_frame(self.reader, self.max_frame)

    def close(self) -> None:
        self.flush()
        self.writer.close()


async def read_frame(reader: asyncio.StreamReader, max_frame: int) -> frames.BrokerFrame:
    try:
        prefix = await reader.readexactly(frames.PREFIX.size)
        body = await reader.readexactly(frames.check_prefix(prefix, max_frame))
    except asyncio.IncompleteReadError:
        raise ConnectionLost("the broker closed the connection") from None
    except (OSError, ssl.SSLError) as e:
        raise ConnectionLost(f"the connection failed: {e}") from None
    return frames.decode_broker_frame(body)


async def open_link(server: str, hello: frames.Hello, tls: TlsOption, max_frame: Optional[int],
                    connect_timeout: float) -> Link:
    """Connects, says ``hello``, reads ``hi``: within ``connect_timeout`` seconds altogether.

    An ``error`` instead of ``hi`` raises its :class:`~switchboard.errors.BrokerError`.
    """
    try:
        return await asyncio.wait_for(_handshake(server, hello, tls, max_frame), connect_timeout)
    except asyncio.TimeoutError:
        raise ConnectTimeout(f"timed out connecting to {server}") from None


async def _handshake(server: str, hello: frames.Hello, tls: TlsOption,
                     own_max_frame: Optional[int]) -> Link:
    host, port = split_server(server)
    context: Optional[ssl.SSLContext] = None
    if isinstance(tls, ssl.SSLContext):
        context = tls
    elif tls:
        context = tls_context()
    try:
        reader, writer = await asyncio.open_connection(
            host, port, ssl=context, server_hostname=host if context else None)
    except ssl.SSLError as e:
        hint = " (is it a plain listener?)" if "WRONG_VERSION" in str(e).upper() else ""
        raise TlsError(f"TLS with {server} failed{hint}: {e}") from None
    except OSError as e:
        raise ConnectError(f"cannot connect to {server}: {e.strerror or e}") from None
    try:
        before_hi = own_max_frame if own_max_frame is not None else frames.DEFAULT_MAX_FRAME
        writer.write(frames.encode(hello, before_hi))
        await writer.drain()
        frame = await read_frame(reader, before_hi)
    except (SwitchboardError, OSError) as e:
        writer.close()
        if isinstance(e, ConnectionLost) and context is not None:
            raise TlsError(f"the TLS connection to {server} ended before hi: {e}") from None
        if isinstance(e, OSError):
            raise ConnectionLost(f"the connection failed: {e}") from None
        raise
    if isinstance(frame, frames.Error):
        writer.close()
        raise broker_error(frame.code, frame.text)
    if not isinstance(frame, frames.Hi):
        writer.close()
        raise ProtocolError(f"expected hi, got {frames.to_wire(frame)['type']}")
    if frame.version != frames.PROTOCOL_VERSION:
        writer.close()
        raise ProtocolError(f"the broker speaks protocol version {frame.version}, "
                            f"this client {frames.PROTOCOL_VERSION}")
    welcome = Welcome(frame.keepalive_secs, frame.address, frame.pending, frame.max_body_bytes,
                      frame.udp_port, frame.datagram_session, frame.datagram_key)
    return Link(reader, writer, welcome, frames.max_frame_for(frame.max_body_bytes, own_max_frame))
