"""The SQLite database: one writer connection on its own thread, one reader for the event log.

Every statement runs on the thread that owns its connection, one at a time and in the order
they were asked for, so a rollback queued after a cancelled statement still runs after it.
Units of work hold `lock` from start to end: within this process they take turns, and
`BEGIN IMMEDIATE` makes other processes on the same file take turns with them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Self

from adapters.sqlite.connection import Synchronous, begin, connect, rollback, unavailable
from adapters.sqlite.migrations import LATEST_VERSION, SchemaError, apply_migrations, current_version

log = logging.getLogger("chatcore.sqlite")


class SqliteDatabase:
    """Owns the connections and their threads. `open()` before use, `close()` after.

    `migrate=True` (the embedded default) brings the schema up to date on open; that is safe
    because migrations run in one transaction behind the write lock and refuse a database newer
    than this code. With `migrate=False` a database not at the current version is refused: run
    `chatcore init-db` first.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: Synchronous = "FULL",
        busy_timeout_s: float = 5.0,
        migrate: bool = True,
    ) -> None:
        self.path = str(path)
        self.synchronous: Synchronous = synchronous
        self.busy_timeout_s = busy_timeout_s
        self.migrate = migrate
        self._writer: ThreadPoolExecutor | None = None
        self._reader: ThreadPoolExecutor | None = None
        self._writer_conn: sqlite3.Connection | None = None
        self._reader_conn: sqlite3.Connection | None = None
        self._lock: asyncio.Lock | None = None

    @property
    def in_memory(self) -> bool:
        # A second connection to ":memory:" would be another database: everything uses the writer.
        return self.path == ":memory:" or self.path.startswith("file::memory:")

    @property
    def lock(self) -> asyncio.Lock:
        """The writer connection's turn: held by a unit of work from start to end."""
        if self._lock is None:
            raise RuntimeError("the database is not open")
        return self._lock

    async def open(self) -> None:
        if self._writer is not None:
            raise RuntimeError("the database is already open")
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chatcore-sqlite-writer")
        self._lock = asyncio.Lock()
        try:
            self._writer_conn = await self._on(self._writer, self._open_writer)
            if not self.in_memory:
                self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chatcore-sqlite-reader")
                self._reader_conn = await self._on(self._reader, self._open_reader)
        except BaseException:
            await self.close()
            raise

    def _open_writer(self) -> sqlite3.Connection:
        conn = connect(self.path, synchronous=self.synchronous, busy_timeout_s=self.busy_timeout_s)
        try:
            if self.migrate:
                apply_migrations(conn)
            else:
                version = current_version(conn)
                if version != LATEST_VERSION:
                    raise SchemaError(
                        f"the database has schema version {version}, this chatcore needs "
                        f"{LATEST_VERSION}: run `chatcore init-db`"
                    )
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_reader(self) -> sqlite3.Connection:
        return connect(
            self.path, synchronous=self.synchronous, busy_timeout_s=self.busy_timeout_s, read_only=True
        )

    async def close(self) -> None:
        """Wait for the unit of work in progress, then close the connections and their threads."""
        if self._writer is None:
            return
        lock = self._lock
        if lock is not None:
            await lock.acquire()
        try:
            for executor, conn, writer in (
                (self._reader, self._reader_conn, False),
                (self._writer, self._writer_conn, True),
            ):
                if executor is not None:
                    if conn is not None:
                        await self._on(executor, functools.partial(_close, conn, optimize=writer))
                    executor.shutdown(wait=True)
        finally:
            self._writer = self._reader = None
            self._writer_conn = self._reader_conn = None
            self._lock = None
            if lock is not None:
                lock.release()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- running statements -----------------------------------------------------------------

    async def _on[T](self, executor: ThreadPoolExecutor, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, fn)
        except sqlite3.OperationalError as error:
            translated = unavailable(error)
            if translated is None:
                raise
            raise translated from error

    async def on_writer[T](self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` on the writer connection. The caller holds `lock`."""
        if self._writer is None or self._writer_conn is None:
            raise RuntimeError("the database is not open")
        return await self._on(self._writer, functools.partial(fn, self._writer_conn))

    def queue_on_writer(self, fn: Callable[[sqlite3.Connection], object]) -> None:
        """Queue `fn` on the writer connection without waiting: it runs after what is queued
        there and before anything queued later (one writer thread, first in, first out).

        For clean-up whose outcome no caller needs, such as ending a read's transaction: it
        saves the caller a round trip through the event loop. A failure is logged.
        """
        if self._writer is None or self._writer_conn is None:
            raise RuntimeError("the database is not open")
        self._writer.submit(fn, self._writer_conn).add_done_callback(_log_failure)

    async def read[T](self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read-only `fn` outside any unit of work; it sees committed data only."""
        if self._reader is not None and self._reader_conn is not None:
            return await self._on(self._reader, functools.partial(fn, self._reader_conn))
        async with self.lock:  # in memory: wait until no transaction is open on the writer
            return await self.on_writer(fn)

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers a query (for readiness checks)."""
        await self.read(lambda conn: conn.execute("SELECT 1").fetchone())

    async def write[T](self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = True) -> T:
        """Run `fn` in a transaction of its own, outside any unit of work.

        `durable=False` skips the fsync for this commit (synchronous=NORMAL): a power cut may
        undo it, never corrupt it, and the next durable commit makes it durable too. For
        bookkeeping whose loss only repeats work, such as marking events dispatched.
        """
        step = functools.partial(_transaction, fn)
        if not durable and self.synchronous != "NORMAL":
            step = functools.partial(_with_synchronous, "NORMAL", self.synchronous, step)
        async with self.lock:
            return await self.on_writer(step)


def _log_failure(future: Future[object]) -> None:
    if not future.cancelled() and (error := future.exception()) is not None:
        log.warning("sqlite.queued_call_failed", exc_info=error)


def _transaction[T](fn: Callable[[sqlite3.Connection], T], conn: sqlite3.Connection) -> T:
    begin(conn)
    try:
        result = fn(conn)
        conn.execute("COMMIT")
    except BaseException:
        rollback(conn)
        raise
    return result


def _with_synchronous[T](
    level: Synchronous, restore: Synchronous, fn: Callable[[sqlite3.Connection], T], conn: sqlite3.Connection
) -> T:
    conn.execute(f"PRAGMA synchronous = {level}")
    try:
        return fn(conn)
    finally:
        conn.execute(f"PRAGMA synchronous = {restore}")


def _close(conn: sqlite3.Connection, *, optimize: bool) -> None:
    try:
        rollback(conn)
        if optimize:
            conn.execute("PRAGMA optimize")  # as SQLite advises before closing a long-lived connection
    finally:
        conn.close()
