"""What the tests share: the real broker as a child process on 127.0.0.1 port 0, and bounded waits.

The broker is the binary cargo builds (``cargo build -p switchboard-broker``), found at
``$SWITCHBOARD_BROKER`` or ``target/debug/switchboard-broker`` under the repository root; the CLI at
``$SWITCHBOARD_CLI`` or ``target/debug/switchboard``. A missing binary skips the tests that need it,
with the reason, and fails them when ``CI`` is set. Like the Rust tests (``tests/src/lib.rs``), each
broker gets its own data directory as working directory (so no ``settings.toml`` is read), is started
with ``--listen 127.0.0.1:0``, and is ready once its log says ``listening on ADDR``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, Iterator, List, Optional, TypeVar

import pytest

REPO = Path(__file__).resolve().parents[2]
WAIT = 20.0
"""The bound on every wait, in seconds."""

_T = TypeVar("_T")


def binary(env: str, default: str, build: str) -> Path:
    """The binary at ``$env`` or ``REPO/default``; skips (fails under CI) if it is not there."""
    path = Path(os.environ.get(env, REPO / default))
    if not path.is_file():
        why = f"{path} is missing: build it with `{build}` (or set {env})"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return path


def broker_binary() -> Path:
    return binary("SWITCHBOARD_BROKER", "target/debug/switchboard-broker",
                  "cargo build -p switchboard-broker")


def cli_binary() -> Path:
    return binary("SWITCHBOARD_CLI", "target/debug/switchboard", "cargo build -p switchboard-cli")


def run(coro: Awaitable[_T], timeout: float = 60.0) -> _T:
    """Runs a test's coroutine on a fresh event loop, bounded in time."""
    async def bounded() -> _T:
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


async def within(what: str, awaitable: Awaitable[_T], timeout: float = WAIT) -> _T:
    """Fails the test if ``awaitable`` takes longer than ``timeout`` seconds."""
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except asyncio.TimeoutError:
        pytest.fail(f"timed out after {timeout} s waiting for {what}")


_LIVE: List["Broker"] = []
"""Every broker started, restarts included, so the fixture can kill what a failed test left."""


class Broker:
    """A ``switchboard-broker`` process; ``settings`` are broker settings as environment variables
    (``{"MAILBOX__MAX_MESSAGES": "2"}`` is ``SWITCHBOARD_BROKER_MAILBOX__MAX_MESSAGES=2``)."""

    def __init__(self, data_dir: Path, settings: Optional[Dict[str, str]] = None,
                 port: int = 0) -> None:
        self.data_dir = data_dir
        self.settings = dict(settings or {})
        self.log: List[str] = []
        data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_BROKER_")}
        env.update({"RUST_LOG": "info", "SWITCHBOARD_BROKER_LOG__FORMAT": "text",
                    "SWITCHBOARD_BROKER_ADMIN__LISTEN": "127.0.0.1:0"})
        env.update({f"SWITCHBOARD_BROKER_{k}": v for k, v in self.settings.items()})
        self.process = subprocess.Popen(
            [str(broker_binary()), "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir)],
            cwd=data_dir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True)
        _LIVE.append(self)
        self._listening = threading.Event()
        self.addr = ""
        threading.Thread(target=self._drain, daemon=True).start()
        if not self._listening.wait(WAIT) or not self.addr:
            self.kill()
            pytest.fail(f"the broker did not listen within {WAIT} s:\n" + self.tail())

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line.rstrip("\n"))
            if not self.addr and "listening on " in line:
                self.addr = line.split("listening on ", 1)[1].split()[0]
                self._listening.set()
        self._listening.set()

    @property
    def port(self) -> int:
        return int(self.addr.rsplit(":", 1)[1])

    def tail(self, n: int = 60) -> str:
        return "\n".join(f"  | {line}" for line in self.log[-n:])

    def terminate(self) -> None:
        """SIGTERM, as a service manager would; the broker must exit 0."""
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(WAIT)
        assert code == 0, f"the broker exited {code}:\n{self.tail()}"

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(WAIT)

    def restart(self) -> "Broker":
        """Stops this broker cleanly and starts another on the same data directory and port."""
        self.terminate()
        return Broker(self.data_dir, self.settings, self.port)


@pytest.fixture
def start_broker(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """Starts brokers (each in its own data directory under the test's), killed after the test."""
    count = 0

    def start(settings: Optional[Dict[str, str]] = None, name: str = "broker") -> Broker:
        nonlocal count
        count += 1
        return Broker(tmp_path / f"{name}-{count}", settings)

    yield start
    while _LIVE:
        _LIVE.pop().kill()


@pytest.fixture
def broker(start_broker: Callable[..., Broker]) -> Broker:
    """One broker with default settings (the expiry sweep shortened for the TTL test)."""
    return start_broker({"MAILBOX__EXPIRY_SWEEP_MS": "50"})


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "slow: a test that takes seconds")
