"""One real-time connection, independent of its transport: client frames in, acks and events out.

Events come from the durable log through the actor's position in each stream. The bus only
says "something happened": when its record is the next one of a stream the client is reading,
it is delivered at once (the fast path); anything else — a gap, a new chat, a dropped wake-up —
sends the session back to the log. So every event is delivered once and in order, whatever
the bus loses or repeats.

Typing is the exception: an ephemeral bus `Signal` on the chat's stream, never logged, turned
into a `TypingNotice` for the chat's other members while it is fresh, and lost if the bus drops it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from enum import IntEnum
from typing import Protocol

import msgspec

from chatcore.application.messages import (
    EditMessageCommand,
    MarkReadCommand,
    SendMessageCommand,
    SignalTyping,
)
from chatcore.application.service import ChatService
from chatcore.application.updates import Batch, GetUpdates
from chatcore.application.views import MessageView, ReadMarkerView
from chatcore.domain.errors import InvalidInput
from chatcore.domain.events import EventRecord, SessionsRevoked, visibility_change
from chatcore.ports.events import BusGap, EventBus, Signal, Subscription

log = logging.getLogger("chatcore.realtime")

# How long a typing notice holds unless renewed: clients resend `typing` more often than this.
TYPING_TTL_MS = 6000


class CloseCode(IntEnum):
    """Why the server closed a connection, and so what the client should do next."""

    NORMAL = 1000  # done; reconnect when you want
    SERVER_RESTART = 1001  # the server is going away: reconnect (elsewhere) with your cursor
    POLICY = 1008  # a rule was broken (frame flood, too many sockets, expired token): fix, then reconnect
    TOO_BIG = 1009  # a frame exceeded the size limit
    RESUME_FROM_CURSOR = 4000  # you read too slowly: reconnect with the last cursor you received
    SESSION_ENDED = 4001  # the login behind this connection was revoked: log in again


# -- frames a client sends ------------------------------------------------------------------


class ClientFrame(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", forbid_unknown_fields=True):
    id: str  # echoed in the ack or error, so the client can match them


class SendFrame(ClientFrame, frozen=True, kw_only=True, tag="send"):
    chat_id: str
    body: str
    reply_to: int | None = None
    client_msg_id: str | None = None


class EditFrame(ClientFrame, frozen=True, kw_only=True, tag="edit"):
    chat_id: str
    seq: int
    body: str


class DeleteFrame(ClientFrame, frozen=True, kw_only=True, tag="delete"):
    chat_id: str
    seq: int


class ReadFrame(ClientFrame, frozen=True, kw_only=True, tag="read"):
    chat_id: str
    seq: int


class PingFrame(ClientFrame, frozen=True, kw_only=True, tag="ping"):
    pass


class TypingFrame(ClientFrame, frozen=True, kw_only=True, tag="typing"):
    """The user is typing in a chat (needs the right to send there); ephemeral, never stored."""

    chat_id: str


class ReauthFrame(ClientFrame, frozen=True, kw_only=True, tag="reauth"):
    """A fresh access token of the same user: the connection then lives until its expiry."""

    token: str


AnyClientFrame = SendFrame | EditFrame | DeleteFrame | ReadFrame | PingFrame | TypingFrame | ReauthFrame


# -- frames the server sends ----------------------------------------------------------------


class ServerFrame(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    pass


class AckFrame(ServerFrame, frozen=True, kw_only=True, tag="ack"):
    id: str
    created: bool | None = None  # for a send: False when a retried client_msg_id found the original
    message: MessageView | None = None
    read_marker: ReadMarkerView | None = None


class ErrorFrame(ServerFrame, frozen=True, kw_only=True, tag="error"):
    id: str | None  # None when the frame could not be read at all
    status: int
    title: str
    detail: str
    field: str | None = None
    permission: str | None = None
    retry_after: int | None = None


class EventFrame(ServerFrame, frozen=True, kw_only=True, tag="event"):
    cursor: str  # resume from here: this event and all before it were delivered
    record: EventRecord


class ResyncFrame(ServerFrame, frozen=True, kw_only=True, tag="resync"):
    """The log no longer holds what was missed in these streams: refetch their state."""

    cursor: str
    streams: list[str]


class HeartbeatFrame(ServerFrame, frozen=True, kw_only=True, tag="heartbeat"):
    # Set when the client has been silent: answer with any frame (a `ping`) within this many ms,
    # or the connection is taken for dead and closed.
    reply_within_ms: int | None = None


class TypingNotice(ServerFrame, frozen=True, kw_only=True, tag="typing"):
    """Another member is typing in a chat; forget it after `expires_in_ms` unless renewed."""

    chat_id: str
    user_id: str
    expires_in_ms: int


AnyServerFrame = AckFrame | ErrorFrame | EventFrame | ResyncFrame | HeartbeatFrame | TypingNotice


class _TypingSignal(msgspec.Struct, frozen=True, array_like=True):
    user_id: str
    at_ms: int  # when it was sent (the core's clock): a late delivery is dropped, not shown


class FrameSink(Protocol):
    """Where a session's frames go: the transport's send queue."""

    def push(self, frame: AnyServerFrame) -> bool:
        """Queue a live frame now; False when it did not fit (the sink closes the connection)."""
        ...

    async def push_all(self, frames: list[AnyServerFrame]) -> None:
        """Queue frames read from the log, waiting for room: they go at the client's pace."""
        ...

    def stop(self, code: int, reason: str) -> None:
        """Close the connection: the session has nothing more to send (revoked, bus gone, failed)."""
        ...


