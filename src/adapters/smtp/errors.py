"""How a delivery failed: worth retrying later, or never."""

from __future__ import annotations


class MailDeliveryError(Exception):
    """A mail was not delivered. `code` is the SMTP reply code when the server gave one."""

    def __init__(self, reason: str, *, code: int | None = None) -> None:
        super().__init__(reason)
        self.code = code


class TransientMailError(MailDeliveryError):
    """The server was unreachable, timed out or answered 4xx: the same mail may go through later."""


class PermanentMailError(MailDeliveryError):
    """The server answered 5xx (or cannot do what the settings ask): sending again will not help."""


class SmtpUrlError(ValueError):
    """CHATCORE_SMTP_URL is malformed; the message names the part at fault and never the password."""
