"""The HTTP side of error mapping: every exception becomes `application/problem+json`, here only."""

from __future__ import annotations

import logging
import re
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from chatcore.domain.errors import DomainError
from entrypoints.logs import request_id
from entrypoints.problems import Problem, log_failure, problem, problem_for

log = logging.getLogger("chatcore.http")
security_log = logging.getLogger("chatcore.security")

PROBLEM_JSON = "application/problem+json"

_HTTP_SLUGS = {
    400: ("bad-request", "Bad Request"),
    401: ("unauthenticated", "Unauthenticated"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not Found"),
    405: ("method-not-allowed", "Method Not Allowed"),
    413: ("request-too-large", "Content Too Large"),
    415: ("unsupported-media-type", "Unsupported Media Type"),
    422: ("invalid-input", "Invalid Input"),
    429: ("rate-limited", "Too Many Requests"),
}

_FIELD_IN_MESSAGE = re.compile(r"(?:unknown|missing required) field `([^`]+)`")


def problem_response(p: Problem, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(
        content=p, status_code=p.status, media_type=PROBLEM_JSON, headers={**p.headers, **(headers or {})}
    )


def _field_of(error: dict[str, Any]) -> str:
    message = str(error.get("message", ""))
    named = _FIELD_IN_MESSAGE.search(message)
    if named:
        return named[1]
    key = str(error.get("key") or "")
    return "" if key == "data" else key


def _validation_problem(exc: ValidationException) -> Problem:
    errors = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(item, dict):
            errors.append({"field": _field_of(item), "detail": str(item.get("message", ""))})
    first = errors[0] if errors else {"field": "", "detail": "the request is invalid"}
    return problem(
        422,
        "invalid-input",
        "Invalid Input",
        first["detail"],
        field=first["field"] or None,
        errors=errors or None,
    )


def _http_problem(exc: HTTPException) -> Problem:
    status = exc.status_code
    if isinstance(exc, ValidationException) and status == 400:
        return _validation_problem(exc)
    slug, title = _HTTP_SLUGS.get(status, ("http-error", "HTTP Error"))
    detail = exc.detail if status < 500 else ""
    if status == 400 and detail.startswith("JSON is malformed"):
        detail = "the request body is not valid JSON"
    return problem(status, slug, title, detail)


def handle_domain_error(request: Request[Any, Any, Any], exc: DomainError) -> Response[Any]:
    p = problem_for(exc)
    if p.status in (401, 403, 404):
        user = getattr(request.state, "user_id", None)
        security_log.info(
            "access denied",
            extra={
                "request_id": request_id(),
                "status": p.status,
                "user_id": user,
                "client_ip": request.client.host if request.client else None,
                "path": request.scope["path"],
                "permission": p.permission,
            },
        )
    return problem_response(p)


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    p = _http_problem(exc)
    headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() == "allow"}
    return problem_response(p, headers)


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    # The trace goes to the log with the request id, never to the client. A database outage
    # answers 503 + Retry-After (problem_for knows it) and logs one warning line; anything else
    # the generic 500, logged with its traceback.
    log_failure(
        log, exc, "unhandled error on %s %s (request %s)", request.method, request.scope["path"], request_id()
    )
    return problem_response(problem_for(exc))


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    DomainError: handle_domain_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
