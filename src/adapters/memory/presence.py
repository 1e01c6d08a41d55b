"""In-process presence (one instance; Redis shares it between instances)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from chatcore.ports.system import Clock


class MemoryPresence:
    def __init__(self, clock: Clock, *, online_ttl_s: int = 60) -> None:
        self._clock, self._ttl = clock, timedelta(seconds=online_ttl_s)
        self._seen_until: dict[str, datetime] = {}

    async def touch(self, user_id: str) -> None:
        now = self._clock.now()
        self._seen_until[user_id] = now + self._ttl
        if len(self._seen_until) > 10_000:  # forget the long gone, so the map stays small
            self._seen_until = {u: t for u, t in self._seen_until.items() if t > now}

    async def online_among(self, user_ids: Sequence[str]) -> set[str]:
        now = self._clock.now()
        return {u for u in user_ids if self._seen_until.get(u, now) > now}
