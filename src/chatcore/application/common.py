"""What every use case shares: its dependencies and the transaction runner."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import msgspec

from chatcore.domain.chats import Chat
from chatcore.domain.errors import Conflict, InvalidInput, NotFound, RateLimited
from chatcore.domain.events import EventRecord
from chatcore.domain.groups import Group
from chatcore.domain.limits import Limits
from chatcore.ports.errors import ConcurrentUpdate, DuplicateKey
from chatcore.ports.rate_limit import RateLimiter, RateRule
from chatcore.ports.system import Clock, IdGenerator
from chatcore.ports.unit_of_work import UnitOfWork, UnitOfWorkFactory

# Commits that lose a race are re-run on fresh state: a rerun of a send whose client_msg_id
# was just taken finds the stored message and answers with it. Between runs, a random wait
# that doubles each time keeps many writers of one chat (across processes) from colliding
# in lockstep.
MAX_ATTEMPTS = 10
FIRST_BACKOFF_S = 0.002
MAX_BACKOFF_S = 0.25


async def _ignore(records: Sequence[EventRecord]) -> None:
    return None


class UseRates(msgspec.Struct, frozen=True, kw_only=True):
    """The token buckets the use cases take from, built from the Limits settings."""

    send: RateRule
    create_chat: RateRule
    invite: RateRule

    @classmethod
    def of(cls, limits: Limits) -> UseRates:
        hourly = 1 / 3600
        return cls(
            send=RateRule(name="send", burst=limits.send_burst, per_second=limits.sends_per_second),
            create_chat=RateRule(
                name="create_chat",
                burst=limits.chats_created_per_hour,
                per_second=limits.chats_created_per_hour * hourly,
            ),
            invite=RateRule(
                name="invite", burst=limits.invites_per_hour, per_second=limits.invites_per_hour * hourly
            ),
        )


@dataclass(frozen=True, slots=True)
class Deps:
    """The ports every use case may need, built once by the composition root."""

    uow: UnitOfWorkFactory
    clock: Clock
    ids: IdGenerator
    limits: Limits
    # Called after each commit with the new records (wakes the outbox relay).
    committed: Callable[[Sequence[EventRecord]], Awaitable[None]] = _ignore
    # No limiter: no rate limits (tests, trusted embedders).
    limiter: RateLimiter | None = None
    # Units of work that only read (no commit): an adapter may serve them apart from the writers
    # (SQLite: on its reader connection, never queueing behind a commit). None: `uow` serves reads.
    read_uow: UnitOfWorkFactory | None = None

    def reader(self) -> UnitOfWork:
        """A unit of work to read committed data with; never committed (an adapter may refuse)."""
        return (self.read_uow or self.uow)()

    @property
    def rates(self) -> UseRates:
        return UseRates.of(self.limits)


class UseCase:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    async def transaction[T](self, work: Callable[[UnitOfWork], Awaitable[T]]) -> T:
        """Run `work` in a unit of work and commit; re-run it when the commit loses a race."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                async with self.deps.uow() as uow:
                    result = await work(uow)
                    records = await uow.commit()
            except (ConcurrentUpdate, DuplicateKey):
                if attempt == MAX_ATTEMPTS:
                    raise Conflict("the change lost a race with others; try again") from None
                ceiling = min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2**attempt)
                await asyncio.sleep(random.uniform(0, ceiling))  # jitter, not a secret
                continue
            await self.deps.committed(records)
            return result
        raise AssertionError("unreachable")

    async def read[T](self, work: Callable[[UnitOfWork], Awaitable[T]]) -> T:
        """Run a read-only `work` in a unit of work that commits nothing."""
        async with self.deps.reader() as uow:
            return await work(uow)

    async def throttle(self, actor: str, rule: RateRule) -> None:
        """Take one token from the actor's bucket for `rule`; raise RateLimited when it is empty."""
        if self.deps.limiter is None:
            return
        decision = await self.deps.limiter.hit(actor, rule)
        if not decision.allowed:
            raise RateLimited(decision.retry_after_s)

    def page_size(self, limit: int | None) -> int:
        limits = self.deps.limits
        if limit is None:
            return limits.default_page_size
        if not 1 <= limit <= limits.max_page_size:
            raise InvalidInput("limit", f"limit must be between 1 and {limits.max_page_size}")
        return limit


async def load_chat(uow: UnitOfWork, chat_id: str) -> tuple[Chat, Group | None]:
    """A chat and the group whose roles govern it. Access is the domain's to decide."""
    chat = await uow.chats.get(chat_id)
    if chat is None:
        raise NotFound("chat")
    group = await uow.groups.get(chat.group_id) if chat.group_id is not None else None
    return chat, group


async def load_chat_for(uow: UnitOfWork, chat_id: str, actor: str) -> tuple[Chat, Group | None]:
    """`load_chat` for a check of `actor`'s own access, and a send: the chat's and the group's
    `members` may hold the actor only (see `get_for_member` of both repositories), so a large
    chat or group costs no more than a small one. Not for changes to either besides the chat's
    `next_seq`, nor for rank checks."""
    chat = await uow.chats.get_for_member(chat_id, actor)
    if chat is None:
        raise NotFound("chat")
    group = await uow.groups.get_for_member(chat.group_id, actor) if chat.group_id is not None else None
    return chat, group


async def load_group(uow: UnitOfWork, group_id: str) -> Group:
    group = await uow.groups.get(group_id)
    if group is None:
        raise NotFound("group")
    return group


async def require_user(uow: UnitOfWork, user_id: str, field: str = "user_id") -> None:
    """The target of an action must exist; the error names the request field that held it."""
    if await uow.users.get(user_id) is None:
        raise InvalidInput(field, "no such user")
