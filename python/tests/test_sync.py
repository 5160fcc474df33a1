"""The synchronous wrapper, as a cron job uses it: send, poll, listen, across a broker restart."""

from __future__ import annotations

import threading

import pytest

import switchboard
from conftest import Broker


def test_offline_bob_polls_his_mail_even_across_a_broker_restart(broker: Broker) -> None:
    with switchboard.connect(broker.addr, "alice") as alice:
        ids = [alice.send("bob", f"while you were away {i}".encode()) for i in range(3)]
    restarted = broker.restart()
    with switchboard.connect(restarted.addr, "bob") as bob:
        assert bob.welcome.pending == 3
        messages = bob.poll(timeout=20)
    assert [m.message_id for m in messages] == ids
    assert [m.sender for m in messages] == ["alice"] * 3
    assert messages[0].body == b"while you were away 0" and messages[0].send_id > 0
    with switchboard.connect(restarted.addr, "bob") as bob:
        assert bob.poll(timeout=20) == [], "poll acknowledged them"
    with switchboard.connect(restarted.addr, "alice") as alice:
        assert alice.poll(timeout=20) == []
        assert [(r.message_id, r.status) for r in alice.receipts] == [(i, "delivered") for i in ids]


def test_listen_acknowledges_each_message_when_the_next_is_asked_for(broker: Broker) -> None:
    with switchboard.connect(broker.addr, "alice") as alice:
        ids = [alice.send("bob", b"one"), alice.send("bob", b"two"), alice.send("bob", b"three")]
    with switchboard.connect(broker.addr, "bob") as bob:
        got = [m.message_id for m in bob.listen(count=2, timeout=20)]
    assert got == ids[:2]
    with switchboard.connect(broker.addr, "bob") as bob:
        for message in bob.listen(timeout=20):
            assert message.message_id == ids[2]
            break  # left without asking for the next: not acknowledged
    with switchboard.connect(broker.addr, "bob") as bob:
        assert [m.message_id for m in bob.poll(timeout=20)] == [ids[2]]


def test_listen_waits_for_what_comes_while_it_listens(broker: Broker) -> None:
    with switchboard.connect(broker.addr, "bob") as bob:
        def later() -> None:
            with switchboard.connect(broker.addr, "alice") as alice:
                alice.send("bob", b"live")
        sender = threading.Thread(target=later)
        sender.start()
        (message,) = list(bob.listen(count=1, timeout=20))
        sender.join(20)
    assert message.body == b"live"


def test_send_and_wait_returns_the_receipt(broker: Broker) -> None:
    with switchboard.connect(broker.addr, "alice") as alice:
        receipt = alice.send_and_wait("nobody", b"stale", ttl=0.05)
    assert receipt.status == "expired"


def test_errors_come_through_and_waits_are_bounded(broker: Broker) -> None:
    with switchboard.connect(broker.addr, "alice", timeout=20) as alice:
        with pytest.raises(switchboard.InvalidRecipient):
            alice.send("not valid", b"x")
        with pytest.raises(switchboard.Timeout):
            next(alice.listen(timeout=0.05))
    with pytest.raises(switchboard.ConnectError):
        switchboard.connect("127.0.0.1:1", "alice")
