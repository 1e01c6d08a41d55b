"""The REST API: `create_app(container)` builds the Litestar app."""

from entrypoints.http.app import create_app

__all__ = ["create_app"]
