"""Without a broker, one server process per SQLite database: a second one is refused at start-up.

Without a broker each process has its own in-process event bus and its own memory of live
sessions (adapters/session_cache.py). A second server on the same file would not wake the
first one's sockets and long-polls, and a logout through one would not reach the other's memory.
Several processes need a broker (CHATCORE_BROKER_URL); `chatcore serve --workers N` already says
so. This covers two separate `chatcore serve` on one data directory as well.

The lock is an exclusive `flock` on a file beside the database, held while the server runs. The
kernel drops it when the process ends however it ends (kill -9 included), so there is nothing to
clean up. Operator commands (`create-user`, `init-db`) and `chatcore worker` do not take it.

A reload (SIGHUP to granian) starts the new worker before it stops the old one: the new worker
waits for the old one to let go (`waiting_sole_server`), while `chatcore serve` itself refuses a
second server at once (`refuse_if_served`).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from entrypoints.settings import SettingsError

POLL_S = 0.1


def lock_path(database: Path) -> Path:
    return database.with_name(database.name + ".serve-lock")


def _taken(database: Path) -> int | None:
    """The locked file's descriptor (closing it lets go), or None while another process holds it."""
    import fcntl

    database.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path(database.resolve()), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _refused(database: Path) -> SettingsError:
    return SettingsError(
        f"CHATCORE_BROKER_URL: another chatcore server is serving {database} without a broker; "
        "stop it, or give every server the same CHATCORE_BROKER_URL=redis://…"
    )


def refuse_if_served(database: Path) -> None:
    """SettingsError at once when another process serves the database (`chatcore serve`'s check
    before its workers start; the worker then holds the lock with `waiting_sole_server`)."""
    if sys.platform == "win32":  # no flock; Windows is not a supported server platform
        return
    fd = _taken(database)
    if fd is None:
        raise _refused(database)
    os.close(fd)


@asynccontextmanager
async def waiting_sole_server(database: Path, wait_s: float) -> AsyncIterator[None]:
    """Hold the database's server lock, waiting up to `wait_s` for another process to let go."""
    if sys.platform == "win32":
        yield
        return
    deadline = time.monotonic() + wait_s
    while (fd := _taken(database)) is None:
        if time.monotonic() >= deadline:
            raise _refused(database)
        await asyncio.sleep(POLL_S)
    try:
        yield
    finally:
        os.close(fd)
