"""Every rejection and error code reaches the program as its own exception, unknown codes included.

The real broker produces every reason and code it can be driven to from a test; a scripted broker
(a few lines of asyncio speaking the protocol) produces the rest, and every code and reason of the
protocol besides, plus ones this package does not know.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Callable, Optional, Type

import pytest

import switchboard
from conftest import Broker, broker_binary, run, within
from switchboard import Client, errors, frames
from switchboard.link import open_link, read_frame


def test_a_recipient_id_against_the_rules_is_invalid_recipient(broker: Broker) -> None:
    async def scenario() -> None:
        async with await Client.connect(broker.addr, "alice") as alice:
            for bad in ["", "has space", "x" * 129]:
                with pytest.raises(switchboard.InvalidRecipient) as rejected:
                    await alice.send(bad, b"x")
                assert rejected.value.reason == "invalid-recipient" and rejected.value.text
            assert await alice.send("bob", b"the connection carries on") > 0
    run(scenario())


def test_a_full_mailbox_is_mailbox_full(start_broker: Callable[..., Broker]) -> None:
    broker = start_broker({"MAILBOX__MAX_MESSAGES": "1"})

    async def scenario() -> None:
        async with await Client.connect(broker.addr, "alice") as alice:
            await alice.send("bob", b"fits")
            with pytest.raises(switchboard.MailboxFull):
                await alice.send("bob", b"does not")
    run(scenario())


def test_sending_too_fast_is_rate_limited(start_broker: Callable[..., Broker]) -> None:
    broker = start_broker({"LIMITS__MAX_SENDS_PER_SEC": "1"})

    async def scenario() -> None:
        async with await Client.connect(broker.addr, "alice") as alice:
            results = await asyncio.gather(*(alice.send("bob", b"x") for _ in range(5)),
                                           return_exceptions=True)
            assert any(isinstance(r, switchboard.RateLimited) for r in results), results
    run(scenario())


def credentials(tmp_path: Path) -> Path:
    """alice (token a-token) may send only to bob; bob (b-token) anywhere."""
    file = tmp_path / "credentials.toml"
    for client_id, token in [("alice", "a-token"), ("bob", "b-token")]:
        subprocess.run([str(broker_binary()), "passwd", "add", "--file", str(file), client_id],
                       input=f"{token}\n", text=True, check=True, capture_output=True, timeout=60)
    text = file.read_text().replace("[clients.bob]", 'may_send_to = ["bob"]\n\n[clients.bob]')
    file.write_text(text)
    return file


def test_credentials_and_send_rules(start_broker: Callable[..., Broker], tmp_path: Path) -> None:
    broker = start_broker({"AUTH__CREDENTIALS_FILE": str(credentials(tmp_path)),
                           "AUTH__FAILURE_DELAY_MS": "10"})

    async def scenario() -> None:
        with pytest.raises(switchboard.Unauthorized):
            await Client.connect(broker.addr, "alice", token="wrong")
        with pytest.raises(switchboard.Unauthorized):
            await Client.connect(broker.addr, "mallory")
        async with await Client.connect(broker.addr, "alice", token="a-token") as alice:
            assert await alice.send("bob", b"allowed") > 0
            with pytest.raises(switchboard.Forbidden):
                await alice.send("carol", b"not allowed")
    run(scenario())


def test_the_connection_limit_is_overloaded(start_broker: Callable[..., Broker]) -> None:
    broker = start_broker({"LIMITS__MAX_CONNECTIONS": "1"})

    async def scenario() -> None:
        async with await Client.connect(broker.addr, "alice"):
            with pytest.raises(switchboard.Overloaded) as refused:
                await Client.connect(broker.addr, "bob")
            assert refused.value.retryable
    run(scenario())


def test_a_broker_shutting_down_ends_a_client_without_reconnect(broker: Broker) -> None:
    async def scenario() -> None:
        alice = await Client.connect(broker.addr, "alice")
        stopping = asyncio.ensure_future(asyncio.to_thread(broker.terminate))
        closed = await within("closed", alice.next_event())
        assert isinstance(closed, switchboard.Closed)
        assert isinstance(closed.reason, switchboard.ShuttingDown)
        with pytest.raises(switchboard.ClosedError):
            await alice.send("bob", b"late")
        await within("the broker's exit", stopping)
    run(scenario())


async def raw(addr: str) -> "tuple[asyncio.StreamReader, asyncio.StreamWriter]":
    host, _, port = addr.rpartition(":")
    return await asyncio.open_connection(host, int(port))


async def answer(reader: asyncio.StreamReader) -> frames.BrokerFrame:
    return await within("the broker's answer", read_frame(reader, frames.DEFAULT_MAX_FRAME))


@pytest.mark.parametrize("first,code", [
    (frames.encode(frames.Ping()), "hello-required"),
    (b"\x00\x00\x00\x03\xc1\xc1\xc1", "bad-frame"),
    (b"\xff\xff\xff\xff", "frame-too-large"),
    (frames.encode(frames.Hello("alice", version=2)), "unsupported-version"),
    (frames.encode(frames.Hello("a b")), "invalid-client-id"),
])
def test_what_the_broker_refuses_at_the_handshake(broker: Broker, first: bytes, code: str) -> None:
    async def scenario() -> None:
        reader, writer = await raw(broker.addr)
        writer.write(first)
        frame = await answer(reader)
        assert frame == frames.Error(code, frame.text) if isinstance(frame, frames.Error) else False
        assert type(errors.broker_error(frame.code, frame.text)) is errors.BROKER_ERRORS[code]
        writer.close()
    run(scenario())


def test_the_client_raises_the_handshake_refusals_as_their_exceptions(broker: Broker) -> None:
    async def scenario() -> None:
        with pytest.raises(switchboard.UnsupportedVersion):
            await open_link(broker.addr, frames.Hello("alice", version=2), None, None, 20)
        with pytest.raises(switchboard.InvalidClientId):
            await open_link(broker.addr, frames.Hello("a b"), None, None, 20)
    run(scenario())


def test_a_second_hello_is_unexpected_and_silence_is_a_keepalive_timeout(broker: Broker) -> None:
    async def scenario() -> None:
        reader, writer = await raw(broker.addr)
        writer.write(frames.encode(frames.Hello("alice")) * 2)
        assert isinstance(await answer(reader), frames.Hi)
        assert (await answer(reader)).code == "unexpected-frame"  # type: ignore[union-attr]
        reader, writer = await raw(broker.addr)
        writer.write(frames.encode(frames.Hello("bob", keepalive_secs=1)))
        assert isinstance(await answer(reader), frames.Hi)
        assert (await answer(reader)).code == "keepalive-timeout"  # type: ignore[union-attr]
    run(scenario())


def test_no_hello_in_time_is_a_handshake_timeout(start_broker: Callable[..., Broker]) -> None:
    broker = start_broker({"LIMITS__HANDSHAKE_TIMEOUT_MS": "100"})

    async def scenario() -> None:
        reader, _ = await raw(broker.addr)
        assert (await answer(reader)).code == "handshake-timeout"  # type: ignore[union-attr]
    run(scenario())


# --- a scripted broker: every code of the protocol and a few it does not define -----------------

REASONS = sorted(errors.REJECTIONS) + ["a-reason-from-the-future"]
CODES = sorted(errors.BROKER_ERRORS) + ["a-code-from-the-future"]


async def scripted(on_hello: Optional[frames.BrokerFrame],
                   on_send: Callable[[frames.Send], frames.BrokerFrame]) -> asyncio.AbstractServer:
    """A broker that answers ``hello`` with ``on_hello`` (``hi`` if None), every send with
    ``on_send``, and stops answering after an ``error``."""
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                prefix = await reader.readexactly(4)
                frame = frames.decode_client_frame(await reader.readexactly(
                    int.from_bytes(prefix, "big")))
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            if isinstance(frame, frames.Bye):
                writer.close()
                return
            if isinstance(frame, frames.Hello):
                reply = on_hello or frames.Hi(1, frame.keepalive_secs, "127.0.0.1:1", 0, 1000)
            elif isinstance(frame, frames.Send):
                reply = on_send(frame)
            else:
                continue
            writer.write(frames.encode(reply))
            if isinstance(reply, frames.Error):
                await writer.drain()
                writer.close()
                return
    return await asyncio.start_server(serve, "127.0.0.1", 0)


def address(server: asyncio.AbstractServer) -> str:
    return "127.0.0.1:%d" % server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]


def expected_rejection(reason: str) -> Type[errors.Rejected]:
    return errors.REJECTIONS.get(reason, errors.UnknownRejection)


def expected_error(code: str) -> Type[errors.BrokerError]:
    return errors.BROKER_ERRORS.get(code, errors.UnknownBrokerError)


@pytest.mark.parametrize("reason", REASONS)
def test_every_reject_reason_is_its_own_exception(reason: str) -> None:
    async def scenario() -> None:
        server = await scripted(None, lambda s: frames.Rejected(s.send_id, reason, "because"))
        async with await Client.connect(address(server), "alice") as alice:
            with pytest.raises(expected_rejection(reason)) as rejected:
                await alice.send("bob", b"x")
            assert (rejected.value.reason, rejected.value.text) == (reason, "because")
            assert isinstance(rejected.value, switchboard.Rejected)
        server.close()
    run(scenario())


@pytest.mark.parametrize("code", CODES)
def test_every_error_code_refusing_the_handshake_is_its_own_exception(code: str) -> None:
    async def scenario() -> None:
        server = await scripted(frames.Error(code, "no"), lambda s: frames.Pong())
        with pytest.raises(expected_error(code)) as refused:
            await Client.connect(address(server), "alice")
        assert (refused.value.code, refused.value.text) == (code, "no")
        server.close()
    run(scenario())


RETRIED = {"shutting-down", "keepalive-timeout", "internal", "overloaded", "mailbox-unreadable"}


@pytest.mark.parametrize("code", CODES)
def test_every_error_code_ending_a_connection_ends_it_with_its_exception(code: str) -> None:
    async def scenario() -> None:
        server = await scripted(None, lambda s: frames.Error(code, "bye now"))
        # Reconnecting, so that whether the code is retried shows: a final one is Closed at once.
        reconnect = switchboard.Reconnect(base=0.01, cap=0.05)
        alice = await Client.connect(address(server), "alice", reconnect=reconnect)
        sending = asyncio.ensure_future(alice.send("bob", b"x"))
        event = await within("the end of the connection", alice.next_event())
        if code in RETRIED:
            assert isinstance(event, switchboard.Disconnected)
            assert isinstance(event.reason, expected_error(code)) and event.reason.retryable
            await alice.close()
        else:
            assert isinstance(event, switchboard.Closed)
            assert isinstance(event.reason, expected_error(code))
            assert event.reason.code == code and not event.reason.retryable
        with pytest.raises(switchboard.ClosedError):
            await within("the failed send", sending)
        server.close()
    run(scenario())
