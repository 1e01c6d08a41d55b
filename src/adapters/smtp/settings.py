"""CHATCORE_SMTP_URL parsed into settings.

    smtp://host[:25]                       plain SMTP (no TLS)
    smtp+starttls://user:pass@host[:587]   STARTTLS, required: refused if the server cannot
    smtps://user:pass@host[:465]           implicit TLS

Query options: `timeout` (seconds, per SMTP step), `from` (the From header, `addr` or
`Name <addr>`), `attempts` (tries per send, counting the first), `backoff` (seconds before the
first retry; doubles each time), `validate_certs` (true/false). User name and password are
percent-decoded. Errors name the part at fault and never echo the password.
"""

from __future__ import annotations

import math
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

import msgspec

from adapters.smtp.errors import SmtpUrlError
from adapters.smtp.message import parse_sender

Security = Literal["none", "starttls", "tls"]

_SCHEMES: dict[str, tuple[Security, int]] = {
    "smtp": ("none", 25),
    "smtp+starttls": ("starttls", 587),
    "smtps": ("tls", 465),
}
_OPTIONS = ("timeout", "from", "attempts", "backoff", "validate_certs")
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


class SmtpSettings(msgspec.Struct, frozen=True, kw_only=True):
    host: str
    port: int
    security: Security = "none"
    username: str | None = None
    password: str | None = None
    timeout_s: float = 10.0
    sender: str = "chatcore@localhost"
    attempts: int = 3
    backoff_s: float = 0.5
    validate_certs: bool = True

    def __repr__(self) -> str:
        # Settings get logged at start-up; the password must not be.
        shown = "***" if self.password is not None else None
        return (
            f"SmtpSettings(host={self.host!r}, port={self.port}, security={self.security!r}, "
            f"username={self.username!r}, password={shown!r}, timeout_s={self.timeout_s}, "
            f"sender={self.sender!r}, attempts={self.attempts}, backoff_s={self.backoff_s}, "
            f"validate_certs={self.validate_certs})"
        )

    __str__ = __repr__


def parse_smtp_url(url: str) -> SmtpSettings:
    """Settings from an `smtp://`, `smtp+starttls://` or `smtps://` URL; SmtpUrlError naming the bad part."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise SmtpUrlError(
            f"SMTP URL scheme {parts.scheme or '(none)'!r} is not one of {', '.join(sorted(_SCHEMES))}"
        )
    security, default_port = _SCHEMES[scheme]
    host = parts.hostname
    if not host:
        raise SmtpUrlError("SMTP URL has no host")
    try:
        port = parts.port
    except ValueError:
        raise SmtpUrlError("SMTP URL port is not a number from 1 to 65535") from None
    if port == 0:
        raise SmtpUrlError("SMTP URL port is not a number from 1 to 65535")
    if parts.path not in ("", "/"):
        raise SmtpUrlError("SMTP URL has a path; only the query carries options")
    if parts.fragment:
        raise SmtpUrlError("SMTP URL has a #fragment; only the query carries options")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if password is not None and username is None:
        raise SmtpUrlError("SMTP URL has a password but no user name")

    options: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in _OPTIONS:
            raise SmtpUrlError(f"SMTP URL option {key!r} is unknown; known: {', '.join(_OPTIONS)}")
        if key in options:
            raise SmtpUrlError(f"SMTP URL option {key!r} is given twice")
        options[key] = value

    settings = SmtpSettings(
        host=host,
        port=port or default_port,
        security=security,
        username=username,
        password=password,
    )
    changes: dict[str, object] = {}
    if "timeout" in options:
        changes["timeout_s"] = _positive_float("timeout", options["timeout"])
    if "backoff" in options:
        changes["backoff_s"] = _positive_float("backoff", options["backoff"], allow_zero=True)
    if "attempts" in options:
        changes["attempts"] = _attempts(options["attempts"])
    if "validate_certs" in options:
        flag = _BOOLEANS.get(options["validate_certs"].lower())
        if flag is None:
            raise SmtpUrlError("SMTP URL option 'validate_certs' must be true or false")
        changes["validate_certs"] = flag
    if "from" in options:
        try:
            parse_sender(options["from"])
        except ValueError as exc:
            raise SmtpUrlError(f"SMTP URL option 'from': {exc}") from None
        changes["sender"] = options["from"]
    return msgspec.structs.replace(settings, **changes)


def _positive_float(name: str, raw: str, *, allow_zero: bool = False) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = "zero or more" if allow_zero else "more than zero"
        raise SmtpUrlError(f"SMTP URL option {name!r} must be a number of seconds, {bound}")
    return value


def _attempts(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= 100:
        raise SmtpUrlError("SMTP URL option 'attempts' must be a whole number from 1 to 100")
    return value
