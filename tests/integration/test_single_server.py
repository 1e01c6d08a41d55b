"""Without a broker one serving runtime per SQLite database (entrypoints/single_server.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from entrypoints.container import build_container
from entrypoints.settings import SettingsError, load_settings


async def test_a_second_serving_runtime_is_refused_until_the_first_stops(tmp_path: Path) -> None:
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


async def test_another_database_is_served_beside_it(tmp_path: Path) -> None:
    first = load_settings({}, data_dir=str(tmp_path / "a"))
    second = load_settings({}, data_dir=str(tmp_path / "b"))
    async with build_container(first).runtime(), build_container(second).runtime():
        pass
