"""The SQLite database: one writer connection with group commit, one reader connection.

Statements run inline on the event loop's thread: a short indexed statement takes microseconds,
far less than handing it to a thread and back. Only what may block for long runs on the
writer's thread: `BEGIN IMMEDIATE` (it may wait `busy_timeout` for another process on the same
file) and `COMMIT` (the fsync). The connections therefore allow use from that thread; the writer's
turn guarantees that one user at a time touches the writer connection, and the reader
connection is only used inline.

Group commit: units of work take the writer's turn one after the other, first come first
served. Each unit's changes are a savepoint inside the writer's open transaction (the batch).
A unit that commits releases its savepoint; if others are waiting for the turn it hands the turn
on and waits, otherwise (or once the batch holds `max_batch` units) the batch is committed with
one `COMMIT` — one fsync — and every unit of the batch learns the outcome together: durable, or
the same failure for all. A unit that fails or leaves without committing rolls back to its own
savepoint only. Readers never see a batch before its `COMMIT`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from adapters.sqlite.connection import Synchronous, begin, connect, rollback, unavailable
from adapters.sqlite.migrations import LATEST_VERSION, SchemaError, apply_migrations, current_version
from chatcore.ports.errors import StoreUnavailable

log = logging.getLogger("chatcore.sqlite")

# Enough to amortise one fsync over a burst of units; bounded so that a batch's units are not
# held back (nor the WAL grown) without limit under sustained load.
DEFAULT_MAX_BATCH = 128

_SAVEPOINT = "unit"  # one unit at a time holds the turn, so one name is enough


@dataclass
class CommitStats:
    """How many COMMITs ran and how many units of work they made durable (for benchmarks)."""

    commits: int = 0
    units: int = 0


class _Turn:
    """The writer's turn: a first-come, first-served lock that is handed straight to the next
    waiter (nobody can barge in between), and that knows how many are waiting."""

    def __init__(self, abandoned: Callable[[], None]) -> None:
        self._held = False
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._abandoned = abandoned  # what to do with a turn handed to a waiter that was cancelled

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def has_waiters(self) -> bool:
        """Someone will take the turn on release: a waiter cancelled in this loop step is
        still queued until its task runs, but will not (release() skips it)."""
        return any(not waiter.done() for waiter in self._waiters)

    def locked(self) -> bool:
        return self._held

    async def acquire(self) -> None:
        if not self._held and not self._waiters:
            self._held = True
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.cancelled():
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            else:  # the turn was handed over just before the cancellation: pass it on properly
                self._abandoned()
            raise

    def close(self) -> None:
        """Fail every waiter: the database they wait for is closed."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(RuntimeError("the database is closed"))
        self._held = False

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the turn stays held: it now belongs to that waiter
                return
        self._held = False


