"""Waiting long-polls against a real `chatcore serve`: they hold request slots of the worker.

granian's default backpressure (1,024 requests in progress per worker) let 1,024 waiting polls
stall every other request until one answered; `chatcore serve` raises it
(`CHATCORE_MAX_CONCURRENT_REQUESTS`), and one user may hold at most `longpoll_max_per_user`
waiting polls (429 beyond), so no single client can take the slots either.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.integration.test_failure_support import Account, Server, account, serving

pytestmark = pytest.mark.slow

POLLS = 1_100  # beyond granian's default of 1,024 requests in progress


@pytest.fixture
def roomy_server(tmp_path: Path) -> Iterator[Server]:
    # The per-user cap is lifted here: this test is about the worker's slots, not the cap.
    with serving(tmp_path, {"CHATCORE_LONGPOLL_MAX_PER_USER": str(POLLS + 10)}) as running:
        yield running


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with serving(tmp_path, {}) as running:
        yield running


def _room_for_sockets(count: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 256
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.fail(f"this machine allows {hard} open files; the test needs {wanted}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _cursor(server: Server, user: Account) -> str:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        r = client.get("/v1/updates", headers=user.headers)
        assert r.status_code == 200, r.text
        return str(r.json()["cursor"])


async def _open_polls(
    server: Server, user: Account, cursor: str, count: int, wait_s: float
) -> list[asyncio.StreamWriter]:
    """`count` long-polls with nothing to deliver, written on raw connections and left waiting."""
    parts = urlsplit(server.url)
    request = (
        f"GET /v1/updates?cursor={cursor}&timeout={wait_s} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Authorization: Bearer {user.token}\r\n\r\n"
    ).encode()
    writers = []
    for _ in range(count):
        _, writer = await asyncio.open_connection(parts.hostname, parts.port)
        writer.write(request)
        writers.append(writer)
    await asyncio.sleep(1.0)  # each poll is read and waiting
    return writers


def test_more_waiting_polls_than_granians_default_leave_other_requests_answered(roomy_server: Server) -> None:
    _room_for_sockets(POLLS)
    with httpx.Client(base_url=roomy_server.url, timeout=10) as client:
        ann = account(client, "ann")
    cursor = _cursor(roomy_server, ann)

    async def scenario() -> float:
        writers = await _open_polls(roomy_server, ann, cursor, POLLS, wait_s=20)
        try:
            async with httpx.AsyncClient(base_url=roomy_server.url, timeout=5) as client:
                started = time.monotonic()
                r = await client.get("/v1/users/me", headers=ann.headers)
                assert r.status_code == 200, r.text
                return time.monotonic() - started
        finally:
            for writer in writers:
                writer.close()

    answered_in = asyncio.run(asyncio.wait_for(scenario(), 25))
    print(f"\nwith {POLLS} polls waiting, another request answered in {answered_in * 1000:.0f} ms")
    assert answered_in < 2.0


def test_a_user_holds_at_most_ten_waiting_polls(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        ann, bob = account(client, "ann"), account(client, "bob")
    cursor = _cursor(server, ann)

    async def scenario() -> None:
        writers = await _open_polls(server, ann, cursor, 10, wait_s=2)
        try:
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
                params = {"cursor": cursor, "timeout": "0"}
                r = await client.get("/v1/updates", params=params, headers=ann.headers)
                assert r.status_code == 429, r.text
                assert r.headers["content-type"].startswith("application/problem+json")
                assert int(r.headers["retry-after"]) >= 1
                other = await client.get("/v1/updates", headers=bob.headers)  # another user: free
                assert other.status_code == 200, other.text
                await asyncio.sleep(2.5)  # the ten answer at their timeout and free their slots
                again = await client.get("/v1/updates", params=params, headers=ann.headers)
                assert again.status_code == 200, again.text
        finally:
            for writer in writers:
                writer.close()

    asyncio.run(asyncio.wait_for(scenario(), 25))
