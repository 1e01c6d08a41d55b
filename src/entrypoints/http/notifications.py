"""Notification preferences reached from a mail: the unsubscribe link's landing call (no login)."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.status_codes import HTTP_200_OK

from chatcore.application.notifications import UnsubscribeCommand, Unsubscribed
from entrypoints.http.guards import PUBLIC, runtime_of
from entrypoints.http.routing import post
from entrypoints.http.schemas import JSONBody
from entrypoints.http.schemas import Request as Body


class UnsubscribeRequest(Body, frozen=True, kw_only=True):
    token: str


@post("/v1/notifications/unsubscribe", opt={PUBLIC: True}, status_code=HTTP_200_OK)
async def unsubscribe(request: Request[Any, Any, Any], data: JSONBody[UnsubscribeRequest]) -> Unsubscribed:
    """Turn off the kind of mail the link came in. POST only: mail scanners follow GET links."""
    return await runtime_of(request).unsubscribe(UnsubscribeCommand(token=data.token))
