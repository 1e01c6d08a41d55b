"""Mail over SMTP (aiosmtplib), and a durable spool in front of it."""

from adapters.smtp.errors import MailDeliveryError, PermanentMailError, SmtpUrlError, TransientMailError
from adapters.smtp.mailer import SmtpMailer
from adapters.smtp.message import compose, parse
from adapters.smtp.queue import MailSender, MailSpool, QueuedMailer, SendReport, SpooledMail
from adapters.smtp.settings import SmtpSettings, parse_smtp_url

__all__ = [
    "MailDeliveryError",
    "MailSender",
    "MailSpool",
    "PermanentMailError",
    "QueuedMailer",
    "SendReport",
    "SmtpMailer",
    "SmtpSettings",
    "SmtpUrlError",
    "SpooledMail",
    "TransientMailError",
    "compose",
    "parse",
    "parse_smtp_url",
]
