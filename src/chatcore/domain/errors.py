"""Domain errors: the only failures a use case reports; entrypoints map them once to wire errors."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error the core raises on purpose."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(DomainError):
    """The object does not exist, or the caller may not know that it exists.

    Outsiders get the same error as for a nonexistent id, so existence never leaks.
    """

    def __init__(self, kind: str) -> None:
        super().__init__(f"{kind} not found")
        self.kind = kind


class Gone(DomainError):
    """The object existed and was deleted (a message tombstone)."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"{kind} was deleted")
        self.kind = kind


class PermissionDenied(DomainError):
    """The caller can see the object but lacks the named permission."""

    def __init__(self, permission: str, detail: str | None = None) -> None:
        super().__init__(detail or f"missing permission: {permission}")
        self.permission = permission


class Conflict(DomainError):
    """The request contradicts the current state (duplicate, owner leaving, ...)."""


class InvalidInput(DomainError):
    """One field of the request is invalid; `field` names it for the client."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(detail)
        self.field = field


class LimitExceeded(InvalidInput):
    """A size or count limit (a setting) was exceeded; the HTTP layer answers 413/422."""

    def __init__(self, field: str, limit: int) -> None:
        super().__init__(field, f"{field} exceeds the limit of {limit}")
        self.limit = limit


class Unauthenticated(DomainError):
    """Credentials are missing, wrong or expired. Deliberately vague."""

    def __init__(self, detail: str = "authentication failed") -> None:
        super().__init__(detail)


class RateLimited(DomainError):
    """Too many attempts; retry after `retry_after_s` seconds."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__("too many requests")
        self.retry_after_s = retry_after_s
