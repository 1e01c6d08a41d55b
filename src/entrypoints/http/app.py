"""The Litestar application, built by `create_app(container)` from the composition root."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar
from litestar.config.cors import CORSConfig

from entrypoints.container import Container
from entrypoints.http.auth import AuthController
from entrypoints.http.chats import ChatController
from entrypoints.http.deps import DEPENDENCIES
from entrypoints.http.errors import EXCEPTION_HANDLERS
from entrypoints.http.groups import GroupController
from entrypoints.http.guards import authenticated, require_json_body
from entrypoints.http.health import healthz, readyz
from entrypoints.http.messages import MessageController
from entrypoints.http.middleware import request_id_middleware
from entrypoints.http.notifications import unsubscribe
from entrypoints.http.openapi import document_problems, handlers_of, openapi_config
from entrypoints.http.realtime import ROUTES as REALTIME_ROUTES
from entrypoints.http.users import UserController


def route_handlers() -> list[Any]:
    """Every controller and route of the API."""
    return [
        healthz,
        readyz,
        AuthController,
        UserController,
        GroupController,
        ChatController,
        MessageController,
        unsubscribe,
        *REALTIME_ROUTES,  # /v1/ws, /v1/updates, /schema/asyncapi.json
    ]


def create_app(container: Container) -> Litestar:
    """The app for one process. Adapters are opened in the lifespan, on the app's own event loop."""
    settings = container.settings()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        try:
            async with container.runtime() as runtime:
                app.state.runtime = runtime
                try:
                    yield
                finally:
                    del app.state.runtime
        finally:
            # granian's worker processes exit without running atexit: the log lines still
            # batched in memory (entrypoints.logs.BatchedHandler) are written now.
            for handler in logging.getLogger().handlers:
                handler.flush()

    handlers = route_handlers()
    for handler in handlers_of(handlers):
        document_problems(handler)
    cors = CORSConfig(allow_origins=settings.cors_origins) if settings.cors_origins else None
    return Litestar(
        route_handlers=handlers,
        lifespan=[lifespan],
        guards=[authenticated],
        before_request=require_json_body,
        dependencies=DEPENDENCIES,
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[request_id_middleware],
        openapi_config=openapi_config(),
        cors_config=cors,
        request_max_body_size=settings.max_request_body_bytes,
        debug=False,
        logging_config=None,  # the process owns logging (entrypoints.logs), not the app
    )
