"""Authentication mails (text + HTML): code and link, verification, reset, password changed.

Links come from the configured public URL only (never a request's Host header). Codes stay out
of subjects, which lock screens and notification previews show. Every value is HTML-escaped.
"""

from __future__ import annotations

from datetime import datetime
from html import escape
from typing import NamedTuple

from chatcore.ports.mail import Mail


class _Code(NamedTuple):
    code: str


class _Link(NamedTuple):
    label: str
    url: str


def _html(blocks: list[str | _Code | _Link]) -> str:
    parts = []
    for block in blocks:
        match block:
            case _Code(code):
                style = "font-size:24px;font-weight:bold;letter-spacing:4px;font-family:monospace"
                parts.append(f'<p style="{style}">{escape(code)}</p>')
            case _Link(label, url):
                parts.append(f'<p><a href="{escape(url, quote=True)}">{escape(label)}</a></p>')
            case str(text):
                parts.append(f"<p>{escape(text)}</p>")
    body = "\n".join(parts)
    return f'<!doctype html>\n<html><body style="font-family:sans-serif">\n{body}\n</body></html>\n'


def _code_mail(
    *, to: str, subject: str, intro: str, action: str, code: str, link: str, ttl_s: int, not_you: str
) -> Mail:
    minutes = max(1, ttl_s // 60)
    text = (
        f"{intro}\n\n"
        f"Your code: {code}\n\n"
        f"Or open this link to {action}:\n{link}\n\n"
        f"The code and the link work once, for {minutes} minutes.\n\n"
        f"{not_you}\n"
    )
    html = _html(
        [
            intro,
            _Code(code),
            _Link(action[0].upper() + action[1:], link),
            f"The code and the link work once, for {minutes} minutes.",
            not_you,
        ]
    )
    return Mail(to=to, subject=subject, text=text, html=html)


def login_code_mail(*, to: str, app_name: str, code: str, link: str, ttl_s: int) -> Mail:
    return _code_mail(
        to=to,
        subject=f"Your {app_name} sign-in code",
        intro=f"Use this code to sign in to {app_name}:",
        action="sign in",
        code=code,
        link=link,
        ttl_s=ttl_s,
        not_you="If you did not ask to sign in, ignore this mail; nobody can sign in without it.",
    )


def verification_mail(*, to: str, app_name: str, code: str, link: str, ttl_s: int) -> Mail:
    return _code_mail(
        to=to,
        subject=f"Confirm your email address for {app_name}",
        intro=f"Use this code to confirm your email address for {app_name}:",
        action="confirm your address",
        code=code,
        link=link,
        ttl_s=ttl_s,
        not_you="If you did not create an account, ignore this mail.",
    )


def reset_mail(*, to: str, app_name: str, code: str, link: str, ttl_s: int) -> Mail:
    return _code_mail(
        to=to,
        subject=f"Reset your {app_name} password",
        intro=f"Use this code to choose a new {app_name} password:",
        action="choose a new password",
        code=code,
        link=link,
        ttl_s=ttl_s,
        not_you="If you did not ask for a reset, ignore this mail; your password stays as it is.",
    )


def account_exists_mail(*, to: str, app_name: str, sign_in_link: str) -> Mail:
    """Sent instead of a verification mail when someone registers an address that has an account."""
    intro = f"Someone, perhaps you, tried to create a {app_name} account with this address, which has one."
    hint = "If it was you, sign in, or sign in with a mailed code and change your password."
    not_you = "If it was not you, ignore this mail; nothing has changed."
    text = f"{intro}\n\n{hint}\n{sign_in_link}\n\n{not_you}\n"
    html = _html([intro, hint, _Link("Sign in", sign_in_link), not_you])
    return Mail(to=to, subject=f"Your {app_name} account", text=text, html=html)


def password_changed_mail(*, to: str, app_name: str, when: datetime, reset_link: str) -> Mail:
    stamp = when.strftime("%Y-%m-%d %H:%M UTC")
    intro = (
        f"The password of your {app_name} account was changed on {stamp}; "
        "your sessions elsewhere were signed out."
    )
    not_you = "If you did not do this, reset your password now:"
    text = f"{intro}\n\n{not_you}\n{reset_link}\n"
    html = _html([intro, not_you, _Link("Reset your password", reset_link)])
    return Mail(to=to, subject=f"Your {app_name} password was changed", text=text, html=html)
