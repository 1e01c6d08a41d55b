"""Outgoing mail."""

from __future__ import annotations

from typing import Protocol

import msgspec


class Mail(msgspec.Struct, frozen=True, kw_only=True):
    to: str
    subject: str
    text: str
    html: str | None = None


class Mailer(Protocol):
    async def send(self, mail: Mail) -> None:
        """Deliver or durably queue the mail; raise on a failure worth retrying."""
        ...