class RealtimeSession:
    """The state of one connection: the actor, their stream positions and their wake-ups.

    Delivery is pushed: the bus hands each item to `_arrived` (no task per connection), which
    puts the next event of a stream straight into the sink. Reading the log (a gap, a new
    stream) runs in a task of its own while later arrivals wait in a short backlog, so frames
    leave in order. Without a sink, frames collect in an outbox that `next_frames` empties.
    """

    def __init__(
        self,
        actor: str,
        service: ChatService,
        updates: GetUpdates,
        bus: EventBus,
        *,
        session_id: str | None = None,
    ) -> None:
        self.actor = actor
        self.session_id = session_id
        # Set once the login behind this connection was revoked: send what is queued, then close.
        self.ended = False
        self._service, self._updates, self._bus = service, updates, bus
        self._positions: dict[str, int] = {}
        self._more = False
        self._subscription: Subscription | None = None
        self._watched: set[str] = set()
        self._batch_size = service.deps.limits.max_updates_per_page
        self._may_type = SignalTyping(service.deps)
        self._sink: FrameSink | None = None
        # While the log is read (or before a sink is attached), arrivals wait here in order;
        # None: too many waited, read the log again instead.
        self._backlog: list[EventRecord | BusGap | Signal] | None = []
        self._holding = True
        self._reader: asyncio.Task[None] | None = None
        self._stopped = False

    @property
    def cursor(self) -> str:
        return self._updates.encode(self.actor, self._positions)

    async def open(self, cursor: str | None) -> list[AnyServerFrame]:
        """Start listening, then catch up from `cursor` (or from now). Raises on a bad cursor.
        Live frames are held from here until `attach` (or the first `next_frames`)."""
        positions = None if cursor is None else self._updates.decode(self.actor, cursor)
        # Subscribe before reading the log, so nothing committed in between goes unnoticed.
        self._subscription = self._bus.subscribe([self.actor])
        self._watched = {self.actor}
        await self._subscription.ready()
        self._subscription.listen(self._arrived)
        if positions is None:
            return self._apply(await self._updates.start(self.actor))
        # Frames carry the cursor after them: it must start from the client's own positions.
        self._positions = dict(positions)
        return self._apply(await self._updates.read_after(self.actor, positions, self._batch_size))

    def attach(self, sink: FrameSink) -> None:
        """Send live frames to `sink` from now on (after the frames `open` returned)."""
        self._sink = sink
        self._resume()

    async def close(self) -> None:
        self._stopped = True
        if self._reader is not None:
            self._reader.cancel()
        if self._subscription is not None:
            await self._subscription.close()

    async def next_frames(self) -> list[AnyServerFrame]:
        """Without a sink: wait for what the client should receive next. Empty when a wake-up
        brought nothing new."""
        if self._sink is None:
            self.attach(_Outbox())
        assert isinstance(self._sink, _Outbox), "frames go to the attached sink"
        return await self._sink.take(self._typing_notice)

    # -- arrivals (called by the bus) ----------------------------------------------------------

    def _arrived(self, item: EventRecord | BusGap | Signal | None) -> None:
        if self._stopped:
            return
        if item is None:
            self._stop(CloseCode.SERVER_RESTART, "the event bus closed")
        elif self._holding:
            self._hold(item)
        else:
            self._take(item)
        if isinstance(self._sink, _Outbox):
            self._sink.wake()

    def _hold(self, item: EventRecord | BusGap | Signal) -> None:
        if self._backlog is not None and len(self._backlog) < self._batch_size:
            self._backlog.append(item)
        else:
            self._backlog = None  # the log holds every record: read it rather than keep them

    def _take(self, item: EventRecord | BusGap | Signal) -> None:
        """One arrival while live: deliver it, drop it, or go and read the log."""
        sink = self._sink
        assert sink is not None
        if isinstance(item, Signal):
            if isinstance(sink, _Outbox):
                sink.hold_signal(item)  # made a notice when taken, so its age is the client's
            else:
                for notice in self._typing_notice(item):
                    sink.push(notice)
            return
        if isinstance(item, EventRecord):
            position = self._positions.get(item.stream_id)
            if position is not None and item.seq <= abs(position):
                return  # already read past it: the bus repeats itself after reconnects
            if position is not None and position >= 0 and item.seq == position + 1:
                if sink.push(self._deliver(item)) and self.ended:
                    self._stop(CloseCode.SESSION_ENDED, "the session was revoked: sign in again")
                return
        self._read_log()  # a gap, a new stream, or one the actor may be back in

    def _resume(self) -> None:
        """Leave the holding state: take the backlog in order, or read the log if it overflowed."""
        backlog, self._backlog, self._holding = self._backlog, [], False
        if backlog is None or self._more:  # arrivals were dropped, or the log has more than a page
            self._read_log()
            return
        for position, item in enumerate(backlog):
            if self._stopped:
                return
            self._take(item)
            if self._holding:  # went to read the log, which covers the rest but typing
                self._backlog = [later for later in backlog[position + 1 :] if isinstance(later, Signal)]
                return

    def _read_log(self) -> None:
        self._holding = True
        self._backlog = []
        if self._reader is None and not self._stopped:
            self._reader = asyncio.create_task(self._catch_up())

    async def _catch_up(self) -> None:
        """Read the log until caught up; frames go at the client's pace."""
        sink = self._sink
        assert sink is not None
        try:
            while True:
                batch = await self._updates.read_after(self.actor, self._positions, self._batch_size)
                await sink.push_all(self._apply(batch))
                if self._stopped:
                    return
                if self.ended:
                    self._stop(CloseCode.SESSION_ENDED, "the session was revoked: sign in again")
                    return
                if not self._more:
                    break
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("a real-time session failed to read the log")
            self._stop(1011, "internal error")
            return
        finally:
            self._reader = None
        self._resume()

    def _stop(self, code: int, reason: str) -> None:
        if not self._stopped:
            self._stopped = True
            if self._sink is not None:
                self._sink.stop(code, reason)

    def _now_ms(self) -> int:
        return int(self._service.deps.clock.now().timestamp() * 1000)

    def _typing_notice(self, signal: Signal) -> list[AnyServerFrame]:
        # Only for a chat being read (a visible stream), never the actor's own, never stale.
        if signal.stream_id not in self._positions or signal.stream_id == self.actor:
            return []
        try:
            typing = msgspec.json.decode(signal.payload, type=_TypingSignal)
        except msgspec.DecodeError:
            return []
        left = TYPING_TTL_MS - (self._now_ms() - typing.at_ms)
        if typing.user_id == self.actor or left <= 0:
            return []
        return [
            TypingNotice(
                chat_id=signal.stream_id, user_id=typing.user_id, expires_in_ms=min(left, TYPING_TTL_MS)
            )
        ]

    def _deliver(self, record: EventRecord) -> EventFrame:
        self._positions[record.stream_id] = record.seq
        event = record.event
        if isinstance(event, SessionsRevoked) and self.session_id is not None and event.ends(self.session_id):
            self.ended = True
        if visibility_change(record.event, self.actor) is False:
            self._positions[record.stream_id] = -record.seq  # shut out here; see GetUpdates
            self._watch()
        return EventFrame(cursor=self.cursor, record=record)

    def _apply(self, batch: Batch) -> list[AnyServerFrame]:
        frames: list[AnyServerFrame] = [self._deliver(record) for record in batch.events]
        self._positions, self._more = dict(batch.positions), batch.has_more
        if batch.resync_required:
            frames.append(ResyncFrame(cursor=self.cursor, streams=batch.resync_required))
        self._watch()
        return frames

    def _watch(self) -> None:
        """Wake-ups for the streams being read, and for the actor (joins arrive there first)."""
        assert self._subscription is not None
        wanted = {s for s, p in self._positions.items() if p >= 0} | {self.actor}
        self._subscription.unwatch(self._watched - wanted)
        self._subscription.watch(wanted - self._watched)
        self._watched = wanted

    # -- client frames ----------------------------------------------------------------------

    async def handle(self, frame: AnyClientFrame) -> AckFrame:
        """Carry out one client frame. Domain errors propagate: the transport maps them to frames."""
        service, actor = self._service, self.actor
        match frame:
            case SendFrame():
                sent = await service.send_message(
                    SendMessageCommand(
                        actor=actor,
                        chat_id=frame.chat_id,
                        body=frame.body,
                        reply_to=frame.reply_to,
                        client_msg_id=frame.client_msg_id,
                    )
                )
                return AckFrame(id=frame.id, created=sent.created, message=sent.message)
            case EditFrame():
                edited = await service.edit_message(
                    EditMessageCommand(actor=actor, chat_id=frame.chat_id, seq=frame.seq, body=frame.body)
                )
                return AckFrame(id=frame.id, message=edited)
            case DeleteFrame():
                await service.delete_message(actor, frame.chat_id, frame.seq)
                return AckFrame(id=frame.id)
            case ReadFrame():
                marker = await service.mark_read(
                    MarkReadCommand(actor=actor, chat_id=frame.chat_id, seq=frame.seq)
                )
                return AckFrame(id=frame.id, read_marker=marker)
            case PingFrame():
                return AckFrame(id=frame.id)
            case TypingFrame():
                stream = await self._may_type(actor, frame.chat_id)
                typing = _TypingSignal(user_id=actor, at_ms=self._now_ms())
                await self._bus.signal(stream, msgspec.json.encode(typing))
                return AckFrame(id=frame.id)
            case ReauthFrame():
                raise InvalidInput("type", "reauth is answered by the transport, which checks the token")


