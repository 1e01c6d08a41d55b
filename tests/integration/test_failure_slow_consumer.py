"""A slow WebSocket consumer beside healthy ones (SECURITY.md §2 R4), with its figures.

A real `chatcore serve` with the default send queue (1,000 frames / 1 MiB per socket). Ten
healthy sockets read one chat; events are sent first without, then with, an eleventh socket
whose client stops reading (a 4 KiB receive buffer, so the kernel holds little for it). Asserted:
the stalled socket is cut off with 4000, seen when its client reads again, however long after
the server gave up waiting (the close frame follows what was handed over before it); the server's
RSS grows by at most 100 MiB meanwhile; every healthy socket gets every event, in order; the
stalled client, resuming from the last cursor it received, gets every event it missed, once, in
order. Reported: events sent, events the stalled client got before the close, RSS before / peak
/ delta, and the healthy sockets' p50/p99 delivery latency without and with the stalled socket.

SECURITY.md sizes the run at 20,000 events; the test sends 200 + 1,000 of 4.3 KB (the stalled
socket is cut off after about 600: the kernel and granian buffer ~2.5 MB before the 1 MiB queue
fills), the full size is `python -m bench.failures slow-consumer`. The queue's depth is not
visible from outside; its bound is the setting, and the RSS shows nothing grows past it.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from chatcore.application.realtime import CloseCode
from tests.integration.test_failure_support import UNTHROTTLED, Account, account, stop
from tests.integration.test_ws_support import (
    LISTENERS,
    WsServer,
    read_events_until_closed,
    stalled_socket,
    start_ws,
)

pytestmark = pytest.mark.slow

HEALTHY = 10
# The sizes and the budget are knobs for `python -m bench.failures slow-consumer` (20,000 events).
BASELINE_EVENTS = int(os.environ.get("SLOW_CONSUMER_BASELINE") or 200)
STALLED_EVENTS = int(os.environ.get("SLOW_CONSUMER_EVENTS") or 1_000)
TEST_BUDGET_S = float(os.environ.get("SLOW_CONSUMER_BUDGET_S") or 28)
SENDERS = 4
# About 4.3 KB per event frame: the kernel and granian hold a few MB first (the bench uses 1,000).
BODY_CHARS = int(os.environ.get("SLOW_CONSUMER_BODY_CHARS") or 3_990)
RSS_GROWTH_MIB = 100  # R4's bound


@pytest.fixture(params=LISTENERS)
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[WsServer]:
    """A real server, its WebSockets on each listener in turn (`test_ws_support`)."""
    running = start_ws(tmp_path, UNTHROTTLED, request.param)
    try:
        yield running
    finally:
        stop(running.process)


def group_rss_bytes(leader_pid: int) -> int:
    """The resident memory of every process in the server's process group (granian + workers)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[2]) != leader_pid:  # field 5, the process group, after the state and ppid
                continue
            with open(f"/proc/{entry}/status") as f:
                rss_kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration, ValueError):
            continue  # the process ended meanwhile
        total += rss_kib * 1024
    return total


@dataclass
class Sampler:
    """Samples the server's RSS until stopped; keeps the peak."""

    pid: int
    peak: int = 0
    samples: int = 0
    stopped: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        while not self.stopped.is_set():
            self.peak = max(self.peak, group_rss_bytes(self.pid))
            self.samples += 1
            await asyncio.sleep(0.05)


@dataclass
class Phase:
    """One batch of sends: when each message left, and when each healthy socket got it."""

    first: int
    count: int
    sent_at: dict[int, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    @property
    def indexes(self) -> list[int]:
        return list(range(self.first, self.first + self.count))


def _index(frame: dict[str, Any]) -> int | None:
    """The sender's number of a `message.posted` event (its body starts with it), else None."""
    event = frame["record"]["event"]
    return int(event["body"][:6]) if event["type"] == "message.posted" else None


def _seq(frame: dict[str, Any]) -> int | None:
    """The chat seq of a `message.posted` event: the order every socket must see."""
    event = frame["record"]["event"]
    return int(event["seq"]) if event["type"] == "message.posted" else None


async def _answer_heartbeat(ws: ClientConnection, frame: dict[str, Any]) -> None:
    """A live client answers a heartbeat that asks for a reply (else it is closed with 1008)."""
    if frame["type"] == "heartbeat" and frame.get("reply_within_ms") is not None:
        await ws.send(json.dumps({"type": "ping", "id": "alive"}))


async def _healthy_reader(ws: ClientConnection, got: list[int], phases: list[Phase], total: int) -> None:
    while len(got) < total:
        frame = json.loads(await ws.recv())
        await _answer_heartbeat(ws, frame)
        if frame["type"] == "event" and (i := _index(frame)) is not None:
            got.append(int(frame["record"]["event"]["seq"]))
            phase = phases[-1]
            if i in phase.sent_at:
                phase.latencies.append(time.monotonic() - phase.sent_at[i])


async def _send_all(url: str, sender: Account, chat: str, phase: Phase) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=20) as client:

        async def one_sender(s: int) -> None:
            for i in phase.indexes[s::SENDERS]:
                phase.sent_at[i] = time.monotonic()
                r = await client.post(
                    f"/v1/chats/{chat}/messages",
                    json={"body": f"{i:06d}" + "x" * (BODY_CHARS - 6)},
                    headers=sender.headers,
                )
                assert r.status_code == 201, r.text

        await asyncio.gather(*(one_sender(s) for s in range(SENDERS)))


