"""Opening a SQLite connection with the settings every chatcore connection needs."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Literal

from chatcore.ports.errors import StoreUnavailable

# STRICT tables need 3.37; RETURNING (used for stream seqs) needs 3.35.
MIN_SQLITE_VERSION = (3, 37, 0)

# NORMAL: in WAL mode a commit survives the process dying, but an OS crash or power cut may
# undo the last commits. FULL: each commit is fsynced, so it also survives the machine dying.
Synchronous = Literal["NORMAL", "FULL", "EXTRA"]


def connect(
    path: str | Path,
    *,
    synchronous: Synchronous = "FULL",
    busy_timeout_s: float = 5.0,
    read_only: bool = False,
    check_same_thread: bool = True,
) -> sqlite3.Connection:
    """A connection in autocommit mode: transactions are explicit `BEGIN IMMEDIATE ... COMMIT`.

    By default the connection belongs to the thread that opens it (sqlite3's check).
    `check_same_thread=False` lets other threads use it: the caller then guarantees that one
    thread at a time does (SqliteDatabase: the writer's turn).
    """
    if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
        raise RuntimeError(
            f"chatcore needs SQLite {'.'.join(map(str, MIN_SQLITE_VERSION))} or newer; "
            f"this Python has {sqlite3.sqlite_version}"
        )
    if synchronous not in ("NORMAL", "FULL", "EXTRA"):
        raise ValueError(f"synchronous must be NORMAL, FULL or EXTRA, not {synchronous!r}")
    conn = sqlite3.connect(path, timeout=busy_timeout_s, autocommit=True, check_same_thread=check_same_thread)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        if read_only:
            conn.execute("PRAGMA query_only = ON")
        else:
            # Persistent in the file: readers never block the writer, nor the writer readers.
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
    except BaseException:
        conn.close()
        raise
    return conn


# Failures of the database file rather than of the statement: nothing was stored, retry later.
_UNAVAILABLE = {
    sqlite3.SQLITE_BUSY: "the database stayed locked by another writer",
    sqlite3.SQLITE_LOCKED: "the database stayed locked by another writer",
    sqlite3.SQLITE_FULL: "the disk holding the database is full",
    sqlite3.SQLITE_IOERR: "the database file could not be read or written",
    sqlite3.SQLITE_CANTOPEN: "the database file could not be opened",
}


def unavailable(error: sqlite3.OperationalError) -> StoreUnavailable | None:
    """The StoreUnavailable an operational error means, if it is about the file, not the SQL."""
    reason = _UNAVAILABLE.get(error.sqlite_errorcode & 0xFF)
    return None if reason is None else StoreUnavailable(reason)


def begin(conn: sqlite3.Connection) -> None:
    """Start a write transaction now, so writers queue here rather than fail at their first write."""
    conn.execute("BEGIN IMMEDIATE")


def ensure_transaction(conn: sqlite3.Connection) -> None:
    if not conn.in_transaction:
        begin(conn)


def rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")
