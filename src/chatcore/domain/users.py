"""Users: the public profile, kept apart from credentials so profile reads never carry a hash."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from chatcore.domain.errors import InvalidInput, LimitExceeded
from chatcore.domain.events import ProfileUpdated
from chatcore.domain.limits import Limits
from chatcore.domain.text import clean_name, clean_text

MAX_EMAIL_CHARS = 254  # RFC 5321 path limit


def normalise_email(raw: str) -> str:
    """One spelling per mailbox: trimmed and lower-cased, so `A@Example.com` is `a@example.com`."""
    email = raw.strip().lower()
    if len(email) > MAX_EMAIL_CHARS:
        raise LimitExceeded("email", MAX_EMAIL_CHARS)
    local, at, domain = email.rpartition("@")
    if not at or not local or "." not in domain or domain.startswith(".") or domain.endswith("."):
        raise InvalidInput("email", "not a valid email address")
    if any(ch.isspace() or ord(ch) < 32 or ch in '<>,;"' for ch in email):
        raise InvalidInput("email", "not a valid email address")
    return email


@dataclass(slots=True)
class User:
    id: str
    email: str
    display_name: str
    created_at: datetime
    bio: str = ""
    email_verified: bool = False
    # Notification preferences (the worker reads them when it is about to mail).
    notify_missed_messages: bool = True
    notify_added: bool = True

    def verify_email(self) -> bool:
        """Mark the address as proven (a mailed code or link came back); True if that is news."""
        if self.email_verified:
            return False
        self.email_verified = True
        return True

    def update_profile(self, *, display_name: str | None, bio: str | None, limits: Limits) -> ProfileUpdated:
        if display_name is not None:
            self.display_name = clean_name("display_name", display_name, limits.max_display_name_chars)
        if bio is not None:
            self.bio = clean_text("bio", bio, limits.max_bio_chars, allow_empty=True)
        return ProfileUpdated(user_id=self.id, display_name=self.display_name, bio=self.bio)

    def set_notifications(self, *, missed_messages: bool | None = None, added: bool | None = None) -> bool:
        """Change the notification preferences given; True if anything changed."""
        before = (self.notify_missed_messages, self.notify_added)
        if missed_messages is not None:
            self.notify_missed_messages = missed_messages
        if added is not None:
            self.notify_added = added
        return (self.notify_missed_messages, self.notify_added) != before


@dataclass(slots=True)
class PasswordCredential:
    """A user's password hash; read only by the authentication use cases."""

    user_id: str
    password_hash: str
    updated_at: datetime
