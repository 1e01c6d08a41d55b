"""The Mailer port over SMTP (aiosmtplib): one connection and one recipient per mail.

Transient failures (no connection, timeouts, 4xx replies) are retried a few times with exponential
backoff and jitter, then raised as TransientMailError; 5xx replies are raised at once as
PermanentMailError. Long outages are the queue's business (adapters.smtp.queue), not this class's.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from email.message import EmailMessage

import aiosmtplib

from adapters.smtp.errors import MailDeliveryError, PermanentMailError, TransientMailError
from adapters.smtp.message import compose, parse_sender
from adapters.smtp.settings import SmtpSettings
from adapters.system import SystemClock
from chatcore.ports.mail import Mail
from chatcore.ports.system import Clock

log = logging.getLogger(__name__)

_MAX_BACKOFF_S = 30.0


class SmtpMailer:
    def __init__(
        self,
        settings: SmtpSettings,
        *,
        clock: Clock | None = None,
        tls_context: ssl.SSLContext | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._settings = settings
        self._clock = clock or SystemClock()
        self._tls_context = tls_context
        self._sleep = sleep
        self._envelope_from = parse_sender(settings.sender).addr_spec

    async def send(self, mail: Mail) -> None:
        # Composing first: a bad header is a ValueError before any connection is made.
        message = compose(mail, sender=self._settings.sender, now=self._clock.now())
        attempts = self._settings.attempts
        for attempt in range(1, attempts + 1):
            try:
                await self._deliver(message, mail.to)
                return
            except Exception as exc:
                error = classify(exc)
                if error is None:
                    raise
                if isinstance(error, PermanentMailError) or attempt == attempts:
                    raise error from exc
                delay = _backoff(self._settings.backoff_s, attempt)
                log.warning(
                    "SMTP attempt %d/%d failed (%s), retrying in %.2fs",
                    attempt,
                    attempts,
                    _describe(error),
                    delay,
                )
                await self._sleep(delay)

    async def _deliver(self, message: EmailMessage, recipient: str) -> None:
        settings = self._settings
        await aiosmtplib.send(
            message,
            sender=self._envelope_from,
            recipients=[recipient],
            hostname=settings.host,
            port=settings.port,
            username=settings.username,
            password=settings.password,
            timeout=settings.timeout_s,
            use_tls=settings.security == "tls",
            # False, not None: plain smtp:// must not silently upgrade, and smtp+starttls://
            # must fail rather than fall back to plain text.
            start_tls=settings.security == "starttls",
            validate_certs=settings.validate_certs,
            tls_context=self._tls_context,
        )


def classify(exc: BaseException) -> MailDeliveryError | None:
    """The delivery error an aiosmtplib/network exception stands for; None if it is not one."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [refused.code for refused in exc.recipients]
        code = codes[0] if codes else None
        if any(not _is_permanent(c) for c in codes):
            return TransientMailError("recipient refused for now", code=code)
        return PermanentMailError("recipient refused", code=code)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        kind = PermanentMailError if _is_permanent(exc.code) else TransientMailError
        return kind(f"server replied {exc.code}", code=exc.code)
    if isinstance(exc, aiosmtplib.SMTPNotSupported) or type(exc) is aiosmtplib.SMTPException:
        # aiosmtplib raises the bare base class when the server lacks STARTTLS or AUTH (or SMTPUTF8
        # with SMTPNotSupported): the settings ask for what the server cannot do. Retrying the
        # same mail will not help, and smtp+starttls:// must never fall back to plain text.
        return PermanentMailError(f"server does not support what the settings require: {exc}")
    if isinstance(exc, aiosmtplib.SMTPException | OSError | TimeoutError):
        return TransientMailError(f"{type(exc).__name__}: server unreachable or connection lost")
    return None


def _is_permanent(code: int) -> bool:
    return 500 <= code <= 599


def _backoff(base_s: float, attempt: int) -> float:
    # Exponential, capped, with jitter so that many senders do not retry in lockstep.
    ceiling: float = min(_MAX_BACKOFF_S, base_s * 2 ** (attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def _describe(error: MailDeliveryError) -> str:
    return f"{type(error).__name__} {error.code}" if error.code is not None else str(error)
