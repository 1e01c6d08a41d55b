"""The embedded core without HTTP: `python -m bench.core [--seconds N] [--sync FULL,NORMAL] [--json]`.

What the SQLite kit itself sustains (the "embedded" way of using chatcore: a Python service
calling the use cases), for sends at 1 and 32 concurrent tasks with `synchronous=FULL` (the
default: every commit fsynced) and `NORMAL` (WAL without fsync per commit), for history pages
of 50 from a 100,000-message chat with 8 concurrent readers, sends at 32 tasks into a chat of
1,000 members and into a chat of a group of 10,000 members, and for `get_chat` (a one-chat
read, as the permission guards do) with 8 concurrent readers. Separates the storage's own
ceiling from the HTTP stack's overhead when reading the REST figures.

`--json` prints one JSON object (for A/B scripts that alternate two source trees through
PYTHONPATH). Where the database counts its commits (`db.stats`), the sends also report the
mean number of units of work per commit (group commit).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.run import RESULTS
from bench.seed import _fill_history


async def _closed_loop(tasks: int, seconds: float, op: Any) -> float:
    done = 0
    stop_at = time.monotonic() + seconds

    async def one(i: int) -> None:
        nonlocal done
        while time.monotonic() < stop_at:
            await op(i)
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(tasks)))
    return done / (time.monotonic() - started)


def _commits(core: Any) -> tuple[int, int] | None:
    """(commits, units committed) so far, when the database counts them."""
    stats = getattr(core.db, "stats", None)
    return None if stats is None else (stats.commits, stats.units)


async def _sends(core: Any, users: list[str], chat: str, seconds: float, out: dict[str, float]) -> None:
    from chatcore.application.messages import SendMessageCommand

    s = core.service
    for tasks in (1, 32):

        async def send(i: int) -> None:
            await s.send_message(SendMessageCommand(actor=users[i], chat_id=chat, body="bench " + "x" * 60))

        before = _commits(core)
        out[f"send_c{tasks}_per_s"] = round(await _closed_loop(tasks, seconds, send), 1)
        after = _commits(core)
        if before is not None and after is not None and after[0] > before[0]:
            out[f"send_c{tasks}_units_per_commit"] = round((after[1] - before[1]) / (after[0] - before[0]), 2)


async def _big_chat_sends(core: Any, users: list[str], seconds: float, out: dict[str, float]) -> None:
    """32 senders in a chat of 1,000 members: what a send costs beyond its own row."""
    from chatcore.application.chats import ChatMemberCommand, CreateGroupChatCommand
    from chatcore.application.messages import SendMessageCommand
    from chatcore.application.profiles import CreateUserCommand

    s = core.service
    others = await asyncio.gather(
        *(
            s.create_user(CreateUserCommand(email=f"m{i}@bench.example", display_name=f"m{i}"))
            for i in range(1000 - len(users))
        )
    )
    chat = (
        await s.create_group_chat(CreateGroupChatCommand(actor=users[0], title="big", member_ids=users[1:]))
    ).id
    for other in others:
        await s.add_chat_member(ChatMemberCommand(actor=users[0], chat_id=chat, user_id=other.id))

    async def send(i: int) -> None:
        await s.send_message(SendMessageCommand(actor=users[i], chat_id=chat, body="bench " + "x" * 60))

    out["send_c32_1000_members_per_s"] = round(await _closed_loop(32, seconds, send), 1)


async def _big_group_sends(core: Any, users: list[str], seconds: float, out: dict[str, float]) -> None:
    """32 senders in a chat of a group of 10,000 members: the group decides their permissions."""
    from chatcore.application.chats import CreateGroupChatCommand
    from chatcore.application.messages import SendMessageCommand
    from chatcore.domain.groups import Group

    s, deps = core.service, core.service.deps
    now = deps.clock.now()
    group, _ = Group.create(
        group_id="big-group", name="big", description="", owner_id=users[0], now=now, limits=deps.limits
    )
    for member in [*users[1:], *(f"g{i}" for i in range(10_000 - len(users)))]:
        group.add_member(users[0], member, now, deps.limits)
    async with deps.uow() as uow:  # one document, not 10,000 saves of a growing one
        await uow.groups.add(group)
        await uow.commit()
    command = CreateGroupChatCommand(actor=users[0], title="g", member_ids=users[1:], group_id=group.id)
    chat = (await s.create_group_chat(command)).id

    async def send(i: int) -> None:
        await s.send_message(SendMessageCommand(actor=users[i], chat_id=chat, body="bench " + "x" * 60))

    out["send_c32_group_10000_members_per_s"] = round(await _closed_loop(32, seconds, send), 1)


async def measure(path: Path, synchronous: str, seconds: float, history: int) -> dict[str, float]:
    from adapters.sqlite.kit import sqlite_core
    from chatcore.application.chats import CreateGroupChatCommand
    from chatcore.application.messages import ListMessagesQuery, SendMessageCommand
    from chatcore.application.profiles import CreateUserCommand

    out: dict[str, float] = {}
    async with sqlite_core(path, synchronous=synchronous) as core:  # type: ignore[arg-type]
        s = core.service
        users = [
            (await s.create_user(CreateUserCommand(email=f"u{i}@bench.example", display_name=f"u{i}"))).id
            for i in range(32)
        ]
        chat = (
            await s.create_group_chat(CreateGroupChatCommand(actor=users[0], title="c", member_ids=users[1:]))
        ).id
        await _sends(core, users, chat, seconds, out)
        await _big_chat_sends(core, users, seconds, out)
        await _big_group_sends(core, users, seconds, out)

        async def get_chat(i: int) -> None:
            await s.get_chat(users[i], chat)

        out["get_chat_c8_per_s"] = round(await _closed_loop(8, seconds, get_chat), 1)
        history_chat = (
            await s.create_group_chat(
                CreateGroupChatCommand(actor=users[0], title="h", member_ids=users[1:8])
            )
        ).id

        class _Runtime:  # what _fill_history needs of a Runtime
            pass

        runtime = _Runtime()
        runtime.core = core  # type: ignore[attr-defined]
        await _fill_history(runtime, s, history_chat, users[0], history, SendMessageCommand)
        rng = random.Random(7)

        async def page(i: int) -> None:
            before = rng.randint(51, history + 1)
            await s.list_messages(
                ListMessagesQuery(actor=users[i], chat_id=history_chat, before=before, limit=50)
            )

        out["history_c8_pages_per_s"] = round(await _closed_loop(8, seconds, page), 1)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.core")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--sync", default="FULL,NORMAL", help="comma-separated synchronous levels")
    parser.add_argument("--history", type=int, default=100_000, help="messages in the history chat")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    import uvloop

    results = {}
    for synchronous in args.sync.split(","):
        RESULTS.mkdir(exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="core-", dir=RESULTS))  # the disk the servers use
        try:
            results[synchronous] = uvloop.run(
                measure(work / "core.db", synchronous, args.seconds, args.history)
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(results))
        return 0
    for synchronous, figures in results.items():
        print(f"synchronous={synchronous}: " + ", ".join(f"{k}={v:,.0f}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
