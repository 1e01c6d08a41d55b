"""The dedicated WebSocket listener (`CHATCORE_WS_PORT`): the app's WebSocket routes on a port of
their own, served by the `websockets` library on granian's worker loop, beside granian's port.

Why: granian 2.8.9 holds about 150 KiB per idle WebSocket (128 KiB of it is tungstenite's read
buffer, which granian allocates at its default size and gives no setting for); the `websockets`
library holds about 10 KiB, and a chatcore socket on this port 30.5 KiB in all. Idle sockets are
most of a chat server's memory, so a deployment with many of them routes `/v1/ws` to this port
(bench/README.md has the figures).

The same ASGI app serves both ports: the handshake checks, the limits, the close codes and the
protocol are the app's (`entrypoints.http.realtime`). This module only carries ASGI messages:
- the upgrade request becomes a `websocket` scope, with the `websocket.http.response` extension;
- the app's `websocket.accept` lets the 101 go out (with the subprotocol it chose); its
  `websocket.http.response.*` is sent as that HTTP response instead; a close before accept is a
  403, as on granian;
- `websocket.send` and `websocket.close` write their frame at once, as the library's own
  `broadcast` does, so a fan-out costs no task per socket; the send returns a finished future,
  or, while the transport is above its high-water mark, one that finishes when it drains (the
  app's send timeout and queue see a stalled client as they do on granian);
- a received frame is `websocket.receive`; the client's close or a lost connection is
  `websocket.disconnect`.
The library enforces the frame size itself (`max_size`: 1009 before the frame is buffered) and
sends no pings (liveness is the app's heartbeat, the same on both ports). Unlike granian, on
shutdown the sockets that are still open get a 1001 close frame.
"""

from __future__ import annotations

import asyncio
import http
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from litestar.types import ASGIApp, Message, Receive, Scope, Send
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from entrypoints.http.realtime import STALLED_CLOSE_S
from entrypoints.settings import Settings

log = logging.getLogger("chatcore.ws_listener")

# The library logs every connection at INFO; the access log already has them (request_id_middleware).
_library_log = logging.getLogger("chatcore.ws_listener.library")
_library_log.setLevel(logging.WARNING)
SHUTDOWN_S = 5.0  # how long shutdown waits for the sockets' close handshakes before dropping them
_CONNECT: Message = {"type": "websocket.connect"}


class ClientGone(OSError):
    """A send after the client left (the ASGI spec asks for an OSError)."""


class _Socket:
    """One connection's ASGI side: the app runs in its own task from the upgrade request on,
    since it decides the handshake; the library's handler only waits for it."""

    __slots__ = ("_connected", "_opened", "_refusal", "answer", "app", "connection", "subprotocol", "written")

    def __init__(self, connection: ServerConnection, written: asyncio.Future[None]) -> None:
        loop = asyncio.get_running_loop()
        self.connection = connection
        self.written = written  # a finished future: what a send returns when nothing waits
        # None to accept, a Response to refuse: resolved by the app's first answer.
        self.answer: asyncio.Future[Response | None] = loop.create_future()
        # True once the 101 is out, False when the connection was lost before.
        self._opened: asyncio.Future[bool] = loop.create_future()
        self._connected = False
        self._refusal: tuple[int, Headers, bytearray] | None = None
        self.subprotocol: str | None = None
        self.app: asyncio.Task[None] | None = None

    def opened(self, is_open: bool) -> None:
        if not self._opened.done():
            self._opened.set_result(is_open)

    async def receive(self) -> Message:
        if not self._connected:
            self._connected = True
            return _CONNECT
        if not await self._opened:
            return {"type": "websocket.disconnect", "code": 1006, "reason": ""}
        try:
            data = await self.connection.recv()
        except ConnectionClosed as closed:
            got = closed.rcvd
            return {"type": "websocket.disconnect", "code": got.code if got else 1006, "reason": ""}
        if isinstance(data, str):
            return {"type": "websocket.receive", "text": data}
        return {"type": "websocket.receive", "bytes": data}

    def send(self, message: Message) -> Awaitable[Any]:
        kind = message["type"]
        if kind == "websocket.send":
            text, data = message.get("text"), message.get("bytes")
            if text is not None:
                return self._write(lambda protocol: protocol.send_text(text.encode()))
            return self._write(lambda protocol: protocol.send_binary(data or b""))
        if kind == "websocket.close":
            code, reason = message.get("code", 1000), message.get("reason") or ""
            if not self.answer.done():  # a close before accept: refused, as granian does
                self.answer.set_result(_response(http.HTTPStatus.FORBIDDEN, Headers(), b""))
                return self.written
            return self._write(lambda protocol: protocol.send_close(code, reason))
        if kind == "websocket.accept":
            self.subprotocol = message.get("subprotocol")
            if not self.answer.done():
                self.answer.set_result(None)
            return self._opened  # frames may follow once the 101 is out
        if kind == "websocket.http.response.start":
            headers = Headers((k.decode("latin-1"), v.decode("latin-1")) for k, v in message["headers"])
            self._refusal = (message["status"], headers, bytearray())
            return self.written
        if kind == "websocket.http.response.body" and self._refusal is not None:
            status, headers, body = self._refusal
            body += message.get("body", b"")
            if not message.get("more_body", False) and not self.answer.done():
                self.answer.set_result(_response(http.HTTPStatus(status), headers, bytes(body)))
            return self.written
        raise RuntimeError(f"unexpected ASGI message on a WebSocket: {kind!r}")

    def _write(self, frame: Callable[[Any], None]) -> Awaitable[Any]:
        """Write the frame now; the transport's high-water mark is the only wait."""
        connection = self.connection
        if connection.protocol.state is not State.OPEN:
            raise ClientGone("the WebSocket is closed")
        frame(connection.protocol)
        connection.send_data()
        if connection.paused:  # above the high-water mark: finished when it drains
            return asyncio.ensure_future(connection.drain())
        return self.written


