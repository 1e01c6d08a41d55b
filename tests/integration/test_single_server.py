"""Without a broker one serving runtime per SQLite database (entrypoints/single_server.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import entrypoints.container
from entrypoints.container import build_container
from entrypoints.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def short_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(entrypoints.container, "SERVE_LOCK_WAIT_S", 0.5)


async def test_a_second_serving_runtime_is_refused_while_the_first_serves(tmp_path: Path) -> None:
    settings = load_settings({}, data_dir=str(tmp_path))
    async with build_container(settings).runtime():
        with pytest.raises(SettingsError, match="another chatcore server"):
            async with build_container(settings).runtime():
                pass
        # Operator commands and workers share the file with a running server.
        async with build_container(settings).runtime(role="cli"):
            pass
        async with build_container(settings).runtime(role="worker"):
            pass
    async with build_container(settings).runtime():  # the lock went with the first
        pass


async def test_a_server_replacing_another_waits_for_it_to_let_go(tmp_path: Path) -> None:
    # A reload: granian starts the new worker, then stops the old one.
    settings = load_settings({}, data_dir=str(tmp_path))
    old_stopped = asyncio.Event()

    async def old_worker() -> None:
        async with build_container(settings).runtime():
            await asyncio.sleep(0.2)
        old_stopped.set()

    old = asyncio.create_task(old_worker())
    await asyncio.sleep(0.05)  # the old one holds the lock
    async with build_container(settings).runtime():
        assert old_stopped.is_set()
    await old


async def test_another_database_is_served_beside_it(tmp_path: Path) -> None:
    first = load_settings({}, data_dir=str(tmp_path / "a"))
    second = load_settings({}, data_dir=str(tmp_path / "b"))
    async with build_container(first).runtime(), build_container(second).runtime():
        pass
