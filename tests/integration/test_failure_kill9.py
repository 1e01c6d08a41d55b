"""kill -9 of the server under load (SECURITY.md §2 R5).

A real `chatcore serve` on the embedded default (SQLite). Four writers send messages with a
`client_msg_id` across a few chats, each retried with backoff until acknowledged. At a seeded
random moment (a number of acknowledgements; the seed is printed, `CHAOS_SEED=` replays it) the
whole server process group gets SIGKILL; it is restarted on the same data directory and port
and the writers carry on. Then, from the SQLite file itself: every acknowledged message is
stored exactly once, each chat's seqs are 1..k, every message has exactly one `message.posted`
event and every such event its message, and the outbox is drained within 10 s of the restart.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.integration.test_failure_support import (
    Server,
    account,
    database_path,
    free_port,
    kill9,
    read_only,
    start,
    stop,
)
from tests.integration.test_http_support import bounded

__all__ = ["bounded"]

pytestmark = pytest.mark.slow

WRITERS = 4
# SECURITY.md R5 asks for 4 writers x 500 in 20 chats: 19-25 s here on 2 shared cores, too close to
# the 30 s bound, so the test runs 4 x 200 in 8 chats and `python -m bench.failures kill9` runs
# the full size through these two knobs.
PER_WRITER = int(os.environ.get("CHAOS_PER_WRITER") or 200)
CHATS = int(os.environ.get("CHAOS_CHATS") or 8)
MAX_TRIES = 12  # backoff 50 ms doubling to 2 s: about 13 s of retrying, longer than a restart
OUTBOX_DRAIN_S = 10.0
RETRYABLE = {429, 502, 503, 504}
# Crash consistency under load, not throttling: the per-user send rate is lifted for this server.
UNTHROTTLED = {"CHATCORE_SENDS_PER_SECOND": "10000", "CHATCORE_SEND_BURST": "10000"}


@dataclass
class Tally:
    acked: dict[str, tuple[str, int, str]] = field(default_factory=dict)  # cmid -> (chat, seq, id)
    created: int = 0  # 201
    replayed: int = 0  # 200: the first attempt was stored, its answer lost
    transport_errors: int = 0
    retryable_statuses: int = 0
    ack_times: list[float] = field(default_factory=list)


async def _send(
    client: httpx.AsyncClient,
    token: str,
    chat_id: str,
    cmid: str,
    body: str,
    tally: Tally,
    rng: random.Random,
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    for attempt in range(MAX_TRIES):
        try:
            r = await client.post(
                f"/v1/chats/{chat_id}/messages", json={"body": body, "client_msg_id": cmid}, headers=headers
            )
        except httpx.TransportError:
            tally.transport_errors += 1
        else:
            if r.status_code in (200, 201):
                message = r.json()
                assert message["body"] == body and message["client_msg_id"] == cmid, r.text
                tally.acked[cmid] = (chat_id, message["seq"], message["id"])
                tally.ack_times.append(time.monotonic())
                if r.status_code == 201:
                    tally.created += 1
                else:
                    tally.replayed += 1
                return
            assert r.status_code in RETRYABLE, f"{cmid}: {r.status_code} {r.text}"
            tally.retryable_statuses += 1
        await asyncio.sleep(min(2.0, 0.05 * 2**attempt) * rng.uniform(0.5, 1.5))
    raise AssertionError(f"{cmid} not acknowledged after {MAX_TRIES} tries")


async def _writer(url: str, writer: int, token: str, chats: list[str], tally: Tally, seed: int) -> None:
    rng = random.Random(seed * 100 + writer)
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        for k in range(PER_WRITER):
            chat_id = chats[(writer + k) % len(chats)]
            await _send(
                client, token, chat_id, f"kill9-w{writer}-{k}", f"writer {writer} message {k}", tally, rng
            )


def _undispatched(path: Path, up_to_pos: int | None = None) -> int:
    with read_only(path) as db:
        if up_to_pos is None:
            return int(db.execute("SELECT count(*) FROM events WHERE dispatched = 0").fetchone()[0])
        return int(
            db.execute(
                "SELECT count(*) FROM events WHERE dispatched = 0 AND pos <= ?", (up_to_pos,)
            ).fetchone()[0]
        )


def _wait_drained(path: Path, up_to_pos: int | None, budget_s: float) -> float:
    """Seconds until no event (up to `up_to_pos`) is undispatched; fails past the budget."""
    began = time.monotonic()
    while (pending := _undispatched(path, up_to_pos)) != 0:
        assert time.monotonic() - began < budget_s, f"{pending} events still undispatched after {budget_s} s"
        time.sleep(0.05)
    return time.monotonic() - began


def test_kill9_under_load_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    seed = int(os.environ.get("CHAOS_SEED") or random.randrange(1_000_000))
    print(f"\nkill -9 chaos seed: {seed} (replay with CHAOS_SEED={seed})")
    rng = random.Random(seed)
    total = WRITERS * PER_WRITER
    kill_after_acks = rng.randint(total // 10, total * 9 // 10)
    kill_delay_s = rng.uniform(0, 0.02)

    port = free_port()
    servers: list[Server] = [start(tmp_path, port, UNTHROTTLED)]
    try:
        with httpx.Client(base_url=servers[0].url, timeout=10) as client:
            owner, *others = [account(client, f"writer{i}") for i in range(WRITERS)]
            members = [a.id for a in others]
            chats = []
            for c in range(CHATS):
                r = client.post(
                    "/v1/chats", json={"title": f"chaos {c}", "member_ids": members}, headers=owner.headers
                )
                assert r.status_code == 201, r.text
                chats.append(r.json()["id"])
        tokens = [owner.token, *(a.token for a in others)]
        db_path = database_path(servers[0])

        tally = Tally()
        restart: dict[str, float] = {}

        failures: list[BaseException] = []

        def chaos() -> None:
            try:
                kill_and_restart()
            except BaseException as exc:
                failures.append(exc)

        def kill_and_restart() -> None:
            """Off the writers' loop: wait for the seeded moment, SIGKILL, restart on the same port."""
            while len(tally.acked) < kill_after_acks:
                time.sleep(0.001)
            time.sleep(kill_delay_s)
            restart["acked_at_kill"] = len(tally.acked)
            restart["killed"] = time.monotonic()
            kill9(servers[0])
            restart["pending_at_kill"] = _undispatched(db_path)  # committed, not yet published
            servers.append(start(tmp_path, port, UNTHROTTLED))
            restart["ready"] = time.monotonic()
            with read_only(db_path) as db:
                restart["pending_at_restart"] = _undispatched(db_path)
                restart["pos_at_restart"] = db.execute("SELECT coalesce(max(pos), 0) FROM events").fetchone()[
                    0
                ]
            restart["drain_s"] = _wait_drained(db_path, int(restart["pos_at_restart"]), OUTBOX_DRAIN_S)

        killer = threading.Thread(target=chaos, name="chaos", daemon=True)
        killer.start()

        async def load() -> None:
            url = servers[0].url
            async with asyncio.TaskGroup() as tasks:
                for w in range(WRITERS):
                    tasks.create_task(_writer(url, w, tokens[w], chats, tally, seed))

        began = time.monotonic()
        asyncio.run(load())
        load_s = time.monotonic() - began
        killer.join(timeout=OUTBOX_DRAIN_S + 35)
        if failures:
            raise failures[0]
        assert not killer.is_alive() and "drain_s" in restart, "the kill/restart did not complete"
        assert restart["acked_at_kill"] < total, "the kill came after the load: not under load"
        first_ack_after = min(t for t in tally.ack_times if t > restart["ready"])
        # Writes after the restart published inline: the whole outbox drains as well.
        _wait_drained(db_path, None, OUTBOX_DRAIN_S)
    finally:
        for server in servers:
            stop(server.process)

    # -- the file itself, the server stopped --------------------------------------------------
    with read_only(db_path) as db:
        rows = db.execute(
            "SELECT chat_id, seq, client_msg_id, json_extract(data, '$.id'), json_extract(data, '$.body') "
            "FROM messages"
        ).fetchall()
        events = db.execute(
            "SELECT json_extract(data, '$.chat_id'), json_extract(data, '$.seq'), "
            "json_extract(data, '$.message_id') FROM events "
            "WHERE json_extract(data, '$.type') = 'message.posted'"
        ).fetchall()
        undispatched = db.execute("SELECT count(*) FROM events WHERE dispatched = 0").fetchone()[0]

    stored = {cmid: (chat, seq, mid) for chat, seq, cmid, mid, _ in rows}
    per_cmid = Counter(cmid for _, _, cmid, _, _ in rows)
    duplicates = sum(n - 1 for n in per_cmid.values() if n > 1)
    lost = [cmid for cmid in tally.acked if cmid not in stored]
    unacked_stored = [cmid for cmid in stored if cmid not in tally.acked]
    mismatched = [cmid for cmid, ack in tally.acked.items() if cmid in stored and stored[cmid] != ack]
    seqs: dict[str, list[int]] = {}
    for chat, seq, *_ in rows:
        seqs.setdefault(chat, []).append(seq)
    seq_gaps = sum(len(set(range(1, max(s) + 1)) - set(s)) for s in seqs.values())
    posted = Counter((chat, seq, mid) for chat, seq, mid in events)
    messages = {(chat, seq, mid) for chat, seq, _, mid, _ in rows}
    without_event = [m for m in messages if posted[m] == 0]
    extra_events = sum(n - 1 for n in posted.values() if n > 1)
    orphan_events = [e for e in posted if e not in messages]

    figures = {
        "seed": seed,
        "acked": len(tally.acked),
        "stored": len(rows),
        "lost": len(lost),
        "duplicates": duplicates,
        "seq_gaps": seq_gaps,
        "messages_without_event": len(without_event),
        "duplicate_events": extra_events,
        "orphan_events": len(orphan_events),
        "undispatched_after": undispatched,
        "killed_after_acks": int(restart["acked_at_kill"]),
        "answered_201": tally.created,
        "answered_200_replay": tally.replayed,
        "transport_errors": tally.transport_errors,
        "retryable_statuses": tally.retryable_statuses,
        "undispatched_at_kill": int(restart["pending_at_kill"]),
        "undispatched_at_restart": int(restart["pending_at_restart"]),
        "outbox_drained_s": round(restart["drain_s"], 3),
        "kill_to_ready_s": round(restart["ready"] - restart["killed"], 3),
        "restart_to_first_ack_ms": round((first_ack_after - restart["ready"]) * 1000, 1),
        "load_s": round(load_s, 2),
    }
    print("kill -9 figures: " + json.dumps(figures))
    print(
        f"acked {len(tally.acked)} → stored {len(rows)}, lost {len(lost)}, duplicates {duplicates}, "
        f"seq gaps {seq_gaps}, orphan events {len(orphan_events)}"
    )

    assert len(tally.acked) == total, "every send is acknowledged in the end"
    assert lost == [], f"acknowledged but not stored: {lost[:5]}"
    assert unacked_stored == [], f"stored but never acknowledged: {unacked_stored[:5]}"
    assert len(rows) == total
    assert duplicates == 0
    assert mismatched == [], f"the acknowledgement names another message: {mismatched[:5]}"
    for chat, s in seqs.items():
        assert sorted(s) == list(range(1, len(s) + 1)), f"chat {chat}: seqs are not 1..k"
    assert seq_gaps == 0
    assert without_event == [] and extra_events == 0 and orphan_events == []
    assert undispatched == 0
    assert restart["drain_s"] <= OUTBOX_DRAIN_S
