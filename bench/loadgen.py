"""The load generator: one scenario per process, spec as JSON on stdin, results as JSON on stdout.

`python -m bench.loadgen < spec.json`. Runs on uvloop in its own process, apart from the server.
Every loop is bounded by a count and a deadline; latencies are measured with the system-wide
monotonic clock (`time.monotonic_ns`), the send time travelling inside the message body as
`bench:<ns>:`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import msgspec

from bench.client import HttpConn, WsConn
from bench.procs import memory

MARK = b"bench:"
PAD = "x" * 48  # a message body of ~80 characters


def quantiles(samples_ns: list[int]) -> dict[str, float]:
    if not samples_ns:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    s = sorted(samples_ns)

    def q(p: float) -> float:
        return round(s[min(len(s) - 1, int(p * len(s)))] / 1e6, 2)

    return {"p50_ms": q(0.50), "p99_ms": q(0.99), "max_ms": round(s[-1] / 1e6, 2)}


def stamp_of(payload: bytes) -> int | None:
    i = payload.find(MARK)
    if i < 0:
        return None
    j = payload.find(b":", i + 6)
    return int(payload[i + 6 : j])


def body_json(tag: str = "") -> bytes:
    return b'{"body":"bench:%d:%s %s"}' % (time.monotonic_ns(), tag.encode(), PAD.encode())


async def _gather_bounded(factories: list[Callable[[], Awaitable[Any]]], limit: int) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(f: Callable[[], Awaitable[Any]]) -> Any:
        async with sem:
            try:
                return await f()
            except Exception as exc:
                return exc

    return await asyncio.gather(*(one(f) for f in factories))


# -- closed-loop HTTP: sends, hello-world ceilings, history pages ---------------------------------


async def http_load(spec: dict[str, Any]) -> dict[str, Any]:
    host, port = spec["host"], spec["port"]
    workers: list[dict[str, Any]] = spec["workers"]  # each: {"mode", "path", "token"?, "max_before"?}
    conns = [await HttpConn.open(host, port) for _ in workers]
    ok_status = set(spec.get("ok", [200, 201]))
    rng = random.Random(7)

    def request(i: int) -> bytes:
        w, c = workers[i], conns[i]
        if w["mode"] == "post":
            return c.build("POST", w["path"], token=w.get("token"), body=body_json(str(i)))
        if w["mode"] == "history":
            before = rng.randint(51, w["max_before"])
            return c.build("GET", f"{w['path']}?before={before}&limit=50", token=w.get("token"))
        return c.build("GET", w["path"], token=w.get("token"))

    async def run_once(duration_s: float) -> dict[str, Any]:
        latencies: list[int] = []
        errors = 0
        measuring = False
        stop_at = time.monotonic() + spec["warmup_s"] + duration_s

        async def worker(i: int) -> None:
            nonlocal errors
            while time.monotonic() < stop_at:
                raw = request(i)
                t0 = time.monotonic_ns()
                try:
                    status, _ = await conns[i].send(raw, timeout_s=10)
                except Exception:
                    errors += 1
                    conns[i] = await HttpConn.open(host, port)
                    continue
                if measuring:
                    if status in ok_status:
                        latencies.append(time.monotonic_ns() - t0)
                    else:
                        errors += 1

        tasks = [asyncio.create_task(worker(i)) for i in range(len(workers))]
        await asyncio.sleep(spec["warmup_s"])
        measuring, started = True, time.monotonic()
        await asyncio.sleep(duration_s)
        measuring, elapsed = False, time.monotonic() - started
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
        return {"rps": round(len(latencies) / elapsed, 1), "n": len(latencies), "errors": errors} | quantiles(
            latencies
        )

    runs = []
    for _ in range(spec["runs"]):
        runs.append(await run_once(spec["duration_s"]))
        if spec.get("pid"):
            runs[-1] |= memory(spec["pid"])
    for c in conns:
        c.close()
    return {"runs": runs}


# -- fan-out over WebSocket -----------------------------------------------------------------------


async def fanout(spec: dict[str, Any]) -> dict[str, Any]:
    host, port, ref = spec["host"], spec["port"], spec["mode"] == "ref"
    ws_port = spec.get("ws_port") or port  # chatcore's dedicated WebSocket listener, when set
    subs: list[dict[str, Any]] = spec["subs"]  # each: {"token"?, "path", "room"}
    rooms: list[str] = spec["rooms"]
    per_room = {r: 0 for r in rooms}
    for s in subs:
        per_room[s["room"]] += 1
    state: dict[str, Any] = {"lat": [], "last": 0, "want": 0, "done": asyncio.Event()}

    def on_text(payload: bytes, now: int) -> None:
        ts = stamp_of(payload)
        if ts is not None:
            state["lat"].append(now - ts)
            state["last"] = now
            if len(state["lat"]) >= state["want"]:
                state["done"].set()

    t0 = time.monotonic()
    opened = await _gather_bounded(
        [
            (lambda s=s: WsConn.open(host, ws_port, s["path"], token=s.get("token"), on_text=on_text))
            for s in subs
        ],
        spec.get("connect_concurrency", 32),
    )
    conns = [c for c in opened if isinstance(c, WsConn)]
    failures = [repr(c) for c in opened if not isinstance(c, WsConn)]
    connect_s = round(time.monotonic() - t0, 2)
    if failures:
        for c in conns:
            c.close()
        return {"error": f"{len(failures)} of {len(subs)} connections failed: {failures[:3]}"}
    await asyncio.sleep(spec.get("settle_s", 1.0))

    # The sender: REST posts on a few keep-alive connections (chatcore), or one /pub socket (ref).
    pub: WsConn | None = None
    pool: asyncio.Queue[HttpConn] = asyncio.Queue()
    if ref:
        pub = await WsConn.open(host, port, "/pub")
    else:
        for _ in range(4):
            pool.put_nowait(await HttpConn.open(host, port))
    send_errors = 0

    async def send(room: str) -> None:
        nonlocal send_errors
        if pub is not None:
            pub.send_text(b"%s bench:%d: %s" % (room.encode(), time.monotonic_ns(), PAD.encode()))
            return
        conn = await pool.get()
        try:
            raw = conn.build("POST", f"/v1/chats/{room}/messages", token=spec["token"], body=body_json())
            status, _ = await conn.send(raw, timeout_s=10)
            if status != 201:
                send_errors += 1
        except Exception:
            send_errors += 1
        finally:
            pool.put_nowait(conn)

    runs = []
    rate, count = spec["rate"], spec["messages"]
    for _ in range(spec["runs"]):
        state["lat"], state["last"], state["want"] = [], 0, 1 << 62
        state["done"] = asyncio.Event()
        expected = 0
        start = time.monotonic()
        first_ns = time.monotonic_ns()
        pending = []
        for i in range(count):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            room = rooms[i % len(rooms)]
            expected += per_room[room]
            pending.append(asyncio.create_task(send(room)))
        await asyncio.wait_for(asyncio.gather(*pending), timeout=30)
        state["want"] = expected
        if len(state["lat"]) >= expected:
            state["done"].set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state["done"].wait(), spec.get("drain_s", 5.0))
        got = len(state["lat"])
        span_s = max((state["last"] - first_ns) / 1e9, 1e-9)
        run = {"deliveries": got, "expected": expected, "per_s": round(got / span_s, 1)}
        run |= quantiles(state["lat"])
        run["send_errors"], send_errors = send_errors, 0
        if spec.get("pid"):
            run |= memory(spec["pid"])
        runs.append(run)
        await asyncio.sleep(0.5)
    closed_early = sum(1 for c in conns if c.closed.done())
    for c in conns:
        c.close()
    if pub is not None:
        pub.close()
    while not pool.empty():
        pool.get_nowait().close()
    return {"runs": runs, "connect_s": connect_s, "closed_early": closed_early}


# -- long-poll ------------------------------------------------------------------------------------


class _Page(msgspec.Struct):
    cursor: str


async def longpoll(spec: dict[str, Any]) -> dict[str, Any]:
    host, port = spec["host"], spec["port"]
    tokens: list[str] = spec["tokens"]
    conns = [await HttpConn.open(host, port) for _ in tokens]
    cursors: list[str] = []
    for conn, token in zip(conns, tokens, strict=True):
        status, body = await conn.send(conn.build("GET", "/v1/updates", token=token))
        if status != 200:
            return {"error": f"/v1/updates answered {status}: {body[:200]!r}"}
        cursors.append(msgspec.json.decode(body, type=_Page).cursor)
    sender = await HttpConn.open(host, port)
    runs = []
    for _ in range(spec["runs"]):
        lat: list[int] = []
        misses = 0
        for _ in range(spec["rounds"]):

            async def wait(i: int, lat: list[int] = lat) -> None:
                nonlocal misses
                conn = conns[i]
                raw = conn.build("GET", f"/v1/updates?cursor={quote(cursors[i])}&timeout=10", token=tokens[i])
                status, body = await conn.send(raw, timeout_s=15)
                now = time.monotonic_ns()
                ts = stamp_of(body) if status == 200 else None
                if ts is None:
                    misses += 1
                else:
                    lat.append(now - ts)
                if status == 200:
                    cursors[i] = msgspec.json.decode(body, type=_Page).cursor

            waiting = [asyncio.create_task(wait(i)) for i in range(len(conns))]
            await asyncio.sleep(spec.get("settle_s", 0.3))
            raw = sender.build(
                "POST", f"/v1/chats/{spec['chat']}/messages", token=spec["token"], body=body_json()
            )
            status, _ = await sender.send(raw)
            await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), timeout=20)
            if status != 201:
                misses += len(conns)
        run = {"wakeups": len(lat), "misses": misses} | quantiles(lat)
        if spec.get("pid"):
            run |= memory(spec["pid"])
        runs.append(run)
    for c in [*conns, sender]:
        c.close()
    return {"runs": runs}


# -- idle connections -----------------------------------------------------------------------------


async def idle(spec: dict[str, Any]) -> dict[str, Any]:
    host, port, pid = spec["host"], spec.get("ws_port") or spec["port"], spec["pid"]
    subs: list[dict[str, Any]] = spec["subs"]
    await asyncio.sleep(1.0)
    before = memory(pid)
    t0 = time.monotonic()
    opened = await _gather_bounded(
        [(lambda s=s: WsConn.open(host, port, s["path"], token=s.get("token"))) for s in subs],
        spec.get("connect_concurrency", 32),
    )
    conns = [c for c in opened if isinstance(c, WsConn)]
    connect_s = round(time.monotonic() - t0, 2)
    await asyncio.sleep(spec.get("settle_s", 3.0))
    after = memory(pid)
    alive = sum(1 for c in conns if not c.closed.done())
    for c in conns:
        c.close()
    failures = [repr(c) for c in opened if not isinstance(c, WsConn)]
    delta_mib = after["rss_total_mib"] - before["rss_total_mib"]
    per_gib_marginal = alive / (delta_mib / 1024) if delta_mib > 0 else float("inf")
    per_gib_total = alive / (after["rss_total_mib"] / 1024)
    return {
        "runs": [
            {
                "connections": alive,
                "failed": len(failures),
                "connect_s": connect_s,
                "rss_before_mib": before["rss_total_mib"],
                "rss_after_mib": after["rss_total_mib"],
                "rss_total_mib": after["rss_total_mib"],
                "kib_per_conn": round(delta_mib * 1024 / max(alive, 1), 2),
                "per_gib_marginal": round(per_gib_marginal),
                "per_gib_total": round(per_gib_total),
            }
        ],
        "failures": failures[:3],
    }


SCENARIOS = {"http": http_load, "fanout": fanout, "longpoll": longpoll, "idle": idle}


def main() -> None:
    spec = msgspec.json.decode(sys.stdin.buffer.read())
    import uvloop

    result = uvloop.run(SCENARIOS[spec["kind"]](spec))
    sys.stdout.write(msgspec.json.encode(result).decode())


if __name__ == "__main__":
    main()
