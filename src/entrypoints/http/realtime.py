"""The real-time transport: WebSocket `/v1/ws`, long-polling `GET /v1/updates`, and the AsyncAPI
document at `/schema/asyncapi.json`. The protocol itself lives in `chatcore.application.realtime`;
this module only carries it over a socket and enforces the limits.

Handshake (nothing is allocated before it passes; a refusal is an HTTP response, no upgrade):
- a token in the URL (`?access_token=`, `?token=`) → 401, whatever else is sent;
- `Origin` must be in `allowed_origins` (default: the origin of `public_url`) → else 403;
  a missing `Origin` is allowed only with the `Authorization` header (non-browser clients);
- the access token comes from `Authorization: Bearer …` or, for browsers, the subprotocol list
  `chatcore.v1, chatcore.bearer.<token>`; only `chatcore.v1` is echoed. Missing, expired,
  forged or revoked → 401;
- `?cursor=` resumes; a cursor that is not valid for this user → 422 (refused, not accepted
  then closed: the client learns it before it reads anything);
- more than `ws_max_sockets_per_user` open sockets of this user → 429.
When the server lacks the ASGI `websocket.http.response` extension (the test client), a refusal
is a close before accept instead, which servers answer with 403.

Close codes (`CloseCode`): 1009 a frame above `ws_max_frame_bytes`; 1008 a frame flood
(`ws_burst` refused frames in a row), the access token's expiry without a `reauth`, or no
answer to a heartbeat asking for one; 4000 the send queue overflowed or a send stalled past
`ws_send_timeout_s` (resume from the last cursor received); 4001 the session was revoked
(logout) — queued frames are sent first; 1001 the server shuts down.

Backpressure: up to SENDS_IN_FLIGHT frames per socket are handed to the server unfinished;
the rest wait in a bounded `SendQueue` (`ws_send_queue_frames`/`_bytes`). Live events that do
not fit close the socket with 4000; typing notices and plain heartbeats are shed first; catch-up
reads from the log wait for room (they go at the client's pace). A send unfinished for
`ws_send_timeout_s` closes with 4000 too. On close, the close frame follows the frames handed
over; when the client has read nothing for CLOSE_LINGER_S, the rest and the close frame are
handed over at once and the handler ends, so a client that reads again later still sees its
code (for at most STALLED_CLOSE_S more, then its sends are dropped).

Hand-over: under `chatcore serve`, granian starts a write when its ASGI `send` is called, and
writes a socket's frames in call order (one runtime thread), so a frame is handed over without
awaiting the previous one: a fan-out costs no task switch per socket. Litestar's own `send`
wraps the server's in a coroutine that starts nothing until awaited, so the server's is kept in
the scope (`keep_server_send`); without it (a test client, another server), each frame is
awaited in turn.

Liveness: granian answers protocol pings but sends none, and ASGI gives an app no ping, so
liveness is in the app: when the client was silent for `ws_ping_interval_s`, the server sends a
heartbeat with `reply_within_ms`; no frame within `ws_ping_timeout_s` closes with 1008. A plain
heartbeat goes out after `ws_heartbeat_s` without any frame sent.

Frame size: granian does not expose tungstenite's size limits (its defaults: 16 MiB per frame,
64 MiB per message), so the cap is enforced here, on every received message.
Compression: granian (tungstenite) does not negotiate permessage-deflate; tests assert the 101
carries no `Sec-WebSocket-Extensions`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, cast
from urllib.parse import urlsplit

import msgspec
from litestar import WebSocket
from litestar.connection import ASGIConnection, Request
from litestar.exceptions import WebSocketDisconnect
from litestar.params import QueryParameter

from chatcore.application.asyncapi import asyncapi_document
from chatcore.application.realtime import (
    AckFrame,
    AnyClientFrame,
    AnyServerFrame,
    CloseCode,
    ErrorFrame,
    EventFrame,
    HeartbeatFrame,
    RealtimeSession,
    ReauthFrame,
    TypingNotice,
    encode_frame,
)
from chatcore.application.updates import UpdatesPage
from chatcore.domain.errors import DomainError, InvalidInput, RateLimited, Unauthenticated
from chatcore.ports.security import AccessClaims
from entrypoints.container import Runtime
from entrypoints.http.deps import Actor
from entrypoints.http.guards import PUBLIC, runtime_of
from entrypoints.http.middleware import SERVER_SEND
from entrypoints.http.realtime_limits import SendQueue, SocketRegistry, TokenBucket
from entrypoints.http.routing import get, websocket
from entrypoints.problems import Problem, log_failure, problem, problem_for
from entrypoints.settings import Settings

log = logging.getLogger("chatcore.realtime")

WS_PATH = "/v1/ws"
UPDATES_PATH = "/v1/updates"
ASYNCAPI_PATH = "/schema/asyncapi.json"
SUBPROTOCOL = "chatcore.v1"
BEARER_PROTOCOL = "chatcore.bearer."
URL_TOKEN_PARAMS = ("access_token", "token")
MAX_TOKEN_CHARS = 4096
CLOSE_LINGER_S = 5.0  # how long the close frame may wait behind the send in flight
STALLED_CLOSE_S = 120.0  # how long a close frame waits for a client that stopped reading
SENDS_IN_FLIGHT = 16  # frames handed to the server per socket before one must finish

_decoder = msgspec.json.Decoder(AnyClientFrame)
_FIELD_IN_MESSAGE = re.compile(r"(?:unknown|missing required) field `([^`]+)`|at `\$\.([A-Za-z_]+)")


class _FrameId(msgspec.Struct):
    id: str | None = None


class Refused(Exception):
    def __init__(self, refusal: Problem) -> None:
        super().__init__(refusal.title)
        self.problem = refusal


@dataclass(frozen=True)
class Handshake:
    claims: AccessClaims
    cursor: str | None
    subprotocol: str | None


def registry_of(connection: ASGIConnection[Any, Any, Any, Any], name: str) -> SocketRegistry:
    """The process's count of open `name` connections per user (WebSockets, waiting long-polls)."""
    state = connection.app.state
    registry = state.get(name)
    if registry is None:
        registry = SocketRegistry()
        state[name] = registry
    return cast(SocketRegistry, registry)


