"""The dedicated WebSocket listener (`CHATCORE_WS_PORT`): the app's WebSocket routes on a port of
their own, served by the `websockets` library on granian's worker loop, beside granian's port.

Why: granian 2.8.9 holds about 150 KiB per idle WebSocket (128 KiB of it is tungstenite's read
buffer, which granian allocates at its default size and gives no setting for); the `websockets`
library holds about 10 KiB, and a chatcore socket on this port 30.5 KiB in all. Idle sockets are
most of a chat server's memory, so a deployment with many of them routes `/v1/ws` to this port
(bench/README.md has the figures).

The same ASGI app serves both ports: the handshake checks, the limits, the close codes and the
protocol are the app's (`entrypoints.http.realtime`). This module only carries ASGI messages:
- an upgrade request the library would accept becomes a `websocket` scope, with the
  `websocket.http.response` extension (one it would refuse, such as no upgrade or a bad key, gets
  the library's own 4xx, without the app, and never a 101 without the app);
- the app's `websocket.accept` lets the 101 go out (with the subprotocol it chose), and returns
  once it is out (ClientGone if it never went out); its `websocket.http.response.*` is sent as
  that HTTP response instead; a close before accept, or an app that ends without an answer, is a
  403, as on granian;
- `websocket.send` and `websocket.close` write their frame at once, as the library's own
  `broadcast` does, so a fan-out costs no task per socket. The send returns a shared finished
  future, or, while the transport is above its high-water mark, a view of the one wait for it
  to drain (the app's send timeout and queue see a stalled client as they do on granian). A
  close reason is cut to the 123 bytes a close frame holds;
- a received frame is `websocket.receive`; the client's close or a lost connection is
  `websocket.disconnect`.
The library enforces the frame size itself (`max_size`: 1009 before the frame is buffered) and
sends no pings (liveness is the app's heartbeat, the same on both ports). Unlike granian, on
shutdown the sockets that are still open get a 1001 close frame; an upgrade that arrives during
shutdown gets a 503.

Known difference: a client that sends its close frame but keeps the TCP connection open is seen
as gone when TCP ends or the app's next send fails (the heartbeat), not at the close frame.
"""

from __future__ import annotations

import asyncio
import http
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast
from urllib.parse import unquote

from litestar.types import ASGIApp, Receive, Scope, Send
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.frames import EXTERNAL_CLOSE_CODES
from websockets.http11 import Request, Response
from websockets.protocol import State

from entrypoints.http.realtime import STALLED_CLOSE_S
from entrypoints.settings import Settings

log = logging.getLogger("chatcore.ws_listener")

