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

Backpressure: frames wait in a bounded `SendQueue` (`ws_send_queue_frames`/`_bytes`). Live events
that do not fit close the socket with 4000; typing notices and plain heartbeats are shed first;
catch-up reads from the log wait for room (they go at the client's pace). The send in flight
is never cancelled: on close, the close frame follows it, for at most CLOSE_LINGER_S.

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
from dataclasses import dataclass
from typing import Annotated, Any, cast
from urllib.parse import urlsplit

import msgspec
from litestar import WebSocket, get, websocket
from litestar.connection import Request
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
)
from chatcore.application.updates import UpdatesPage
from chatcore.domain.errors import DomainError, InvalidInput, RateLimited, Unauthenticated
from chatcore.ports.security import AccessClaims
from entrypoints.container import Runtime
from entrypoints.http.deps import Actor
from entrypoints.http.guards import PUBLIC, runtime_of
from entrypoints.http.realtime_limits import SendQueue, SocketRegistry, TokenBucket
from entrypoints.problems import Problem, problem, problem_for
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

_decoder = msgspec.json.Decoder(AnyClientFrame)
_encoder = msgspec.json.Encoder()
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


def sockets_of(socket: WebSocket[Any, Any, Any]) -> SocketRegistry:
    state = socket.app.state
    registry = state.get("ws_sockets")
    if registry is None:
        registry = state.ws_sockets = SocketRegistry()
    return cast(SocketRegistry, registry)


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
        log.error("unhandled error on a WebSocket frame", exc_info=exc)
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