def sockets_of(socket: WebSocket[Any, Any, Any]) -> SocketRegistry:
    return registry_of(socket, "ws_sockets")


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def allowed_origins(settings: Settings) -> frozenset[str]:
    return frozenset(
        o.lower().rstrip("/") for o in settings.allowed_origins or [_origin_of(settings.public_url)]
    )


def _token_of(socket: WebSocket[Any, Any, Any], offered: list[str]) -> str:
    header = socket.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        token = token.strip()
    else:
        scheme = "bearer"
        tokens = [p.removeprefix(BEARER_PROTOCOL) for p in offered if p.startswith(BEARER_PROTOCOL)]
        # The bearer entry only beside chatcore.v1: the server must echo a protocol it speaks.
        token = tokens[0] if len(tokens) == 1 and SUBPROTOCOL in offered else ""
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_CHARS:
        raise Unauthenticated()
    return token


async def handshake(socket: WebSocket[Any, Any, Any], runtime: Runtime) -> Handshake:
    """Everything checked before accept; raises Refused or a DomainError."""
    settings = runtime.settings
    query = socket.query_params
    if any(name in query for name in URL_TOKEN_PARAMS):
        raise Unauthenticated("tokens are not accepted in the URL: use the Authorization header")
    origin = socket.headers.get("origin")
    if origin is None:
        if "authorization" not in socket.headers:
            raise Refused(problem(403, "forbidden", "Forbidden", "a browser connection must send Origin"))
    elif origin.lower().rstrip("/") not in allowed_origins(settings):
        raise Refused(problem(403, "forbidden", "Forbidden", "this origin may not open a WebSocket"))
    offered = list(socket.scope.get("subprotocols") or [])
    claims = await runtime.auth.authenticate(_token_of(socket, offered))
    cursor = query.get("cursor")
    if cursor is not None:
        runtime.updates.decode(claims.user_id, cursor)  # InvalidInput: refused before accept
    return Handshake(claims, cursor, SUBPROTOCOL if SUBPROTOCOL in offered else None)