# The library logs every connection at INFO; the access log already has them (request_id_middleware).
_library_log = logging.getLogger("chatcore.ws_listener.library")
_library_log.setLevel(logging.WARNING)
SHUTDOWN_S = 5.0  # how long shutdown waits for the sockets' close handshakes before dropping them
APPS_AFTER_ABORT_S = 1.0  # then how long for their apps to see the disconnect and clean up
# The whole upgrade, the app's decision included (authentication, `?cursor=` reads): more than
# the app's own worst case (database timeouts), so a slow store is the app's 503, not a reset.
HANDSHAKE_S = 20.0
MAX_CLOSE_REASON_BYTES = 123  # a close frame's payload is at most 125 bytes, 2 of them the code
# ASGI messages as the plain dicts they are: this module carries them both ways (and lifespan's),
# where Litestar's TypedDicts each type one direction.
Event = dict[str, Any]
_CONNECT: Event = {"type": "websocket.connect"}


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a failure as seen: the app may drop a send future unread once the client is gone."""
    if not future.cancelled():
        future.exception()


def _own_view(shared: asyncio.Future[Any]) -> asyncio.Future[Any]:
    """A future of its own on `shared`'s outcome: cancelling it leaves `shared` alone, and a
    failure nobody reads is not logged."""
    view = asyncio.shield(shared)
    view.add_done_callback(_retrieved)
    return view


class ClientGone(OSError):
    """A send after the client left (the ASGI spec asks for an OSError)."""


class _Socket:
    """One connection's ASGI side: the app runs in its own task from the upgrade request on,
    since it decides the handshake; the library's handler only waits for it."""

    __slots__ = (
        "_accepted",
        "_connected",
        "_drained",
        "_opened",
        "_refusal",
        "answer",
        "app",
        "connection",
        "subprotocol",
        "written",
    )

    def __init__(self, connection: ServerConnection, written: asyncio.Future[None]) -> None:
        loop = asyncio.get_running_loop()
        self.connection = connection
        self.written = written  # a finished future: what a send returns when nothing waits
        # None to accept, a Response to refuse: resolved by the app's first answer.
        self.answer: asyncio.Future[Response | None] = loop.create_future()
        # True once the 101 is out, False when the connection was lost before.
        self._opened: asyncio.Future[bool] = loop.create_future()
        # What the app's accept waits for: done once the 101 is out, ClientGone when it never was.
        self._accepted: asyncio.Future[None] = loop.create_future()
        self._accepted.add_done_callback(_retrieved)  # an app may leave without awaiting it
        # While the transport is above its high-water mark: one wait for it to drain, shared by
        # the sends of that while (not one task per frame).
        self._drained: asyncio.Future[None] | None = None
        self._connected = False
        self._refusal: tuple[int, Headers, bytearray] | None = None
        self.subprotocol: str | None = None
        self.app: asyncio.Task[None] | None = None

    def opened(self, is_open: bool) -> None:
        if not self._opened.done():
            self._opened.set_result(is_open)
        if not self._accepted.done():
            if is_open:
                self._accepted.set_result(None)
            else:  # a refusal by the library after the app's accept, a timeout, the client gone
                self._accepted.set_exception(ClientGone("the WebSocket handshake did not complete"))

    async def receive(self) -> Event:
        if not self._connected:
            self._connected = True
            return _CONNECT
        # Shielded: a receive cancelled before the 101 must not cancel the handshake's outcome.
        if not await asyncio.shield(self._opened):
            return {"type": "websocket.disconnect", "code": 1006, "reason": ""}
        try:
            data = await self.connection.recv()
        except ConnectionClosed as closed:
            got = closed.rcvd
            if got is None:
                return {"type": "websocket.disconnect", "code": 1006, "reason": ""}
            return {"type": "websocket.disconnect", "code": got.code, "reason": got.reason}
        if isinstance(data, str):
            return {"type": "websocket.receive", "text": data}
        return {"type": "websocket.receive", "bytes": data}

    def send(self, message: Event) -> Awaitable[Any]:
        kind = message["type"]
        if kind == "websocket.send":
            text, data = message.get("text"), message.get("bytes")
            if text is not None:
                return self._write(lambda protocol: protocol.send_text(text.encode()))
            return self._write(lambda protocol: protocol.send_binary(data or b""))
        if kind == "websocket.close":
            if not self.answer.done():  # a close before accept: refused, as granian does
                self.answer.set_result(_response(http.HTTPStatus.FORBIDDEN, Headers(), b""))
                return self.written
            code, reason = _sendable_close(message.get("code", 1000), message.get("reason") or "")
            return self._write(lambda protocol: protocol.send_close(code, reason))
        if kind == "websocket.accept":
            self.subprotocol = message.get("subprotocol")
            if not self.answer.done():
                self.answer.set_result(None)
            return _own_view(self._accepted)  # frames may follow once the 101 is out
        if kind == "websocket.http.response.start":
            pairs = message.get("headers", [])
            headers = Headers((k.decode("latin-1"), v.decode("latin-1")) for k, v in pairs)
            self._refusal = (message["status"], headers, bytearray())
            return self.written
        if kind == "websocket.http.response.body" and self._refusal is not None:
            status, headers, body = self._refusal
            body += message.get("body", b"")
            if not message.get("more_body", False) and not self.answer.done():
                self.answer.set_result(_response(status, headers, bytes(body)))
            return self.written
        raise RuntimeError(f"unexpected ASGI message on a WebSocket: {kind!r}")

    def _write(self, frame: Callable[[Any], None]) -> Awaitable[Any]:
        """Write the frame now; the transport's high-water mark is the only wait."""
        connection = self.connection
        if connection.protocol.state is not State.OPEN or connection.transport.is_closing():
            raise ClientGone("the WebSocket is closed")
        frame(connection.protocol)
        connection.send_data()
        if not connection.paused:
            return self.written  # shared and finished: cancelling it (`_give_up`) does nothing
        # Above the high-water mark: finished when the transport drains, failed when it is lost.
        if self._drained is None or self._drained.done():
            self._drained = asyncio.ensure_future(connection.drain())
            self._drained.add_done_callback(_retrieved)
        return _own_view(self._drained)  # one send cancelled does not cancel the others'


