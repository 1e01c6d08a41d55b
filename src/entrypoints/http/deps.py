"""Dependency providers: the bridge from the composition root's Runtime to handler parameters."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide

from chatcore.application.service import ChatService

# Handler parameter types: the name selects the provider below.
Service = NamedDependency[ChatService]
Actor = NamedDependency[str]


def provide_service(state: State) -> ChatService:
    service: ChatService = state.runtime.service
    return service


def provide_actor(request: Request[Any, Any, Any], service: Service) -> str:
    """The authenticated user's id (set by the authentication guard).

    It takes `service` only so that Litestar resolves the two one after the other: dependencies
    without dependencies between them are resolved concurrently, in an anyio task group with a
    task each, which costs more per request than both providers together.
    """
    del service
    user_id: str = request.state.user_id
    return user_id


DEPENDENCIES = {
    "service": Provide(provide_service, sync_to_thread=False),
    "actor": Provide(provide_actor, sync_to_thread=False),
}