async def refuse(socket: WebSocket[Any, Any, Any], refusal: Problem) -> None:
    """Answer the upgrade request with an HTTP error (or a close before accept: 403)."""
    if socket.connection_state == "init":
        await socket.receive()  # websocket.connect
    if "websocket.http.response" in (socket.scope.get("extensions") or {}):
        body = msgspec.json.encode(refusal)
        headers = [
            (b"content-type", b"application/problem+json"),
            (b"content-length", str(len(body)).encode()),
            *((k.lower().encode(), v.encode()) for k, v in refusal.headers.items()),
        ]
        send = cast(Any, socket.send)
        await send({"type": "websocket.http.response.start", "status": refusal.status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body, "more_body": False})
    else:
        await socket.close(CloseCode.POLICY, refusal.title)


def error_frame(frame_id: str | None, exc: BaseException) -> ErrorFrame:
    """The WS twin of the problem+json response: the same table, `problem_for`."""
    p = problem_for(exc)
    if p.status >= 500:
        log_failure(log, exc, "unhandled error on a WebSocket frame")
    return ErrorFrame(
        id=frame_id,
        status=p.status,
        title=p.title,
        detail=p.detail,
        field=p.field,
        permission=p.permission,
        retry_after=p.retry_after_s,
    )


def _decode_error(data: str | bytes, exc: msgspec.MsgspecError) -> ErrorFrame:
    try:
        frame_id = msgspec.json.decode(data, type=_FrameId).id
    except msgspec.MsgspecError:
        frame_id = None  # not even a JSON object with a string id
    message = str(exc)
    named = _FIELD_IN_MESSAGE.search(message)
    field = (named[1] or named[2]) if named else "frame"
    return error_frame(frame_id, InvalidInput(field, message.split(" - at ")[0]))


# How often an open socket renews its user's presence (the presence TTL is 60 s).
PRESENCE_TOUCH_S = 20.0


class Ticker:
    """One timer for every socket of the process (not a task per socket): each tick checks
    liveness, stalled sends, token expiry and heartbeats, and renews presence in the background.
    It runs while sockets are open."""

    def __init__(self, runtime: Runtime) -> None:
        settings = runtime.settings
        self._runtime = runtime
        self.period_s = (
            min(0.5, settings.ws_heartbeat_s, settings.ws_ping_interval_s, settings.ws_ping_timeout_s) / 2
        )
        self._connections: set[Connection] = set()
        self._task: asyncio.Task[None] | None = None
        self._touching: set[asyncio.Task[None]] = set()

    def add(self, connection: Connection) -> None:
        self._connections.add(connection)
        task = self._task
        # A task of another (closed) loop is stale: test clients run one loop each.
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            self._task = asyncio.create_task(self._run(), name="chatcore-ws-ticker")

    def discard(self, connection: Connection) -> None:
        self._connections.discard(connection)

    async def _run(self) -> None:
        try:
            while self._connections:
                await asyncio.sleep(self.period_s)
                self._tick()
        finally:
            if self._task is asyncio.current_task():
                self._task = None

    def _tick(self) -> None:
        now, wall = time.monotonic(), self._runtime.clock.now()
        due: set[str] = set()
        for connection in list(self._connections):
            try:
                if connection.tick(now, wall):
                    due.add(connection.actor)
            except Exception as exc:
                log.error("WebSocket timer check failed", exc_info=exc)
                connection.close(1011, "internal error")
        if due:
            task = asyncio.create_task(self._touch(due))
            self._touching.add(task)
            task.add_done_callback(self._touching.discard)

    async def _touch(self, users: set[str]) -> None:
        # An open socket keeps its user online; the server expires them once it closes.
        for user in users:
            try:
                await self._runtime.presence.touch(user)
            except Exception:
                log.warning("could not renew the presence of a connected user", exc_info=True)


def ticker_of(socket: WebSocket[Any, Any, Any], runtime: Runtime) -> Ticker:
    state = socket.app.state
    ticker = state.get("ws_ticker")
    if ticker is None:
        ticker = state.ws_ticker = Ticker(runtime)
    return cast(Ticker, ticker)


