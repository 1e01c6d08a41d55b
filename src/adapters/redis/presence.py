"""Presence and typing in Redis with expiring keys: nothing to clean up when an instance dies.

`{prefix}online:{user}` lives `online_ttl_s` after the user's last sign of life (connections
call `touch` on each heartbeat). Typing is `{prefix}typing:{chat}:{user}` living `typing_ttl_s`,
plus a per-chat set of recent typists so a chat's typists are listed without SCAN; members of
that set whose own key expired are dropped as they are found.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError


class RedisPresence:
    def __init__(
        self, client: Redis, *, prefix: str = "chatcore:", online_ttl_s: int = 60, typing_ttl_s: int = 6
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._online_ttl_s, self._typing_ttl_s = online_ttl_s, typing_ttl_s

    def _online(self, user_id: str) -> str:
        return f"{self._prefix}online:{user_id}"

    def _typing(self, chat_id: str, user_id: str) -> str:
        return f"{self._prefix}typing:{chat_id}:{user_id}"

    def _typists(self, chat_id: str) -> str:
        return f"{self._prefix}typists:{chat_id}"

    async def touch(self, user_id: str) -> None:
        # Presence is a courtesy: with Redis away a user shows offline, nothing fails.
        with contextlib.suppress(RedisError):
            await self._client.set(self._online(user_id), 1, ex=self._online_ttl_s)

    async def go_offline(self, user_id: str) -> None:
        await self._client.delete(self._online(user_id))

    async def is_online(self, user_id: str) -> bool:
        return bool(await self._client.exists(self._online(user_id)))

    async def online_among(self, user_ids: Sequence[str]) -> set[str]:
        if not user_ids:
            return set()
        try:
            values = await self._client.mget([self._online(u) for u in user_ids])
        except RedisError:
            return set()
        return {u for u, v in zip(user_ids, values, strict=True) if v is not None}

    async def start_typing(self, chat_id: str, user_id: str) -> None:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.set(self._typing(chat_id, user_id), 1, ex=self._typing_ttl_s)
            pipe.sadd(self._typists(chat_id), user_id)
            pipe.expire(self._typists(chat_id), self._typing_ttl_s)
            await pipe.execute()

    async def stop_typing(self, chat_id: str, user_id: str) -> None:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.delete(self._typing(chat_id, user_id))
            pipe.srem(self._typists(chat_id), user_id)
            await pipe.execute()

    async def typing_in(self, chat_id: str) -> set[str]:
        raw = await self._client.smembers(self._typists(chat_id))
        members = sorted(m.decode() if isinstance(m, bytes) else m for m in raw)
        if not members:
            return set()
        alive = await self._client.mget([self._typing(chat_id, u) for u in members])
        gone = [u for u, v in zip(members, alive, strict=True) if v is None]
        if gone:
            await self._client.srem(self._typists(chat_id), *gone)
        return {u for u, v in zip(members, alive, strict=True) if v is not None}
