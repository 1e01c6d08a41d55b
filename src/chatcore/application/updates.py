"""Updates since a cursor: every event of the user's streams, in per-stream order, each once.

A cursor is opaque to clients: it records, per stream (chat, group, the user's own), the seq of
the last event delivered. It is signed and bound to its user, so a client cannot forge positions
in streams it never saw. Events come from the durable log, never from the broker: the bus only
wakes waiters, so a lost wake-up delays an event and never loses it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
import zlib

import msgspec

from chatcore.application.common import Deps, UseCase
from chatcore.domain.errors import InvalidInput, LimitExceeded
from chatcore.domain.events import EventRecord, visibility_change
from chatcore.ports.events import EventBus, Signal
from chatcore.ports.unit_of_work import EventLog, UnitOfWork

_CURSOR_VERSION = 1
_MAC_BYTES = 16
# A cursor decompresses to at most this many bytes: no zip bomb gets through.
_MAX_CURSOR_PAYLOAD = 1 << 20
_JOIN_SEARCH_PAGE = 100
# Streams the actor was shut out of stay in the cursor (to catch a later return), up to this
# many; beyond it the oldest are forgotten, and a return to one starts at its latest join.
MAX_REMEMBERED_EXITS = 64


def _forget_oldest_exits(positions: dict[str, int], current: set[str]) -> None:
    exits = sorted(s for s, p in positions.items() if p < 0 and s not in current)
    for stream in exits[: max(0, len(exits) - MAX_REMEMBERED_EXITS)]:  # ids sort by creation
        del positions[stream]


class CursorCodec:
    """Encodes per-stream positions as a compact, signed, URL-safe token bound to one user."""

    def __init__(self, key: bytes, max_chars: int) -> None:
        if len(key) < 32:
            raise ValueError("the cursor key needs at least 32 bytes")
        self._key, self._max_chars = key, max_chars

    def _mac(self, user_id: str, body: bytes) -> bytes:
        return hmac.new(self._key, user_id.encode() + b"\0" + body, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, user_id: str, positions: dict[str, int]) -> str:
        body = zlib.compress(msgspec.json.encode([_CURSOR_VERSION, positions]), 6)
        return base64.urlsafe_b64encode(self._mac(user_id, body) + body).rstrip(b"=").decode()

    def decode(self, user_id: str, token: str) -> dict[str, int]:
        if len(token) > self._max_chars:
            raise LimitExceeded("cursor", self._max_chars)
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            mac, body = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
            if not hmac.compare_digest(mac, self._mac(user_id, body)):
                raise ValueError("bad signature")
            inflater = zlib.decompressobj()
            payload = inflater.decompress(body, _MAX_CURSOR_PAYLOAD)
            version, positions = msgspec.json.decode(payload, type=tuple[int, dict[str, int]])
        except (ValueError, zlib.error, msgspec.DecodeError):
            raise InvalidInput("cursor", "not a valid cursor for this user") from None
        if version != _CURSOR_VERSION:
            raise InvalidInput("cursor", "cursor from an incompatible version; start a new one")
        return positions


class Batch(msgspec.Struct, frozen=True, kw_only=True):
    """Events read for one actor, and the positions after them (the decoded cursor)."""

    events: list[EventRecord]
    positions: dict[str, int]
    resync_required: list[str]
    has_more: bool


class UpdatesPage(msgspec.Struct, frozen=True, kw_only=True):
    events: list[EventRecord]
    cursor: str
    # Streams whose missed events are no longer in the log: refetch their state, then go on.
    resync_required: list[str]
    has_more: bool  # more events are pending: ask again at once


class GetUpdates(UseCase):
    """Events after a cursor; with no cursor, a new cursor at the present and no events."""

    def __init__(self, deps: Deps, log: EventLog, codec: CursorCodec) -> None:
        super().__init__(deps)
        self._log, self._codec = log, codec

    async def streams_of(self, actor: str) -> set[str]:
        async def work(uow: UnitOfWork) -> set[str]:
            chats = await uow.chats.list_for_user(actor)
            groups = await uow.groups.list_for_user(actor)
            return {actor, *(c.id for c in chats), *(g.id for g in groups)}

        return await self.read(work)

    def _limit(self, limit: int | None) -> int:
        most = self.deps.limits.max_updates_per_page
        if limit is None:
            return most
        if not 1 <= limit <= most:
            raise InvalidInput("limit", f"limit must be between 1 and {most}")
        return limit

    async def __call__(self, actor: str, cursor: str | None, limit: int | None = None) -> UpdatesPage:
        budget = self._limit(limit)
        if cursor is None:
            batch = await self.start(actor)
        else:
            batch = await self.read_after(actor, self._codec.decode(actor, cursor), budget)
        return UpdatesPage(
            events=batch.events,
            cursor=self._codec.encode(actor, batch.positions),
            resync_required=batch.resync_required,
            has_more=batch.has_more,
        )

    def encode(self, actor: str, positions: dict[str, int]) -> str:
        return self._codec.encode(actor, positions)

    def decode(self, actor: str, cursor: str) -> dict[str, int]:
        return self._codec.decode(actor, cursor)

    async def start(self, actor: str) -> Batch:
        """Positions at the present in every stream the actor sees, and no events."""
        positions = {s: await self._log.last_seq(s) for s in sorted(await self.streams_of(actor))}
        return Batch(events=[], positions=positions, resync_required=[], has_more=False)

    async def read_after(self, actor: str, positions: dict[str, int], budget: int) -> Batch:
        """At most `budget` events after `positions`, and the positions after them."""
        current = await self.streams_of(actor)
        events: list[EventRecord] = []
        resync: list[str] = []
        next_positions: dict[str, int] = {}
        has_more = False
        for stream in sorted(current | positions.keys()):
            if len(events) >= budget:
                has_more = True
                if stream in positions:
                    next_positions[stream] = positions[stream]
                continue
            outcome = await self._read_stream(actor, stream, positions.get(stream), budget - len(events))
            events += outcome.delivered
            has_more |= outcome.more
            if outcome.gap:
                resync.append(stream)
            next_positions[stream] = outcome.position
        _forget_oldest_exits(next_positions, current)
        return Batch(events=events, positions=next_positions, resync_required=resync, has_more=has_more)

    async def _read_stream(self, actor: str, stream: str, position: int | None, budget: int) -> _StreamRead:
        # A position p >= 0: the actor saw the stream up to p. A position -p: the actor was shut
        # out at p; reading goes on from there, delivering again from the next event letting
        # them back in, so no window of membership between two reads is skipped.
        visible = (position is not None and position >= 0) or stream == actor
        if position is None:
            join = None if visible else await self._join_point(actor, stream)
            after, visible = (join, False) if join is not None else (await self._log.last_seq(stream), True)
        else:
            after = abs(position)
        records = await self._log.read(stream, after_seq=after, limit=budget + 1)
        if records and records[0].seq != after + 1:
            # The log no longer holds what the client missed: say so rather than leave a gap.
            last = await self._log.last_seq(stream)
            return _StreamRead([], last if visible else -last, more=False, gap=True)
        more = len(records) > budget
        delivered = []
        for record in records[:budget]:
            change = visibility_change(record.event, actor)
            visible = visible or change is True
            if visible:
                delivered.append(record)
            if change is False:
                visible = False
            after = record.seq
        return _StreamRead(delivered, after if visible else -after, more=more, gap=False)

    async def _join_point(self, actor: str, stream: str) -> int | None:
        """Just before the latest event that let the actor into a stream new to their cursor."""
        before = await self._log.last_seq(stream) + 1
        while before > 1:
            page = await self._log.read_back(stream, before_seq=before, limit=_JOIN_SEARCH_PAGE)
            for record in page:
                if visibility_change(record.event, actor) is True:
                    return record.seq - 1
            if len(page) < _JOIN_SEARCH_PAGE:
                break
            before = page[-1].seq
        return None


class _StreamRead(msgspec.Struct, frozen=True):
    delivered: list[EventRecord]
    position: int  # negative: shut out at that seq
    more: bool
    gap: bool


class WaitForUpdates(UseCase):
    """Long-polling: answer at once when events are pending, else when one arrives or at the timeout."""

    def __init__(self, deps: Deps, get_updates: GetUpdates, bus: EventBus) -> None:
        super().__init__(deps)
        self._get_updates, self._bus = get_updates, bus

    async def __call__(
        self, actor: str, cursor: str | None, timeout_s: float, limit: int | None = None
    ) -> UpdatesPage:
        if not 0 <= timeout_s <= self.deps.limits.max_long_poll_s:
            raise InvalidInput(
                "timeout", f"timeout must be between 0 and {self.deps.limits.max_long_poll_s} s"
            )
        # Subscribe before reading the log, so that an event committed in between still wakes us.
        subscription = self._bus.subscribe(await self._get_updates.streams_of(actor))
        try:
            await subscription.ready()
            page = await self._get_updates(actor, cursor, limit)
            deadline = time.monotonic() + timeout_s
            wake_ups = aiter(subscription)
            while not (page.events or page.resync_required or cursor is None):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    wake_up = await asyncio.wait_for(anext(wake_ups), remaining)
                except (TimeoutError, StopAsyncIteration):
                    break
                if isinstance(wake_up, Signal):
                    continue  # typing is for live sockets; the log has nothing new
                page = await self._get_updates(actor, cursor, limit)
            return page
        finally:
            await subscription.close()
