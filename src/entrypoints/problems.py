"""Domain errors -> RFC 9457 problems: the one table every transport (REST, WebSocket) maps with.

Transport-neutral on purpose: the HTTP layer turns a `Problem` into `application/problem+json`,
the WebSocket layer into an error frame, from the same `problem_for`.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

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

TYPE_PREFIX = "urn:chatcore:problem:"


class Problem(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The body of an error response (RFC 9457), plus our extension members."""

    type: str
    title: str
    status: int
    detail: str = ""
    field: str | None = None  # InvalidInput / LimitExceeded: the request field at fault
    permission: str | None = None  # PermissionDenied: the permission the caller lacks
    limit: int | None = None  # LimitExceeded: the configured limit
    errors: list[dict[str, str]] | None = None  # request validation: one entry per field
    retry_after_s: int | None = None  # RateLimited

    @property
    def headers(self) -> dict[str, str]:
        headers = {}
        if self.retry_after_s is not None:
            headers["Retry-After"] = str(self.retry_after_s)
        if self.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return headers


# (status, slug, title) per domain error class; subclasses before their bases is not needed:
# the lookup walks the exception's MRO, so the most specific entry wins.
ERROR_TABLE: dict[type[DomainError], tuple[int, str, str]] = {
    NotFound: (404, "not-found", "Not Found"),
    Gone: (410, "gone", "Gone"),
    PermissionDenied: (403, "permission-denied", "Permission Denied"),
    Conflict: (409, "conflict", "Conflict"),
    InvalidInput: (422, "invalid-input", "Invalid Input"),
    LimitExceeded: (422, "limit-exceeded", "Limit Exceeded"),
    Unauthenticated: (401, "unauthenticated", "Unauthenticated"),
    RateLimited: (429, "rate-limited", "Too Many Requests"),
}


def problem(status: int, slug: str, title: str, detail: str = "", **extra: Any) -> Problem:
    return Problem(type=TYPE_PREFIX + slug, title=title, status=status, detail=detail, **extra)


INTERNAL_ERROR = problem(500, "internal-error", "Internal Server Error", "an unexpected error occurred")
# The database did not answer in time: nothing was stored, and a retry soon may succeed.
STORE_RETRY_AFTER_S = 2
UNAVAILABLE = problem(
    503,
    "unavailable",
    "Service Unavailable",
    "the database is unreachable; nothing was stored, retry later",
    retry_after_s=STORE_RETRY_AFTER_S,
)


def log_failure(logger: logging.Logger, exc: BaseException, message: str, *args: object) -> None:
    """Log an error that becomes a 5xx. A database outage is expected and refuses every request
    while it lasts: one WARNING line with its reason, no traceback, so it does not flood the log
    or hide a real bug. Anything else is unexpected: ERROR with the traceback."""
    if isinstance(exc, StoreUnavailable):
        logger.warning(message + ": database unavailable (%s)", *args, exc)
    else:
        logger.error(message, *args, exc_info=exc)


def problem_for(exc: BaseException) -> Problem:
    """The problem for a domain error; the generic 500 for anything else (never its message)."""
    for cls in type(exc).__mro__:
        entry = ERROR_TABLE.get(cls)
        if entry is not None:
            break
    else:
        return UNAVAILABLE if isinstance(exc, StoreUnavailable) else INTERNAL_ERROR
    status, slug, title = entry
    detail = exc.detail if isinstance(exc, DomainError) else ""
    extra: dict[str, Any] = {}
    if isinstance(exc, InvalidInput):
        extra["field"] = exc.field
    if isinstance(exc, LimitExceeded):
        extra["limit"] = exc.limit
    if isinstance(exc, PermissionDenied):
        extra["permission"] = exc.permission
    if isinstance(exc, RateLimited):
        extra["retry_after_s"] = exc.retry_after_s
    return problem(status, slug, title, detail, **extra)
