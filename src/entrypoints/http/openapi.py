"""OpenAPI: the schema config, and the problem+json error responses each operation can return."""

from __future__ import annotations

import inspect
from typing import Any

from litestar import Router
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme

from entrypoints.http.errors import PROBLEM_JSON
from entrypoints.http.guards import PUBLIC, is_public
from entrypoints.problems import Problem

SCHEMA_PATH = "/schema"

_DESCRIPTIONS = {
    400: "The body is not valid JSON",
    401: "Missing, invalid or expired access token",
    403: "The caller lacks the permission named in `permission`",
    404: "No such object, or the caller may not know it exists",
    409: "The request contradicts the current state",
    410: "The message was deleted",
    413: "The request body exceeds the configured size",
    415: "The body is not application/json",
    422: "A field is invalid; `field` names it",
    429: "Too many requests; see Retry-After",
}


def _spec(status: int) -> ResponseSpec:
    return ResponseSpec(
        Problem, description=_DESCRIPTIONS[status], media_type=PROBLEM_JSON, generate_examples=False
    )


# Public routes that check a credential of their own (a password, a refresh token, a mailed code
# or link) and answer 401 when it is wrong.
_CHECKS_CREDENTIAL = frozenset(
    ("login", "refresh", "verify_email_code", "verify_email_link", "verify_email", "reset_password")
)


def document_problems(handler: HTTPRouteHandler) -> None:
    """Add the error responses and security requirement of one operation (idempotent)."""
    statuses = {422, 429}
    if not is_public(handler):
        statuses |= {401, 403, 404, 409}
        handler.security = [{"bearer": []}]
    elif handler.handler_name in _CHECKS_CREDENTIAL:
        statuses.add(401)
    if "data" in inspect.signature(handler.fn).parameters:
        statuses |= {400, 413, 415}
    if handler.handler_name in ("get_message", "get_edit_history", "edit_message", "delete_message"):
        statuses.add(410)
    handler.responses = {**{s: _spec(s) for s in sorted(statuses)}, **(handler.responses or {})}


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="chatcore",
        version="1",
        description="Chat backend REST API. Errors are RFC 9457 application/problem+json.",
        path=SCHEMA_PATH,
        render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin()],
        # The documentation pages are not API operations: keep them out of the document itself.
        openapi_router=Router(SCHEMA_PATH, route_handlers=[], opt={PUBLIC: True}, include_in_schema=False),
        components=Components(
            security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT")}
        ),
    )


def handlers_of(route_handlers: list[Any]) -> list[HTTPRouteHandler]:
    found = []
    for item in route_handlers:
        if isinstance(item, HTTPRouteHandler):
            found.append(item)
        elif isinstance(item, type):
            found += [v for v in vars(item).values() if isinstance(v, HTTPRouteHandler)]
    return found
