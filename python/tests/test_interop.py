"""The Python client and the Rust CLI (``switchboard``, package switchboard-cli) talk to each other
through one broker: Python sends and the CLI receives, and the other way."""

from __future__ import annotations

import base64
import json
import subprocess
from typing import Any, Dict, List

import pytest
import switchboard
from conftest import Broker, cli_binary


def cli(broker: Broker, client_id: str, *args: str, stdin: bytes = b"") -> str:
    done = subprocess.run([str(cli_binary()), "--server", broker.addr, "--id", client_id, *args],
                          input=stdin, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def lines(output: str) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def test_python_sends_and_the_rust_cli_receives(broker: Broker) -> None:
    with switchboard.connect(broker.addr, "py-alice") as alice:
        text_id = alice.send("rust-bob", "hello from python")
        binary_id = alice.send("rust-bob", b"\x00\xff not utf-8")
    printed = lines(cli(broker, "rust-bob", "poll", "--timeout", "20"))
    messages = [p for p in printed if p["type"] == "message"]
    assert [(m["id"], m["from"]) for m in messages] == [(text_id, "py-alice"), (binary_id, "py-alice")]
    assert messages[0]["body"] == "hello from python"
    assert base64.b64decode(messages[1]["body_b64"]) == b"\x00\xff not utf-8"
    assert all(m["send_id"] > 0 for m in messages)
    with switchboard.connect(broker.addr, "py-alice") as alice:
        alice.poll(timeout=20)
        assert [r.message_id for r in alice.receipts] == [text_id, binary_id]


def test_the_rust_cli_sends_and_python_receives(broker: Broker) -> None:
    message_id = int(cli(broker, "rust-alice", "send", "--to", "py-bob", "--receipts", "all",
                         "hello from rust"))
    from_stdin = int(cli(broker, "rust-alice", "send", "--to", "py-bob", "--receipts", "all",
                         stdin=b"\x01\x02\x03"))
    with switchboard.connect(broker.addr, "py-bob") as bob:
        messages = bob.poll(timeout=20)
    assert [(m.message_id, m.sender, m.body) for m in messages] == [
        (message_id, "rust-alice", b"hello from rust"), (from_stdin, "rust-alice", b"\x01\x02\x03")]
    printed = lines(cli(broker, "rust-alice", "poll", "--timeout", "20"))
    assert [(p["type"], p.get("status")) for p in printed] == [("receipt", "delivered")] * 2


def test_a_python_sender_gets_only_the_receipts_it_asked_for(broker: Broker) -> None:
    with switchboard.connect(broker.addr, "py-quiet") as alice:
        alice.send("py-reader", b"no news", receipts="none")
        alice.send("py-reader", b"news", receipts="all")
        with pytest.raises(ValueError):
            alice.send("py-reader", b"?", receipts="some")
    with switchboard.connect(broker.addr, "py-reader") as bob:
        assert [m.body for m in bob.poll(timeout=20)] == [b"no news", b"news"]
    printed = lines(cli(broker, "py-quiet", "poll", "--timeout", "20"))
    assert [(p["type"], p.get("status")) for p in printed] == [("receipt", "delivered")]
