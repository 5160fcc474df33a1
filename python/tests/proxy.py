"""A TCP proxy between a client and the broker that a test can cut, or make deaf, and that reads
what the client sends.

``hold_answers`` swallows what the broker says (so a send's ``accepted`` never reaches the client);
``cut`` closes every connection through it, as a network failure would. Frames the client sent are
decoded as they pass, in order, into ``client_frames``; ``wait_for`` waits (bounded) until one matches.
"""

from __future__ import annotations

import asyncio
from typing import Callable, List, Set

from switchboard import frames


class Proxy:
    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self.target = (host, int(port))
        self.hold_answers = False
        self.client_frames: List[frames.ClientFrame] = []
        self._seen = asyncio.Event()
        self._writers: Set[asyncio.StreamWriter] = set()
        self._server: "asyncio.base_events.Server | None" = None
        self.addr = ""

    async def start(self) -> "Proxy":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.addr = f"127.0.0.1:{port}"
        return self

    def cut(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()

    async def wait_for(self, what: Callable[[frames.ClientFrame], bool], count: int = 1) -> None:
        while sum(1 for f in self.client_frames if what(f)) < count:
            self._seen.clear()
            await self._seen.wait()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            broker_r, broker_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        self._writers.update((client_w, broker_w))
        await asyncio.gather(self._upstream(client_r, broker_w), self._downstream(broker_r, client_w),
                             return_exceptions=True)
        for writer in (client_w, broker_w):
            self._writers.discard(writer)
            writer.transport.abort()

    async def _upstream(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        buf = b""
        while True:
            data = await src.read(65536)
            if not data:
                dst.transport.abort()
                return
            dst.write(data)
            buf += data
            buf = self._decode(buf)

    def _decode(self, buf: bytes) -> bytes:
        while len(buf) >= 4:
            length = int.from_bytes(buf[:4], "big")
            if len(buf) < 4 + length:
                break
            self.client_frames.append(frames.decode_client_frame(buf[4:4 + length]))
            self._seen.set()
            buf = buf[4 + length:]
        return buf

    async def _downstream(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        while True:
            data = await src.read(65536)
            if not data:
                dst.transport.abort()
                return
            if not self.hold_answers:
                dst.write(data)
