"""PROTOCOL.md's test vectors, from the file the Rust tests read too (proto/tests/vectors.json).

Every vector encodes to exactly its bytes and decodes back to its frame; every lenient input decodes
to its frame; every refused input is refused by this package's decoder as well, so the Python and Rust
implementations are held to the same bytes.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List

import msgpack
import pytest

from conftest import REPO
from switchboard import datagrams, frames
from switchboard.errors import FrameLimitError, ProtocolError

SHARED = json.loads((REPO / "proto" / "tests" / "vectors.json").read_text())


def wire(value: Any) -> Any:
    """A JSON frame as the map on the wire: ``{"bin_hex": ...}`` becomes bytes."""
    if isinstance(value, dict):
        if set(value) == {"bin_hex"}:
            return bytes.fromhex(value["bin_hex"])
        return {k: wire(v) for k, v in value.items()}
    return value


def as_frame(entry: Dict[str, Any]) -> frames.Frame:
    """The entry's frame as this package's dataclass (absent keys read as the decoder reads them)."""
    body = msgpack.packb(wire(entry["frame"]), use_bin_type=True)
    if entry["from"] == "client":
        return frames.decode_client_frame(body)
    return frames.decode_broker_frame(body)


def body_of(entry: Dict[str, Any]) -> bytes:
    data = bytes.fromhex(entry["hex"].replace(" ", ""))
    (body,) = frames.split_frames(data)
    return body


def decode(entry: Dict[str, Any]) -> frames.Frame:
    if entry["from"] == "client":
        return frames.decode_client_frame(body_of(entry))
    return frames.decode_broker_frame(body_of(entry))


def names(kind: str) -> List[str]:
    return [f"{e['name']}" for e in SHARED[kind]]


def test_the_shared_file_has_one_vector_per_frame_kind_this_package_knows() -> None:
    kinds = ["hello", "send", "ack", "ping", "bye", "hi", "accepted", "rejected", "deliver",
             "receipt", "pong", "error", "datagram", "datagram"]  # datagram: one each way
    assert sorted(names("vectors")) == sorted(kinds)


@pytest.mark.parametrize("entry", SHARED["vectors"], ids=names("vectors"))
def test_a_vector_encodes_to_exactly_its_bytes(entry: Dict[str, Any]) -> None:
    frame = as_frame(entry)
    assert frames.to_wire(frame)["type"] == entry["name"]
    assert frames.encode(frame).hex() == entry["hex"].replace(" ", "")


@pytest.mark.parametrize("entry", SHARED["vectors"], ids=names("vectors"))
def test_a_vector_decodes_to_its_frame(entry: Dict[str, Any]) -> None:
    assert decode(entry) == as_frame(entry)


@pytest.mark.parametrize("entry", SHARED["lenient"], ids=names("lenient"))
def test_lenient_input_decodes_to_its_frame(entry: Dict[str, Any]) -> None:
    frame = decode(entry)
    assert frame == as_frame(entry)
    assert frames.to_wire(frame)["type"] == entry["name"]


@pytest.mark.parametrize("entry", SHARED["refused"], ids=[e["hex"] for e in SHARED["refused"]])
def test_refused_input_is_refused(entry: Dict[str, Any]) -> None:
    data = bytes.fromhex(entry["hex"].replace(" ", ""))
    expected = {"frame-too-large": FrameLimitError, "bad-frame": ProtocolError}[entry["error"]]
    with pytest.raises(expected):
        length = frames.check_prefix(data[:4], frames.DEFAULT_MAX_FRAME)
        frames.decode_client_frame(data[4:4 + length])


def test_a_prefix_of_exactly_the_limit_is_allowed() -> None:
    assert frames.check_prefix(bytes.fromhex("00100000"), frames.DEFAULT_MAX_FRAME) == 1 << 20


def test_the_largest_accepted_body_fits_its_deliver_exactly() -> None:
    """A 128-byte sender and every number at its widest: body + 216 bytes, as PROTOCOL.md says."""
    body = b"x" * (frames.DEFAULT_MAX_FRAME - frames.DELIVER_OVERHEAD)
    deliver = frames.Deliver((1 << 64) - 1, "a" * 128, (1 << 64) - 1, (1 << 64) - 1, body)
    assert len(frames.encode(deliver)) - 4 == frames.DEFAULT_MAX_FRAME


DATAGRAMS = SHARED["datagrams"]
KEY = bytes.fromhex(DATAGRAMS["key_hex"])


@pytest.mark.parametrize("entry", DATAGRAMS["sealed"], ids=[e["about"][:40] for e in DATAGRAMS["sealed"]])
def test_a_datagram_seals_to_exactly_its_bytes_and_opens_back(entry: Dict[str, Any]) -> None:
    frame = None if entry["frame"] is None else as_frame(entry)
    payload = b"" if frame is None else frames.encode(frame)[4:]
    to_broker = entry["from"] == "client"
    sealed = datagrams.seal(to_broker, DATAGRAMS["session"], entry["sequence"], KEY, payload)
    assert sealed.hex() == entry["hex"]
    opened = datagrams.open_datagram(sealed, KEY, to_broker=to_broker)
    assert (opened.session, opened.sequence, opened.payload) == (
        DATAGRAMS["session"], entry["sequence"], payload)


@pytest.mark.parametrize("entry", DATAGRAMS["refused"], ids=[e["why"] for e in DATAGRAMS["refused"]])
def test_a_refused_datagram_is_refused(entry: Dict[str, Any]) -> None:
    with pytest.raises(datagrams.DatagramRefused):
        datagrams.open_datagram(bytes.fromhex(entry["hex"]), KEY, to_broker=True)


def test_the_replay_window_takes_each_number_once() -> None:
    window = datagrams.ReplayWindow()
    assert window.accept(1) and not window.accept(1)
    assert window.accept(70) and not window.accept(6) and window.accept(7)
