"""The asyncio client against the real broker: the conversation of PROTOCOL.md, end to end.

Each test reads like its scenario; every wait is bounded (``within``), none sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
from typing import List

import pytest

import switchboard
from conftest import Broker, run, within
from proxy import Proxy
from switchboard import Client, Message, Receipt, Reconnect, frames

FAST = Reconnect(base=0.01, cap=0.1)


async def next_message(client: Client) -> Message:
    event = await within("a message", client.next_event())
    assert isinstance(event, Message), event
    return event


async def next_receipt(client: Client) -> Receipt:
    event = await within("a receipt", client.next_event())
    assert isinstance(event, Receipt), event
    return event


def test_alice_sends_bob_receives_acknowledges_and_alice_gets_the_receipt(broker: Broker) -> None:
    async def scenario() -> None:
        alice = await Client.connect(broker.addr, "alice")
        bob = await Client.connect(broker.addr, "bob")
        message_id = await within("accepted", alice.send("bob", b"hi bob"))
        message = await next_message(bob)
        assert (message.message_id, message.sender, message.body) == (message_id, "alice", b"hi bob")
        assert message.send_id > 0 and message.sent_at.year >= 2024
        await bob.ack(message.message_id)
        receipt = await next_receipt(alice)
        assert (receipt.message_id, receipt.to, receipt.status) == (message_id, "bob", "delivered")
        assert receipt.send_id == message.send_id
        await alice.ack(receipt.receipt_id)
        await alice.close()
        await bob.close()
        assert [e async for e in alice] == [switchboard.Closed(None)]
    run(scenario())


def test_send_and_track_waits_for_the_receipt_and_keeps_it_out_of_the_events(broker: Broker) -> None:
    async def scenario() -> None:
        proxy = await Proxy(broker.addr).start()
        alice = await Client.connect(proxy.addr, "alice")
        bob = await Client.connect(broker.addr, "bob")
        tracked = await within("accepted", alice.send_and_track("bob", "tracked"))
        message = await next_message(bob)
        assert message.message_id == tracked.message_id and message.body == b"tracked"
        await bob.ack(message.message_id)
        receipt = await tracked.receipt(timeout=20)
        assert receipt.delivered and receipt.send_id == tracked.send_id
        # The client acknowledges the receipt itself, and does not show it among the events.
        await within("the client's ack", proxy.wait_for(lambda f: f == frames.Ack(receipt.receipt_id)))
        assert alice.events_waiting() == 0
        await alice.close()
        await bob.close()
        await proxy.close()
    run(scenario())


def test_bob_offline_gets_three_in_order_and_alice_gets_three_receipts(broker: Broker) -> None:
    async def scenario() -> None:
        alice = await Client.connect(broker.addr, "alice")
        ids = [await alice.send("bob", f"m{i}") for i in range(3)]
        bob = await Client.connect(broker.addr, "bob")
        assert bob.welcome.pending == 3
        got = [await next_message(bob) for _ in ids]
        assert [m.message_id for m in got] == ids and [m.body for m in got] == [b"m0", b"m1", b"m2"]
        for m in got:
            await bob.ack(m.message_id)
        receipts = [await next_receipt(alice) for _ in ids]
        assert [r.message_id for r in receipts] == ids
        await alice.close()
        await bob.close()
    run(scenario())


def test_an_undelivered_message_expires_and_its_sender_is_told(broker: Broker) -> None:
    async def scenario() -> None:
        alice = await Client.connect(broker.addr, "alice")
        tracked = await alice.send_and_track("nobody-home", b"soon stale", ttl=0.05)
        receipt = await tracked.receipt(timeout=20)
        assert receipt.status == "expired" and not receipt.delivered
        late = await Client.connect(broker.addr, "nobody-home")
        assert late.welcome.pending == 0
        await late.close()
        await alice.close()
    run(scenario())


def test_a_send_cut_off_before_its_answer_is_resent_with_its_id_and_stored_once(
        broker: Broker) -> None:
    async def scenario() -> None:
        proxy = await Proxy(broker.addr).start()
        alice = await Client.connect(proxy.addr, "alice", reconnect=FAST)
        bob = await Client.connect(broker.addr, "bob")
        proxy.hold_answers = True
        sending = asyncio.ensure_future(alice.send("bob", b"once"))
        message = await next_message(bob)  # the broker has it; alice's answer is being swallowed
        await bob.ack(message.message_id)
        proxy.hold_answers = False
        proxy.cut()
        assert await within("the answer to the resend", sending) == message.message_id
        sends = [f for f in proxy.client_frames if isinstance(f, frames.Send)]
        assert [(s.send_id, s.fresh) for s in sends] == [(message.send_id, True),
                                                         (message.send_id, False)]
        events = [await within("an event", alice.next_event()) for _ in range(2)]
        assert isinstance(events[0], switchboard.Disconnected)
        assert isinstance(events[1], switchboard.Reconnected)
        # Stored once: the next thing bob gets from alice is the next message.
        await alice.send("bob", b"after")
        assert (await next_message(bob)).body == b"after"
        await alice.close()
        await bob.close()
        await proxy.close()
    run(scenario())


def test_a_reconnecting_client_rides_out_a_broker_restart(broker: Broker) -> None:
    async def scenario() -> None:
        alice = await Client.connect(broker.addr, "alice", reconnect=FAST)
        restarting = asyncio.ensure_future(asyncio.to_thread(broker.restart))
        lost = await within("disconnected", alice.next_event())
        assert isinstance(lost, switchboard.Disconnected)
        assert isinstance(lost.reason, switchboard.ShuttingDown)
        restarted = await within("the restart", restarting)
        assert isinstance(await within("reconnected", alice.next_event()), switchboard.Reconnected)
        message_id = await within("accepted", alice.send("bob", b"after the restart"))
        bob = await Client.connect(restarted.addr, "bob")
        assert (await next_message(bob)).message_id == message_id
        await alice.close()
        await bob.close()
    run(scenario())


def test_a_new_connection_takes_over_and_unacked_deliveries_return(broker: Broker) -> None:
    async def scenario() -> None:
        alice = await Client.connect(broker.addr, "alice")
        first = await Client.connect(broker.addr, "bob", reconnect=FAST)
        message_id = await alice.send("bob", b"take me")
        assert (await next_message(first)).message_id == message_id
        second = await Client.connect(broker.addr, "bob")
        closed = await within("the old connection's end", first.next_event())
        assert isinstance(closed, switchboard.Closed), "session-taken-over is never retried"
        assert isinstance(closed.reason, switchboard.SessionTakenOver)
        with pytest.raises(switchboard.ClosedError) as failed:
            await first.send("alice", b"too late")
        assert isinstance(failed.value.reason, switchboard.SessionTakenOver)
        again = await next_message(second)
        assert (again.message_id, again.body) == (message_id, b"take me")
        await alice.close()
        await second.close()
    run(scenario())


def test_a_send_with_its_own_id_is_stored_once_however_often_it_is_sent(broker: Broker) -> None:
    async def scenario() -> None:
        proxy = await Proxy(broker.addr).start()
        alice = await Client.connect(proxy.addr, "alice")
        send_id = switchboard.next_send_id()
        first = await alice.send_with_id("bob", b"spooled", send_id)
        assert await alice.send_with_id("bob", b"spooled", send_id) == first
        both = asyncio.gather(alice.send_with_id("bob", b"x", send_id + 1),
                              alice.send_with_id("bob", b"x", send_id + 1), return_exceptions=True)
        results = await within("both answers", both)
        assert sum(isinstance(r, switchboard.DuplicateIdError) for r in results) == 1
        sends = [f for f in proxy.client_frames if isinstance(f, frames.Send)]
        assert [s.fresh for s in sends] == [False] * 3, "a caller's id may be a resend: never fresh"
        bob = await Client.connect(broker.addr, "bob")
        assert bob.welcome.pending == 2
        await alice.close()
        await bob.close()
        await proxy.close()
    run(scenario())


def test_the_client_pings_when_idle_and_the_connection_stays_up(broker: Broker) -> None:
    async def scenario() -> None:
        proxy = await Proxy(broker.addr).start()
        alice = await Client.connect(proxy.addr, "alice", keepalive=1)
        assert alice.welcome.keepalive_secs == 1
        await within("three pings", proxy.wait_for(lambda f: isinstance(f, frames.Ping), 3))
        assert await within("accepted", alice.send("bob", b"still here")) > 0
        await alice.close()
        await proxy.close()
    run(scenario())


def test_the_frame_limit_follows_what_the_broker_announces(start_broker) -> None:  # type: ignore[no-untyped-def]
    small = start_broker({"LIMITS__MAX_FRAME_BYTES": "2048"})
    large = start_broker({"LIMITS__MAX_FRAME_BYTES": str(4 << 20)})

    async def scenario() -> None:
        alice = await Client.connect(small.addr, "alice")
        assert (alice.welcome.max_body_bytes, alice.max_frame) == (2048 - 216, 2048)
        assert await alice.send("bob", b"x" * (2048 - 216)) > 0
        with pytest.raises(switchboard.TooLarge):
            await alice.send("bob", b"x" * (2048 - 215))
        with pytest.raises(switchboard.FrameLimitError):
            await alice.send("bob", b"x" * 3000)  # refused here, before a byte is written
        assert await alice.send("bob", b"the connection is fine") > 0
        await alice.close()

        body = bytes(range(256)) * (8 << 10)  # 2 MiB: over the default 1 MiB limit both ways
        sender = await Client.connect(large.addr, "alice")
        receiver = await Client.connect(large.addr, "bob")
        await within("accepted", sender.send("bob", body))
        assert (await next_message(receiver)).body == body
        await sender.close()
        await receiver.close()
    run(scenario())


def test_more_sends_than_the_broker_holds_unaccepted_are_pipelined_without_loss(
        broker: Broker) -> None:
    async def scenario() -> None:

        alice = await Client.connect(broker.addr, "alice")
        bob = await Client.connect(broker.addr, "bob")
        count = 1500  # over max_unaccepted_sends (1024) and the window (256)
        sends = asyncio.gather(*(alice.send("bob", str(i)) for i in range(count)))
        bodies: List[bytes] = []
        while len(bodies) < count:
            message = await next_message(bob)
            bodies.append(message.body)
            await bob.ack(message.message_id)
        ids = await within("every answer", sends)
        assert len(set(ids)) == count
        assert bodies == [str(i).encode() for i in range(count)]
        await alice.close()
        await bob.close()
    run(scenario(), timeout=120)


def test_backoff_delays_lie_between_base_and_a_doubling_ceiling() -> None:
    policy = Reconnect(base=0.1, cap=1.0)
    assert [policy.ceiling(n) for n in range(1, 7)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    delays = {policy.delay(8) for _ in range(50)}
    assert all(0.1 <= d <= 1.0 for d in delays) and len(delays) > 1, "jittered"
    assert Reconnect(0, 0).ceiling(3) == Reconnect.MIN_DELAY, "never spins"


def test_ids_are_checked_before_connecting() -> None:
    async def scenario() -> None:
        for bad in ["", "a b", "tab\there", "x" * 129, "nbsp\u00a0", "bell\x07"]:
            with pytest.raises(switchboard.InvalidIdError):
                await Client.connect("127.0.0.1:1", bad)
    run(scenario())
    assert switchboard.next_send_id() < switchboard.next_send_id()


def test_a_datagram_reaches_a_connected_client_over_tcp_and_from_udp(broker: Broker) -> None:
    """Fire and forget: no answer to wait for, nothing stored; sealed UDP datagrams count too."""
    import socket

    from switchboard import datagrams

    async def scenario() -> None:
        alice = await Client.connect(broker.addr, "alice")
        bob = await Client.connect(broker.addr, "bob")
        await alice.send_datagram("bob", "over tcp")
        event = await within("a datagram", bob.next_event())
        assert event == switchboard.Datagram("alice", b"over tcp")

        welcome = alice.welcome
        assert welcome.udp_port and welcome.datagram_session and welcome.datagram_key
        payload = frames.encode(frames.SendDatagram("bob", b"over udp"))[4:]
        sealed = datagrams.seal(True, welcome.datagram_session, 1, welcome.datagram_key, payload)
        host = broker.addr.rsplit(":", 1)[0]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(sealed, (host, welcome.udp_port))
        event = await within("a datagram", bob.next_event())
        assert event == switchboard.Datagram("alice", b"over udp")
        assert bob.welcome.pending == 0
        await alice.close()
        await bob.close()
    run(scenario())
