"""Notification policy: which committed events become mail, to whom, and when.

- "You were added" mails on `ChatMemberAdded` / `GroupMemberAdded` (not when you added
  yourself) and on `ChatCreated` of a group chat, for the initial members other than its owner.
  Direct chats send none: the first message's digest says more than an empty chat.
- Missed messages: `MessagePosted` schedules, for every other member, one digest per (user,
  chat) due `missed_message_delay_s` after the first unread message; later messages join it.
  When due, the digest is mailed only if the reader's marker is still below its messages (a read
  on any device cancels it, checked then and also on `ReadMarkerMoved`); posting in a chat
  counts as reading it. Throttled: one digest per chat per `digest_min_interval_s`, and at most
  `max_digests_per_user_per_hour` per user; a throttled digest is postponed, not dropped.
- Preferences (`User.notify_*`) are read when a mail is about to go; only verified addresses get
  mail by default, so that an account opened with someone else's address cannot mail them.
- Every mail carries an unsubscribe link with an HMAC token bound to (user, kind); `Unsubscribe`
  turns that preference off with no login.

Idempotent by record id: `handle` claims the record in the DigestSchedule first, so a record
delivered twice (or to two workers at once) is handled once; a mail to one of several recipients
is claimed on its own, so a retry after a failure does not mail those already served.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from urllib.parse import quote, urlsplit

import msgspec

from chatcore.application import notification_templates as templates
from chatcore.application.common import Deps, UseCase
from chatcore.domain.chats import Chat, ChatKind
from chatcore.domain.errors import InvalidInput
from chatcore.domain.events import (
    ChatCreated,
    ChatMemberAdded,
    ChatMemberRemoved,
    EventRecord,
    GroupMemberAdded,
    MessagePosted,
    ReadMarkerMoved,
)
from chatcore.domain.users import User
from chatcore.ports.mail import Mail, Mailer
from chatcore.ports.notifications import DigestSchedule, PendingDigest, SentMail
from chatcore.ports.unit_of_work import UnitOfWork

log = logging.getLogger("chatcore.notifications")

HOUR_S = 3600
MIN_KEY_BYTES = 32


class NotificationKind(StrEnum):
    """What a user can unsubscribe from; each kind is one preference on the profile."""

    MISSED_MESSAGES = "missed_messages"
    ADDED = "added"


class NotificationSettings(msgspec.Struct, frozen=True, kw_only=True):
    public_url: str = "http://localhost:8000"  # every link is built from this only
    app_name: str = "chatcore"
    chat_link_path: str = "/chats/{chat_id}"
    group_link_path: str = "/groups/{group_id}"
    unsubscribe_path: str = "/notifications/unsubscribe"
    missed_message_delay_s: int = 600
    digest_min_interval_s: int = 1800  # per (user, chat)
    max_digests_per_user_per_hour: int = 6
    max_added_mails_per_user_per_hour: int = 20  # beyond this, "added" mails are dropped
    max_messages_per_digest: int = 10
    max_excerpt_chars: int = 300
    require_verified_email: bool = True
    claim_lease_s: int = 300  # how long a claimed record or digest is another worker's
    retry_after_failure_s: int = 60
    keep_history_s: int = 7 * 24 * HOUR_S  # sends and handled record ids kept this long

    def __post_init__(self) -> None:
        url = urlsplit(self.public_url)
        if url.scheme not in ("http", "https") or not url.netloc or url.query or url.fragment:
            raise ValueError("public_url must be an http(s) URL without query or fragment")
        for path in (self.chat_link_path, self.group_link_path, self.unsubscribe_path):
            if not path.startswith("/") or "#" in path or "?" in path:
                raise ValueError("link paths must start with '/' and hold no query or fragment")
        positive = (
            self.missed_message_delay_s,
            self.digest_min_interval_s,
            self.max_digests_per_user_per_hour,
            self.max_added_mails_per_user_per_hour,
            self.max_messages_per_digest,
            self.max_excerpt_chars,
            self.claim_lease_s,
            self.retry_after_failure_s,
            self.keep_history_s,
        )
        if min(positive) < 1:
            raise ValueError("every notification delay and limit must be at least 1")
        if self.keep_history_s < max(HOUR_S, self.digest_min_interval_s):
            raise ValueError("keep_history_s must cover an hour and digest_min_interval_s")

    def _url(self, path: str) -> str:
        return self.public_url.rstrip("/") + path

    def chat_link(self, chat_id: str) -> str:
        return self._url(self.chat_link_path.format(chat_id=quote(chat_id, safe="")))

    def group_link(self, group_id: str) -> str:
        return self._url(self.group_link_path.format(group_id=quote(group_id, safe="")))

    def unsubscribe_link(self, token: str) -> str:
        return self._url(self.unsubscribe_path) + "?token=" + quote(token, safe="")


# -- unsubscribe tokens -------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class UnsubscribeTokens:
    """`<user id, base64url>.<kind>.<HMAC-SHA-256, base64url>`: bound to one user and one kind.

    They do not expire: an unsubscribe link must keep working in an old mail, and all it can do
    is turn one preference off. Rotating the server key voids them all.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"the unsubscribe key must be at least {MIN_KEY_BYTES} bytes")
        self._key = key

    def _mac(self, user_id: str, kind: str) -> bytes:
        message = b"chatcore unsubscribe v1\0" + user_id.encode() + b"\0" + kind.encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def issue(self, user_id: str, kind: NotificationKind) -> str:
        return f"{_b64(user_id.encode())}.{kind.value}.{_b64(self._mac(user_id, kind.value))}"

    def verify(self, token: str) -> tuple[str, NotificationKind] | None:
        """The (user id, kind) the token was issued for; None for anything else."""
        if len(token) > 512 or not token.isascii():
            return None
        parts = token.split(".")
        if len(parts) != 3:
            return None
        encoded_user, kind, encoded_mac = parts
        try:
            user_id = _unb64(encoded_user).decode()
            mac = _unb64(encoded_mac)
            parsed_kind = NotificationKind(kind)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            return None
        if not hmac.compare_digest(mac, self._mac(user_id, parsed_kind.value)):
            return None
        return user_id, parsed_kind