class Connection:
    """One accepted socket. Its handler task reads client frames; live events are pushed by the
    session from the bus and handed to the server at once while there is room in flight (a
    writer task runs only while frames wait for room); timers are the shared `Ticker`'s. The
    `FrameSink` of its `RealtimeSession`."""

    def __init__(
        self,
        socket: WebSocket[Any, Any, Any],
        runtime: Runtime,
        session: RealtimeSession,
        claims: AccessClaims,
        ticker: Ticker,
    ) -> None:
        settings = runtime.settings
        self._socket, self._runtime, self._session, self._settings = socket, runtime, session, settings
        self.actor = session.actor
        self._ticker = ticker
        self._expires_at = claims.expires_at
        self.queue = SendQueue(settings.ws_send_queue_frames, settings.ws_send_queue_bytes)
        self._bucket = TokenBucket(settings.ws_frames_per_minute / 60, settings.ws_burst)
        self._refused_in_a_row = 0
        now = time.monotonic()
        self._last_received = self._last_sent = self._last_touch = now
        self._ping_sent_at: float | None = None
        self._close: tuple[int, str] | None = None
        self._close_handed_over = False
        self._peer_gone = False
        self._server_send = server_send_of(socket)
        # Sends handed to the server and not yet finished, oldest first, with when they were.
        self._in_flight: deque[tuple[Awaitable[None], float]] = deque()
        self._most_in_flight = SENDS_IN_FLIGHT  # 1 once the server's send turns out to be lazy
        self._writer: asyncio.Task[None] | None = None  # only while frames wait for room
        self._handler: asyncio.Task[Any] | None = None
        self._reading = False  # the handler is in its interruptible part (sending `first`, reading)
        self._interrupted = False

    # -- lifecycle ----------------------------------------------------------------------------

    async def run(self, first: list[AnyServerFrame]) -> None:
        self._handler = asyncio.current_task()
        await self._runtime.presence.touch(self.actor)
        self._last_touch = time.monotonic()
        self._ticker.add(self)
        try:
            await self._serve(first)
        finally:
            self._ticker.discard(self)
            await self._drain()

    async def _serve(self, first: list[AnyServerFrame]) -> None:
        self._reading = True
        try:
            await self.push_all(first)
            self._session.attach(self)
            await self._read()
        except asyncio.CancelledError:
            handler = self._handler
            if not self._interrupted or handler is None or handler.uncancel() > 0:
                raise  # not (only) our own interruption: the server is stopping
        except WebSocketDisconnect:
            self._peer_left()
        except Exception as exc:
            log.error("WebSocket connection failed", exc_info=exc)
            self.close(1011, "internal error")
        finally:
            self._reading = False

    async def _drain(self) -> None:
        """The queued frames, then the close frame, go out in order; the handler waits for them
        for CLOSE_LINGER_S at most. A client still not reading by then gets the rest handed over
        at once (`_hand_over_the_rest`), so that its close code follows what it has."""
        self._flush()
        deadline = time.monotonic() + CLOSE_LINGER_S
        while not self._peer_gone and (pending := self._oldest_pending()) is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                self._hand_over_the_rest()
                return
            await asyncio.wait({pending}, timeout=left)  # never cancels the send itself
            self._flush()

    def _oldest_pending(self) -> asyncio.Future[Any] | None:
        """What to wait for while closing: the writer, else the oldest unfinished send."""
        self._settle()
        if self._writer is not None:
            return self._writer
        return asyncio.ensure_future(self._in_flight[0][0]) if self._in_flight else None

    def _hand_over_the_rest(self) -> None:
        """Hand every queued frame and the close frame to the server now, in order, and give
        them STALLED_CLOSE_S more. granian writes each behind the bytes it already holds; were the
        handler to end first, it would close the socket with a close frame of its own, without
        a code (1005), and cancelling a send cuts its frame short. With a lazy server (one that
        writes only when awaited) the send in flight is cancelled instead, and the server closes
        the socket its own way: its sends cannot be left running without the handler."""
        if self._most_in_flight == 1:
            for sent, _ in self._in_flight:
                cast("asyncio.Future[None]", sent).cancel()
            return
        while (text := self.queue.pop()) is not None:
            self._hand_over({"type": "websocket.send", "text": text})
        self._hand_over_close()
        sends = [sent for sent, _ in self._in_flight]
        asyncio.get_running_loop().call_later(STALLED_CLOSE_S, _give_up, sends)

    def close(self, code: int, reason: str) -> None:
        """Close with `code` (the first reason wins). Queued frames go out first (the acks of a
        flood, the event that ended the session), except when the client must resume anyway."""
        if self._close is None and not self._peer_gone:
            self._close = (code, reason)
            self.queue.close(drop=code == CloseCode.RESUME_FROM_CURSOR)
        self._stop_reading()

    def stop(self, code: int, reason: str) -> None:
        self.close(code, reason)

    def _peer_left(self) -> None:
        self._peer_gone = True
        self.queue.close(drop=True)
        self._stop_reading()

    def _stop_reading(self) -> None:
        # The handler may be waiting for a client frame: interrupt it, from the loop, so a close
        # requested by the handler itself (deep in a frame's handling) never cancels it.
        if self._reading and not self._interrupted:
            asyncio.get_running_loop().call_soon(self._interrupt)

    def _interrupt(self) -> None:
        if self._reading and not self._interrupted and self._handler is not None:
            self._interrupted = True
            self._handler.cancel()

    # -- reading ------------------------------------------------------------------------------

    async def _read(self) -> None:
        limit = self._settings.ws_max_frame_bytes
        while self._close is None and not self._peer_gone:
            message = await self._socket.receive()
            if message["type"] == "websocket.disconnect":
                self._peer_left()
                return
            data = cast("str | bytes", message.get("text") or message.get("bytes") or b"")
            size = len(data) if isinstance(data, bytes) else len(data.encode())
            if size > limit:
                self.close(CloseCode.TOO_BIG, f"frames are limited to {limit} bytes")
                return
            self._last_received, self._ping_sent_at = time.monotonic(), None
            if not self._bucket.take():
                self._refused_in_a_row += 1
                if self._refused_in_a_row > self._settings.ws_burst:
                    self.close(CloseCode.POLICY, "frame flood")
                    return
                flood = RateLimited(self._bucket.retry_after_s())
                self.push(error_frame(_frame_id(data), flood))
                continue
            self._refused_in_a_row = 0
            self.push(await self._answer(data))

    async def _answer(self, data: str | bytes) -> AckFrame | ErrorFrame:
        try:
            frame = _decoder.decode(data)
        except msgspec.MsgspecError as exc:
            return _decode_error(data, exc)
        try:
            if isinstance(frame, ReauthFrame):
                return await self._reauth(frame)
            return await self._session.handle(frame)
        except Exception as exc:
            return error_frame(frame.id, exc)

    async def _reauth(self, frame: ReauthFrame) -> AckFrame:
        claims = await self._runtime.auth.authenticate(frame.token)
        if claims.user_id != self._session.actor:
            raise Unauthenticated("the token belongs to another user")
        self._session.session_id = claims.session_id
        self._expires_at = claims.expires_at
        return AckFrame(id=frame.id)

    # -- timers (called by the Ticker) --------------------------------------------------------

    def tick(self, now: float, wall: datetime) -> bool:
        """Check the timers; True when the user's presence is due for renewal."""
        settings = self._settings
        if self._close is not None or self._peer_gone:
            return False
        self._settle()
        if self._in_flight and now - self._in_flight[0][1] > settings.ws_send_timeout_s:
            self.close(CloseCode.RESUME_FROM_CURSOR, "send stalled: resume from your cursor")
        elif wall >= self._expires_at:
            self.close(CloseCode.POLICY, "the access token expired: reconnect or send reauth in time")
        elif self._ping_sent_at is not None:
            if now - self._ping_sent_at > settings.ws_ping_timeout_s:
                self.close(CloseCode.POLICY, "no answer to the heartbeat")
        elif now - self._last_received >= settings.ws_ping_interval_s:
            self._ping_sent_at = now
            self.push(HeartbeatFrame(reply_within_ms=int(settings.ws_ping_timeout_s * 1000)))
        elif now - self._last_sent >= settings.ws_heartbeat_s and self.queue.frames == 0:
            self._last_sent = now
            self.push(_HEARTBEAT)
        if now - self._last_touch >= PRESENCE_TOUCH_S:
            self._last_touch = now
            return True
        return False

    # -- frames out ---------------------------------------------------------------------------

    def push(self, frame: AnyServerFrame) -> bool:
        """Queue one frame; False (and the socket closing with 4000) when a durable one overflows."""
        if self.queue.closed:
            return True  # closing: nothing more goes out
        text, size = _encoded(frame)
        ephemeral = isinstance(frame, TypingNotice) or (
            isinstance(frame, HeartbeatFrame) and frame.reply_within_ms is None
        )
        if self.queue.push(text, size, ephemeral=ephemeral):
            self._flush()
            return True
        kind = "events" if isinstance(frame, EventFrame) else "frames"
        self.close(CloseCode.RESUME_FROM_CURSOR, f"send queue overflow ({kind}): resume from your cursor")
        return False

    async def push_all(self, frames: list[AnyServerFrame]) -> None:
        """Frames read from the log go at the client's pace: wait for room rather than overflow."""
        for frame in frames:
            text, size = _encoded(frame)
            await self.queue.wait_for_room(size)
            if not self.queue.push(text, size):
                self.close(CloseCode.RESUME_FROM_CURSOR, "send queue overflow: resume from your cursor")
                return
            self._flush()

    # A fan-out hands each socket its frame with no task switch: granian starts a write when its
    # send is called, in call order, so up to SENDS_IN_FLIGHT frames per socket are handed over
    # without waiting (the rest wait in the queue, and a writer task waits for room).

    def _flush(self) -> None:
        """Hand over what may go now; a writer task takes over while frames wait for room."""
        self._hand_over_queued()
        if self._waiting() and self._writer is None and not self._peer_gone:
            self._writer = asyncio.create_task(self._write())

    def _hand_over_queued(self) -> None:
        """Queued frames while there is room in flight, then (closing) the close frame."""
        if self._peer_gone:
            return
        self._settle()
        queue = self.queue
        while len(self._in_flight) < self._most_in_flight and (text := queue.pop()) is not None:
            self._hand_over({"type": "websocket.send", "text": text})
        if queue.closed and not queue.frames and len(self._in_flight) < self._most_in_flight:
            self._hand_over_close()

    def _waiting(self) -> bool:
        """Frames, or the close frame, wait for room in flight."""
        return bool(self.queue.frames) or (self.queue.closed and not self._close_handed_over)

    def _hand_over(self, message: dict[str, Any]) -> None:
        try:
            sent = self._server_send(message)
        except Exception:  # the server refused at once (the socket is gone): not the bus's problem
            log.debug("WebSocket send refused", exc_info=True)
            self._peer_left()
            return
        if asyncio.iscoroutine(sent):  # a lazy server: it writes when awaited, one at a time
            self._most_in_flight = 1
            sent = asyncio.ensure_future(sent)
        self._last_sent = time.monotonic()
        self._in_flight.append((sent, self._last_sent))

    def _hand_over_close(self) -> None:
        if self._close is None or self._close_handed_over or self._peer_gone:
            return
        self._close_handed_over = True
        code, reason = self._close
        self._hand_over({"type": "websocket.close", "code": code, "reason": reason})

    def _settle(self) -> None:
        """Forget the sends the server has finished; one that failed means the client is gone."""
        in_flight = self._in_flight
        while in_flight and in_flight[0][0].done():  # type: ignore[attr-defined]
            sent = cast("asyncio.Future[None]", in_flight.popleft()[0])
            error = asyncio.CancelledError() if sent.cancelled() else sent.exception()
            if error is not None:
                if not isinstance(error, WebSocketDisconnect | asyncio.CancelledError):
                    log.debug("WebSocket send failed", exc_info=error)
                self._peer_left()
                in_flight.clear()
                return

    async def _write(self) -> None:
        """While frames wait for room in flight: wait for the oldest send, then hand over more."""
        try:
            while not self._peer_gone and self._in_flight and self._waiting():
                await asyncio.wait({asyncio.ensure_future(self._in_flight[0][0])})
                self._hand_over_queued()
        finally:
            self._writer = None


