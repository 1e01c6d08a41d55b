"""Liveness and readiness: `/healthz` answers while the process runs, `/readyz` asks the adapters."""

from __future__ import annotations

from typing import Any

from litestar import Response
from litestar.datastructures import State

from entrypoints.http.errors import problem_response
from entrypoints.http.routing import get
from entrypoints.http.schemas import Health
from entrypoints.problems import problem


@get("/healthz", opt={"public": True}, tags=["health"])
async def healthz() -> Health:
    return Health(status="ok")


@get("/readyz", opt={"public": True}, tags=["health"])
async def readyz(state: State) -> Response[Any]:
    if await state.runtime.ready():
        return Response(Health(status="ok"))
    return problem_response(problem(503, "not-ready", "Service Unavailable", "storage is not reachable"))
