"""The README's three examples (send, listen, the sync wrapper) run as written against a broker.

Each is run as its own Python process with the README's address replaced by the test broker's; the
test plays the other side (bob acknowledging, alice sending) and reads what the example prints.
"""

from __future__ import annotations

import queue
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import List

import switchboard
from conftest import WAIT, Broker

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
EXAMPLES = re.findall(r"```python\n(.*?)```", README, re.S)


class Example:
    """An example running as a process; its stdout lines arrive on a queue."""

    def __init__(self, code: str, broker: Broker) -> None:
        assert "127.0.0.1:7878" in code
        self.process = subprocess.Popen([sys.executable, "-c", code.replace(
            "127.0.0.1:7878", broker.addr)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        self.lines: "queue.Queue[str]" = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def line(self) -> str:
        try:
            return self.lines.get(timeout=WAIT)
        except queue.Empty:
            self.process.kill()
            raise AssertionError("the example printed nothing: " + self.stderr()) from None

    def stderr(self) -> str:
        assert self.process.stderr is not None
        return self.process.stderr.read() if self.process.poll() is not None else ""

    def finished(self) -> None:
        assert self.process.wait(WAIT) == 0, self.stderr()


def test_the_readme_has_the_three_examples() -> None:
    assert len(EXAMPLES) == 3
    assert all(len(code.strip().splitlines()) <= 13 for code in EXAMPLES)


def test_the_send_example(broker: Broker) -> None:
    example = Example(EXAMPLES[0], broker)
    assert re.fullmatch(r"accepted as \d+", example.line())
    with switchboard.connect(broker.addr, "bob") as bob:
        got: List[bytes] = []
        for message in bob.listen(count=2, timeout=WAIT):
            got.append(message.body)
    assert got == [b"hello bob", b"and tell me when you have it"]
    assert example.line() == "receipt: delivered"
    example.finished()


def test_the_listen_example(broker: Broker) -> None:
    example = Example(EXAMPLES[1], broker)
    try:
        with switchboard.connect(broker.addr, "alice") as alice:
            alice.send("bob", b"hello bob")
            assert example.line() == "alice b'hello bob'"
            # The example asks for the next event only once its ack is written.
            alice.send("bob", b"second")
            assert example.line() == "alice b'second'"
    finally:
        example.process.kill()
    with switchboard.connect(broker.addr, "bob") as bob:
        left = [m.body for m in bob.poll(timeout=WAIT)]
    assert left in ([], [b"second"]), "the example acknowledged the first"


def test_the_sync_example(broker: Broker) -> None:
    example = Example(EXAMPLES[2], broker)
    message_id = int(example.line())
    assert re.fullmatch(rf"{message_id} alice \d+ b'hi'", example.line())
    with switchboard.connect(broker.addr, "alice") as alice:
        alice.send("bob", b"live")
    assert example.line() == "b'live'"
    example.finished()