async def _resume(server: WsServer, user: Account, cursor: str, chat: str, upto: int) -> list[int]:
    """The seq of every message after `cursor`, until seq `upto` arrived."""
    url = server.ws_base + f"/v1/ws?cursor={cursor}"
    got: list[int] = []
    async with connect(url, additional_headers=user.headers, max_size=None) as ws:
        while not got or got[-1] != upto:
            frame = json.loads(await ws.recv())
            await _answer_heartbeat(ws, frame)
            if (
                frame["type"] == "event"
                and frame["record"]["stream_id"] == chat
                and (i := _seq(frame)) is not None
            ):
                got.append(i)
    return got


def _ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)


def test_a_stalled_consumer_is_cut_off_while_memory_stays_bounded_and_others_keep_up(
    server: WsServer,
) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        ann, carl, dora, bob = (account(client, n) for n in ("ann", "carl", "dora", "bob"))
        r = client.post(
            "/v1/chats", json={"title": "r4", "member_ids": [carl.id, dora.id, bob.id]}, headers=ann.headers
        )
        assert r.status_code == 201, r.text
        chat = r.json()["id"]
    total = BASELINE_EVENTS + STALLED_EVENTS
    figures: dict[str, Any] = {"events_sent": total, "healthy_sockets": HEALTHY}

    async def scenario() -> None:
        url = server.ws_base + "/v1/ws"
        healthy = [
            await connect(url, additional_headers=(carl if h % 2 else dora).headers, max_size=None)
            for h in range(HEALTHY)
        ]
        got: list[list[int]] = [[] for _ in healthy]
        phases = [Phase(0, BASELINE_EVENTS)]
        readers = [
            asyncio.create_task(_healthy_reader(ws, g, phases, total))
            for ws, g in zip(healthy, got, strict=True)
        ]
        await _send_all(server.url, ann, chat, phases[0])

        stalled = await stalled_socket(server, bob.token)
        await asyncio.sleep(0.3)  # its session subscribes before the flood
        sampler = Sampler(server.process.pid)
        figures["rss_before_mib"] = round(group_rss_bytes(server.process.pid) / 2**20, 1)
        sampling = asyncio.create_task(sampler.run())
        phases.append(Phase(BASELINE_EVENTS, STALLED_EVENTS))
        began = time.monotonic()
        await _send_all(server.url, ann, chat, phases[1])
        await asyncio.wait_for(asyncio.gather(*readers), TEST_BUDGET_S)
        figures["flood_s"] = round(time.monotonic() - began, 2)
        sampler.stopped.set()
        await sampling
        figures["rss_peak_mib"] = round(sampler.peak / 2**20, 1)
        figures["rss_delta_mib"] = round(figures["rss_peak_mib"] - figures["rss_before_mib"], 1)
        for ws in healthy:
            await ws.close()
        for g in got:
            assert g == list(range(1, total + 1)), "a healthy socket missed an event or got it out of order"

        before_close: list[dict[str, Any]] = []
        code = await asyncio.wait_for(read_events_until_closed(stalled, before_close), 10)
        figures["stalled_close_code"] = code
        figures["stalled_got_before_close"] = sum(1 for f in before_close if _index(f) is not None)
        # The client reads again only now, long after the server's linger: it still gets 4000.
        assert code == CloseCode.RESUME_FROM_CURSOR
        seen = [i for f in before_close if (i := _seq(f)) is not None]
        first = BASELINE_EVENTS + 1  # it connected after the baseline
        assert seen == list(range(first, first + len(seen)))
        assert len(seen) < STALLED_EVENTS, "the stalled socket was not cut off"
        rest = await asyncio.wait_for(
            _resume(server, bob, before_close[-1]["cursor"], chat, total), TEST_BUDGET_S
        )
        assert seen + rest == list(range(first, total + 1)), "resuming lost or repeated an event"
        figures["resumed_events"] = len(rest)
        figures["healthy_p50_ms_without"] = _ms(phases[0].latencies, 0.5)
        figures["healthy_p99_ms_without"] = _ms(phases[0].latencies, 0.99)
        figures["healthy_p50_ms_with"] = _ms(phases[1].latencies, 0.5)
        figures["healthy_p99_ms_with"] = _ms(phases[1].latencies, 0.99)

    asyncio.run(asyncio.wait_for(scenario(), TEST_BUDGET_S))
    print("\nslow consumer figures: " + json.dumps(figures))
    assert figures["rss_delta_mib"] <= RSS_GROWTH_MIB
