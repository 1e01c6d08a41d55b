"""Updates since a cursor: every event of the user's streams, in per-stream order, each once.

A cursor is opaque to clients: it records, per stream (chat, group, the user's own), the seq of
the last event delivered. It is signed and bound to its user, so a client cannot forge positions
in streams it never saw. Events come from the durable log, never from the broker: the bus only
wakes waiters, so a lost wake-up delays an event and never loses it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
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

# Cursor formats. Version 1 (still read, no longer written): HMAC-SHA256 over a zlib-compressed
# `[1, positions]`. Version 2: a format byte, a keyed BLAKE2b MAC, then the positions as JSON,
# deflated only when large. A live socket mints one cursor per delivered event, so version 2
# avoids zlib (most of version 1's ~11 µs) for the usual few streams.
_LEGACY_VERSION = 1
_PLAIN, _DEFLATED = 2, 3  # the first byte of a version 2 token
_DEFLATE_ABOVE = 512  # bytes of JSON; below this, compression costs more than it saves
_MAC_BYTES = 16
# A cursor decompresses to at most this many bytes: no zip bomb gets through.
_MAX_CURSOR_PAYLOAD = 1 << 20
_JOIN_SEARCH_PAGE = 100
# Streams the actor was shut out of stay in the cursor (to catch a later return), up to this
# many; beyond it the oldest are forgotten, and a return to one starts at its latest join.
MAX_REMEMBERED_EXITS = 64
_json = msgspec.json.Encoder()
_URLSAFE = bytes.maketrans(b"+/", b"-_")


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
        # Keyed once; each MAC starts from a copy (cheaper than keying again).
        self._blake = hashlib.blake2b(key=key[:64], digest_size=_MAC_BYTES, person=b"chatcore.cursor")

    def _mac(self, form: int, user_id: str, body: bytes) -> bytes:
        mac = self._blake.copy()
        mac.update(b"%c%s\0%s" % (form, user_id.encode(), body))
        return mac.digest()

    def _legacy_mac(self, user_id: str, body: bytes) -> bytes:
        return hmac.new(self._key, user_id.encode() + b"\0" + body, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, user_id: str, positions: dict[str, int]) -> str:
        body, form = _json.encode(positions), _PLAIN
        if len(body) > _DEFLATE_ABOVE:
            body, form = zlib.compress(body, 6), _DEFLATED
        raw = b"%c%s%s" % (form, self._mac(form, user_id, body), body)
        return binascii.b2a_base64(raw, newline=False).translate(_URLSAFE).rstrip(b"=").decode()

    def decode(self, user_id: str, token: str) -> dict[str, int]:
        if len(token) > self._max_chars:
            raise LimitExceeded("cursor", self._max_chars)
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            positions = self._decode_current(user_id, raw)
            if positions is None:
                positions = self._decode_legacy(user_id, raw)
        except (ValueError, zlib.error, msgspec.DecodeError):
            raise InvalidInput("cursor", "not a valid cursor for this user") from None
        return positions

    def _decode_current(self, user_id: str, raw: bytes) -> dict[str, int] | None:
        """Positions of a version 2 token; None when `raw` is not one signed with our key."""
        form, mac, body = raw[:1], raw[1 : 1 + _MAC_BYTES], raw[1 + _MAC_BYTES :]
        if form not in (b"\x02", b"\x03") or not hmac.compare_digest(mac, self._mac(form[0], user_id, body)):
            return None
        payload = _inflate(body) if form[0] == _DEFLATED else body
        return msgspec.json.decode(payload, type=dict[str, int])

    def _decode_legacy(self, user_id: str, raw: bytes) -> dict[str, int]:
        """A version 1 token, issued before the upgrade: clients keep their place across it."""
        mac, body = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._legacy_mac(user_id, body)):
            raise ValueError("bad signature")
        version, positions = msgspec.json.decode(_inflate(body), type=tuple[int, dict[str, int]])
        if version != _LEGACY_VERSION:
            raise InvalidInput("cursor", "cursor from an incompatible version; start a new one")
        return positions


def _inflate(body: bytes) -> bytes:
    return zlib.decompressobj().decompress(body, _MAX_CURSOR_PAYLOAD)


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
            # Ids only: decoding every chat (members and all) on each poll would cost far more.
            return {actor, *await uow.chats.ids_for_user(actor), *await uow.groups.ids_for_user(actor)}

        return await self.read(work)

    def budget(self, limit: int | None) -> int:
        """The most events a page may hold: `limit`, checked, or the setting."""
        most = self.deps.limits.max_updates_per_page
        if limit is None:
            return most
        if not 1 <= limit <= most:
            raise InvalidInput("limit", f"limit must be between 1 and {most}")
        return limit

    async def __call__(self, actor: str, cursor: str | None, limit: int | None = None) -> UpdatesPage:
        budget = self.budget(limit)
        if cursor is None:
            batch = await self.start(actor)
        else:
            batch = await self.read_after(actor, self._codec.decode(actor, cursor), budget)
        return self.page(actor, batch)

    def page(self, actor: str, batch: Batch) -> UpdatesPage:
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

    async def read_after(
        self, actor: str, positions: dict[str, int], budget: int, current: set[str] | None = None
    ) -> Batch:
        """At most `budget` events after `positions`, and the positions after them. `current`:
        the actor's streams, when the caller has just read them (`streams_of`)."""
        current = await self.streams_of(actor) if current is None else current
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
    """Long-polling: answer at once when events are pending, else when one arrives or at the timeout.

    A wake-up whose record is the next event of a stream the page was read up to is answered
    from the record itself, like a socket's live delivery: no log read per waiter, so a send to
    a chat wakes its hundred waiters at the cost of a cursor each. Anything else (a gap on the
    bus, a new stream, a return to one) reads the log again.
    """

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
        get = self._get_updates
        if cursor is None:
            return await get(actor, None, limit)
        budget, positions = get.budget(limit), get.decode(actor, cursor)
        streams = await get.streams_of(actor)
        # Subscribe before reading the log, so that an event committed in between still wakes us.
        subscription = self._bus.subscribe(streams)
        try:
            await subscription.ready()
            batch = await get.read_after(actor, positions, budget, streams)
            deadline = time.monotonic() + timeout_s
            wake_ups = aiter(subscription)
            while not (batch.events or batch.resync_required):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    wake_up = await asyncio.wait_for(anext(wake_ups), remaining)
                except (TimeoutError, StopAsyncIteration):
                    break
                if isinstance(wake_up, Signal):
                    continue  # typing is for live sockets; the log has nothing new
                if isinstance(wake_up, EventRecord):
                    position = batch.positions.get(wake_up.stream_id)
                    if position is not None and wake_up.seq <= abs(position):
                        continue  # read already, or a stream the actor is out of: a repeat
                    if position is not None and position >= 0 and wake_up.seq == position + 1:
                        return self._next(actor, batch.positions, wake_up)
                batch = await get.read_after(actor, batch.positions, budget)
            return get.page(actor, batch)
        finally:
            await subscription.close()

    def _next(self, actor: str, positions: dict[str, int], record: EventRecord) -> UpdatesPage:
        """The page of one live record that directly follows what the page was read up to."""
        after = dict(positions)
        shut_out = visibility_change(record.event, actor) is False
        after[record.stream_id] = -record.seq if shut_out else record.seq
        return self._get_updates.page(
            actor, Batch(events=[record], positions=after, resync_required=[], has_more=False)
        )
