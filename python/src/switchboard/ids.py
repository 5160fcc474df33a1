"""The client id rules of PROTOCOL.md ("Client ids"), checked before anything goes on the wire."""

from __future__ import annotations

from .errors import InvalidIdError

MAX_ID_BYTES = 128

# Unicode's White_Space property, exactly (str.isspace differs from it).
_WHITE_SPACE = frozenset(
    [0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000]
    + list(range(0x2000, 0x200B))
)


def check_client_id(client_id: str) -> str:
    """``client_id`` if it is a valid id: 1 to 128 UTF-8 bytes, no white space, no control character."""
    size = len(client_id.encode("utf-8"))
    if not 1 <= size <= MAX_ID_BYTES:
        raise InvalidIdError(f"a client id is 1 to {MAX_ID_BYTES} bytes long, not {size}")
    for ch in client_id:
        point = ord(ch)
        if point in _WHITE_SPACE or point < 0x20 or 0x7F <= point <= 0x9F:
            raise InvalidIdError(f"a client id holds no white space or control character "
                                 f"(U+{point:04X} in {client_id!r})")
    return client_id
