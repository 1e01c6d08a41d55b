"""The HTTP path without the network: the Litestar app driven in-process through ASGI.

`python -m bench.asgi [send|history|hello] [--requests N] [--concurrency C] [--profile]`

Each request is an ASGI call on this process's event loop (no granian, no sockets, no load
generator), so the figure is chatcore's own Python cost per request: requests per second of one
core, and with `--profile` the cProfile of that path sorted by own time. Useful to compare
changes A/B on a busy machine, where the end-to-end bench is noisy. The data directory is a
fresh temporary one (SQLite embedded default, 2 members, one chat; history seeds 5,000 messages).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from bench.seed import chatcore_env

Message = dict[str, Any]


async def _call(app: Any, method: str, path: str, token: str, body: bytes = b"", query: bytes = b"") -> int:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"authorization", f"Bearer {token}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    sent = False
    status = 0

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def _run(scenario: str, requests: int, concurrency: int, profile: bool, sort: str, top: int) -> None:
    from chatcore.application.chats import CreateGroupChatCommand
    from chatcore.application.messages import SendMessageCommand
    from chatcore.application.profiles import CreateUserCommand
    from entrypoints.container import build_container
    from entrypoints.http.app import create_app
    from entrypoints.settings import load_settings

    data = tempfile.mkdtemp(prefix="chatcore-asgi-")
    settings = load_settings(environ=chatcore_env(data, CHATCORE_LOG_LEVEL="WARNING"))
    app = create_app(build_container(settings))
    async with app.lifespan():
        runtime = app.state.runtime
        service = runtime.service
        users = []
        for name in ("ann", "bob"):
            user = await service.create_user(
                CreateUserCommand(email=f"{name}@bench.example", display_name=name, email_verified=True)
            )
            pair = await runtime.auth.login.start_session(user.id, "password", "127.0.0.1", "bench")
            users.append((user.id, pair.access_token))
        (ann, token), (bob, _) = users
        chat = await service.create_group_chat(CreateGroupChatCommand(actor=ann, title="t", member_ids=[bob]))
        path = f"/v1/chats/{chat.id}/messages"
        if scenario == "history":
            for i in range(5_000):
                await service.send_message(SendMessageCommand(actor=ann, chat_id=chat.id, body=f"m{i}"))
        counter = iter(range(10**9))

        def one() -> Awaitable[int]:
            if scenario == "send":
                body = msgspec.json.encode({"body": f"hello {next(counter)}"})
                return _call(app, "POST", path, token, body)
            if scenario == "history":
                before = 1 + (next(counter) * 7919) % 5_000
                return _call(app, "GET", path, token, query=f"before={before}&limit=50".encode())
            return _call(app, "GET", "/healthz", token)

        await _drive(one, 200, concurrency)  # warm-up
        profiler = cProfile.Profile() if profile else None
        cpu, wall = time.process_time(), time.perf_counter()
        if profiler:
            profiler.enable()
        statuses = await _drive(one, requests, concurrency)
        if profiler:
            profiler.disable()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    bad = {s for s in statuses if s >= 300}
    print(
        f"{scenario}: {requests} requests, concurrency {concurrency}: {requests / wall:,.0f}/s wall, "
        f"{cpu / requests * 1e6:,.0f} µs CPU per request" + (f", non-2xx statuses {bad}" if bad else "")
    )
    if profiler:
        pstats.Stats(profiler).sort_stats(sort).print_stats(top)


async def _drive(one: Callable[[], Awaitable[int]], n: int, concurrency: int) -> list[int]:
    statuses: list[int] = []
    remaining = iter(range(n))

    async def worker() -> None:
        for _ in remaining:
            statuses.append(await one())

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=["send", "history", "hello"], default="send", nargs="?")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--sort", default="tottime", help="pstats order: tottime, cumulative, …")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    asyncio.run(_run(args.scenario, args.requests, args.concurrency, args.profile, args.sort, args.top))


if __name__ == "__main__":
    main()