class Connection:
    """One accepted socket: a reader, a producer (the session's frames), a writer and a timer."""

    def __init__(
        self,
        socket: WebSocket[Any, Any, Any],
        runtime: Runtime,
        session: RealtimeSession,
        claims: AccessClaims,
    ) -> None:
        settings = runtime.settings
        self._socket, self._runtime, self._session, self._settings = socket, runtime, session, settings
        self._expires_at = claims.expires_at
        self.queue = SendQueue(settings.ws_send_queue_frames, settings.ws_send_queue_bytes)
        self._bucket = TokenBucket(settings.ws_frames_per_minute / 60, settings.ws_burst)
        self._refused_in_a_row = 0
        now = time.monotonic()
        self._last_received = self._last_sent = now
        self._ping_sent_at: float | None = None
        self._last_touch = now
        self._sending_since: float | None = None
        self._close: tuple[int, str] | None = None
        self._peer_gone = False
        self._done = asyncio.Event()
        self._tick_s = (
            min(0.5, settings.ws_heartbeat_s, settings.ws_ping_interval_s, settings.ws_ping_timeout_s) / 2
        )

    # -- lifecycle ----------------------------------------------------------------------------

    async def run(self, first: list[AnyServerFrame]) -> None:
        await self._runtime.presence.touch(self._session.actor)
        self._last_touch = time.monotonic()
        workers = [
            asyncio.create_task(self._guard(self._read())),
            asyncio.create_task(self._guard(self._produce(first))),
            asyncio.create_task(self._guard(self._tick())),
        ]
        writer = asyncio.create_task(self._write())
        try:
            await self._done.wait()
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            try:
                # The send in flight finishes, then the close frame; a client that never reads
                # again is dropped after the linger.
                await asyncio.wait_for(writer, CLOSE_LINGER_S)
            except (TimeoutError, asyncio.CancelledError):
                pass
            except Exception:
                log.debug("the writer failed while closing", exc_info=True)

    def close(self, code: int, reason: str) -> None:
        """Close with `code` (the first reason wins). Queued frames go out first (the acks of a
        flood, the event that ended the session), except when the client must resume anyway."""
        if self._close is None and not self._peer_gone:
            self._close = (code, reason)
            self.queue.close(drop=code == CloseCode.RESUME_FROM_CURSOR)
        self._done.set()

    def _peer_left(self) -> None:
        self._peer_gone = True
        self.queue.close(drop=True)
        self._done.set()

    async def _guard(self, work: Any) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except StopAsyncIteration:
            self.close(CloseCode.SERVER_RESTART, "the event bus closed")
        except Exception as exc:
            if self._done.is_set():
                return
            if isinstance(exc, WebSocketDisconnect):
                self._peer_left()
                return
            log.error("WebSocket connection failed", exc_info=exc)
            self.close(1011, "internal error")

    # -- the four loops -----------------------------------------------------------------------

    async def _read(self) -> None:
        limit = self._settings.ws_max_frame_bytes
        while True:
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
                if not self._push(error_frame(_frame_id(data), flood)):
                    return
                continue
            self._refused_in_a_row = 0
            if not self._push(await self._answer(data)):
                return

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

    async def _produce(self, first: list[AnyServerFrame]) -> None:
        await self._catch_up(first)
        session = self._session
        while not session.ended:
            frames = await session.next_frames()
            if len(frames) > 1:
                await self._catch_up(frames)
            elif frames and not self._push(frames[0]):
                return
        self.close(CloseCode.SESSION_ENDED, "the session was revoked: sign in again")

    async def _catch_up(self, frames: list[AnyServerFrame]) -> None:
        """Frames read from the log go at the client's pace: wait for room rather than overflow."""
        for frame in frames:
            text, size = self._encode(frame)
            await self.queue.wait_for_room(size)
            if not self.queue.push(text, size):
                self.close(CloseCode.RESUME_FROM_CURSOR, "send queue overflow: resume from your cursor")
                return

    async def _write(self) -> None:
        try:
            while (text := await self.queue.get()) is not None:
                self._sending_since = time.monotonic()
                await self._socket.send_data(text)
                self._last_sent, self._sending_since = time.monotonic(), None
            if self._close is not None and not self._peer_gone:
                code, reason = self._close
                await self._socket.close(code, reason)
        except Exception as exc:
            if not isinstance(exc, WebSocketDisconnect):
                log.debug("WebSocket send failed", exc_info=True)
            self._peer_left()

    async def _tick(self) -> None:
        settings = self._settings
        while True:
            await asyncio.sleep(self._tick_s)
            now = time.monotonic()
            if self._sending_since is not None and now - self._sending_since > settings.ws_send_timeout_s:
                self.close(CloseCode.RESUME_FROM_CURSOR, "send stalled: resume from your cursor")
                return
            if now - self._last_touch >= PRESENCE_TOUCH_S:
                # An open socket keeps its user online; the server expires them once it closes.
                self._last_touch = now
                await self._runtime.presence.touch(self._session.actor)
            if self._runtime.clock.now() >= self._expires_at:
                self.close(CloseCode.POLICY, "the access token expired: reconnect or send reauth in time")
                return
            if self._ping_sent_at is not None:
                if now - self._ping_sent_at > settings.ws_ping_timeout_s:
                    self.close(CloseCode.POLICY, "no answer to the heartbeat")
                    return
            elif now - self._last_received >= settings.ws_ping_interval_s:
                self._ping_sent_at = now
                ask = HeartbeatFrame(reply_within_ms=int(settings.ws_ping_timeout_s * 1000))
                if not self._push(ask):
                    return
                continue
            if now - self._last_sent >= settings.ws_heartbeat_s and self.queue.frames == 0:
                self._last_sent = now
                self._push(HeartbeatFrame())

    # -- frames out ---------------------------------------------------------------------------

    @staticmethod
    def _encode(frame: AnyServerFrame) -> tuple[str, int]:
        raw = _encoder.encode(frame)
        return raw.decode(), len(raw)

    def _push(self, frame: AnyServerFrame) -> bool:
        """Queue one frame; False (and the socket closing with 4000) when a durable one overflows."""
        text, size = self._encode(frame)
        ephemeral = isinstance(frame, TypingNotice) or (
            isinstance(frame, HeartbeatFrame) and frame.reply_within_ms is None
        )
        if self.queue.push(text, size, ephemeral=ephemeral):
            return True
        kind = "events" if isinstance(frame, EventFrame) else "frames"
        self.close(CloseCode.RESUME_FROM_CURSOR, f"send queue overflow ({kind}): resume from your cursor")
        return False


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
        await Connection(socket, runtime, session, shaken.claims).run(first)
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
    return await runtime.wait_for_updates(actor, cursor, wait_s, limit)


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
