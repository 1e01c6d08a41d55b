"""Where live sessions are kept in memory (adapters/session_cache.py): only where this process is
the one changing them. With a broker another instance may revoke a session at any time."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from adapters.session_cache import CachedSessionStore
from entrypoints.container import build_container
from entrypoints.settings import load_settings


async def _cached(**settings: object) -> bool:
    async with build_container(load_settings({}, **settings)).runtime() as runtime:
        return isinstance(runtime.auth.ports.sessions, CachedSessionStore)


@pytest.mark.parametrize("database", ["sqlite", "memory"])
async def test_the_embedded_default_keeps_live_sessions_in_memory(tmp_path: Path, database: str) -> None:
    url = "memory://" if database == "memory" else ""
    assert await _cached(data_dir=str(tmp_path), database_url=url)
    assert not await _cached(data_dir=str(tmp_path), database_url=url, session_cache_entries=0)


async def test_with_a_broker_every_request_asks_the_store(tmp_path: Path, redis_url: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    assert not await _cached(data_dir=str(tmp_path), broker_url=redis_url, broker_prefix=prefix)