class UnsubscribeCommand(msgspec.Struct, frozen=True, kw_only=True):
    token: str


class Unsubscribed(msgspec.Struct, frozen=True, kw_only=True):
    kind: str


_PREFERENCE = {
    NotificationKind.MISSED_MESSAGES: "missed_messages",
    NotificationKind.ADDED: "added",
}


class Unsubscribe(UseCase):
    """Turn one notification preference off, given the token of an unsubscribe link (no login).

    A link of a user who no longer exists succeeds and changes nothing. The HTTP layer must act
    on POST only: mail scanners follow links with GET.
    """

    def __init__(self, deps: Deps, *, unsubscribe_key: bytes) -> None:
        super().__init__(deps)
        self._tokens = UnsubscribeTokens(unsubscribe_key)

    async def __call__(self, cmd: UnsubscribeCommand) -> Unsubscribed:
        verified = self._tokens.verify(cmd.token)
        if verified is None:
            raise InvalidInput("token", "this unsubscribe link is not valid")
        user_id, kind = verified

        async def work(uow: UnitOfWork) -> None:
            user = await uow.users.get(user_id)
            if user is None:
                return
            if user.set_notifications(**{_PREFERENCE[kind]: False}):
                await uow.users.save(user)

        await self.transaction(work)
        return Unsubscribed(kind=kind.value)


# -- the handler ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NotificationDeps:
    deps: Deps
    schedule: DigestSchedule
    mailer: Mailer
    unsubscribe_key: bytes
    settings: NotificationSettings = field(default_factory=NotificationSettings)