def _response(status: http.HTTPStatus, headers: Headers, body: bytes) -> Response:
    if "Content-Length" in headers:
        del headers["Content-Length"]  # Headers keeps every value set: one, of this body
    headers["Content-Length"] = str(len(body))
    return Response(status.value, status.phrase, headers, body)


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
        "server": tuple(connection.local_address[:2]),
        "client": tuple(connection.remote_address[:2]),
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


class WebSocketListener:
    """The `websockets` server that hands each upgrade request to the ASGI app."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self._app, self._settings = app, settings
        self._server: Server | None = None
        self._sockets: dict[ServerConnection, _Socket] = {}
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
        server.close(close_connections=True)
        try:
            await asyncio.wait_for(server.wait_closed(), SHUTDOWN_S)
        except TimeoutError:
            for connection in list(self._sockets):
                connection.transport.abort()
        self._server = None

    async def _upgrade(self, connection: ServerConnection, request: Request) -> Response | None:
        """Run the app until it accepts or refuses; a request that is no upgrade is the library's."""
        if request.headers.get("Upgrade", "").lower() != "websocket" or self._written is None:
            return None  # the library answers 426
        socket = _Socket(connection, self._written)
        self._sockets[connection] = socket
        connection.connection_lost_waiter.add_done_callback(lambda _: self._lost(connection))
        socket.app = asyncio.create_task(self._run_app(socket, _scope(connection, request)))
        await asyncio.wait({socket.answer, socket.app}, return_when=asyncio.FIRST_COMPLETED)
        if socket.answer.done():
            return socket.answer.result()
        return _response(http.HTTPStatus.INTERNAL_SERVER_ERROR, Headers(), b"")

    def _subprotocol(self, connection: ServerConnection, offered: Any) -> Any:
        socket = self._sockets.get(connection)
        return socket.subprotocol if socket is not None else None

    async def _run_app(self, socket: _Socket, scope: Scope) -> None:
        try:
            await self._app(scope, socket.receive, socket.send)
        except Exception as exc:
            log.error("WebSocket app failed", exc_info=exc)

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
    (its runtime is open), and closes its sockets with 1001 before the app's shutdown."""
    listener = WebSocketListener(app, settings)

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return

        async def lifespan_receive() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await listener.close()  # while the runtime is still open: the sessions end cleanly
            return message

        async def lifespan_send(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                try:
                    await listener.start()
                except OSError as exc:
                    message = {"type": "lifespan.startup.failed", "message": f"CHATCORE_WS_PORT: {exc}"}
            await send(message)

        await app(scope, lifespan_receive, lifespan_send)

    return asgi
