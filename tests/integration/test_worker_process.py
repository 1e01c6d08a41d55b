"""`chatcore worker` as a real process: it drains the outbox to Redis, and a second worker takes
over the stream entries a killed one left unacknowledged (R6), each handled once.

The consumer handlers below are loaded by the worker processes themselves
(`--consumer GROUP=tests.integration.test_worker_process:factory`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync

from chatcore.domain.events import EventRecord
from tests.integration.fixtures.redis import RedisServer
from tests.integration.test_multi_instance import CHATCORE, base_env, stop_process, undispatched, wait_until

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
LOG_VAR = "WORKER_TEST_HANDLED_LOG"

Handler = Callable[[EventRecord], Awaitable[None]]


# -- handlers run inside the worker processes ---------------------------------------------------


def recording_handler(runtime: Any) -> Handler:
    """Appends each handled event id to the file named by WORKER_TEST_HANDLED_LOG."""
    path = Path(os.environ[LOG_VAR])

    def write(event_id: str) -> None:
        with path.open("a") as f:
            f.write(event_id + "\n")
            f.flush()
            os.fsync(f.fileno())

    async def handle(record: EventRecord) -> None:
        await asyncio.to_thread(write, record.id)

    return handle


def stuck_handler(runtime: Any) -> Handler:
    """Never finishes: the entries it was handed stay unacknowledged in its pending list."""

    async def handle(record: EventRecord) -> None:
        await asyncio.Event().wait()

    return handle


# -- helpers ----------------------------------------------------------------------------------


def _env(data_dir: Path, broker_url: str, prefix: str, **extra: str) -> dict[str, str]:
    env = base_env(data_dir, broker_url, prefix, **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _create_users(workdir: Path, env: dict[str, str], count: int) -> None:
    for _ in range(count):
        done = subprocess.run(
            [
                str(CHATCORE),
                "create-user",
                "--email",
                f"u{uuid.uuid4().hex[:8]}@example.com",
                "--display-name",
                "U",
            ],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr


def _event_ids(data_dir: Path) -> set[str]:
    with sqlite3.connect(f"file:{data_dir / 'chatcore.db'}?mode=ro", uri=True, timeout=5) as db:
        return {row[0] for row in db.execute("SELECT id FROM events")}


def _stream_ids(client: redis_sync.Redis, prefix: str) -> list[str]:
    entries: Any = client.xrange(f"{prefix}events")
    return [fields[b"id"].decode() for _entry, fields in entries]


class Workers:
    """`chatcore worker` children of the test, stopped by their own pids at the end."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, env: dict[str, str], *args: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = self._workdir / f"worker-{name}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [str(CHATCORE), "worker", "--name", name, *args],
                cwd=self._workdir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        return process, log


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    running = Workers(tmp_path)
    yield running
    for process in running.processes:
        stop_process(process)


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis_sync.Redis]:
    client = redis_sync.Redis.from_url(redis_url, socket_timeout=5)
    yield client
    client.close()


# -- tests ------------------------------------------------------------------------------------


def test_the_worker_drains_the_outbox_to_redis_and_stops_on_sigterm(
    tmp_path: Path, workers: Workers, redis_server: RedisServer
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    data_dir = tmp_path / "data"
    env = _env(data_dir, redis_server.url, prefix)
    # Commits made while Redis is down stay in the outbox (the command still succeeds).
    redis_server.stop()
    _create_users(tmp_path, env, 2)
    held = undispatched(data_dir)
    assert held >= 2
    redis_server.start()

    worker, log = workers.start("drain", env)
    took = wait_until("outbox drained by the worker", lambda: undispatched(data_dir) == 0, 15)
    print(f"{held} records relayed {took:.1f} s after the worker started")
    client = redis_sync.Redis.from_url(redis_server.url, socket_timeout=5)
    try:
        assert sorted(_stream_ids(client, prefix)) == sorted(_event_ids(data_dir))  # each once, in the stream
    finally:
        client.close()
    assert worker.poll() is None, log.read_text()

    os.killpg(worker.pid, signal.SIGTERM)
    assert worker.wait(timeout=10) == 0, log.read_text()
    output = log.read_text()
    assert "relaying the outbox to Redis" in output and "stopping" in output
    assert "Traceback" not in output, output


def test_a_second_worker_reclaims_what_a_killed_worker_left_unacked(
    tmp_path: Path, workers: Workers, redis_url: str, redis_prefix: str, sync_redis: redis_sync.Redis
) -> None:
    data_dir = tmp_path / "data"
    handled_log = tmp_path / "handled.txt"
    handled_log.touch()
    env = _env(data_dir, redis_url, redis_prefix, **{LOG_VAR: str(handled_log)})
    stream, group = f"{redis_prefix}events", "probe"
    sync_redis.xgroup_create(stream, group, id="$", mkstream=True)
    _create_users(tmp_path, env, 3)  # each relays its record to the stream on exit
    expected = _event_ids(data_dir)
    assert len(expected) == 3 and undispatched(data_dir) == 0
    assert sorted(_stream_ids(sync_redis, redis_prefix)) == sorted(expected)

    consumer = f"{group}=tests.integration.test_worker_process:"
    first, first_log = workers.start(
        "w1", env, "--no-notifications", "--consumer", consumer + "stuck_handler"
    )

    def pending_on_w1() -> bool:
        assert first.poll() is None, first_log.read_text()
        rows: Any = sync_redis.xpending_range(stream, group, min="-", max="+", count=10)
        return len(rows) == 3 and {r["consumer"] for r in rows} == {b"w1"}

    wait_until("w1 holds every entry unacked", pending_on_w1, 15)
    stop_process(first, signal.SIGKILL)
    killed_at = time.monotonic()

    second, second_log = workers.start(
        "w2", env, "--no-notifications", "--consumer", consumer + "recording_handler"
    )

    def all_handled() -> bool:
        assert second.poll() is None, second_log.read_text()
        summary: Any = sync_redis.xpending(stream, group)
        return len(handled_log.read_text().split()) >= 3 and int(summary["pending"]) == 0

    wait_until("w2 reclaimed and handled every entry", all_handled, 15)
    print(f"reclaimed {time.monotonic() - killed_at:.1f} s after the kill")
    time.sleep(1.5)  # a late duplicate would show up here
    handled = Counter(handled_log.read_text().split())
    assert set(handled) == expected
    assert all(n == 1 for n in handled.values()), handled  # each handled exactly once
    stop_process(second)
    assert second.returncode == 0, second_log.read_text()
