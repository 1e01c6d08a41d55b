"""The benchmark's data, written before a server starts on the same data directory.

Users are made through the core (`create_user`, no password) and logged in through the auth
service's own session start (a real session and access token, without 2,000 argon2 hashes);
the server signs and checks tokens with the key persisted in the data directory, so they are
valid there. The history chat gets one real message through the core, then 99,999 copies of
its row (new seq, id and body) in one SQLite transaction, and the chat's `last_seq` moved to
match: the rows are what the repository itself writes, so reads see ordinary messages.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Mapping
from typing import Any

import msgspec

# Settings every chatcore server of the benchmark runs with (besides the data directory).
BENCH_SETTINGS = {
    "CHATCORE_ACCESS_TOKEN_TTL_S": "3600",
    "CHATCORE_MAX_MEMBERS_PER_CHAT": "2000",
    "CHATCORE_WS_MAX_SOCKETS_PER_USER": "32",
    # Per-user rate limits lifted: the figures are the server's capacity, not the per-user policy
    # (5 sends/s per user by default would cap 32 senders at 160 msg/s). The limiter still runs.
    "CHATCORE_SENDS_PER_SECOND": "1000000",
    "CHATCORE_SEND_BURST": "1000000",
    "CHATCORE_CHATS_CREATED_PER_HOUR": "1000000",
    "CHATCORE_INVITES_PER_HOUR": "1000000",
}


def chatcore_env(data_dir: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATCORE_")}
    env.update(BENCH_SETTINGS)
    env["CHATCORE_DATA_DIR"] = data_dir
    env.update(extra)
    return env


class Seed(msgspec.Struct, kw_only=True):
    sender: dict[str, str]  # {"id", "token"}
    senders: list[dict[str, str]]
    subs: list[dict[str, str]]
    send_chat: str
    fan_100: str
    fan_1000: str
    small_chats: list[str]  # each: the sender + 10 subscribers
    small_members: list[list[int]]  # indexes into subs
    poll_chat: str  # the sender + subs[:n_poll]
    history_chat: str
    history_messages: int
    seconds: float = 0.0


async def _seed(env: Mapping[str, str], n_senders: int, n_subs: int, n_small: int, history: int) -> Seed:
    from chatcore.application.chats import CreateGroupChatCommand
    from chatcore.application.messages import SendMessageCommand
    from chatcore.application.profiles import CreateUserCommand
    from entrypoints.container import build_container
    from entrypoints.settings import load_settings

    settings = load_settings(environ=env)
    started = time.monotonic()
    async with build_container(settings).runtime() as runtime:
        service, auth = runtime.service, runtime.auth

        async def user(name: str) -> dict[str, str]:
            profile = await service.create_user(
                CreateUserCommand(email=f"{name}@bench.example", display_name=name, email_verified=True)
            )
            pair = await auth.login.start_session(profile.id, "password", "127.0.0.1", "bench")
            return {"id": profile.id, "token": pair.access_token}

        senders = [await user(f"sender{i}") for i in range(n_senders)]
        subs = [await user(f"sub{i}") for i in range(n_subs)]
        sender = senders[0]

        async def chat(title: str, owner: str, members: list[str]) -> str:
            view = await service.create_group_chat(
                CreateGroupChatCommand(actor=owner, title=title, member_ids=members)
            )
            return view.id

        ids = [s["id"] for s in subs]
        send_chat = await chat("send", sender["id"], [s["id"] for s in senders[1:]])
        fan_100 = await chat("fan-100", sender["id"], ids[:100])
        fan_1000 = await chat("fan-1000", sender["id"], ids[:1000])
        small_members = [list(range(10 * k, 10 * k + 10)) for k in range(n_small)]
        small = [
            await chat(f"small-{k}", sender["id"], [ids[i] for i in m]) for k, m in enumerate(small_members)
        ]
        poll_chat = await chat("long-poll", sender["id"], ids[:100])
        history_chat = await chat("history", sender["id"], [s["id"] for s in senders[1:8]])
        await _fill_history(runtime, service, history_chat, sender["id"], history, SendMessageCommand)
    return Seed(
        sender=sender,
        senders=senders,
        subs=subs,
        send_chat=send_chat,
        fan_100=fan_100,
        fan_1000=fan_1000,
        small_chats=small,
        small_members=small_members,
        poll_chat=poll_chat,
        history_chat=history_chat,
        history_messages=history,
        seconds=round(time.monotonic() - started, 1),
    )


async def _fill_history(
    runtime: Any, service: Any, chat_id: str, author: str, count: int, command: Any
) -> None:
    from adapters.sqlite.repositories import encode
    from chatcore.domain.chats import Chat

    sent = await service.send_message(command(actor=author, chat_id=chat_id, body="history 1"))
    db = runtime.core.db
    first = await _first_message(db, chat_id)

    def fill(conn: Any) -> None:
        rows = []
        for seq in range(2, count + 1):
            m = dataclasses.replace(
                first, id=f"{first.id[:-7]}{seq:07d}", seq=seq, body=f"history {seq} " * 4
            )
            rows.append((chat_id, seq, author, None, 0, encode(m)))
        columns = "chat_id, seq, author_id, client_msg_id, deleted, data"
        conn.executemany(f"INSERT INTO messages ({columns}) VALUES (?, ?, ?, ?, ?, ?)", rows)  # noqa: S608
        (data,) = conn.execute("SELECT data FROM chats WHERE id = ?", (chat_id,)).fetchone()
        chat = msgspec.json.decode(data, type=Chat)
        chat.last_seq = count
        conn.execute("UPDATE chats SET last_seq = ?, data = ? WHERE id = ?", (count, encode(chat), chat_id))

    assert sent.message.seq == 1
    await db.write(fill)


async def _first_message(db: Any, chat_id: str) -> Any:
    from chatcore.domain.messages import Message

    def get(conn: Any) -> bytes:
        (data,) = conn.execute(
            "SELECT data FROM messages WHERE chat_id = ? AND seq = 1", (chat_id,)
        ).fetchone()
        return bytes(data, "utf-8") if isinstance(data, str) else data

    return msgspec.json.decode(await db.read(get), type=Message)


def seed(env: Mapping[str, str], *, n_senders: int, n_subs: int, n_small: int, history: int) -> Seed:
    return asyncio.run(_seed(env, n_senders, n_subs, n_small, history))
