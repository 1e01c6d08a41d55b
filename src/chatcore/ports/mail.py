"""Outgoing mail."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

import msgspec


class Mail(msgspec.Struct, frozen=True, kw_only=True):
    to: str
    subject: str
    text: str
    html: str | None = None
    # A mail worthless after this moment (a login code) is dropped rather than sent late.
    expires_at: datetime | None = None


class Mailer(Protocol):
    async def send(self, mail: Mail) -> None:
        """Deliver or durably queue the mail; raise on a failure worth retrying."""
        ...
