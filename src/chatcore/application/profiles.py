"""Profiles: create a user (operators, embedders, registration), read and update profiles."""

from __future__ import annotations

import msgspec

from chatcore.application.common import UseCase
from chatcore.application.views import ProfileView, PublicProfileView
from chatcore.domain.errors import Conflict, NotFound
from chatcore.domain.events import UserRegistered
from chatcore.domain.text import clean_name
from chatcore.domain.users import User, normalise_email
from chatcore.ports.unit_of_work import UnitOfWork


class CreateUserCommand(msgspec.Struct, frozen=True, kw_only=True):
    email: str
    display_name: str
    email_verified: bool = False


class CreateUser(UseCase):
    """Create a user without credentials. Registration adds a password on top of this."""

    async def __call__(self, cmd: CreateUserCommand) -> ProfileView:
        limits = self.deps.limits
        email = normalise_email(cmd.email)
        name = clean_name("display_name", cmd.display_name, limits.max_display_name_chars)

        async def work(uow: UnitOfWork) -> ProfileView:
            if await uow.users.get_by_email(email) is not None:
                raise Conflict("a user with this email exists")
            user = User(
                self.deps.ids.new_id(), email, name, self.deps.clock.now(), email_verified=cmd.email_verified
            )
            await uow.users.add(user)
            uow.record(UserRegistered(user_id=user.id, email=email))
            return ProfileView.of(user)

        return await self.transaction(work)


class GetMyProfile(UseCase):
    async def __call__(self, actor: str) -> ProfileView:
        async def work(uow: UnitOfWork) -> ProfileView:
            user = await uow.users.get(actor)
            if user is None:
                raise NotFound("user")
            return ProfileView.of(user)

        return await self.read(work)


class UpdateProfileCommand(msgspec.Struct, frozen=True, kw_only=True):
    actor: str
    display_name: str | None = None
    bio: str | None = None
    # Notification preferences; None leaves a preference as it is.
    notify_missed_messages: bool | None = None
    notify_added: bool | None = None


class UpdateMyProfile(UseCase):
    async def __call__(self, cmd: UpdateProfileCommand) -> ProfileView:
        async def work(uow: UnitOfWork) -> ProfileView:
            user = await uow.users.get(cmd.actor)
            if user is None:
                raise NotFound("user")
            uow.record(
                user.update_profile(display_name=cmd.display_name, bio=cmd.bio, limits=self.deps.limits)
            )
            user.set_notifications(missed_messages=cmd.notify_missed_messages, added=cmd.notify_added)
            await uow.users.save(user)
            return ProfileView.of(user)

        return await self.transaction(work)


class GetPublicProfile(UseCase):
    async def __call__(self, user_id: str) -> PublicProfileView:
        async def work(uow: UnitOfWork) -> PublicProfileView:
            user = await uow.users.get(user_id)
            if user is None:
                raise NotFound("user")
            return PublicProfileView.of(user)

        return await self.read(work)
