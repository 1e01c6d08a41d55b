"""Request ids: taken from a sane `X-Request-ID` or generated, echoed back, and put in every log line."""

from __future__ import annotations

import itertools
import logging
import os
import re
import time

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from entrypoints.logs import reset_request_id, set_request_id

access_log = logging.getLogger("chatcore.access")

_SANE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
HEADER = b"x-request-id"
# The server's own send, kept in a WebSocket's scope by `keep_server_send`.
SERVER_SEND = "chatcore.server_send"


class _RequestIds:
    """32 hex digits: a random prefix per process, then a counter. Unique without a system call
    per request (uuid4 reads the OS's randomness: a call that lets granian's thread take the GIL);
    a request id correlates log lines and is no secret."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # a forked worker gets its own prefix

    def _reset(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count()

    def new(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


new_request_id = _RequestIds().new


def request_id_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(HEADER, b"").decode("latin-1")
        rid = incoming if _SANE_ID.match(incoming) else new_request_id()
        scope.setdefault("state", {})["request_id"] = rid
        token = set_request_id(rid)
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (HEADER, rid.encode())]
            await send(message)

        try:
            # A websocket's frames go straight out: a wrapper would cost a call per frame of
            # every fan-out, and there is no response header to add (the access line still
            # gets the id, the path and the socket's lifetime).
            await app(scope, receive, send_with_id if scope["type"] == ScopeType.HTTP else send)
        finally:
            # The path only: query strings may carry one-time tokens (magic links).
            access_log.info(
                "request",
                extra={
                    "request_id": rid,
                    "method": scope.get("method", "WS"),
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )
            reset_request_id(token)

    return middleware


def keep_server_send(app: ASGIApp) -> ASGIApp:
    """The outermost layer under `chatcore serve`: keeps the server's own send in a WebSocket's
    scope, before Litestar wraps it in coroutines (which start nothing until awaited), so that
    the real-time transport can hand it frames without a task per frame
    (`entrypoints.http.realtime.Connection`). Without it (a test client), frames are awaited."""

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.WEBSOCKET:
            scope[SERVER_SEND] = send  # type: ignore[literal-required]
        await app(scope, receive, send)

    return asgi
