"""Several `chatcore serve` processes over one SQLite file and one redis-server (issue 8; R1, R2).

Every process is a child of the test, on loopback, stopped by its own pid (process group). The
instances share the data directory (database, signing key, mail folder), the broker URL and a
key prefix unique to the test, so tests sharing a redis-server never see each other's keys.

Live delivery on instance B is observed through a long-poll (`GET /v1/updates`) held on B while
the message is sent through A: only the Redis fan-out can wake it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.integration.fixtures.redis import RedisServer
from tests.integration.test_http_server_process import CHATCORE, PASSWORD, _free_port, _start, _stop

pytestmark = pytest.mark.slow

free_port = _free_port
stop_process = _stop


@dataclass
class Instance:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def base_env(data_dir: Path, broker_url: str, prefix: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATCORE_")}
    env.update(
        CHATCORE_DATA_DIR=str(data_dir),
        CHATCORE_BROKER_URL=broker_url,
        CHATCORE_BROKER_PREFIX=prefix,
        CHATCORE_RELAY_INTERVAL_S="0.5",
        CHATCORE_RELAY_BACKOFF_MAX_S="1",
        CHATCORE_STREAM_CLAIM_IDLE_S="1",
    )
    env.update(extra)
    return env


def start_serve(name: str, workdir: Path, env: dict[str, str]) -> Instance:
    settings = {k: v for k, v in env.items() if k.startswith("CHATCORE_")}
    ws_port = settings.get("CHATCORE_WS_PORT")
    server = _start(workdir, _free_port(*([int(ws_port)] if ws_port else [])), settings)
    return Instance(name, server.url, server.process, server.log)


def wait_until(what: str, check: Callable[[], bool], timeout_s: float, every_s: float = 0.1) -> float:
    """Poll `check` until it holds; returns the seconds it took."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        time.sleep(every_s)
    return time.monotonic() - started


def undispatched(data_dir: Path) -> int:
    with sqlite3.connect(f"file:{data_dir / 'chatcore.db'}?mode=ro", uri=True, timeout=5) as db:
        return int(db.execute("SELECT count(*) FROM events WHERE dispatched = 0").fetchone()[0])


def ready_status(instance: Instance) -> int:
    try:
        return httpx.get(instance.url + "/readyz", timeout=2).status_code
    except httpx.HTTPError:
        return 0


def register_and_login(client: httpx.Client, email: str) -> dict[str, str]:
    r = client.post("/v1/auth/register", json={"email": email, "password": PASSWORD, "display_name": "U"})
    assert r.status_code == 202, r.text
    r = client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


@dataclass
class LongPoller:
    """A long-poll client of one instance (`GET /v1/updates`), holding its cursor."""

    instance: Instance
    headers: dict[str, str]
    cursor: str | None = None
    _pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(max_workers=1))

    def start(self) -> None:
        self.cursor = self._get_updates(None, 0)["cursor"]

    def _get_updates(self, cursor: str | None, timeout_s: float) -> dict[str, Any]:
        params: dict[str, Any] = {"timeout": timeout_s}
        if cursor is not None:
            params["cursor"] = cursor
        r = httpx.get(
            self.instance.url + "/v1/updates", params=params, headers=self.headers, timeout=timeout_s + 10
        )
        assert r.status_code == 200, r.text
        return dict(r.json())

    def next_bodies(self, timeout_s: float) -> Future[list[str]]:
        """Bodies of the messages in the next answer of a long-poll held on the instance."""

        def poll() -> list[str]:
            page = self._get_updates(self.cursor, timeout_s)
            self.cursor = page["cursor"]
            return [body for e in page["events"] if (body := _body(e)) is not None]

        return self._pool.submit(poll)

    def catch_up(self) -> list[int]:
        """Every message seq after the cursor, following `has_more`."""
        seqs: list[int] = []
        while True:
            page = self._get_updates(self.cursor, 0)
            self.cursor = page["cursor"]
            seqs += [s for e in page["events"] if (s := _seq(e)) is not None]
            if not page.get("has_more"):
                return seqs

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _posted(event: dict[str, Any]) -> dict[str, Any] | None:
    """The `message.posted` payload of an update (an EventRecord as JSON), else None."""
    payload = event.get("event")
    if isinstance(payload, dict) and payload.get("type") == "message.posted":
        return payload
    return None


