"""Chat use cases: open and create chats, membership, ownership, and the user's chat list."""

from __future__ import annotations

import msgspec

from chatcore.application.common import UseCase, load_chat, load_group, require_user
from chatcore.application.views import ChatSummary, ChatView, MessageView
from chatcore.domain.chats import Chat, direct_key
from chatcore.domain.errors import LimitExceeded
from chatcore.domain.permissions import Permission, authorize
from chatcore.ports.unit_of_work import UnitOfWork


class OpenDirectChatCommand(msgspec.Struct, frozen=True, kw_only=True):
    actor: str
    user_id: str


class OpenDirectChat(UseCase):
    """Open the direct chat with another user, or return the one the pair already has."""

    async def __call__(self, cmd: OpenDirectChatCommand) -> tuple[ChatView, bool]:
        await self.throttle(cmd.actor, self.deps.rates.create_chat)

        async def work(uow: UnitOfWork) -> tuple[ChatView, bool]:
            existing = await uow.chats.get_direct(direct_key(cmd.actor, cmd.user_id))
            if existing is not None:
                return ChatView.of(existing), False
            await require_user(uow, cmd.user_id)
            chat, event = Chat.open_direct(
                chat_id=self.deps.ids.new_id(), opener=cmd.actor, other=cmd.user_id, now=self.deps.clock.now()
            )
            await uow.chats.add(chat)
            uow.record(event)
            return ChatView.of(chat), True

        return await self.transaction(work)


class CreateGroupChatCommand(msgspec.Struct, frozen=True, kw_only=True):
    actor: str
    title: str
    member_ids: list[str] = []
    group_id: str | None = None


class CreateGroupChat(UseCase):
    async def __call__(self, cmd: CreateGroupChatCommand) -> ChatView:
        limits = self.deps.limits
        if len(cmd.member_ids) > limits.max_members_per_chat:
            raise LimitExceeded("member_ids", limits.max_members_per_chat)
        await self.throttle(cmd.actor, self.deps.rates.create_chat)

        async def work(uow: UnitOfWork) -> ChatView:
            group = await load_group(uow, cmd.group_id) if cmd.group_id is not None else None
            if group is not None:
                authorize(cmd.actor, None, group, Permission.CREATE_CHATS)
            for user_id in cmd.member_ids:
                await require_user(uow, user_id, "member_ids")
            chat, event = Chat.create_group_chat(
                chat_id=self.deps.ids.new_id(),
                creator=cmd.actor,
                title=cmd.title,
                member_ids=cmd.member_ids,
                group=group,
                now=self.deps.clock.now(),
                limits=limits,
            )
            await uow.chats.add(chat)
            uow.record(event)
            return ChatView.of(chat)

        return await self.transaction(work)


class GetChat(UseCase):
    async def __call__(self, actor: str, chat_id: str) -> ChatView:
        async def work(uow: UnitOfWork) -> ChatView:
            chat, group = await load_chat(uow, chat_id)
            authorize(actor, chat, group, Permission.READ_CHAT)
            return ChatView.of(chat)

        return await self.read(work)


class RenameChatCommand(msgspec.Struct, frozen=True, kw_only=True):
    actor: str
    chat_id: str
    title: str


class RenameChat(UseCase):
    async def __call__(self, cmd: RenameChatCommand) -> ChatView:
        async def work(uow: UnitOfWork) -> ChatView:
            chat, group = await load_chat(uow, cmd.chat_id)
            uow.record(chat.rename(cmd.actor, cmd.title, group, self.deps.limits))
            await uow.chats.save(chat)
            return ChatView.of(chat)

        return await self.transaction(work)


class ChatMemberCommand(msgspec.Struct, frozen=True, kw_only=True):
    actor: str
    chat_id: str
    user_id: str


class AddChatMember(UseCase):
    async def __call__(self, cmd: ChatMemberCommand) -> ChatView:
        await self.throttle(cmd.actor, self.deps.rates.invite)

        async def work(uow: UnitOfWork) -> ChatView:
            chat, group = await load_chat(uow, cmd.chat_id)
            authorize(cmd.actor, chat, group, Permission.ADD_CHAT_MEMBERS)
            await require_user(uow, cmd.user_id)
            uow.record(
                chat.add_member(cmd.actor, cmd.user_id, group, self.deps.clock.now(), self.deps.limits)
            )
            await uow.chats.save(chat)
            return ChatView.of(chat)

        return await self.transaction(work)


class RemoveChatMember(UseCase):
    async def __call__(self, cmd: ChatMemberCommand) -> ChatView:
        async def work(uow: UnitOfWork) -> ChatView:
            chat, group = await load_chat(uow, cmd.chat_id)
            uow.record(chat.remove_member(cmd.actor, cmd.user_id, group))
            await uow.chats.save(chat)
            return ChatView.of(chat)

        return await self.transaction(work)


class LeaveChat(UseCase):
    async def __call__(self, actor: str, chat_id: str) -> None:
        async def work(uow: UnitOfWork) -> None:
            chat, _ = await load_chat(uow, chat_id)
            uow.record(chat.leave(actor))
            await uow.chats.save(chat)

        await self.transaction(work)


class TransferChatOwnership(UseCase):
    async def __call__(self, cmd: ChatMemberCommand) -> ChatView:
        async def work(uow: UnitOfWork) -> ChatView:
            chat, group = await load_chat(uow, cmd.chat_id)
            uow.record(chat.transfer_ownership(cmd.actor, cmd.user_id, group))
            await uow.chats.save(chat)
            return ChatView.of(chat)

        return await self.transaction(work)


class ListMyChats(UseCase):
    """The user's chats, most recently active first, with unread counts and the last message."""

    async def __call__(self, actor: str) -> list[ChatSummary]:
        async def work(uow: UnitOfWork) -> list[ChatSummary]:
            summaries = []
            for chat in await uow.chats.list_for_user(actor):
                marker = await uow.read_markers.get(chat.id, actor)
                read_seq = marker.seq if marker is not None else 0
                last = await uow.messages.last(chat.id)
                summaries.append(
                    ChatSummary(
                        chat=ChatView.of(chat),
                        read_seq=read_seq,
                        unread_count=await uow.messages.count_unread(chat.id, actor, read_seq),
                        last_message=MessageView.of(last) if last is not None else None,
                    )
                )
            summaries.sort(key=_last_activity, reverse=True)
            return summaries

        return await self.read(work)


def _last_activity(summary: ChatSummary) -> tuple[object, str]:
    at = summary.last_message.created_at if summary.last_message else summary.chat.created_at
    return at, summary.chat.id