_HEARTBEAT = HeartbeatFrame()


def _give_up(sends: list[Awaitable[None]]) -> None:
    """Sends a client left unread for STALLED_CLOSE_S after its close: the server drops them."""
    for sent in sends:
        cast("asyncio.Future[None]", sent).cancel()


def server_send_of(socket: WebSocket[Any, Any, Any]) -> Callable[[dict[str, Any]], Awaitable[None]]:
    """The server's own ASGI send (kept in the scope by `keep_server_send`), else Litestar's."""
    send = socket.scope.get(SERVER_SEND)
    return cast("Callable[[dict[str, Any]], Awaitable[None]]", send or socket.send)


def _encoded(frame: AnyServerFrame) -> tuple[str, int]:
    raw = encode_frame(frame)
    return raw.decode(), len(raw)


def _frame_id(data: str | bytes) -> str | None:
    try:
        return msgspec.json.decode(data, type=_FrameId).id
    except msgspec.MsgspecError:
        return None


@websocket(WS_PATH, opt={PUBLIC: True})  # authenticates itself on the handshake (header or subprotocol)
async def realtime_socket(socket: WebSocket[Any, Any, Any]) -> None:
    """One connection for all of the user's chats; see the module docstring for the protocol."""
    runtime = runtime_of(socket)
    try:
        shaken = await handshake(socket, runtime)
    except Refused as refused:
        await refuse(socket, refused.problem)
        return
    except DomainError as exc:
        await refuse(socket, problem_for(exc))
        return
    user_id = shaken.claims.user_id
    registry = sockets_of(socket)
    most = runtime.settings.ws_max_sockets_per_user
    if not registry.acquire(user_id, most):
        await refuse(
            socket, problem(429, "rate-limited", "Too Many Requests", f"at most {most} open sockets per user")
        )
        return
    session = RealtimeSession(
        user_id, runtime.service, runtime.updates, runtime.bus, session_id=shaken.claims.session_id
    )
    try:
        first = await session.open(shaken.cursor)
        await socket.accept(subprotocols=shaken.subprotocol)
        await Connection(socket, runtime, session, shaken.claims, ticker_of(socket, runtime)).run(first)
    finally:
        with contextlib.suppress(Exception):
            await session.close()
        registry.release(user_id)


