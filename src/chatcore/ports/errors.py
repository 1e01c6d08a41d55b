"""Failures an adapter reports through a port; the application decides what they mean."""

from __future__ import annotations


class ConcurrentUpdate(Exception):
    """Another unit of work changed what this one read; running the use case again is safe."""


class DuplicateKey(Exception):
    """A unique key (email, direct-chat pair, client_msg_id) is taken. `key` names which."""

    def __init__(self, key: str) -> None:
        super().__init__(f"duplicate {key}")
        self.key = key


class StoreUnavailable(Exception):
    """The database cannot be reached; nothing was stored. Retry later."""
