#!/usr/bin/env python3
"""How much memory stalled uploads cost a running broker (issue 12, finding 5).

Opens N connections to the broker at ADDR, says hello on each, then sends all but the last byte of
a FRAME-byte frame and stalls. Prints the broker's resident memory (VmRSS of PID) before and after,
and how many connections were told `overloaded`. Needs the Python client (``pip install ./python``)
for its frame encoder.

    python3 tests/scripts/stalled_uploads.py 127.0.0.1:7878 "$(pidof switchboard-broker)" 1000
"""

import asyncio
import resource
import struct
import sys
import time

from switchboard.frames import Hello, decode_broker_frame, encode

FRAME = 1024 * 1024


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def read_frame(reader: asyncio.StreamReader) -> object:
    (length,) = struct.unpack(">I", await reader.readexactly(4))
    return decode_broker_frame(await reader.readexactly(length))


async def upload(host: str, port: int, i: int, go: asyncio.Event, sent: list) -> tuple:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(encode(Hello(version=1, client_id=f"stall-{i}", token=None, keepalive_secs=3600)))
    await read_frame(reader)  # hi
    await go.wait()
    writer.write(struct.pack(">I", FRAME) + b"x" * (FRAME - 1))
    try:
        await asyncio.wait_for(writer.drain(), 30)
    except (ConnectionError, asyncio.TimeoutError):
        pass
    sent.append(i)
    return reader, writer


async def main() -> None:
    addr, pid, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    host, port = addr.rsplit(":", 1)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    go = asyncio.Event()
    sent: list = []
    tasks = [asyncio.create_task(upload(host, int(port), i, go, sent)) for i in range(n)]
    await asyncio.sleep(2)  # every connection has said hello and is idle
    baseline = rss_kib(pid)
    print(f"{n} connections said hello; broker RSS {baseline} KiB (baseline)")
    go.set()
    conns = await asyncio.gather(*tasks)
    await asyncio.sleep(3)  # let the broker read what it will
    after = rss_kib(pid)
    overloaded = 0
    for reader, _ in conns:
        try:
            frame = await asyncio.wait_for(read_frame(reader), 0.05)
            if getattr(frame, "code", "") == "overloaded":
                overloaded += 1
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
    print(f"{n} uploads of {FRAME - 1} of {FRAME} bytes stalled; broker RSS {after} KiB "
          f"(+{after - baseline} KiB); {overloaded} told overloaded")
    for _, writer in conns:
        writer.close()
    await asyncio.sleep(3)
    print(f"closed; broker RSS {rss_kib(pid)} KiB")


if __name__ == "__main__":
    asyncio.run(main())
