"""The embedded core without HTTP: `python -m bench.core [--seconds N]`.

What the SQLite kit itself sustains (the "embedded" way of using chatcore: a Python service
calling the use cases), for sends at 1 and 32 concurrent tasks with `synchronous=FULL` (the
default: every commit fsynced) and `NORMAL` (WAL without fsync per commit), and for history
pages of 50 from a 100,000-message chat with 8 concurrent readers. Separates the storage's own
ceiling from the HTTP stack's overhead when reading the REST figures.
"""

from __future__ import annotations

import argparse
import asyncio
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


async def measure(path: Path, synchronous: str, seconds: float) -> dict[str, float]:
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

        for tasks in (1, 32):

            async def send(i: int) -> None:
                await s.send_message(
                    SendMessageCommand(actor=users[i], chat_id=chat, body="bench " + "x" * 60)
                )

            out[f"send_c{tasks}_per_s"] = round(await _closed_loop(tasks, seconds, send), 1)
        history = (
            await s.create_group_chat(
                CreateGroupChatCommand(actor=users[0], title="h", member_ids=users[1:8])
            )
        ).id

        class _Runtime:  # what _fill_history needs of a Runtime
            pass

        runtime = _Runtime()
        runtime.core = core  # type: ignore[attr-defined]
        await _fill_history(runtime, s, history, users[0], 100_000, SendMessageCommand)
        rng = random.Random(7)

        async def page(i: int) -> None:
            before = rng.randint(51, 100_001)
            await s.list_messages(ListMessagesQuery(actor=users[i], chat_id=history, before=before, limit=50))

        out["history_c8_pages_per_s"] = round(await _closed_loop(8, seconds, page), 1)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.core")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    import uvloop

    results = {}
    for synchronous in ("FULL", "NORMAL"):
        RESULTS.mkdir(exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="core-", dir=RESULTS))  # the disk the servers use
        try:
            results[synchronous] = uvloop.run(measure(work / "core.db", synchronous, args.seconds))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    for synchronous, figures in results.items():
        print(f"synchronous={synchronous}: " + ", ".join(f"{k}={v:,.0f}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
