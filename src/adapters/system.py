"""The real clock and id generator."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


class SystemClock:
    """UTC, to the millisecond: the precision every store keeps (BSON dates hold no more)."""

    def now(self) -> datetime:
        moment = datetime.now(UTC)
        return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


class _RandomPool:
    """The OS's randomness, read BATCH bytes at a time rather than one call per id: the call
    releases the GIL, and under granian its thread then holds the GIL for a while (a send makes
    two ids). A forked child drops what its parent read: no two processes share random bits."""

    BATCH = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the pool is the process's: any thread may make an id
        self._forget()
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._bytes, self._used = b"", 0
        self._lock = threading.Lock()  # a lock held at the fork would stay held in the child

    def take(self, n: int) -> bytes:
        with self._lock:
            if self._used + n > len(self._bytes):
                self._bytes, self._used = os.urandom(max(self.BATCH, n)), 0
            start = self._used
            self._used = start + n
            return self._bytes[start : start + n]


_pool = _RandomPool()


class UlidGenerator:
    """26-character ids, time-ordered (48-bit milliseconds) with 80 random bits, lower-case Crockford."""

    def new_id(self) -> str:
        value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(_pool.take(10), "big")
        chars = []
        for _ in range(26):
            value, digit = divmod(value, 32)
            chars.append(_CROCKFORD[digit])
        return "".join(reversed(chars))