def _sendable_close(code: int, reason: str) -> tuple[int, str]:
    """A close frame the library can send: a code a peer may receive (else 1011), and a reason
    cut to MAX_CLOSE_REASON_BYTES on a character boundary."""
    if not (code in EXTERNAL_CLOSE_CODES or 3000 <= code < 5000):
        code = 1011
    return code, reason.encode()[:MAX_CLOSE_REASON_BYTES].decode("utf-8", "ignore")


def _response(status: int, headers: Headers, body: bytes) -> Response:
    if "Content-Length" in headers:
        del headers["Content-Length"]  # Headers keeps every value set: one, of this body
    headers["Content-Length"] = str(len(body))
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:  # a status without a standard phrase
        phrase = ""
    return Response(status, phrase, headers, body)


def _scope(connection: ServerConnection, request: Request) -> Scope:
    raw_path, _, query = request.path.partition("?")
    subprotocols = [
        p.strip() for value in request.headers.get_all("Sec-WebSocket-Protocol") for p in value.split(",")
    ]
    scope: dict[str, Any] = {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "scheme": "ws",
        "server": _address(connection.local_address),
        "client": _address(connection.remote_address),
        "root_path": "",
        "path": unquote(raw_path),
        "raw_path": raw_path.encode("latin-1"),
        "query_string": query.encode("latin-1"),
        "headers": [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in request.headers.raw_items()
        ],
        "subprotocols": [p for p in subprotocols if p],
        "extensions": {"websocket.http.response": {}},
        "state": {},
    }
    return scope  # type: ignore[return-value]


def _address(address: Any) -> tuple[str, int] | None:
    """(host, port); None when the transport no longer knows it (the peer already reset)."""
    return (address[0], address[1]) if address else None


