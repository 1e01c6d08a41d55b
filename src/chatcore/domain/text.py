"""Validation of user-supplied text: lengths from Limits, no control characters in names."""

from __future__ import annotations

import re
import unicodedata

from chatcore.domain.errors import InvalidInput, LimitExceeded

_ALLOWED_IN_BODY = frozenset({"\n", "\t"})
# Zero-width (non-)joiners build emoji sequences and scripts; other format characters
# (bidi overrides, invisible separators) only serve to spoof a name.
_ALLOWED_IN_NAME = frozenset({"\u200c", "\u200d"})
_NAME_FORBIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp"})
_BODY_FORBIDDEN = frozenset({"Cc"})
# An RFC 2047 encoded word ("=?utf-8?q?...?=") is decoded by mail software into anything,
# CR/LF included: names that reach mail headers must not carry one.
_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")


def _has_forbidden(text: str, forbidden: frozenset[str], allowed: frozenset[str]) -> bool:
    return any(unicodedata.category(ch) in forbidden and ch not in allowed for ch in text)


def clean_name(field: str, value: str, max_chars: int) -> str:
    """A single-line name (display name, chat title, role name): trimmed, non-empty, no control chars.

    Names reach mail headers and UIs, so CR/LF and other control characters are refused here,
    at input, rather than escaped later.
    """
    value = value.strip()
    if not value:
        raise InvalidInput(field, f"{field} must not be empty")
    if len(value) > max_chars:
        raise LimitExceeded(field, max_chars)
    if _has_forbidden(value, _NAME_FORBIDDEN, _ALLOWED_IN_NAME):
        raise InvalidInput(field, f"{field} must not contain control characters")
    if _ENCODED_WORD.search(value):
        raise InvalidInput(field, f"{field} must not contain MIME encoded words")
    return value


def clean_text(field: str, value: str, max_chars: int, *, allow_empty: bool = False) -> str:
    """Free text (message body, description): newlines and tabs allowed, other controls refused."""
    if not allow_empty and not value.strip():
        raise InvalidInput(field, f"{field} must not be empty")
    if len(value) > max_chars:
        raise LimitExceeded(field, max_chars)
    if _has_forbidden(value, _BODY_FORBIDDEN, _ALLOWED_IN_BODY):
        raise InvalidInput(field, f"{field} must not contain control characters")
    return value
