"""The guard: who is calling (authentication), and may they do this (the domain's `authorize`).

One app-wide guard, `authenticated`, runs on every route except the explicit allow-list
(`opt={"public": True}` on the handler or its router). A route that needs a permission declares
it with `opt=requires(permission)`; the same guard then loads the chat or group named in the path
and asks `chatcore.domain.permissions.authorize` — the same function the use cases call, so no
rule is written twice. An outsider gets the same NotFound as for a nonexistent id.

One guard rather than one per concern: each guard is a call and an await on every request.
Litestar would also copy the route handler for each (`BaseRouteHandler.authorize_connection`);
the app's decorators (`entrypoints.http.routing`) hand the guard the handler itself, which it
only reads.
"""

from __future__ import annotations

from typing import Any

from litestar import Response
from litestar.connection import ASGIConnection, Request
from litestar.exceptions import HTTPException
from litestar.handlers.base import BaseRouteHandler
from litestar.routes import HTTPRoute

from chatcore.application.common import load_chat_for, load_group
from chatcore.domain.errors import Unauthenticated
from chatcore.domain.permissions import CHAT_SCOPE, Permission, authorize
from entrypoints.container import Runtime

PUBLIC = "public"
PERMISSION = "permission"


def runtime_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Runtime:
    runtime: Runtime = connection.app.state.runtime
    return runtime


def is_public(handler: BaseRouteHandler) -> bool:
    return bool(handler.opt.get(PUBLIC))


def bearer_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 4096:
        raise Unauthenticated()
    return token


async def authenticated(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """App-wide guard: every non-public route needs a valid access token of a live session, and
    the permission the route declares (`opt=requires(...)`) on the chat or group in its path."""
    if is_public(handler):
        return
    runtime = runtime_of(connection)
    user_id, session_id = await runtime.authenticate(bearer_token(connection))
    connection.state.user_id = user_id
    connection.state.session_id = session_id
    permission: Permission | None = handler.opt.get(PERMISSION)
    if permission is not None:
        await _authorize(runtime, user_id, permission, connection.path_params)


def requires(permission: Permission) -> dict[str, Permission]:
    """A route's `opt`: only callers the domain grants `permission` get through the guard.

    Chat-scope permissions read `chat_id` from the path; group-scope ones read `group_id`.
    """
    return {PERMISSION: permission}


async def _authorize(runtime: Runtime, actor: str, permission: Permission, path: dict[str, Any]) -> None:
    async with runtime.service.deps.reader() as uow:
        if permission in CHAT_SCOPE:
            # Only the actor's own membership decides: a large chat is not decoded whole.
            chat, group = await load_chat_for(uow, path["chat_id"], actor)
            authorize(actor, chat, group, permission)
        else:
            authorize(actor, None, await load_group(uow, path["group_id"]), permission)


JSON_TYPES = ("application/json",)


def _allow_response(request: Request[Any, Any, Any]) -> Response[None]:
    """OPTIONS with every method of the path. Litestar 2's generated OPTIONS handler keeps the
    methods of the first handler registered on a path only (litestar#4169, fixed in v3), so the
    answer is built here from the final route that holds the handler."""
    handler = request.route_handler
    methods = next(
        (r.methods for r in request.app.routes if isinstance(r, HTTPRoute) and handler in r.route_handlers),
        {"OPTIONS"},
    )
    return Response(None, status_code=204, headers={"Allow": ", ".join(sorted(methods))})


async def require_json_body(request: Request[Any, Any, Any]) -> Response[None] | None:
    """before_request hook: a route that reads a body accepts JSON only (415 otherwise).

    It also answers the generated OPTIONS handlers with the path's full `Allow` (see above)."""
    handler = request.route_handler
    if request.method == "OPTIONS" and handler.handler_name == "options_handler":
        return _allow_response(request)
    if "data" not in handler.parsed_fn_signature.parameters:
        return None
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type not in JSON_TYPES and not (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        raise HTTPException(status_code=415, detail="the request body must be application/json")
    return None
