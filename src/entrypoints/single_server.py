"""Without a broker, one server process per SQLite database: a second one is refused at start-up.

Without a broker each process has its own in-process event bus and its own memory of live
sessions (adapters/session_cache.py). A second server on the same file would not wake the
first one's sockets and long-polls, and a logout through one would not reach the other's memory.
Several processes need a broker (CHATCORE_BROKER_URL); `chatcore serve --workers N` already says
so. This covers two separate `chatcore serve` on one data directory as well.

The lock is an exclusive `flock` on a file beside the database, held while the server runs. The
kernel drops it when the process ends however it ends (kill -9 included), so there is nothing to
clean up. Operator commands (`create-user`, `init-db`) and `chatcore worker` do not take it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from entrypoints.settings import SettingsError


def lock_path(database: Path) -> Path:
    return database.with_name(database.name + ".serve-lock")


@contextmanager
def sole_server(database: Path) -> Iterator[None]:
    """Hold the database's server lock; SettingsError when another process holds it."""
    if sys.platform == "win32":  # no flock; Windows is not a supported server platform
        yield
        return
    import fcntl

    database.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path(database), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SettingsError(
                f"CHATCORE_BROKER_URL: another chatcore server is serving {database} without a broker; "
                "stop it, or give every server the same CHATCORE_BROKER_URL=redis://…"
            ) from None
        yield
    finally:
        os.close(fd)  # the lock goes with the descriptor
