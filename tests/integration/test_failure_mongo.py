"""Database down through a real server (SECURITY.md §2 R3).

A real `chatcore serve` on the mongoeco wire server (`CHATCORE_MONGO_REQUIRE_REPLICA_SET=false`:
mongoeco is no replica set, but it passes the start-up probe of transaction rollback), with the
default database budget (`CHATCORE_MONGO_TIMEOUT_S`). Four writers, two over REST and two over
a WebSocket, each in a chat of its own, send with `client_msg_id` and retry on 503 while the
mongoeco server is stopped and started again on the same data; the chatcore server is never
restarted. Asserted:

- during the outage REST answers 503 problem+json with `Retry-After`, never a 500 (a 409 "lost a
  race" is also retried: a commit cut off by the stop can end as one; its count is reported); a
  WebSocket send gets an error frame (status 503, `retry_after`), not an ack, and the socket
  stays open; every attempt is answered within 5 s (one writer per chat: sends queued behind
  another send of the same chat in the same process wait for it, see docs/reliability.md);
- phantom acks 0: every acknowledged message is stored, once, with the id and seq it was
  acknowledged with; each chat's seqs are 1..k, each message has exactly one `message.posted`;
- after the restart, sends succeed again within 10 s and `/readyz` is 200, the same process;
- each WebSocket writer receives every message of its chat, in order, once (the outbox drains).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import MongoClient
from websockets.asyncio.client import ClientConnection, connect

from tests.integration.fixtures.mongo import MongoServerProcess
from tests.integration.test_failure_support import Account, Server, account, free_port, start, stop
from tests.integration.test_http_server_process import CHATCORE

pytestmark = pytest.mark.slow

TEST_BUDGET_S = 30
FAIL_FAST_S = 5.0  # R3: a send during the outage is answered within 5 s
NEVER_HANGS_S = 10.0  # any attempt, one in flight at the stop included
RECOVERY_S = 10.0  # R3: sends succeed again within 10 s of the restart
OUTAGE_S = 7.0  # each writer is refused, retries, and is refused again while it lasts
ACKS_BEFORE_OUTAGE = 12
ACKS_AFTER_RESTART = 12
PACE_S = 0.03  # between one writer's sends: the load spans the outage
RETRY_PAUSE_S = 0.2
LIMITS = {
    # Outage behaviour, not throttling: the per-user and per-socket rates are lifted.
    "CHATCORE_SENDS_PER_SECOND": "10000",
    "CHATCORE_SEND_BURST": "10000",
    "CHATCORE_WS_FRAMES_PER_MINUTE": "60000",
    "CHATCORE_WS_BURST": "1000",
}


@dataclass
class Attempt:
    """One send attempt: how it was answered, when, and for a refusal its retry hint."""

    writer: str
    status: int  # 200/201, or 503 (WS: the error frame's status)
    began: float
    ended: float
    retry_after: str | None = None
    content_type: str | None = None  # "ws" for a WebSocket error frame

    @property
    def seconds(self) -> float:
        return self.ended - self.began


@dataclass
class Run:
    acked: dict[str, tuple[str, int, str]] = field(default_factory=dict)  # cmid -> (chat, seq, id)
    ack_times: list[float] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    down_at: float = float("inf")
    up_at: float = float("inf")
    done: asyncio.Event = field(default_factory=asyncio.Event)
    warmed_up: asyncio.Event = field(default_factory=asyncio.Event)  # ACKS_BEFORE_OUTAGE reached
    down: asyncio.Event = field(default_factory=asyncio.Event)

    def ack(self, cmid: str, chat: str, message: dict[str, Any]) -> None:
        self.acked[cmid] = (chat, int(message["seq"]), str(message["id"]))
        self.ack_times.append(time.monotonic())
        if len(self.acked) >= ACKS_BEFORE_OUTAGE:
            self.warmed_up.set()

    def acks_after(self, moment: float) -> int:
        return sum(1 for t in self.ack_times if t > moment)

    @property
    def refused(self) -> list[Attempt]:
        return [a for a in self.attempts if a.status not in (200, 201)]


@pytest.fixture
def server(tmp_path: Path, mongo_server: MongoServerProcess) -> Iterator[Server]:
    settings = {
        "CHATCORE_DATABASE_URL": mongo_server.url,
        "CHATCORE_MONGO_REQUIRE_REPLICA_SET": "false",
        **LIMITS,
    }
    running = start(tmp_path, free_port(), settings)
    try:
        yield running
    finally:
        stop(running.process)


async def _rest_writer(url: str, name: str, user: Account, chat: str, run: Run) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=FAIL_FAST_S * 2) as client:
        k = 0
        while not run.done.is_set():
            cmid, body = f"{name}-{k}", f"{name} message {k}"
            while True:
                began = time.monotonic()
                r = await client.post(
                    f"/v1/chats/{chat}/messages",
                    json={"body": body, "client_msg_id": cmid},
                    headers=user.headers,
                )
                attempt = Attempt(
                    name,
                    r.status_code,
                    began,
                    time.monotonic(),
                    r.headers.get("retry-after"),
                    r.headers.get("content-type"),
                )
                run.attempts.append(attempt)
                if r.status_code in (200, 201):
                    assert r.json()["client_msg_id"] == cmid, r.text
                    run.ack(cmid, chat, r.json())
                    break
                assert r.status_code in (409, 503), f"{cmid}: {r.status_code} {r.text}"
                await asyncio.sleep(RETRY_PAUSE_S)
            k += 1
            await asyncio.sleep(PACE_S)


async def _reply(ws: ClientConnection, frame_id: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    """The ack or error answering `frame_id`; event frames met on the way are kept."""
    while True:
        frame = json.loads(await ws.recv())
        if frame["type"] == "event":
            events.append(frame)
        elif frame["type"] in ("ack", "error") and frame.get("id") == frame_id:
            return dict(frame)


async def _ws_writer(
    url: str, name: str, user: Account, chat: str, run: Run, events: list[dict[str, Any]]
) -> ClientConnection:
    """Sends over one socket until the run is done; returns the socket, still open."""
    ws = await connect(
        url.replace("http://", "ws://") + "/v1/ws", additional_headers=user.headers, max_size=None
    )
    k = 0
    while not run.done.is_set():
        cmid, body = f"{name}-{k}", f"{name} message {k}"
        for attempt in range(100):
            frame_id = f"{cmid}/{attempt}"
            began = time.monotonic()
            await ws.send(
                json.dumps(
                    {"type": "send", "id": frame_id, "chat_id": chat, "body": body, "client_msg_id": cmid}
                )
            )
            reply = await _reply(ws, frame_id, events)
            if reply["type"] == "ack":
                run.attempts.append(Attempt(name, 201 if reply["created"] else 200, began, time.monotonic()))
                assert reply["message"]["client_msg_id"] == cmid, reply
                run.ack(cmid, chat, reply["message"])
                break
            hint = reply.get("retry_after")
            run.attempts.append(
                Attempt(
                    name, reply["status"], began, time.monotonic(), None if hint is None else str(hint), "ws"
                )
            )
            assert reply["status"] in (409, 503), reply
            await asyncio.sleep(RETRY_PAUSE_S)
        k += 1
        await asyncio.sleep(PACE_S)
    return ws


async def _outage(mongo: MongoServerProcess, run: Run) -> None:
    await run.warmed_up.wait()
    await asyncio.to_thread(mongo.stop)
    run.down_at = time.monotonic()
    run.down.set()
    await asyncio.sleep(OUTAGE_S)
    await asyncio.to_thread(mongo.start)
    run.up_at = time.monotonic()
    while run.acks_after(run.up_at) < ACKS_AFTER_RESTART:
        assert time.monotonic() - run.up_at < RECOVERY_S, "no send succeeded again within 10 s"
        await asyncio.sleep(0.01)
    run.done.set()


async def _drain_events(ws: ClientConnection, events: list[dict[str, Any]], chat: str, last_seq: int) -> None:
    """Read on until the chat's `message.posted` for `last_seq` arrived."""

    def seen() -> bool:
        return any(_posted_seq(f, chat) == last_seq for f in events)

    while not seen():
        frame = json.loads(await ws.recv())
        if frame["type"] == "event":
            events.append(frame)


