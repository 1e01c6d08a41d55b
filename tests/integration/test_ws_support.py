"""Shared helpers of the real-time tests (no tests here): a 30 s bound on every test."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

WS_TEST_TIMEOUT_S = 30


@pytest.fixture(autouse=True)
def bounded() -> Iterator[None]:
    """Every real-time test ends within WS_TEST_TIMEOUT_S, whatever hangs."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"test exceeded {WS_TEST_TIMEOUT_S} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(WS_TEST_TIMEOUT_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
