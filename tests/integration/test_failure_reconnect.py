"""Reconnect / long-poll over a real server's sockets (SECURITY.md §2 R8), with its figures.

A real `chatcore serve` (embedded SQLite). For each fixed seed, a client that belongs to two
chats does, at random: open a WebSocket with its last cursor, read a few frames and drop the TCP
connection without a close frame; long-poll `/v1/updates` with its cursor (short timeout); or
wait — while another user sends into both its chats and into a third it does not belong to,
partly while a socket is open. The client keeps only the cursor of the last event it read, as a
real one would. At the end it drains and asserts: per chat, the message seqs it accepted are
exactly 1..N in order (no gap, no duplicate: the cursor of the last read event resumes right
after it); no record of the foreign chat; a long-poll with no news answers empty at its
timeout ± 1 s. Reported: events checked per seed and the empty long-poll's duration.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.integration.test_failure_support import UNTHROTTLED, Account, Server, account, serving

pytestmark = pytest.mark.slow

SEEDS = (11, 23, 47)
STEPS = 26
EMPTY_POLL_S = 1.5
TEST_BUDGET_S = 28


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with serving(tmp_path, UNTHROTTLED) as running:
        yield running


@dataclass
class Client:
    """What the reconnecting client accepted: every record, in arrival order, and its cursor."""

    user: Account
    cursor: str
    records: list[dict[str, Any]] = field(default_factory=list)
    ws_sessions: int = 0
    polls: int = 0

    def accept(self, record: dict[str, Any], cursor: str) -> None:
        self.records.append(record)
        self.cursor = cursor


@dataclass
class World:
    server: Server
    http: httpx.AsyncClient
    sender: Account
    mine: tuple[str, str]
    foreign: str
    sent: dict[str, int] = field(default_factory=dict)


async def _send(world: World, chat: str, count: int) -> None:
    for _ in range(count):
        r = await world.http.post(
            f"/v1/chats/{chat}/messages", json={"body": "x"}, headers=world.sender.headers
        )
        assert r.status_code == 201, r.text
        world.sent[chat] = world.sent.get(chat, 0) + 1


async def _poll(world: World, client: Client, wait_s: float) -> dict[str, Any]:
    r = await world.http.get(
        "/v1/updates", params={"cursor": client.cursor, "timeout": wait_s}, headers=client.user.headers
    )
    assert r.status_code == 200, r.text
    page: dict[str, Any] = r.json()
    for record in page["events"]:
        client.records.append(record)
    client.cursor = page["cursor"]
    client.polls += 1
    return page


async def _read_some(ws: ClientConnection, client: Client, frames: int) -> None:
    """Read up to `frames` event frames, stopping early when nothing comes for a moment."""
    for _ in range(frames):
        try:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 0.25))
        except TimeoutError:
            return
        if frame["type"] == "heartbeat" and frame.get("reply_within_ms") is not None:
            await ws.send(json.dumps({"type": "ping", "id": "alive"}))
        assert frame["type"] in ("event", "heartbeat", "ack"), frame
        if frame["type"] == "event":
            client.accept(frame["record"], frame["cursor"])


async def _ws_session(world: World, client: Client, rng: random.Random) -> None:
    """Open with the last cursor, read some (while the other user may be sending), drop abruptly."""
    url = world.server.url.replace("http://", "ws://") + f"/v1/ws?cursor={client.cursor}"
    ws = await connect(url, additional_headers=client.user.headers, max_size=None)
    client.ws_sessions += 1
    sending = asyncio.create_task(_send(world, rng.choice(world.mine), rng.randint(0, 4)))
    await _read_some(ws, client, rng.randint(1, 8))
    await sending
    ws.transport.abort()  # no close frame: the server learns of it from the dead TCP connection


async def _step(world: World, client: Client, rng: random.Random) -> None:
    action = rng.choice(("send", "send_foreign", "ws", "ws", "poll", "poll"))
    if action == "send":
        await _send(world, rng.choice(world.mine), rng.randint(1, 5))
    elif action == "send_foreign":
        await _send(world, world.foreign, rng.randint(1, 3))
    elif action == "ws":
        await _ws_session(world, client, rng)
    else:
        await _poll(world, client, rng.choice((0, 0.2)))


async def _drain(world: World, client: Client) -> None:
    while (await _poll(world, client, 0))["events"]:
        pass


def _check(world: World, client: Client) -> int:
    """Assert what the client accepted equals the log of its chats; the number of events checked."""
    streams = [r["stream_id"] for r in client.records]
    assert world.foreign not in streams, "an event of a chat the client is not in was delivered"
    for chat in world.mine:
        records = [r for r in client.records if r["stream_id"] == chat]
        record_seqs = [int(r["seq"]) for r in records]
        assert record_seqs == sorted(set(record_seqs)), f"a duplicate or out-of-order record in {chat}"
        seqs = [int(r["event"]["seq"]) for r in records if r["event"]["type"] == "message.posted"]
        assert seqs == list(range(1, world.sent.get(chat, 0) + 1)), f"gap or duplicate in {chat}: {seqs}"
    return len(client.records)


async def _run_seed(server: Server, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        with httpx.Client(base_url=server.url, timeout=10) as sync:
            me, ann, eve = (account(sync, f"{n}{seed}") for n in ("me", "ann", "eve"))

        async def chat(*members: Account) -> str:
            r = await http.post(
                "/v1/chats", json={"title": "r8", "member_ids": [m.id for m in members]}, headers=ann.headers
            )
            assert r.status_code == 201, r.text
            return str(r.json()["id"])

        mine = (await chat(me), await chat(me, eve))
        world = World(server, http, ann, mine, await chat(eve))
        r = await http.get("/v1/updates", headers=me.headers)  # a fresh cursor, before any message
        client = Client(me, r.json()["cursor"])
        for _ in range(STEPS):
            await _step(world, client, rng)
        await _drain(world, client)
        checked = _check(world, client)
        began = time.monotonic()
        page = await _poll(world, client, EMPTY_POLL_S)
        empty_s = time.monotonic() - began
    assert page["events"] == []
    assert abs(empty_s - EMPTY_POLL_S) <= 1.0
    return {
        "seed": seed,
        "events_checked": checked,
        "messages_sent_mine": sum(world.sent.get(c, 0) for c in mine),
        "messages_sent_foreign": world.sent.get(world.foreign, 0),
        "ws_sessions_dropped": client.ws_sessions,
        "long_polls": client.polls,
        "empty_poll_s": round(empty_s, 2),
    }


def test_a_client_that_drops_and_resumes_at_random_gets_its_chats_log_once_in_order(server: Server) -> None:
    async def scenario() -> list[dict[str, Any]]:
        return [await _run_seed(server, seed) for seed in SEEDS]

    figures = asyncio.run(asyncio.wait_for(scenario(), TEST_BUDGET_S))
    print("\nreconnect figures: " + json.dumps(figures))
    assert all(f["ws_sessions_dropped"] > 0 and f["long_polls"] > 0 for f in figures)
