"""The app factory granian calls in each worker: settings from the environment, then the app."""

from __future__ import annotations

from litestar.types import ASGIApp

from entrypoints.container import build_container
from entrypoints.http import create_app
from entrypoints.http.middleware import keep_server_send
from entrypoints.logs import configure_logging
from entrypoints.settings import load_settings


def app_factory() -> ASGIApp:
    settings = load_settings()
    configure_logging(settings.log_level)
    return keep_server_send(create_app(build_container(settings)))
