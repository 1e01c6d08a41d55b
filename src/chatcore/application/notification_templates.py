"""Notification mails (text + HTML): added to a chat or group, and the missed-message digest.

The text part is complete on its own (plain-text clients show only it); the HTML part says the
same. Every user-supplied value is HTML-escaped, and subjects are built only from names that pass
the domain's name check again here (control characters and MIME encoded words refused), with a
neutral fallback otherwise. Links come from the configured public URL, never from a request.
Every mail ends with its unsubscribe link.
"""

from __future__ import annotations

from datetime import datetime
from html import escape
from typing import NamedTuple

from chatcore.domain.errors import InvalidInput
from chatcore.domain.text import clean_name
from chatcore.ports.mail import Mail

MAX_SUBJECT_NAME_CHARS = 60


def subject_name(value: str | None, fallback: str) -> str:
    """`value` if it is a valid single-line name (shortened to fit a subject), else `fallback`."""
    if value is None:
        return fallback
    try:
        name = clean_name("name", value, 10_000)
    except InvalidInput:
        return fallback
    if len(name) > MAX_SUBJECT_NAME_CHARS:
        name = name[: MAX_SUBJECT_NAME_CHARS - 1].rstrip() + "…"
    return name


class DigestLine(NamedTuple):
    """One message in a digest: who wrote it, when, and (an excerpt of) what."""

    sender: str
    sent_at: datetime
    body: str


class _Link(NamedTuple):
    label: str
    url: str


def _footer_text(reason: str, unsubscribe_label: str, unsubscribe_link: str) -> str:
    return f"-- \n{reason}\n{unsubscribe_label}:\n{unsubscribe_link}\n"


def _html(blocks: list[str | _Link], footer: tuple[str, _Link], extra: str = "") -> str:
    parts = []
    for block in blocks:
        match block:
            case _Link(label, url):
                parts.append(f'<p><a href="{escape(url, quote=True)}">{escape(label)}</a></p>')
            case str(text):
                parts.append(f"<p>{escape(text)}</p>")
    reason, link = footer
    foot = (
        '<hr><p style="color:#666;font-size:12px">'
        f'{escape(reason)}<br><a href="{escape(link.url, quote=True)}">{escape(link.label)}</a></p>'
    )
    body = "\n".join([*parts, extra, foot] if extra else [*parts, foot])
    return f'<!doctype html>\n<html><body style="font-family:sans-serif">\n{body}\n</body></html>\n'


def added_to_chat_mail(
    *,
    to: str,
    app_name: str,
    actor_name: str | None,
    chat_title: str | None,
    group_name: str | None,
    chat_link: str,
    unsubscribe_link: str,
) -> Mail:
    who = subject_name(actor_name, "Someone")
    title = subject_name(chat_title, "a chat")
    where = f'the chat "{title}"' if chat_title is not None and title != "a chat" else "a chat"
    if group_name is not None:
        where += f" in {subject_name(group_name, 'a group')}"
    intro = f"{who} added you to {where} on {app_name}."
    reason = f"You get this mail because someone added you to a chat or group on {app_name}."
    label = "Stop mails when someone adds you"
    text = f"{intro}\n\nOpen the chat:\n{chat_link}\n\n" + _footer_text(reason, label, unsubscribe_link)
    html = _html([intro, _Link("Open the chat", chat_link)], (reason, _Link(label, unsubscribe_link)))
    subject = f"{who} added you to {title}" if title != "a chat" else f"{who} added you to a chat"
    return Mail(to=to, subject=subject, text=text, html=html)


def added_to_group_mail(
    *,
    to: str,
    app_name: str,
    actor_name: str | None,
    group_name: str | None,
    group_link: str,
    unsubscribe_link: str,
) -> Mail:
    who = subject_name(actor_name, "Someone")
    name = subject_name(group_name, "a group")
    where = f'the group "{name}"' if name != "a group" else "a group"
    intro = f"{who} added you to {where} on {app_name}."
    reason = f"You get this mail because someone added you to a chat or group on {app_name}."
    label = "Stop mails when someone adds you"
    text = f"{intro}\n\nOpen the group:\n{group_link}\n\n" + _footer_text(reason, label, unsubscribe_link)
    html = _html([intro, _Link("Open the group", group_link)], (reason, _Link(label, unsubscribe_link)))
    return Mail(to=to, subject=f"{who} added you to {name}", text=text, html=html)


def _indent(body: str) -> str:
    return "\n".join(f"  {line}" if line else "" for line in body.splitlines() or [""])


def digest_mail(
    *,
    to: str,
    app_name: str,
    chat_title: str | None,
    direct_with: str | None,
    lines: list[DigestLine],
    earlier: int,
    chat_link: str,
    unsubscribe_link: str,
) -> Mail:
    """One chat's unread messages: `lines` (oldest first), plus a count of `earlier` not shown."""
    count = len(lines) + earlier
    noun = "message" if count == 1 else "messages"
    if direct_with is not None:
        other = subject_name(direct_with, "a contact")
        subject = f"{count} unread {noun} from {other}"
        where = f"your chat with {other}"
    else:
        title = subject_name(chat_title, "a chat")
        subject = f"{count} unread {noun} in {title}"
        where = f'"{title}"' if title != "a chat" else "a chat"
    intro = f"You have {count} unread {noun} in {where} on {app_name}:"
    more = f"... and {earlier} earlier {'message' if earlier == 1 else 'messages'}." if earlier else ""
    reason = f"You get this mail because messages in {app_name} stayed unread for a while."
    label = "Stop mails about unread messages"

    text_items = [
        f"{subject_name(line.sender, 'Someone')} ({line.sent_at.strftime('%Y-%m-%d %H:%M UTC')}):\n"
        f"{_indent(line.body)}"
        for line in lines
    ]
    text = (
        f"{intro}\n\n"
        + "\n\n".join(text_items)
        + (f"\n\n{more}" if more else "")
        + f"\n\nRead and reply:\n{chat_link}\n\n"
        + _footer_text(reason, label, unsubscribe_link)
    )
    html_items = "\n".join(
        '<div style="margin:0 0 12px 0">'
        f"<strong>{escape(subject_name(line.sender, 'Someone'))}</strong> "
        f'<span style="color:#666">{escape(line.sent_at.strftime("%Y-%m-%d %H:%M UTC"))}</span>'
        f'<div style="white-space:pre-wrap">{escape(line.body)}</div></div>'
        for line in lines
    )
    if more:
        html_items += f"\n<p>{escape(more)}</p>"
    html = _html(
        [intro],
        (reason, _Link(label, unsubscribe_link)),
        extra=html_items + "\n" + f'<p><a href="{escape(chat_link, quote=True)}">Read and reply</a></p>',
    )
    return Mail(to=to, subject=subject, text=text, html=html)
