"""The route decorators every handler of the app uses: Litestar's, without a copy per guard.

Litestar 2 runs each guard with a copy of the route handler (`BaseRouteHandler.authorize_connection`
calls `guard(connection, copy(handler))`), so that a guard cannot change the handler. Our one guard
(`guards.authenticated`) only reads the handler's `opt`, and the copy, a generic `copy.copy` of
an object with some sixty attributes, cost about 5 % of a send and more of a simple read, on every
request. The handlers made here hand the guard the handler itself.

`get`, `post`, … take what Litestar's take and make the same handler (the method decides the
default status, as there), of a subclass. They are functions, not subclasses of Litestar's
semantic classes, which Litestar 2 deprecates (3.0 makes its own decorators functions too).
Import them from here, not from litestar: ruff's banned-api rule says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from litestar.connection import ASGIConnection
from litestar.enums import HttpMethod
from litestar.handlers import HTTPRouteHandler, WebsocketRouteHandler


async def _run_guards(handler: Any, connection: ASGIConnection[Any, Any, Any, Any]) -> None:
    for guard in handler.resolve_guards():
        await guard(connection, handler)


class RouteHandler(HTTPRouteHandler):
    async def authorize_connection(self, connection: ASGIConnection[Any, Any, Any, Any]) -> None:
        await _run_guards(self, connection)


class SocketHandler(WebsocketRouteHandler):
    async def authorize_connection(self, connection: ASGIConnection[Any, Any, Any, Any]) -> None:
        await _run_guards(self, connection)


Path = str | Sequence[str] | None


def _method(method: HttpMethod) -> Callable[..., RouteHandler]:
    def decorator(path: Path = None, **kwargs: Any) -> RouteHandler:
        return RouteHandler(path, http_method=method, **kwargs)

    decorator.__name__ = method.value.lower()
    return decorator


get = _method(HttpMethod.GET)
post = _method(HttpMethod.POST)
put = _method(HttpMethod.PUT)
patch = _method(HttpMethod.PATCH)
delete = _method(HttpMethod.DELETE)


def websocket(path: str | list[str] | None = None, **kwargs: Any) -> SocketHandler:
    return SocketHandler(path, **kwargs)