def _posted_seq(frame: dict[str, Any], chat: str) -> int | None:
    record = frame["record"]
    if record["stream_id"] == chat and record["event"]["type"] == "message.posted":
        return int(record["event"]["seq"])
    return None


def _stored(url: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every message and every `message.posted` event, read from mongoeco itself."""
    client: MongoClient[dict[str, Any]] = MongoClient(url, serverSelectionTimeoutMS=5000, timeoutMS=10000)
    try:
        db = client["chatcore"]
        messages = list(db["messages"].find({}, {"chat_id": 1, "seq": 1, "client_msg_id": 1}))
        posted = list(db["events"].find({"event.type": "message.posted"}, {"event": 1}))
    finally:
        client.close()
    return messages, [e["event"] for e in posted]


def _ready(url: str) -> int:
    try:
        return httpx.get(url + "/readyz", timeout=FAIL_FAST_S * 2).status_code
    except httpx.HTTPError:
        return 0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def test_database_outage_answers_503_acks_nothing_unstored_and_recovers_without_a_restart(
    server: Server, mongo_server: MongoServerProcess
) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        users = [account(client, f"writer{i}") for i in range(4)]
        chats = []
        for user in users:  # one chat per writer: nothing queues behind another writer's send
            r = client.post("/v1/chats", json={"title": "r3"}, headers=user.headers)
            assert r.status_code == 201, r.text
            chats.append(r.json()["id"])
    run = Run()
    ws_events: list[list[dict[str, Any]]] = [[], []]
    readyz_during: list[int] = []

    async def scenario() -> None:
        async def probe_readyz() -> None:
            await run.down.wait()
            readyz_during.append(await asyncio.to_thread(_ready, server.url))

        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(_rest_writer(server.url, "rest0", users[0], chats[0], run))
            tasks.create_task(_rest_writer(server.url, "rest1", users[1], chats[1], run))
            ws2 = tasks.create_task(_ws_writer(server.url, "ws2", users[2], chats[2], run, ws_events[0]))
            ws3 = tasks.create_task(_ws_writer(server.url, "ws3", users[3], chats[3], run, ws_events[1]))
            tasks.create_task(_outage(mongo_server, run))
            tasks.create_task(probe_readyz())
        # Each WS writer's socket stayed open through the outage, and gets its chat's messages.
        for ws, events, chat in (
            (ws2.result(), ws_events[0], chats[2]),
            (ws3.result(), ws_events[1], chats[3]),
        ):
            last = max(seq for c, seq, _ in run.acked.values() if c == chat)
            await _drain_events(ws, events, chat, last)
            await ws.close()

    began = time.monotonic()
    asyncio.run(asyncio.wait_for(scenario(), TEST_BUDGET_S - 8))
    load_s = time.monotonic() - began
    assert server.process.poll() is None, "the server was never restarted: it is the same process"
    assert _ready(server.url) == 200

    messages, posted = _stored(mongo_server.url)
    stored = {m["client_msg_id"]: (m["chat_id"], m["seq"], m["_id"]) for m in messages}
    duplicates = sum(n - 1 for n in Counter(m["client_msg_id"] for m in messages).values())
    phantom = [cmid for cmid, ack in run.acked.items() if stored.get(cmid) != ack]
    unacked = [cmid for cmid in stored if cmid not in run.acked]
    seqs: dict[str, list[int]] = {}
    for m in messages:
        seqs.setdefault(m["chat_id"], []).append(m["seq"])
    events_per_message = Counter((e["chat_id"], e["seq"], e["message_id"]) for e in posted)
    refused = run.refused
    # Sent while the database was down (an attempt in flight at the stop may also have spent
    # time on operations that succeeded before it: its budget is per database operation).
    during = [a for a in run.attempts if run.down_at <= a.began < run.up_at]
    figures = {
        "acked": len(run.acked),
        "stored": len(messages),
        "phantom_acks": len(phantom),
        "duplicates": duplicates,
        "refused_rest_503": sum(1 for a in refused if a.status == 503 and a.content_type != "ws"),
        "refused_ws_error_frames_503": sum(1 for a in refused if a.status == 503 and a.content_type == "ws"),
        "attempts_during_outage": len(during),
        "answered_409": sum(1 for a in refused if a.status == 409),
        "slowest_answer_sent_during_outage_s": round(max(a.seconds for a in during), 2),
        "slowest_attempt_s": round(max(a.seconds for a in run.attempts), 2),
        "ack_p99_ms": round(_percentile([a.seconds for a in run.attempts if a.status < 500], 0.99) * 1000, 1),
        "readyz_during_outage": readyz_during,
        "outage_s": round(run.up_at - run.down_at, 2),
        "restart_to_first_ack_s": round(min(t for t in run.ack_times if t > run.up_at) - run.up_at, 2),
        "load_s": round(load_s, 1),
    }
    print("\ndatabase down figures: " + json.dumps(figures))
    print(f"phantom acks = {len(phantom)}; lost acked = {len(phantom)} of {len(run.acked)}")

    unavailable = [a for a in refused if a.status == 503]
    assert {a.content_type for a in unavailable} == {"application/problem+json", "ws"}, (
        "both transports refused"
    )
    assert all(a.retry_after is not None and int(a.retry_after) >= 1 for a in unavailable)
    assert all(a.status not in (200, 201) for a in during if a.ended < run.up_at), "an ack while it was down"
    assert max(a.seconds for a in during) < FAIL_FAST_S, "a send during the outage is answered within 5 s"
    assert max(a.seconds for a in run.attempts) < NEVER_HANGS_S
    assert readyz_during == [503]
    assert phantom == [], f"acknowledged but not stored as acknowledged: {phantom[:5]}"
    assert unacked == [] and duplicates == 0
    for chat, chat_seqs in seqs.items():
        assert sorted(chat_seqs) == list(range(1, len(chat_seqs) + 1)), f"chat {chat}: seqs are not 1..k"
    assert set(events_per_message) == set(stored.values())
    assert all(n == 1 for n in events_per_message.values())
    for events, chat in zip(ws_events, chats[2:], strict=True):
        delivered = [s for f in events if (s := _posted_seq(f, chat)) is not None]
        assert delivered == list(range(1, len(seqs[chat]) + 1)), "each message once, in order"
    log = server.log.read_text()
    assert '"status": 500' not in log
    # The outage is logged as one warning line per refusal, without a traceback.
    assert "database unavailable" in log
    assert "Traceback" not in log


def test_a_standalone_server_is_refused_unless_the_setting_says_otherwise(
    tmp_path: Path, mongo_server: MongoServerProcess
) -> None:
    """The default refuses mongoeco (no replica set); a malformed value is refused by its name."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATCORE_")}
    env["CHATCORE_DATABASE_URL"] = mongo_server.url

    def serve(**extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(CHATCORE), "serve", "--port", str(free_port())],
            cwd=tmp_path,
            env=env | extra,
            capture_output=True,
            text=True,
            timeout=25,
        )

    malformed = serve(CHATCORE_MONGO_REQUIRE_REPLICA_SET="maybe")
    assert malformed.returncode == 2
    assert "CHATCORE_MONGO_REQUIRE_REPLICA_SET" in malformed.stderr
    standalone = serve()
    assert standalone.returncode != 0
    assert "standalone server" in standalone.stdout + standalone.stderr
