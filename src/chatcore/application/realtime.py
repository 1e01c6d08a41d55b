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

from collections.abc import AsyncIterator
from enum import IntEnum

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


class RealtimeSession:
    """The state of one connection: the actor, their stream positions and their wake-ups."""

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
        self._wake_ups: AsyncIterator[EventRecord | BusGap | Signal] | None = None
        self._watched: set[str] = set()
        self._batch_size = service.deps.limits.max_updates_per_page
        self._may_type = SignalTyping(service.deps)

    @property
    def cursor(self) -> str:
        return self._updates.encode(self.actor, self._positions)

    async def open(self, cursor: str | None) -> list[AnyServerFrame]:
        """Start listening, then catch up from `cursor` (or from now). Raises on a bad cursor."""
        positions = None if cursor is None else self._updates.decode(self.actor, cursor)
        # Subscribe before reading the log, so nothing committed in between goes unnoticed.
        self._subscription = self._bus.subscribe([self.actor])
        self._watched = {self.actor}
        await self._subscription.ready()
        self._wake_ups = aiter(self._subscription)
        if positions is None:
            return self._apply(await self._updates.start(self.actor))
        # Frames carry the cursor after them: it must start from the client's own positions.
        self._positions = dict(positions)
        return self._apply(await self._updates.read_after(self.actor, positions, self._batch_size))

    async def close(self) -> None:
        if self._subscription is not None:
            await self._subscription.close()

    async def next_frames(self) -> list[AnyServerFrame]:
        """Wait for what the client should receive next. Empty when a wake-up brought nothing new."""
        if self._more:
            return await self._catch_up()
        assert self._wake_ups is not None, "open() first"
        record = await anext(self._wake_ups)
        if isinstance(record, Signal):
            return self._typing_notice(record)
        if isinstance(record, BusGap):
            return await self._catch_up()  # the bus lost something: the log has it
        position = self._positions.get(record.stream_id)
        if position is not None and record.seq <= abs(position):
            return []  # already read past it: the bus repeats itself after reconnects
        if position is not None and position >= 0 and record.seq == position + 1:
            return [self._deliver(record)]
        return await self._catch_up()  # a gap, a new stream, or one the actor may be back in

    async def _catch_up(self) -> list[AnyServerFrame]:
        return self._apply(await self._updates.read_after(self.actor, self._positions, self._batch_size))

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