class NotificationHandler:
    """Turns committed records into scheduled digests and mails. See the module docstring."""

    def __init__(self, nd: NotificationDeps) -> None:
        self._deps = nd.deps
        self._schedule = nd.schedule
        self._mailer = nd.mailer
        self._settings = nd.settings
        self._tokens = UnsubscribeTokens(nd.unsubscribe_key)
        self._last_purge: datetime | None = None

    @property
    def settings(self) -> NotificationSettings:
        return self._settings

    def _now(self) -> datetime:
        return self._deps.clock.now()

    def _lease(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self._settings.claim_lease_s)

    async def _read[T](self, work: Callable[[UnitOfWork], Awaitable[T]]) -> T:
        async with self._deps.uow() as uow:
            return await work(uow)

    # -- records ---------------------------------------------------------------------------

    async def handle(self, record: EventRecord) -> None:
        """Handle one committed record, at most once per record id (see the module docstring).

        Raises when a mail could not be handed to the mailer: the record is released so that
        its next delivery handles it again.
        """
        now = self._now()
        if not await self._schedule.claim_record(record.id, now=now, lease_until=self._lease(now)):
            return
        try:
            await self._apply(record)
        except BaseException:
            await asyncio.shield(self._schedule.release_record(record.id))
            raise
        await self._schedule.finish_record(record.id, now=self._now())

    async def _apply(self, record: EventRecord) -> None:
        match record.event:
            case ChatCreated(kind=ChatKind.GROUP, chat_id=chat_id, owner_id=owner, member_ids=members):
                for user_id in members:
                    if user_id != owner:
                        await self._added_to_chat(record, user_id, chat_id, by=owner)
            case ChatMemberAdded(chat_id=chat_id, user_id=user_id, by=by) if user_id != by:
                await self._added_to_chat(record, user_id, chat_id, by=by)
            case GroupMemberAdded(group_id=group_id, user_id=user_id, by=by) if user_id != by:
                await self._added_to_group(record, user_id, group_id, by=by)
            case MessagePosted() as posted:
                await self._message_posted(posted)
            case ReadMarkerMoved(chat_id=chat_id, user_id=user_id, seq=seq):
                await self._schedule.cancel(user_id, chat_id, read_seq=seq)
            case ChatMemberRemoved(chat_id=chat_id, user_id=user_id):
                await self._schedule.cancel(user_id, chat_id)

    def _may_mail(self, user: User) -> bool:
        return user.email_verified or not self._settings.require_verified_email

    async def _send_once(self, record: EventRecord, user_id: str, mail: Mail, sent: SentMail) -> None:
        """Mail `user_id` about `record` unless an earlier attempt at this record already did."""
        key, now = f"{record.id}:{user_id}", self._now()
        if not await self._schedule.claim_record(key, now=now, lease_until=self._lease(now)):
            return
        try:
            await self._mailer.send(mail)
        except BaseException:
            await asyncio.shield(self._schedule.release_record(key))
            raise
        await self._schedule.finish_record(key, now=self._now())
        await self._schedule.record_sent(sent)

    async def _added_allowed(self, user: User) -> bool:
        if not user.notify_added or not self._may_mail(user):
            return False
        hour_ago = self._now() - timedelta(seconds=HOUR_S)
        recent = await self._schedule.sent_since(user.id, NotificationKind.ADDED, hour_ago)
        if len(recent) >= self._settings.max_added_mails_per_user_per_hour:
            log.info("'added' mail to user %s dropped: hourly cap reached", user.id)
            return False
        return True

    async def _added_to_chat(self, record: EventRecord, user_id: str, chat_id: str, by: str | None) -> None:
        async def load(uow: UnitOfWork) -> tuple[User | None, User | None, Chat | None, str | None]:
            user = await uow.users.get(user_id)
            actor = await uow.users.get(by) if by is not None else None
            chat = await uow.chats.get(chat_id)
            group = await uow.groups.get(chat.group_id) if chat and chat.group_id else None
            return user, actor, chat, group.name if group else None

        user, actor, chat, group_name = await self._read(load)
        # Removed again before we got here: the mail would point at a chat they cannot open.
        if user is None or chat is None or not chat.is_member(user_id) or not await self._added_allowed(user):
            return
        s = self._settings
        mail = templates.added_to_chat_mail(
            to=user.email,
            app_name=s.app_name,
            actor_name=actor.display_name if actor else None,
            chat_title=chat.title,
            group_name=group_name,
            chat_link=s.chat_link(chat_id),
            unsubscribe_link=s.unsubscribe_link(self._tokens.issue(user_id, NotificationKind.ADDED)),
        )
        sent = SentMail(user_id=user_id, kind=NotificationKind.ADDED, key=chat_id, sent_at=self._now())
        await self._send_once(record, user_id, mail, sent)

    async def _added_to_group(self, record: EventRecord, user_id: str, group_id: str, by: str) -> None:
        async def load(uow: UnitOfWork) -> tuple[User | None, User | None, str | None, bool]:
            group = await uow.groups.get(group_id)
            return (
                await uow.users.get(user_id),
                await uow.users.get(by),
                group.name if group else None,
                group is not None and group.is_member(user_id),
            )

        user, actor, group_name, member = await self._read(load)
        if user is None or not member or not await self._added_allowed(user):
            return
        s = self._settings
        mail = templates.added_to_group_mail(
            to=user.email,
            app_name=s.app_name,
            actor_name=actor.display_name if actor else None,
            group_name=group_name,
            group_link=s.group_link(group_id),
            unsubscribe_link=s.unsubscribe_link(self._tokens.issue(user_id, NotificationKind.ADDED)),
        )
        sent = SentMail(user_id=user_id, kind=NotificationKind.ADDED, key=group_id, sent_at=self._now())
        await self._send_once(record, user_id, mail, sent)

    async def _message_posted(self, posted: MessagePosted) -> None:
        async def load(uow: UnitOfWork) -> list[User]:
            chat = await uow.chats.get(posted.chat_id)
            if chat is None:
                return []
            others = [u for u in chat.members if u != posted.author_id]
            return await uow.users.get_many(others)

        readers = await self._read(load)
        # Writing in a chat is reading it: the author has seen what came before.
        await self._schedule.cancel(posted.author_id, posted.chat_id, read_seq=posted.seq)
        due_at = posted.created_at + timedelta(seconds=self._settings.missed_message_delay_s)
        for user in readers:
            if user.notify_missed_messages and self._may_mail(user):
                await self._schedule.schedule(user.id, posted.chat_id, seq=posted.seq, due_at=due_at)

    # -- due digests -------------------------------------------------------------------------

    async def run_due(self, now: datetime | None = None, *, limit: int = 100) -> int:
        """Mail every digest due at `now`; returns how many mails went out."""
        now = now or self._now()
        sent = 0
        while True:
            claimed = await self._schedule.claim_due(now, lease_until=self._lease(now), limit=limit)
            for digest in claimed:
                try:
                    sent += await self._digest(digest, now)
                except Exception:
                    log.exception("digest for user %s failed; retrying later", digest.user_id)
                    retry = now + timedelta(seconds=self._settings.retry_after_failure_s)
                    await self._schedule.postpone(digest.user_id, digest.chat_id, due_at=retry)
            if len(claimed) < limit:
                break
        await self._purge(now)
        return sent

    async def _purge(self, now: datetime) -> None:
        if self._last_purge is not None and now - self._last_purge < timedelta(seconds=HOUR_S):
            return
        self._last_purge = now
        await self._schedule.purge(before=now - timedelta(seconds=self._settings.keep_history_s))

    async def _throttled_until(self, digest: PendingDigest, now: datetime) -> datetime | None:
        s = self._settings
        window = max(HOUR_S, s.digest_min_interval_s)
        recent = await self._schedule.sent_since(
            digest.user_id, NotificationKind.MISSED_MESSAGES, now - timedelta(seconds=window)
        )
        interval = timedelta(seconds=s.digest_min_interval_s)
        same_chat = [m.sent_at for m in recent if m.key == digest.chat_id and now - m.sent_at < interval]
        if same_chat:
            return max(same_chat) + interval
        hour = timedelta(seconds=HOUR_S)
        last_hour = [m.sent_at for m in recent if now - m.sent_at < hour]
        if len(last_hour) >= s.max_digests_per_user_per_hour:
            # Free again when enough of the hour's sends have aged out of it.
            return sorted(last_hour)[len(last_hour) - s.max_digests_per_user_per_hour] + hour
        return None

    async def _digest(self, digest: PendingDigest, now: datetime) -> int:
        s = self._settings
        retry_at = now + timedelta(seconds=s.missed_message_delay_s)

        async def load(
            uow: UnitOfWork,
        ) -> tuple[User | None, Chat | None, int, list[templates.DigestLine], int, str | None]:
            user = await uow.users.get(digest.user_id)
            chat = await uow.chats.get(digest.chat_id)
            if user is None or chat is None or not chat.is_member(user.id):
                return user, chat, 0, [], 0, None
            marker = await uow.read_markers.get(chat.id, user.id)
            start = max(digest.first_seq, (marker.seq if marker else 0) + 1)
            if start > digest.last_seq:
                return user, chat, 0, [], 0, None
            window = await uow.messages.list(
                chat.id, after=start - 1, before=None, limit=digest.last_seq - start + 1
            )
            unread = [m for m in window if not m.is_deleted and m.author_id != user.id]
            shown = unread[-s.max_messages_per_digest :]
            authors = {u.id: u for u in await uow.users.get_many(sorted({m.author_id for m in shown}))}
            lines = [
                templates.DigestLine(
                    sender=authors[m.author_id].display_name if m.author_id in authors else "Someone",
                    sent_at=m.created_at,
                    body=_excerpt(m.body, s.max_excerpt_chars),
                )
                for m in shown
            ]
            direct_with = None
            if chat.kind is ChatKind.DIRECT:
                other = next((u for u in chat.members if u != user.id), None)
                found = await uow.users.get(other) if other else None
                direct_with = found.display_name if found else None
            return user, chat, len(unread), lines, len(unread) - len(shown), direct_with

        user, chat, unread, lines, earlier, direct_with = await self._read(load)
        if (
            user is None
            or chat is None
            or not unread
            or not user.notify_missed_messages
            or not self._may_mail(user)
        ):
            # Read meanwhile (on any device), left, unsubscribed, or all deleted: nothing to say.
            await self._schedule.finish(digest, next_due_at=retry_at)
            return 0
        throttled = await self._throttled_until(digest, now)
        if throttled is not None:
            await self._schedule.postpone(digest.user_id, digest.chat_id, due_at=throttled)
            return 0
        mail = templates.digest_mail(
            to=user.email,
            app_name=s.app_name,
            chat_title=chat.title,
            direct_with=direct_with if chat.kind is ChatKind.DIRECT else None,
            lines=lines,
            earlier=earlier,
            chat_link=s.chat_link(chat.id),
            unsubscribe_link=s.unsubscribe_link(
                self._tokens.issue(user.id, NotificationKind.MISSED_MESSAGES)
            ),
        )
        await self._mailer.send(mail)
        await self._schedule.record_sent(
            SentMail(user_id=user.id, kind=NotificationKind.MISSED_MESSAGES, key=chat.id, sent_at=now)
        )
        # Messages that arrived while this one was being sent wait for their own digest.
        await self._schedule.finish(digest, next_due_at=retry_at)
        return 1


def _excerpt(body: str, max_chars: int) -> str:
    body = body.strip()
    return body if len(body) <= max_chars else body[: max_chars - 1].rstrip() + "…"
