"""``python -m switchboard.bench``: the Python client's relay rate and latency against one broker.

The same two workloads as the Rust ``switchboard-bench`` (BENCHMARKS.md), so the figures can be put
side by side:

- ``relay``: P senders each stream M messages to their own online recipient, at most ``--inflight``
  unaccepted per sender; delivered messages per second (first send to last delivery) and the
  send-to-delivery latency percentiles.
- ``latency``: one pair, one message in flight; send-to-delivery and send-to-accepted percentiles.

Every body starts with the sender's index, a sequence number and the send time, so the receivers
check each message off (missing and duplicated are counted) and time it end to end. Each run prints
one JSON line. ``--addr`` measures a running broker; ``--broker PATH`` starts that binary on
127.0.0.1:0 with a temporary data directory instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional, Set, Tuple

from .client import Client
from .events import Message, Receipt

_HEADER = struct.Struct(">IQQ")


def _body(sender: int, seq: int, size: int) -> bytes:
    head = _HEADER.pack(sender, seq, time.perf_counter_ns())
    return head + b"\0" * max(0, size - len(head))


def _percentile(sorted_us: List[float], p: float) -> float:
    if not sorted_us:
        return 0.0
    return round(sorted_us[min(len(sorted_us) - 1, int(p / 100 * len(sorted_us)))], 1)


def _summary(latencies_ns: List[int]) -> Dict[str, float]:
    us = sorted(n / 1000 for n in latencies_ns)
    return {f"p{p}_us": _percentile(us, p) for p in (50, 99, 99.9)}


class _Checklist:
    """Which (sender, seq) arrived, how often, and how late."""

    def __init__(self, senders: int, messages: int) -> None:
        self.expected = senders * messages
        self.seen: Set[Tuple[int, int]] = set()
        self.duplicated = 0
        self.latencies: List[int] = []

    def arrived(self, body: bytes) -> None:
        sender, seq, sent_ns = _HEADER.unpack_from(body)
        if (sender, seq) in self.seen:
            self.duplicated += 1
            return
        self.seen.add((sender, seq))
        self.latencies.append(time.perf_counter_ns() - sent_ns)

    def delivery(self) -> Dict[str, int]:
        return {"expected": self.expected, "delivered": len(self.seen),
                "missing": self.expected - len(self.seen), "duplicated": self.duplicated}


async def _receive(client: Client, checklist: _Checklist, count: int) -> None:
    got = 0
    async for event in client:
        if isinstance(event, Message):
            checklist.arrived(event.body)
            await client.ack(event.message_id)
            got += 1
            if got == count:
                return


async def _stream(client: Client, index: int, to: str, messages: int, size: int,
                  inflight: int) -> int:
    """Sends ``messages``, at most ``inflight`` unanswered, and acknowledges their receipts, as the
    Rust bench's senders do; returns how many receipts came."""
    receipts = asyncio.ensure_future(_acknowledge_receipts(client, messages))
    room = asyncio.Semaphore(inflight)
    sends: List["asyncio.Future[int]"] = []
    for seq in range(messages):
        await room.acquire()
        send = asyncio.ensure_future(client.send(to, _body(index, seq, size)))
        send.add_done_callback(lambda _: room.release())
        sends.append(send)
    await asyncio.gather(*sends)
    return await receipts


async def _acknowledge_receipts(client: Client, count: int) -> int:
    got = 0
    while got < count:
        event = await client.next_event(timeout=60)
        if isinstance(event, Receipt):
            await client.ack(event.receipt_id)
            got += 1
    return got