# -- long-polling and the AsyncAPI document ---------------------------------------------------


@get(UPDATES_PATH, tags=["updates"])
async def poll_updates(
    request: Request[Any, Any, Any],
    actor: Actor,
    cursor: Annotated[
        str | None, QueryParameter(description="the cursor of the last page or event frame; none starts one")
    ] = None,
    wait_s: Annotated[
        float,
        QueryParameter(name="timeout", ge=0, description="seconds to wait when no event is pending (max 45)"),
    ] = 0,
    limit: Annotated[int | None, QueryParameter(ge=1, description="most events in the page")] = None,
) -> UpdatesPage:
    """Long-polling: the events of your chats after `cursor`, in per-chat order, each once.

    Answers at once when events are pending, else when one arrives or after `timeout` seconds
    (then with no events and the same position). Without a cursor it answers at once with a
    fresh cursor at the present. `resync_required` names streams whose missed events left the
    log: refetch their state. `has_more`: ask again at once. The same events and cursor as the
    WebSocket's event frames.
    """
    runtime = runtime_of(request)
    polls = registry_of(request, "long_polls")
    # A poll holds a request slot of the worker while it waits: one user may not hold them all.
    if not polls.acquire(actor, runtime.settings.longpoll_max_per_user):
        raise RateLimited(1)
    try:
        return await runtime.wait_for_updates(actor, cursor, wait_s, limit)
    finally:
        polls.release(actor)


@get(ASYNCAPI_PATH, opt={PUBLIC: True}, include_in_schema=False)
async def asyncapi_json(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the WebSocket and long-polling protocol."""
    document: dict[str, Any] | None = request.app.state.get("asyncapi")
    if document is None:
        document = asyncapi_document(
            title="chatcore", version="1", ws_path=WS_PATH, updates_path=UPDATES_PATH
        )
        request.app.state.asyncapi = document
    return document


ROUTES = [realtime_socket, poll_updates, asyncapi_json]
