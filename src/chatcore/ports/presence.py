"""Presence: who is online, kept alive by live connections and expired by the server."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Presence(Protocol):
    async def touch(self, user_id: str) -> None:
        """The user shows a sign of life; they stay online until the TTL passes without another."""
        ...

    async def online_among(self, user_ids: Sequence[str]) -> set[str]:
        """Those of `user_ids` seen within the TTL."""
        ...
