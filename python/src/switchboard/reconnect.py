"""How long to wait before each attempt to get a lost connection back (Rust: ``reconnect.rs``).

Exponential backoff with full jitter, so a broker that restarts is not met by every client at the
same instant, and a broker that keeps failing is asked at most once per ``cap``. Whether to try at
all depends on how the connection ended: that rule lives with the exceptions (``errors.py``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Reconnect:
    """Reconnect with exponential backoff and full jitter: before attempt *n* of one outage, wait a
    time drawn uniformly between ``base`` and ``min(cap, base * 2**(n-1))`` seconds. A connection that
    stayed up ``cap`` seconds counts as a success: the attempts after its loss count from one again."""

    base: float = 0.1
    cap: float = 30.0

    MIN_DELAY = 0.01
    """The floor under ``base``, so a client never spins against a dead broker."""

    def ceiling(self, attempt: int) -> float:
        base = max(self.base, self.MIN_DELAY)
        return min(max(self.cap, base), base * 2.0 ** min(max(attempt - 1, 0), 64))

    def delay(self, attempt: int) -> float:
        base = max(self.base, self.MIN_DELAY)
        return random.uniform(base, self.ceiling(attempt))
