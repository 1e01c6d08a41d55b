"""Mail as RFC 5322 bytes: composition with header checks, and parsing back into the port's Mail.

Every header value is checked here, before `EmailMessage` sees it. The core already refuses control
characters at input; this is the second line, so that no future caller can smuggle a CR/LF into a
header (M1) nor address a mail to more than one recipient.
"""

from __future__ import annotations

import email
import unicodedata
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, make_msgid

from chatcore.ports.mail import Mail

# Cc: C0/C1 controls (CR, LF, NUL, TAB, DEL, NEL, ...); Zl/Zp: U+2028/U+2029, which some
# mail software treats as line breaks.
_REFUSED_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})
_MAX_ADDRESS_CHARS = 254


def check_header_value(name: str, value: str) -> None:
    """Raise ValueError if `value` holds a character that could end or fold a header line."""
    for index, char in enumerate(value):
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            raise ValueError(f"{name} contains a control character (U+{ord(char):04X} at {index})")


def check_address(name: str, value: str) -> Address:
    """Exactly one bare address (`local@domain`), no display name, no list; ValueError otherwise."""
    check_header_value(name, value)
    if not value or len(value) > _MAX_ADDRESS_CHARS:
        raise ValueError(f"{name} must be one address of 1 to {_MAX_ADDRESS_CHARS} characters")
    try:
        address = Address(addr_spec=value)
    except Exception as exc:  # the header registry raises several unrelated types
        raise ValueError(f"{name} is not a single email address") from exc
    if address.addr_spec != value or not address.username or not address.domain:
        raise ValueError(f"{name} is not a single email address")
    return address


def parse_sender(value: str) -> Address:
    """A From value, `addr@example.com` or `Name <addr@example.com>`; ValueError unless exactly one."""
    check_header_value("from", value)
    pairs = getaddresses([value], strict=True)
    if len(pairs) != 1 or not pairs[0][1]:
        raise ValueError("from must be exactly one address, optionally with a display name")
    display_name, addr_spec = pairs[0]
    check_header_value("from display name", display_name)
    bare = check_address("from address", addr_spec)
    return Address(display_name=display_name, username=bare.username, domain=bare.domain)


def compose(mail: Mail, *, sender: str, now: datetime) -> EmailMessage:
    """The mail as an EmailMessage: text, plus an HTML alternative when given; ValueError on a bad header."""
    from_address = parse_sender(sender)
    to_address = check_address("to", mail.to)
    check_header_value("subject", mail.subject)

    message = EmailMessage(policy=policy.SMTP)
    message["From"] = from_address
    message["To"] = to_address
    message["Subject"] = mail.subject
    if str(message["Subject"]) != mail.subject:
        # The email package decodes RFC 2047 words found in a value it is given, then writes them
        # back undecoded: "=?utf-8?q?x=0D=0ABcc:_y?=" would reach the reader as "x\r\nBcc: y".
        # Nothing legitimate looks like that; refuse rather than let the text change meaning.
        raise ValueError("subject contains RFC 2047 encoded-word syntax")
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid(domain=from_address.domain)
    # Tells vacation responders and list software that a program sent this (RFC 3834).
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(mail.text)
    if mail.html is not None:
        message.add_alternative(mail.html, subtype="html")
    return message


def check_mail(mail: Mail) -> None:
    """Raise ValueError if `compose` would refuse the mail (for queues that send it later)."""
    compose(mail, sender="check@localhost", now=datetime.fromtimestamp(0).astimezone())


def parse(data: bytes) -> Mail:
    """Read an RFC 5322 message back into a Mail (the text and HTML parts, decoded)."""
    message = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    text_part = message.get_body(preferencelist=("plain",))
    html_part = message.get_body(preferencelist=("html",))
    return Mail(
        to=str(message["To"]),
        subject=str(message["Subject"]),
        text=_unix_newlines(text_part.get_content()) if text_part is not None else "",
        html=_unix_newlines(html_part.get_content()) if html_part is not None else None,
    )


def _unix_newlines(text: str) -> str:
    # On the wire and in .eml files lines end in CRLF (RFC 5322); callers wrote "\n".
    return text.replace("\r\n", "\n")
