"""Message use cases: send (idempotent by client_msg_id), read, page, edit, delete, mark read."""

from __future__ import annotations

import msgspec

from chatcore.application.common import UseCase, load_chat_for
from chatcore.application.views import EditView, MessagePage, MessageView, ReadMarkerView, SendResult
from chatcore.domain.chats import Chat
from chatcore.domain.errors import InvalidInput, NotFound
from chatcore.domain.groups import Group
from chatcore.domain.messages import Message, ReadMarker
from chatcore.domain.permissions import Permission, authorize
from chatcore.ports.unit_of_work import UnitOfWork


class SendMessageCommand(msgspec.Struct, frozen=True, kw_only=True):
    actor: str
    chat_id: str
    body: str
    reply_to: int | None = None
    client_msg_id: str | None = None


class SendMessage(UseCase):
    """Post a message. A retry with the same client_msg_id returns the original, storing nothing."""

    async def __call__(self, cmd: SendMessageCommand) -> SendResult:
        async def work(uow: UnitOfWork) -> SendResult:
            # The actor's own membership is checked here, inside the transaction (the real guard
            # against a concurrent removal); the other members are not needed for a send.
            chat, group = await load_chat_for(uow, cmd.chat_id, cmd.actor)
            if cmd.client_msg_id is not None:
                authorize(cmd.actor, chat, group, Permission.READ_CHAT)
                earlier = await uow.messages.get_by_client_id(chat.id, cmd.actor, cmd.client_msg_id)
                if earlier is not None:
                    if not earlier.same_post(cmd.body, cmd.reply_to):
                        raise InvalidInput(
                            "client_msg_id", "client_msg_id was already used for another message"
                        )
                    return SendResult(message=MessageView.of(earlier), created=False)
            # Only a new message takes a token: retries of a sent one are answered, not throttled.
            await self.throttle(cmd.actor, self.deps.rates.send)
            message, event = Message.post(
                message_id=self.deps.ids.new_id(),
                chat=chat,
                group=group,
                author=cmd.actor,
                body=cmd.body,
                reply_to=cmd.reply_to,
                client_msg_id=cmd.client_msg_id,
                now=self.deps.clock.now(),
                limits=self.deps.limits,
            )
            await uow.messages.add(message)
            await uow.chats.save(chat)
            uow.record(event)
            return SendResult(message=MessageView.of(message), created=True)

        return await self.transaction(work)


async def _load_message(
    uow: UnitOfWork, actor: str, chat_id: str, seq: int
) -> tuple[Chat, Group | None, Message]:
    """A message the actor may see; an outsider gets the chat's NotFound before any message lookup."""
    chat, group = await load_chat_for(uow, chat_id, actor)
    authorize(actor, chat, group, Permission.READ_CHAT)
    message = await uow.messages.get(chat.id, seq)
    if message is None:
        raise NotFound("message")
    return chat, group, message


class GetMessage(UseCase):
    async def __call__(self, actor: str, chat_id: str, seq: int) -> MessageView:
        async def work(uow: UnitOfWork) -> MessageView:
            chat, group, message = await _load_message(uow, actor, chat_id, seq)
            message.ensure_readable(actor, chat, group)
            return MessageView.of(message)

        return await self.read(work)


class GetEditHistory(UseCase):
    async def __call__(self, actor: str, chat_id: str, seq: int) -> list[EditView]:
        async def work(uow: UnitOfWork) -> list[EditView]:
            chat, group, message = await _load_message(uow, actor, chat_id, seq)
            message.ensure_readable(actor, chat, group)
            return [EditView.of(e) for e in message.history]

        return await self.read(work)


class ListMessagesQuery(msgspec.Struct, frozen=True, kw_only=True):
    actor: str
    chat_id: str
    after: int | None = None
    before: int | None = None
    limit: int | None = None


class ListMessages(UseCase):
    """A page of history by seq: `after` pages forward, `before` pages back, neither gives the newest."""

    async def __call__(self, query: ListMessagesQuery) -> MessagePage:
        limit = self.page_size(query.limit)
        if query.after is not None and query.before is not None:
            raise InvalidInput("before", "give either after or before, not both")
        for field, value in (("after", query.after), ("before", query.before)):
            if value is not None and value < 0:
                raise InvalidInput(field, f"{field} must not be negative")

        async def work(uow: UnitOfWork) -> MessagePage:
            chat, group = await load_chat_for(uow, query.chat_id, query.actor)
            authorize(query.actor, chat, group, Permission.READ_CHAT)
            forward = query.after is not None
            before = None if forward else (query.before if query.before is not None else chat.last_seq + 1)
            page = await uow.messages.list(chat.id, after=query.after, before=before, limit=limit + 1)
            has_more = len(page) > limit
            page = page[:limit] if forward else page[-limit:]
            return MessagePage(messages=[MessageView.of(m) for m in page], has_more=has_more)

        return await self.read(work)


class EditMessageCommand(msgspec.Struct, frozen=True, kw_only=True):
    actor: str
    chat_id: str
    seq: int
    body: str


class EditMessage(UseCase):
    async def __call__(self, cmd: EditMessageCommand) -> MessageView:
        async def work(uow: UnitOfWork) -> MessageView:
            chat, group, message = await _load_message(uow, cmd.actor, cmd.chat_id, cmd.seq)
            uow.record(
                message.edit(cmd.actor, chat, group, cmd.body, self.deps.clock.now(), self.deps.limits)
            )
            await uow.messages.save(message)
            return MessageView.of(message)

        return await self.transaction(work)


class DeleteMessage(UseCase):
    async def __call__(self, actor: str, chat_id: str, seq: int) -> None:
        async def work(uow: UnitOfWork) -> None:
            chat, group, message = await _load_message(uow, actor, chat_id, seq)
            uow.record(message.delete(actor, chat, group, self.deps.clock.now()))
            await uow.messages.save(message)

        await self.transaction(work)


class MarkReadCommand(msgspec.Struct, frozen=True, kw_only=True):
    actor: str
    chat_id: str
    seq: int


class MarkRead(UseCase):
    """Move the actor's read marker forward; the same or an older seq changes nothing."""

    async def __call__(self, cmd: MarkReadCommand) -> ReadMarkerView:
        async def work(uow: UnitOfWork) -> ReadMarkerView:
            chat, group = await load_chat_for(uow, cmd.chat_id, cmd.actor)
            marker = await uow.read_markers.get(chat.id, cmd.actor) or ReadMarker(chat.id, cmd.actor)
            event = marker.move_to(chat, group, cmd.seq)
            if event is not None:
                uow.record(event)
                await uow.read_markers.save(marker)
            unread = await uow.messages.count_unread(chat.id, cmd.actor, marker.seq)
            return ReadMarkerView(chat_id=chat.id, seq=marker.seq, unread_count=unread)

        return await self.transaction(work)


class SignalTyping(UseCase):
    """May the actor say they are typing in this chat? The same rule as sending a message.

    Typing is ephemeral: nothing is stored or logged, so this only asks the domain; the caller
    puts the signal on the bus. Returns the chat's stream id.
    """

    async def __call__(self, actor: str, chat_id: str) -> str:
        async def work(uow: UnitOfWork) -> str:
            chat, group = await load_chat_for(uow, chat_id, actor)
            authorize(actor, chat, group, Permission.SEND_MESSAGES)
            return chat.id

        return await self.read(work)