async def relay(addr: str, pairs: int, messages: int, size: int, inflight: int) -> Dict[str, Any]:
    run = f"{time.time_ns():x}"
    senders = [await Client.connect(addr, f"bench-{run}-s{i}") for i in range(pairs)]
    receivers = [await Client.connect(addr, f"bench-{run}-r{i}") for i in range(pairs)]
    checklist = _Checklist(pairs, messages)
    started = time.perf_counter()
    receiving = [asyncio.ensure_future(_receive(r, checklist, messages)) for r in receivers]
    streams = asyncio.gather(*(_stream(s, i, f"bench-{run}-r{i}", messages, size, inflight)
                               for i, s in enumerate(senders)))
    await asyncio.gather(*receiving)
    elapsed = time.perf_counter() - started
    receipts = sum(await streams)
    for client in senders + receivers:
        await client.close()
    return {"workload": "relay", "client": "python", "pairs": pairs, "messages": messages,
            "size": size, "inflight": inflight, "secs": round(elapsed, 3),
            "msgs_per_sec": round(pairs * messages / elapsed), **_summary(checklist.latencies),
            "delivery": checklist.delivery(), "receipts": receipts}


async def latency(addr: str, messages: int, warmup: int, size: int) -> Dict[str, Any]:
    run = f"{time.time_ns():x}"
    to = f"bench-{run}-r"
    sender = await Client.connect(addr, f"bench-{run}-s")
    receiver = await Client.connect(addr, to)
    delivered: List[int] = []
    accepted: List[int] = []
    for seq in range(warmup + messages):
        sent = time.perf_counter_ns()
        sending = asyncio.ensure_future(sender.send(to, _body(0, seq, size)))
        event = await receiver.next_event(timeout=30)
        arrived = time.perf_counter_ns()
        assert isinstance(event, Message) and _HEADER.unpack_from(event.body)[1] == seq
        await receiver.ack(event.message_id)
        await sending
        if seq >= warmup:
            delivered.append(arrived - sent)
            accepted.append(time.perf_counter_ns() - sent)
    await sender.close()
    await receiver.close()
    return {"workload": "latency", "client": "python", "messages": messages, "size": size,
            **_summary(delivered), "accepted_p50_us": _summary(accepted)["p50_us"],
            "delivery": {"expected": messages, "delivered": len(delivered), "missing": 0,
                         "duplicated": 0}}


def _start_broker(path: str, data_dir: str) -> Tuple["subprocess.Popen[str]", str]:
    # Not the default admin port either: a broker the user runs may hold it.
    env = {**os.environ, "SWITCHBOARD_BROKER_ADMIN__LISTEN": "127.0.0.1:0"}
    broker = subprocess.Popen([os.path.abspath(path), "--listen", "127.0.0.1:0", "--data-dir", data_dir],
                              cwd=data_dir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    assert broker.stderr is not None
    for line in broker.stderr:
        if "listening on " in line:
            # Keep draining the log, so the broker never blocks on a full pipe.
            threading.Thread(target=lambda: [None for _ in broker.stderr or ()], daemon=True).start()
            return broker, line.split("listening on ", 1)[1].split()[0]
    broker.kill()
    raise SystemExit(f"{path} exited before listening")


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m switchboard.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workload", choices=["relay", "latency"])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--addr", help="a running broker, host:port")
    where.add_argument("--broker", help="start this broker binary on 127.0.0.1:0")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--inflight", type=int, default=256)
    parser.add_argument("--timeout", type=float, default=600, help="bound on the whole run, s")
    args = parser.parse_args(argv)
    if args.size < _HEADER.size:
        parser.error(f"--size is at least {_HEADER.size}")
    broker = None
    with tempfile.TemporaryDirectory() as data_dir:
        addr = args.addr
        if args.broker:
            broker, addr = _start_broker(args.broker, data_dir)
        try:
            work = (relay(addr, args.pairs, args.messages, args.size, args.inflight)
                    if args.workload == "relay"
                    else latency(addr, args.messages, args.warmup, args.size))
            result = asyncio.run(asyncio.wait_for(work, args.timeout))
        finally:
            if broker is not None:
                broker.terminate()
                broker.wait(30)
    print(json.dumps(result))
    if result["delivery"]["missing"] or result["delivery"]["duplicated"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
