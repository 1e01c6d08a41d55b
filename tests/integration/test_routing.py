"""The app's route decorators (entrypoints.http.routing): guards get the handler, not a copy."""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.routes import HTTPRoute
from litestar.testing import TestClient

from entrypoints.container import build_container
from entrypoints.http.app import create_app
from entrypoints.http.routing import RouteHandler, SocketHandler, get
from entrypoints.settings import Settings


def test_a_guard_is_handed_the_route_handler_itself() -> None:
    seen: list[BaseRouteHandler] = []

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        seen.append(handler)

    @get("/x", guards=[guard], opt={"k": "v"})
    async def route() -> str:
        return "ok"

    with TestClient(Litestar([route])) as client:
        assert client.get("/x").text == "ok"
        assert client.get("/x").text == "ok"
    assert len(seen) == 2 and seen[0] is seen[1]
    assert seen[0].opt["k"] == "v" and seen[0].handler_name == "route"


def test_every_route_of_the_app_uses_those_decorators() -> None:
    app = create_app(build_container(Settings(database_url="memory://")))
    ours = [
        handler
        for route in app.routes
        for handler in (route.route_handlers if isinstance(route, HTTPRoute) else [route.route_handler])
        # Not Litestar's own: the OPTIONS answers it generates and its OpenAPI pages.
        if handler.handler_name != "options_handler" and not handler.fn.__module__.startswith("litestar.")
    ]
    assert len(ours) > 40
    assert [h.handler_name for h in ours if not isinstance(h, RouteHandler | SocketHandler)] == []
