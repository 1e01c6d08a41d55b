"""The one error table (shared by REST and, later, WebSocket error frames)."""

from __future__ import annotations

import pytest

from chatcore.domain.errors import (
    Conflict,
    DomainError,
    Gone,
    InvalidInput,
    LimitExceeded,
    NotFound,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
)
from chatcore.ports.errors import StoreUnavailable
from entrypoints.problems import INTERNAL_ERROR, STORE_RETRY_AFTER_S, problem_for
from tests.integration.test_http_support import bounded

__all__ = ["bounded"]


@pytest.mark.parametrize(
    ("error", "status", "extra"),
    [
        (NotFound("chat"), 404, {}),
        (Gone("message"), 410, {}),
        (PermissionDenied("delete_any_message"), 403, {"permission": "delete_any_message"}),
        (Conflict("owner must transfer"), 409, {}),
        (InvalidInput("title", "bad"), 422, {"field": "title"}),
        (LimitExceeded("body", 4000), 422, {"field": "body", "limit": 4000}),
        (Unauthenticated(), 401, {}),
        (RateLimited(30), 429, {"retry_after_s": 30}),
    ],
)
def test_each_domain_error_has_one_problem(error: DomainError, status: int, extra: dict[str, object]) -> None:
    p = problem_for(error)
    assert p.status == status
    assert p.type.startswith("urn:chatcore:problem:")
    assert p.detail == error.detail
    for key, value in extra.items():
        assert getattr(p, key) == value


def test_headers_for_401_and_429() -> None:
    assert problem_for(Unauthenticated()).headers == {"WWW-Authenticate": "Bearer"}
    assert problem_for(RateLimited(3)).headers == {"Retry-After": "3"}


def test_anything_else_is_a_generic_500() -> None:
    assert problem_for(RuntimeError("db password is hunter2")) == INTERNAL_ERROR
    assert "hunter2" not in INTERNAL_ERROR.detail


def test_not_found_never_says_why() -> None:
    assert problem_for(NotFound("chat")) == problem_for(NotFound("chat"))


def test_an_unreachable_database_is_a_503_with_retry_after() -> None:
    unavailable = problem_for(StoreUnavailable("connection refused"))
    assert (unavailable.status, unavailable.headers["Retry-After"]) == (503, str(STORE_RETRY_AFTER_S))
    assert "connection refused" not in unavailable.detail  # the driver's words stay in the log
