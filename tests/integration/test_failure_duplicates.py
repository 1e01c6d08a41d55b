"""Duplicate client retries through the real server (SECURITY.md §2 R7), REST half.

50 concurrent sends of one `(chat, client_msg_id, body)` store one message and consume one seq;
exactly one answer is 201, the other 49 are 200, all naming the same id and seq. The same key
with another body is a 422 and leaves the original as it was. (The WebSocket half joins these
sends once the realtime transport is served.)
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.test_failure_support import (
    Server,
    account,
    database_path,
    free_port,
    read_only,
    start,
    stop,
)
from tests.integration.test_http_support import bounded

__all__ = ["bounded"]

pytestmark = pytest.mark.slow

RETRIES = 50


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = start(tmp_path, free_port())
    try:
        yield running
    finally:
        stop(running.process)


def test_fifty_concurrent_retries_store_one_message(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        alice = account(client, "alice")
        chat = client.post("/v1/chats", json={"title": "retries"}, headers=alice.headers)
        assert chat.status_code == 201, chat.text
        messages_url = chat.headers["location"] + "/messages"
        chat_id = chat.json()["id"]
    payload = {"body": "sent once, retried 49 times", "client_msg_id": "retry-1"}

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=RETRIES)
        async with httpx.AsyncClient(base_url=server.url, timeout=20, limits=limits) as client:
            start_together = asyncio.Event()

            async def one() -> httpx.Response:
                await start_together.wait()
                return await client.post(messages_url, json=payload, headers=alice.headers)

            tasks = [asyncio.create_task(one()) for _ in range(RETRIES)]
            await asyncio.sleep(0)
            start_together.set()
            return await asyncio.gather(*tasks)

    replies = asyncio.run(burst())
    statuses = Counter(r.status_code for r in replies)
    bodies = {(r.json()["id"], r.json()["seq"]) for r in replies if r.status_code in (200, 201)}

    with httpx.Client(base_url=server.url, timeout=10) as client:
        other_body = client.post(
            messages_url, json={**payload, "body": "another body"}, headers=alice.headers
        )
        original = client.get(f"{messages_url}/1", headers=alice.headers)
        next_send = client.post(messages_url, json={"body": "the next one"}, headers=alice.headers)

    with read_only(database_path(server)) as db:
        stored = db.execute(
            "SELECT count(*) FROM messages WHERE chat_id = ? AND client_msg_id = ?", (chat_id, "retry-1")
        ).fetchone()[0]
        events = db.execute(
            "SELECT count(*) FROM events WHERE stream_id = ? "
            "AND json_extract(data, '$.type') = 'message.posted' "
            "AND json_extract(data, '$.client_msg_id') = ?",
            (chat_id, "retry-1"),
        ).fetchone()[0]

    figures = {
        "retries": RETRIES,
        "answered_201": statuses[201],
        "answered_200": statuses[200],
        "other_statuses": {s: n for s, n in statuses.items() if s not in (200, 201)},
        "distinct_id_seq": len(bodies),
        "stored": stored,
        "posted_events": events,
        "next_seq": next_send.json().get("seq"),
        "other_body_status": other_body.status_code,
    }
    print(f"\nduplicate retries figures: {json.dumps(figures)}")
    print(f"{RETRIES} retries → {stored} stored")

    assert statuses == {201: 1, 200: RETRIES - 1}, statuses
    assert bodies == {(original.json()["id"], 1)}
    assert stored == 1 and events == 1
    assert next_send.status_code == 201 and next_send.json()["seq"] == 2, "one seq consumed, no gap"
    assert other_body.status_code == 422, other_body.text
    assert other_body.headers["content-type"].startswith("application/problem+json")
    assert original.status_code == 200 and original.json()["body"] == payload["body"]
    assert original.json()["client_msg_id"] == "retry-1"
