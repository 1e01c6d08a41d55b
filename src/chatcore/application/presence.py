"""Who of a chat's members is online: for members only, like everything else about the chat."""

from __future__ import annotations

import msgspec

from chatcore.application.common import Deps, UseCase, load_chat
from chatcore.domain.permissions import Permission, authorize
from chatcore.ports.presence import Presence
from chatcore.ports.unit_of_work import UnitOfWork


class ChatPresence(msgspec.Struct, frozen=True, kw_only=True):
    chat_id: str
    online: list[str]  # member ids with a live connection (within the presence TTL)


class GetChatPresence(UseCase):
    def __init__(self, deps: Deps, presence: Presence) -> None:
        super().__init__(deps)
        self._presence = presence

    async def __call__(self, actor: str, chat_id: str) -> ChatPresence:
        async def work(uow: UnitOfWork) -> list[str]:
            chat, group = await load_chat(uow, chat_id)
            authorize(actor, chat, group, Permission.READ_CHAT)
            return list(chat.members)

        members = await self.read(work)
        online = await self._presence.online_among(members)
        return ChatPresence(chat_id=chat_id, online=[m for m in members if m in online])