class _Batch:
    """The writer's open transaction: the units released into it and their common outcome.

    Each unit waits on a future of its own: a unit whose caller is cancelled while it waits
    cancels its own future only, never the outcome the batch's other units wait for."""

    __slots__ = ("_waiters", "relaxed", "settled", "units")

    def __init__(self, *, relaxed: bool) -> None:
        self._waiters: list[asyncio.Future[None]] = []
        self.settled = False  # the outcome is known (and given to every waiter)
        self.units = 0
        # Begun for a change that needs no fsync (synchronous=NORMAL until its COMMIT): a unit
        # that needs one commits this batch first and begins its own.
        self.relaxed = relaxed

    def waiter(self) -> asyncio.Future[None]:
        """A future for one more unit: done with the batch's outcome."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter.add_done_callback(_retrieve)  # an error is never left unretrieved
        self._waiters.append(waiter)
        return waiter

    def settle(self, error: BaseException | None) -> None:
        """Give every unit still waiting the outcome: committed (None), or the error."""
        if self.settled:
            return
        self.settled = True
        for waiter in self._waiters:
            if waiter.done():  # its caller was cancelled
                continue
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class SqliteDatabase:
    """Owns the connections and the writer's thread. `open()` before use, `close()` after.

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
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        self.path = str(path)
        self.synchronous: Synchronous = synchronous
        self.busy_timeout_s = busy_timeout_s
        self.migrate = migrate
        # In memory a COMMIT costs nothing, and a reader shares the writer's connection: commit
        # every unit on its own so that whoever takes the turn next never sees uncommitted data.
        self.max_batch = 1 if self.in_memory else max_batch
        if self.max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.stats = CommitStats()
        self._thread: ThreadPoolExecutor | None = None
        self._writer_conn: sqlite3.Connection | None = None
        self._reader_conn: sqlite3.Connection | None = None
        self._turn: _Turn | None = None
        self._batch: _Batch | None = None

    @property
    def in_memory(self) -> bool:
        # A second connection to ":memory:" would be another database: everything uses the writer.
        return self.path == ":memory:" or self.path.startswith("file::memory:")

    async def open(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the database is already open")
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chatcore-sqlite-writer")
        self._turn = _Turn(self.end_turn)
        try:
            self._writer_conn = await self._on_thread(self._open_writer)
            if not self.in_memory:
                self._reader_conn = await self._on_thread(self._open_reader)
        except BaseException:
            await self.close()
            raise

    def _open_writer(self) -> sqlite3.Connection:
        conn = connect(
            self.path,
            synchronous=self.synchronous,
            busy_timeout_s=self.busy_timeout_s,
            check_same_thread=False,
        )
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
            self.path,
            synchronous=self.synchronous,
            busy_timeout_s=self.busy_timeout_s,
            read_only=True,
            check_same_thread=False,
        )

    async def close(self) -> None:
        """Wait for the unit of work in progress, commit what it handed on, then close."""
        if self._thread is None:
            return
        turn = self._turn
        if turn is not None and self._writer_conn is not None:
            await turn.acquire()
        try:
            batch, self._batch = self._batch, None
            if batch is not None and batch.units:
                await _wait_out(self._start_commit(batch, release_turn=False))
            for conn, writer in ((self._reader_conn, False), (self._writer_conn, True)):
                if conn is not None:
                    await self._on_thread(functools.partial(_close, conn, optimize=writer))
        finally:
            self._thread.shutdown(wait=True)
            self._thread = None
            self._writer_conn = self._reader_conn = None
            self._turn = None
            if turn is not None:
                turn.close()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- the writer's turn and its transaction ----------------------------------------------

    @property
    def writer(self) -> sqlite3.Connection:
        """The writer connection; only for the holder of the turn."""
        if self._writer_conn is None:
            raise RuntimeError("the database is not open")
        return self._writer_conn

    @property
    def waiting(self) -> int:
        """How many wait for the writer's turn (they will join the open batch)."""
        return 0 if self._turn is None else self._turn.waiting

    def _require_turn(self) -> _Turn:
        if self._turn is None:
            raise RuntimeError("the database is not open")
        return self._turn

    async def take_turn(self) -> None:
        """Wait for the writer's turn. Give it up with `end_turn()`."""
        await self._require_turn().acquire()

    def end_turn(self) -> None:
        """Give the writer's turn up. The last unit of a batch commits it (nobody is waiting for
        the turn, or the batch is full): the turn stays taken until that COMMIT is done.
        Otherwise the next holder continues the open transaction."""
        turn, batch = self._turn, self._batch
        if turn is None:  # closed meanwhile: close() failed the waiters
            return
        waiters = turn.has_waiters()
        if batch is not None and batch.units and (not waiters or batch.units >= self.max_batch):
            self._batch = None
            self._start_commit(batch, release_turn=True)
            return
        if batch is not None and not batch.units and not waiters:
            # Nothing to keep: end the transaction, so other processes on the file may write.
            self._batch = None
            self._abandon_transaction(batch)
        turn.release()

    async def begin_unit(self, *, durable: bool = True) -> None:
        """Start the turn holder's unit: a savepoint in the batch, beginning the batch if needed.

        `durable=False`: the unit's change needs no fsync; it joins any batch, and a batch it
        begins commits without fsync (the level cannot change inside a transaction).
        """
        conn, batch = self.writer, self._batch
        if batch is not None and batch.relaxed and durable:
            self._batch = None
            if batch.units:  # its units have their outcome; this one begins a batch of its own
                await _wait_out(self._start_commit(batch, release_turn=False))
            else:
                self._abandon_transaction(batch)
        if self._batch is None:
            relax = not durable and not self.in_memory and self.synchronous != "NORMAL"
            try:  # may wait busy_timeout for another process
                await self._blocking(functools.partial(_begin, relax=relax, level=self.synchronous))
            finally:
                if conn.in_transaction and self._batch is None:
                    self._batch = _Batch(relaxed=relax)
        self.call(lambda c: c.execute(f"SAVEPOINT {_SAVEPOINT}"), conn)

    def release_unit(self) -> asyncio.Future[None]:
        """Keep the turn holder's changes in the batch; the future, this unit's own, resolves
        once the batch's COMMIT is done (or fails)."""
        batch = self._batch
        if batch is None or not self.writer.in_transaction:
            raise StoreUnavailable("the database transaction was lost to an error of the database file")
        self.call(lambda c: c.execute(f"RELEASE {_SAVEPOINT}"), self.writer)
        batch.units += 1
        return batch.waiter()

    def run_in_unit[T](self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` inline inside the turn holder's savepoint."""
        conn = self.writer
        if not conn.in_transaction:  # never run a unit's statement outside its transaction
            raise StoreUnavailable("the database transaction was lost to an error of the database file")
        try:
            return self.call(fn, conn)
        except (sqlite3.Error, StoreUnavailable) as error:
            if not conn.in_transaction:
                self.transaction_lost(error)
            raise

    def rollback_unit(self) -> None:
        """Undo the turn holder's changes, and nothing of the units before it in the batch."""
        conn = self.writer
        if not conn.in_transaction:
            self.transaction_lost(None)
            return
        try:
            conn.execute(f"ROLLBACK TO {_SAVEPOINT}")
            conn.execute(f"RELEASE {_SAVEPOINT}")
        except sqlite3.Error as error:
            log.warning("sqlite.rollback_to_savepoint_failed", exc_info=error)
            self.transaction_lost(error)

    def transaction_lost(self, error: BaseException | None) -> None:
        """After an error that ends the whole transaction (SQLite rolls it back itself on some
        I/O, disk-full or out-of-memory errors): every unit of the batch fails with it."""
        batch, self._batch = self._batch, None
        self._abandon_transaction(batch)
        if batch is not None:
            failure = error if isinstance(error, StoreUnavailable) else None
            batch.settle(
                failure
                or StoreUnavailable("the database transaction was rolled back by an error of the file")
            )

    def _abandon_transaction(self, batch: _Batch | None) -> None:
        conn = self.writer
        try:
            rollback(conn)
            if batch is not None and batch.relaxed:
                conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        except sqlite3.Error as failure:
            log.warning("sqlite.rollback_failed", exc_info=failure)

    def _start_commit(self, batch: _Batch, *, release_turn: bool) -> asyncio.Future[None]:
        """COMMIT the batch on the writer's thread; resolve its units, then give up the turn."""
        step = functools.partial(_commit, self.writer, relaxed=batch.relaxed, level=self.synchronous)
        done = self._blocking_future(step)
        done.add_done_callback(functools.partial(self._committed, batch, release_turn=release_turn))
        return done

    def _committed(self, batch: _Batch, finished: asyncio.Future[None], *, release_turn: bool) -> None:
        try:
            if finished.cancelled():  # never cancelled by this code; the outcome is then unknown
                error: BaseException | None = StoreUnavailable("the commit's outcome is unknown")
            else:
                error = finished.exception()
            if batch.settled:  # already failed with its lost transaction
                pass
            elif error is None:
                self.stats.commits += 1
                self.stats.units += batch.units
                batch.settle(None)
            else:
                batch.settle(_translated(error))
        finally:
            if release_turn and self._turn is not None:
                self._turn.release()

    @asynccontextmanager
    async def writer_turn(self) -> AsyncIterator[sqlite3.Connection]:
        """Hold the writer's turn (outside any unit of work), e.g. to inspect the connection."""
        await self.take_turn()
        try:
            yield self.writer
        finally:
            self.end_turn()

    # -- running statements -----------------------------------------------------------------

    @staticmethod
    def call[T](fn: Callable[[sqlite3.Connection], T], conn: sqlite3.Connection) -> T:
        """Run `fn` inline; errors of the database file become StoreUnavailable."""
        try:
            return fn(conn)
        except sqlite3.OperationalError as error:
            translated = unavailable(error)
            if translated is None:
                raise
            raise translated from error

    def _blocking_future[T](self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """`fn` on the writer's thread; in memory (nothing to wait for) inline."""
        loop = asyncio.get_running_loop()
        if self.in_memory:
            done: asyncio.Future[T] = loop.create_future()
            try:
                done.set_result(fn())
            except Exception as error:
                done.set_exception(error)
            return done
        if self._thread is None:
            raise RuntimeError("the database is not open")
        return loop.run_in_executor(self._thread, fn)

    async def _blocking[T](self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(writer)` on the writer's thread, for the turn holder. A cancelled caller still
        waits until the thread is done with the connection, then sees its cancellation."""
        return await _finish(self._blocking_future(functools.partial(self.call, fn, self.writer)))

    async def _on_thread[T](self, fn: Callable[[], T]) -> T:
        if self._thread is None:
            raise RuntimeError("the database is not open")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, fn)
        except sqlite3.OperationalError as error:
            raise _translated(error) from error

    async def on_writer[T](self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` on the writer connection. The caller holds the turn."""
        return self.call(fn, self.writer)

    async def read[T](self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read-only `fn` outside any unit of work; it sees committed data only.

        Inline on the reader connection (WAL: never waits for the writer). In memory it takes
        the writer's turn, where no uncommitted change is ever left between units.
        """
        if self._reader_conn is not None:
            return self.call(fn, self._reader_conn)
        async with self.writer_turn() as conn:
            return self.call(fn, conn)

    @property
    def reader(self) -> sqlite3.Connection | None:
        """The reader connection; None in memory, where readers take the writer's turn."""
        return self._reader_conn

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers a query (for readiness checks)."""
        await self.read(lambda conn: conn.execute("SELECT 1").fetchone())

    async def write[T](self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = True) -> T:
        """Run `fn` as a unit of its own, outside any unit of work; returns once it is committed.

        `durable=False`: this change alone does not need an fsync (a batch of such changes
        commits with synchronous=NORMAL: a power cut may undo it, never corrupt it, and the next
        durable commit makes it durable too). For bookkeeping whose loss only repeats work, such
        as marking events dispatched. In a batch with durable units it is fsynced with them.
        """
        await self.take_turn()
        try:
            await self.begin_unit(durable=durable)
            try:
                result = self.run_in_unit(fn)
            except BaseException:
                self.rollback_unit()
                raise
            done = self.release_unit()
        finally:
            self.end_turn()
        await done
        return result


async def _wait_out(future: asyncio.Future[Any]) -> None:
    """Wait until `future` is done even through cancellations, re-raised afterwards: the
    writer's thread must be done with the connection before the turn may pass on."""
    cancelled: asyncio.CancelledError | None = None
    while not future.done():
        try:
            await asyncio.wait([future])
        except asyncio.CancelledError as error:
            cancelled = error
    if cancelled is not None:
        _retrieve(future)
        raise cancelled


async def _finish[T](future: asyncio.Future[T]) -> T:
    """The future's result, waited for as `_wait_out` does."""
    await _wait_out(future)
    return future.result()


def _translated(error: BaseException) -> BaseException:
    if isinstance(error, sqlite3.OperationalError):
        return unavailable(error) or error
    return error


def _begin(conn: sqlite3.Connection, *, relax: bool, level: Synchronous) -> None:
    """BEGIN IMMEDIATE; `relax`: the transaction will commit without fsync."""
    if relax:
        conn.execute("PRAGMA synchronous = NORMAL")
    try:
        begin(conn)
    except BaseException:
        if relax:
            conn.execute(f"PRAGMA synchronous = {level}")
        raise


def _commit(conn: sqlite3.Connection, *, relaxed: bool, level: Synchronous) -> None:
    """COMMIT (checking deferred foreign keys); a relaxed batch then gets its level back.
    A failed COMMIT leaves nothing of the batch behind."""
    try:
        conn.execute("COMMIT")
    except BaseException:
        try:
            rollback(conn)
        except sqlite3.Error as error:
            log.warning("sqlite.rollback_after_failed_commit_failed", exc_info=error)
        raise
    finally:
        if relaxed and not conn.in_transaction:
            conn.execute(f"PRAGMA synchronous = {level}")


def _close(conn: sqlite3.Connection, *, optimize: bool) -> None:
    try:
        rollback(conn)
        if optimize:
            conn.execute("PRAGMA optimize")  # as SQLite advises before closing a long-lived connection
    finally:
        conn.close()