def _body(event: dict[str, Any]) -> str | None:
    posted = _posted(event)
    return str(posted["body"]) if posted is not None else None


def _seq(event: dict[str, Any]) -> int | None:
    posted = _posted(event)
    return int(posted["seq"]) if posted is not None else None


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        stop_process(process)


def _two_instances(
    workdir: Path, spawned: list[subprocess.Popen[bytes]], broker_url: str, prefix: str, **extra: str
) -> tuple[Instance, Instance, Path]:
    data_dir = workdir / "shared-data"
    env = base_env(data_dir, broker_url, prefix, **extra)
    a = start_serve("a", workdir, env)  # A first: it migrates the database and makes the key
    spawned.append(a.process)
    b = start_serve("b", workdir, env)
    spawned.append(b.process)
    return a, b, data_dir


def _chat(client: httpx.Client, headers: dict[str, str]) -> tuple[str, str]:
    r = client.post("/v1/chats", json={"title": "Ops"}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()["id"], r.headers["location"]


def _send(a: httpx.Client, chat_url: str, headers: dict[str, str], body: str) -> httpx.Response:
    return a.post(chat_url + "/messages", json={"body": body, "client_msg_id": body}, headers=headers)


def test_a_message_sent_through_a_reaches_a_client_of_b(
    workdir: Path, spawned: list[subprocess.Popen[bytes]], redis_url: str, redis_prefix: str
) -> None:
    a, b, _ = _two_instances(workdir, spawned, redis_url, redis_prefix)
    with httpx.Client(base_url=a.url, timeout=10) as on_a, httpx.Client(base_url=b.url, timeout=10) as on_b:
        headers = register_and_login(on_a, f"u{uuid.uuid4().hex[:8]}@example.com")
        _, chat_url = _chat(on_a, headers)
        wait_until("both instances ready", lambda: ready_status(a) == ready_status(b) == 200, 10)
        watcher = LongPoller(b, headers)
        watcher.start()
        try:
            pending = watcher.next_bodies(timeout_s=10)
            time.sleep(0.3)  # let the long-poll settle on B before the send
            started = time.monotonic()
            assert _send(on_a, chat_url, headers, "hello from A").status_code == 201
            assert "hello from A" in pending.result(timeout=15)
            assert time.monotonic() - started < 5
        finally:
            watcher.close()
        # B reads the same database: the message is there with its seq.
        page = on_b.get(chat_url + "/messages", headers=headers).json()
        assert [(m["seq"], m["body"]) for m in page["messages"]] == [(1, "hello from A")]


def test_a_websocket_client_on_b_receives_a_message_sent_through_a(
    workdir: Path, spawned: list[subprocess.Popen[bytes]], redis_url: str, redis_prefix: str
) -> None:
    a, b, _ = _two_instances(workdir, spawned, redis_url, redis_prefix)
    with httpx.Client(base_url=a.url, timeout=10) as on_a:
        headers = register_and_login(on_a, f"u{uuid.uuid4().hex[:8]}@example.com")
        _, chat_url = _chat(on_a, headers)
        wait_until("both instances ready", lambda: ready_status(a) == ready_status(b) == 200, 10)

        async def listen_on_b_while_a_sends() -> str:
            url = b.url.replace("http", "ws", 1) + "/v1/ws"
            async with websockets.connect(url, additional_headers=headers) as ws:
                await asyncio.sleep(0.3)  # the subscription settles on B's bus
                sent = await asyncio.to_thread(_send, on_a, chat_url, headers, "over the socket")
                assert sent.status_code == 201
                async with asyncio.timeout(10):
                    while True:
                        frame = json.loads(await ws.recv())
                        if frame["type"] == "event" and (body := _body(frame["record"])) is not None:
                            return body

        assert asyncio.run(listen_on_b_while_a_sends()) == "over the socket"


def test_sends_survive_a_redis_outage_and_clients_converge_after_it(
    workdir: Path, spawned: list[subprocess.Popen[bytes]], redis_server: RedisServer
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    a, b, data_dir = _two_instances(workdir, spawned, redis_server.url, prefix)
    with httpx.Client(base_url=a.url, timeout=10) as on_a, httpx.Client(base_url=b.url, timeout=10) as on_b:
        headers = register_and_login(on_a, "outage@example.com")
        _, chat_url = _chat(on_a, headers)
        wait_until("both instances ready", lambda: ready_status(a) == ready_status(b) == 200, 10)
        watcher = LongPoller(b, headers)
        watcher.start()
        try:
            for i in range(3):
                assert _send(on_a, chat_url, headers, f"before {i}").status_code == 201

            redis_server.stop()
            outage_started = time.monotonic()
            wait_until("/readyz degraded on A and B", lambda: ready_status(a) == ready_status(b) == 503, 5)
            # Sends through either instance keep being acknowledged, promptly, during the outage.
            slowest = 0.0
            for i in range(10):
                client = on_a if i % 2 == 0 else on_b
                started = time.monotonic()
                r = _send(client, chat_url, headers, f"during {i}")
                slowest = max(slowest, time.monotonic() - started)
                assert r.status_code == 201, r.text
            assert slowest < 3.0, f"a send took {slowest:.1f} s during the outage"
            assert undispatched(data_dir) >= 10  # held in the outbox, not lost
            time.sleep(max(0.0, 4 - (time.monotonic() - outage_started)))  # several seconds down
            assert ready_status(a) == 503

            redis_server.start()  # the same port
            back = time.monotonic()
            wait_until("/readyz 200 again on A and B", lambda: ready_status(a) == ready_status(b) == 200, 10)
            drained = wait_until("outbox drained", lambda: undispatched(data_dir) == 0, 10)
            print(f"outbox drained {drained:.1f} s after Redis came back")

            # A client of B converges through its cursor: every message, in order, none missing.
            assert watcher.catch_up() == list(range(1, 14))
            page = on_b.get(chat_url + "/messages", params={"limit": 50}, headers=headers).json()
            assert [m["seq"] for m in page["messages"]] == list(range(1, 14))

            # Fan-out resumed without restarting anything: a send on A reaches B live.
            pending = watcher.next_bodies(timeout_s=10)
            time.sleep(0.3)
            assert _send(on_a, chat_url, headers, "after the outage").status_code == 201
            assert "after the outage" in pending.result(timeout=15)
            print(f"fan-out resumed {time.monotonic() - back:.1f} s after Redis came back")
        finally:
            watcher.close()


def test_a_logout_through_a_refuses_the_same_token_on_b_at_once(
    workdir: Path, spawned: list[subprocess.Popen[bytes]], redis_url: str, redis_prefix: str
) -> None:
    # SECURITY.md T7, across instances: B checked the session before the logout, and must not
    # answer from what it saw then (with a broker no instance keeps sessions in memory).
    a, b, _ = _two_instances(workdir, spawned, redis_url, redis_prefix)
    with httpx.Client(base_url=a.url, timeout=10) as on_a, httpx.Client(base_url=b.url, timeout=10) as on_b:
        headers = register_and_login(on_a, f"u{uuid.uuid4().hex[:8]}@example.com")
        for _ in range(3):
            assert on_b.get("/v1/users/me", headers=headers).status_code == 200
        assert on_a.post("/v1/auth/logout", headers=headers).status_code == 204
        assert on_b.get("/v1/users/me", headers=headers).status_code == 401


def test_two_instances_share_one_login_rate_limit_bucket(
    workdir: Path, spawned: list[subprocess.Popen[bytes]], redis_url: str, redis_prefix: str
) -> None:
    a, b, _ = _two_instances(
        workdir, spawned, redis_url, redis_prefix, CHATCORE_LOGIN_ATTEMPTS_PER_IP_PER_MINUTE="4"
    )
    statuses = []
    with httpx.Client(base_url=a.url, timeout=10) as on_a, httpx.Client(base_url=b.url, timeout=10) as on_b:
        for i, client in enumerate([on_a, on_a, on_b, on_b, on_a, on_b]):
            # A new address each time: only the per-IP bucket can refuse.
            r = client.post(
                "/v1/auth/login", json={"email": f"nobody{i}@example.com", "password": "wrong pass 1"}
            )
            statuses.append(r.status_code)
            if r.status_code == 429:
                assert int(r.headers["retry-after"]) >= 1
    # Four attempts in the bucket across A and B; the fifth and sixth are refused, whichever
    # instance gets them (per-instance buckets would have let both through).
    assert statuses[:4] == [401] * 4, statuses
    assert statuses[4:] == [429, 429], statuses


def test_serve_runs_several_workers_over_redis_and_stops_gracefully(
    workdir: Path, spawned: list[subprocess.Popen[bytes]], redis_url: str, redis_prefix: str
) -> None:
    data_dir = workdir / "shared-data"
    env = base_env(data_dir, redis_url, redis_prefix, CHATCORE_WORKERS="2")
    server = start_serve("w2", workdir, env)
    spawned.append(server.process)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        headers = register_and_login(client, "workers@example.com")
        _, chat_url = _chat(client, headers)
        for i in range(5):
            assert _send(client, chat_url, headers, f"m{i}").status_code == 201
    stop_process(server.process)  # SIGTERM to granian: stop accepting, end each worker's lifespan
    assert server.process.returncode == 0, server.output()
    output = server.output()
    assert output.count("runtime stopped: outbox flushed") == 2, output  # one per worker process
    assert "Traceback" not in output, output
    assert undispatched(data_dir) == 0


def test_several_workers_share_the_dedicated_websocket_port(
    workdir: Path, spawned: list[subprocess.Popen[bytes]], redis_url: str, redis_prefix: str
) -> None:
    # Each worker listens on CHATCORE_WS_PORT (SO_REUSEPORT); the kernel spreads the sockets, and
    # a message reaches every one of them over Redis, whichever worker holds it.
    ws_port = _free_port()
    env = base_env(
        workdir / "shared-data", redis_url, redis_prefix, CHATCORE_WORKERS="2", CHATCORE_WS_PORT=str(ws_port)
    )
    server = start_serve("w2", workdir, env)
    spawned.append(server.process)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        headers = register_and_login(client, "ws-port@example.com")
        _, chat_url = _chat(client, headers)

        async def every_socket_gets_the_message() -> list[str]:
            url = f"ws://127.0.0.1:{ws_port}/v1/ws"
            sockets = [await websockets.connect(url, additional_headers=headers) for _ in range(8)]
            try:
                await asyncio.sleep(0.3)  # the subscriptions settle on both workers' buses
                sent = await asyncio.to_thread(_send, client, chat_url, headers, "to all")
                assert sent.status_code == 201

                async def first_body(ws: Any) -> str:
                    while True:
                        frame = json.loads(await ws.recv())
                        if frame["type"] == "event" and (body := _body(frame["record"])) is not None:
                            return body

                async with asyncio.timeout(10):
                    return list(await asyncio.gather(*(first_body(ws) for ws in sockets)))
            finally:
                for ws in sockets:
                    await ws.close()

        assert asyncio.run(every_socket_gets_the_message()) == ["to all"] * 8
    stop_process(server.process)
    assert server.process.returncode == 0, server.output()
    assert server.output().count("WebSocket listener on") == 2  # both workers bound the port


def serve_refused(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`chatcore serve ARGS` with none of our CHATCORE_* settings, expected to refuse at once."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATCORE_")}
    return subprocess.run(
        [str(CHATCORE), "serve", "--port", str(free_port()), *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_several_workers_without_a_broker_are_refused_with_a_clear_message(workdir: Path) -> None:
    done = serve_refused(workdir, "--workers", "2")
    assert done.returncode == 2
    assert "CHATCORE_WORKERS" in done.stderr and "CHATCORE_BROKER_URL" in done.stderr


def test_a_second_server_on_the_same_data_without_a_broker_is_refused(
    workdir: Path, spawned: list[subprocess.Popen[bytes]]
) -> None:
    # Without a broker the first would not see the second's events, nor its logouts.
    first = _start(workdir, free_port())
    spawned.append(first.process)
    second = serve_refused(workdir)
    assert second.returncode == 2, second.stderr
    assert "another chatcore server" in second.stderr and "CHATCORE_BROKER_URL" in second.stderr
    assert httpx.get(first.url + "/healthz", timeout=5).status_code == 200  # the first goes on


def test_a_reload_keeps_a_server_without_a_broker_serving(
    workdir: Path, spawned: list[subprocess.Popen[bytes]]
) -> None:
    # SIGHUP: granian starts a new worker, then stops the old one, which still holds the
    # database's server lock; the new one waits for it instead of failing the server.
    started = _start(workdir, free_port())
    server = Instance("reloaded", started.url, started.process, started.log)
    spawned.append(server.process)
    os.kill(server.process.pid, signal.SIGHUP)
    wait_until("the old worker stopped", lambda: "Stopped old worker" in server.output(), 30)
    wait_until("the new worker serves", lambda: ready_status(server) == 200, 30)
    assert server.process.poll() is None, server.output()
    assert "another chatcore server" not in server.output()
