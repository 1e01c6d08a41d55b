"""The documentation keeps up with the code."""

from __future__ import annotations

import re
from pathlib import Path

from entrypoints.container import build_container
from entrypoints.http.app import create_app
from entrypoints.settings import Settings

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_the_auth_pathways_doc_lists_every_auth_route() -> None:
    app = create_app(build_container(Settings(database_url="memory://")))
    documented = set(
        re.findall(r"`(GET|POST|PUT|PATCH|DELETE) (/v1/auth/[^`]*)`", (DOCS / "auth.md").read_text())
    )
    routes = {
        (method, re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path))
        for route in app.routes
        if route.path.startswith("/v1/auth")
        for method in route.methods - {"OPTIONS", "HEAD"}
    }
    assert routes, "no auth routes found"
    assert routes - documented == set(), "auth routes missing from docs/auth.md"
    assert documented - routes == set(), "docs/auth.md lists routes that do not exist"