class _Outbox:
    """The sink of a session nobody attached one to: frames wait until `next_frames` takes them."""

    def __init__(self) -> None:
        self._items: list[AnyServerFrame | Signal] = []
        self._woken = asyncio.Event()
        self._stopped = False

    def wake(self) -> None:
        self._woken.set()

    def push(self, frame: AnyServerFrame) -> bool:
        self._items.append(frame)
        self._woken.set()
        return True

    def hold_signal(self, signal: Signal) -> None:
        self._items.append(signal)
        self._woken.set()

    async def push_all(self, frames: list[AnyServerFrame]) -> None:
        self._items += frames
        self._woken.set()

    def stop(self, code: int, reason: str) -> None:
        self._stopped = True
        self._woken.set()

    async def take(self, notice: Callable[[Signal], list[AnyServerFrame]]) -> list[AnyServerFrame]:
        while not self._woken.is_set():
            await self._woken.wait()
        self._woken.clear()
        items, self._items = self._items, []
        if not items and self._stopped:
            raise StopAsyncIteration
        return [f for i in items for f in (notice(i) if isinstance(i, Signal) else [i])]


# -- frames on the wire ---------------------------------------------------------------------

_encoder = msgspec.json.Encoder()
# The JSON of recent records: one event is spliced into every subscriber's frame, encoded once.
_RECORD_JSON_CACHE = 256
_record_json: dict[str, tuple[EventRecord, bytes]] = {}


def _encoded_record(record: EventRecord) -> bytes:
    cached = _record_json.get(record.id)
    if cached is not None and (cached[0] is record or cached[0] == record):
        return cached[1]
    raw = _encoder.encode(record)
    if len(_record_json) >= _RECORD_JSON_CACHE:
        del _record_json[next(iter(_record_json))]  # the oldest
    _record_json[record.id] = (record, raw)
    return raw


def encode_frame(frame: AnyServerFrame) -> bytes:
    """The frame's JSON. An event frame splices its record's shared encoding after the cursor
    (URL-safe base64: nothing to escape); the bytes equal msgspec's own encoding of the frame."""
    if isinstance(frame, EventFrame):
        return b'{"type":"event","cursor":"%s","record":%s}' % (
            frame.cursor.encode(),
            _encoded_record(frame.record),
        )
    return _encoder.encode(frame)
