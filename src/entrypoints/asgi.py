"""The app factory granian calls in each worker: settings from the environment, then the app
(and, with `ws_port`, the dedicated WebSocket listener around it)."""

from __future__ import annotations

from litestar.types import ASGIApp

from entrypoints.container import build_container
from entrypoints.http import create_app
from entrypoints.http.middleware import keep_server_send
from entrypoints.logs import configure_logging
from entrypoints.settings import load_settings
from entrypoints.ws_listener import with_websocket_listener


def app_factory() -> ASGIApp:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_flush_s)
    app = keep_server_send(create_app(build_container(settings)))
    return app if settings.ws_port is None else with_websocket_listener(app, settings)