class WebSocketListener:
    """The `websockets` server that hands each upgrade request to the ASGI app."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self._app, self._settings = app, settings
        self._server: Server | None = None
        self._sockets: dict[ServerConnection, _Socket] = {}
        self._apps: set[asyncio.Task[None]] = set()  # every app task still running
        self._closing = False
        self._written: asyncio.Future[None] | None = None

    async def start(self) -> None:
        written = self._written = asyncio.get_running_loop().create_future()
        written.set_result(None)
        settings = self._settings
        self._server = await serve(
            self._serve,
            settings.host,
            settings.ws_port,
            process_request=self._upgrade,
            select_subprotocol=self._subprotocol,
            compression=None,  # no permessage-deflate, as on granian: frames are small JSON
            max_size=settings.ws_max_frame_bytes,
            ping_interval=None,  # liveness is the app's heartbeat
            open_timeout=HANDSHAKE_S,
            # A client that stopped reading keeps its close frame this long, as on granian.
            close_timeout=STALLED_CLOSE_S,
            server_header=None,
            logger=_library_log,
            # Every granian worker listens on the port, and the kernel spreads the connections;
            # with one worker, a port another process holds is refused, not shared.
            reuse_port=settings.workers > 1,
        )
        log.info("WebSocket listener on %s:%s", settings.host, settings.ws_port)

    async def close(self) -> None:
        """Stop accepting, close the open sockets with 1001, and drop those whose close has not
        finished after SHUTDOWN_S (a client that stopped reading)."""
        server = self._server
        if server is None:
            return
        self._closing = True  # an upgrade that still arrives gets a 503, without the app
        server.close(close_connections=True)
        try:
            await asyncio.wait_for(server.wait_closed(), SHUTDOWN_S)
        except TimeoutError:
            for connection in list(self._sockets):
                connection.transport.abort()
            # The aborted sockets' apps see their disconnect on the next turns of the loop: let
            # them clean up (sessions, registries) before the runtime closes.
            if self._apps:
                await asyncio.wait(set(self._apps), timeout=APPS_AFTER_ABORT_S)
        self._server = None

    async def _upgrade(self, connection: ServerConnection, request: Request) -> Response | None:
        """Run the app until it accepts or refuses. A request the library would refuse (no
        upgrade, a bad key or version: its own 4xx) never reaches the app, so the app runs for
        exactly the requests the library would accept."""
        if self._closing:
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "Server is shutting down.\n")
        assert self._written is not None  # set by start(), before the library takes a request
        try:
            connection.protocol.process_request(request)  # the library's own checks, no side effect
        except InvalidHandshake:
            return None  # the library's accept() answers it (400, 405, 426, 505)
        socket = _Socket(connection, self._written)
        self._sockets[connection] = socket
        connection.connection_lost_waiter.add_done_callback(lambda _: self._lost(connection))
        app = socket.app = asyncio.create_task(self._run_app(socket, _scope(connection, request)))
        self._apps.add(app)
        app.add_done_callback(self._apps.discard)
        app.add_done_callback(_retrieved)  # logged by _run_app already
        either: set[asyncio.Future[Any]] = {socket.answer, app}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if socket.answer.done():
            return socket.answer.result()
        # The app ended without an answer: refused, as granian does; 500 if it raised.
        failed = not app.cancelled() and app.exception() is not None
        status = http.HTTPStatus.INTERNAL_SERVER_ERROR if failed else http.HTTPStatus.FORBIDDEN
        return _response(status, Headers(), b"")

    def _subprotocol(self, connection: ServerConnection, offered: Any) -> Any:
        socket = self._sockets.get(connection)
        return socket.subprotocol if socket is not None else None

    async def _run_app(self, socket: _Socket, scope: Scope) -> None:
        try:
            await self._app(scope, cast(Receive, socket.receive), cast(Send, socket.send))
        except ClientGone:
            log.debug("WebSocket client gone during the app's handshake or close")
        except Exception as exc:
            log.error("WebSocket app failed", exc_info=exc)
            raise

    async def _serve(self, connection: ServerConnection) -> None:
        """The library's handler, once the 101 is out: the app's task goes on; wait for it."""
        socket = self._sockets.get(connection)
        if socket is None or socket.app is None:
            return
        socket.opened(True)
        await socket.app  # cancelled with it when the library stops the handler

    def _lost(self, connection: ServerConnection) -> None:
        socket = self._sockets.pop(connection, None)
        if socket is not None:
            socket.opened(False)  # a handshake that never finished: the app sees a disconnect


def with_websocket_listener(app: ASGIApp, settings: Settings) -> ASGIApp:
    """The outermost layer when `ws_port` is set: the listener starts once the app has started
    (its runtime is open), and closes its sockets with 1001 before the app's shutdown. When the
    port cannot be bound, the app is shut down again (its runtime closed) and the server is told
    that start-up failed, naming the setting."""
    listener = WebSocketListener(app, settings)

    async def asgi(
        scope: Event, receive: Callable[[], Awaitable[Event]], send: Callable[[Event], Awaitable[None]]
    ) -> None:
        if scope["type"] != "lifespan":
            await app(cast(Scope, scope), cast(Receive, receive), cast(Send, send))
            return
        failure: str | None = None

        async def lifespan_receive() -> Event:
            if failure is not None:  # the port was refused: the app shuts down at once
                return {"type": "lifespan.shutdown"}
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await listener.close()  # while the runtime is still open: the sessions end cleanly
            return message

        async def lifespan_send(message: Event) -> None:
            nonlocal failure
            if message["type"] == "lifespan.startup.complete":
                try:
                    await listener.start()
                except OSError as exc:
                    failure = f"CHATCORE_WS_PORT: {exc}"
                    return  # the app is told to shut down; the server hears of it after that
            elif message["type"] == "lifespan.shutdown.complete" and failure is not None:
                message = {"type": "lifespan.startup.failed", "message": failure}
            await send(message)

        await app(cast(Scope, scope), cast(Receive, lifespan_receive), cast(Send, lifespan_send))

    return cast(ASGIApp, asgi)
