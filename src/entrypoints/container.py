"""The composition root: the one place that reads settings and constructs adapters.

`Container(settings=...)` only describes the wiring; nothing is opened until the async context
manager from `container.runtime()` is entered (the app's lifespan, a CLI command), so importing
this module does no work.

Several instances. With `CHATCORE_BROKER_URL=redis://…` the runtime builds a `RedisEventBus`
(live Pub/Sub fan-out between instances) and a `RedisEventStream` (durable consumers), hands the
kit a `StreamingBus` over both as its bus (so every relay, in `serve` or in `chatcore worker`,
appends to the stream and fans out), and takes the auth rate limits from Redis (one bucket for
every instance). Without a broker everything is in-process and only one process may serve.

The outbox relay (`RelayLoop`). After each commit the use case calls `Deps.committed`, which
wakes the background loop (in `serve`; the CLI publishes inline): the request never waits for
the broker, and commits that arrive together go out in one pass. A failure (Redis down or slow)
never fails a request: the records stay undispatched in the log, and the loop retries
`dispatch_pending()` with exponential backoff until they go out.
Nothing is lost (the log is the record; a record is marked dispatched only after the publish
returned) and nothing is reordered: one relay pass at a time per process, and across processes a
record is read as pending only once every earlier record of the log was published, so only
duplicates can come late, which consumers drop by (stream, seq) or by event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from dependency_injector import containers, providers

from adapters.mail_folder import FolderMailer
from adapters.memory.presence import MemoryPresence
from adapters.memory.rate_limit import MemoryRateLimiter
from adapters.memory.security import MemoryFailureCounter, MemoryOneTimeTokenStore, MemorySessionStore
from adapters.security.argon2_hasher import Argon2PasswordHasher
from adapters.security.jwt_tokens import JwtTokenIssuer
from adapters.session_cache import CachedSessionStore
from adapters.system import SystemClock, UlidGenerator
from chatcore.application.auth import AuthService
from chatcore.application.common import Deps
from chatcore.application.notifications import Unsubscribe
from chatcore.application.presence import GetChatPresence
from chatcore.application.relay import OutboxRelay
from chatcore.application.service import ChatService
from chatcore.application.updates import CursorCodec, GetUpdates, WaitForUpdates
from chatcore.domain.events import EventRecord
from chatcore.ports.events import EventBus
from chatcore.ports.mail import Mailer
from chatcore.ports.presence import Presence
from chatcore.ports.rate_limit import RateLimiter
from chatcore.ports.security import FailureCounter, OneTimeTokenStore, SessionStore
from chatcore.ports.system import Clock, IdGenerator
from chatcore.ports.unit_of_work import EventLog
from entrypoints.settings import Settings, SettingsError
from entrypoints.single_server import waiting_sole_server

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from adapters.redis import RedisEventBus, RedisEventStream, StreamingBus

KEY_FILE = "secret.key"
# How long a publish right after a commit may take before it is left to the relay loop.
INLINE_PUBLISH_TIMEOUT_S = 2.0
# How long `serve` waits for Redis at start before it serves anyway (degraded, /readyz 503).
BROKER_START_WAIT_S = 2.0
# How long the last outbox flush at shutdown may take.
FLUSH_TIMEOUT_S = 5.0

Role = Literal["serve", "worker", "cli"]
# A worker's job: runs until the event is set.
Job = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
_log = logging.getLogger("chatcore.runtime")


async def _always_ready() -> bool:
    return True


def _always_connected() -> bool:
    return True


class RelayLoop:
    """This process's outbox relay: a publish after each commit, and a retrying background sweep.

    `after_commit` is the `Deps.committed` of the runtime's service; `run(stop)` is the sweep;
    `flush()` is the last pass at shutdown. See the module docstring for the guarantees.
    """

    def __init__(
        self,
        relay: OutboxRelay,
        *,
        connected: Callable[[], bool] = _always_connected,
        interval_s: float = 1.0,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 5.0,
        inline_timeout_s: float = INLINE_PUBLISH_TIMEOUT_S,
    ) -> None:
        self.relay = relay
        self._connected = connected
        self._interval_s = interval_s
        self._backoff_initial_s, self._backoff_max_s = backoff_initial_s, backoff_max_s
        self._inline_timeout_s = inline_timeout_s
        self._wake = asyncio.Event()
        self.failures = 0  # consecutive failed passes; 0 = healthy
        self._sweeping = False  # `run` is looping: it publishes what commits wake it for
        self.published = 0
        self.last_error: str | None = None

    @property
    def failing(self) -> bool:
        return self.failures > 0

    async def after_commit(self, records: Sequence[EventRecord]) -> None:
        """Publish what is pending now; on any failure leave it to the sweep. Never raises.

        While the sweep runs (`serve`) it publishes for every commit: a commit only wakes it, so
        the request does not wait for the broker and commits arriving together go out in one
        pass. Without a sweep (the CLI), the commit publishes inline.
        """
        if self._sweeping or self.failing or not self._connected():
            self._wake.set()
            return
        try:
            async with asyncio.timeout(self._inline_timeout_s):
                self.published += await self.relay.dispatch_pending()
        except Exception as exc:
            self._failed(exc)
            self._wake.set()

    async def sweep(self) -> int:
        """One relay pass; raises when the bus refuses (the records stay pending)."""
        try:
            sent = await self.relay.dispatch_pending()
        except Exception as exc:
            self._failed(exc)
            raise
        if self.failing:
            _log.info("outbox relay recovered after %d failed passes", self.failures)
        self.failures, self.last_error = 0, None
        self.published += sent
        return sent

    def _failed(self, exc: BaseException) -> None:
        if not self.failing:
            _log.warning("outbox relay cannot publish (%r); retrying in the background", exc)
        self.failures += 1
        self.last_error = repr(exc)

    def retry_delay(self) -> float:
        """Exponential backoff with equal jitter, capped by `relay_backoff_max_s`."""
        ceiling = min(self._backoff_max_s, self._backoff_initial_s * 2.0 ** max(0, self.failures - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep at once when a commit wakes it, and every `interval_s`, until `stop`."""
        self._sweeping = True
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    await self.sweep()
                except Exception:  # logged by _failed; wait, then try again
                    await self._backoff(stop)
                    continue
                if not self._wake.is_set():
                    await _wait_any(stop, self._wake, timeout_s=self._interval_s)
        finally:
            self._sweeping = False

    async def _backoff(self, stop: asyncio.Event) -> None:
        # Commits do not cut a backoff short, but the broker coming back does.
        was_connected = self._connected()
        deadline = time.monotonic() + self.retry_delay()
        while not stop.is_set() and (remaining := deadline - time.monotonic()) > 0:
            if not was_connected and self._connected():
                return
            await _wait_any(stop, timeout_s=min(remaining, 0.1))

    async def flush(self, timeout_s: float = FLUSH_TIMEOUT_S) -> int:
        """The last pass at shutdown; whatever is left stays pending for the next relay."""
        try:
            async with asyncio.timeout(timeout_s):
                return await self.sweep()
        except Exception as exc:
            _log.warning("outbox not flushed at shutdown (%r); the next relay publishes it", exc)
            return 0


async def _wait_any(*events: asyncio.Event, timeout_s: float) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


@dataclass
class Broker:
    """The Redis side of a multi-instance deployment, opened by `_broker`."""

    live: RedisEventBus  # Pub/Sub fan-out: what local subscribers (long-poll, WS) listen to
    stream: RedisEventStream  # the durable stream workers' consumer groups read
    bus: StreamingBus  # what the relay publishes to: the stream, then the live fan-out
    client: Redis  # commands: the stream, the rate limiter, worker consumer groups
    limiter: RateLimiter


@asynccontextmanager
async def _broker(settings: Settings, clock: Clock, *, wait_s: float) -> AsyncIterator[Broker | None]:
    if not settings.broker_url:
        yield None
        return
    from adapters.redis import RedisEventBus, RedisEventStream, RedisRateLimiter, StreamingBus, redis_client

    prefix = settings.broker_prefix
    live = RedisEventBus(settings.broker_url, prefix=prefix)
    client = redis_client(settings.broker_url, client_name="chatcore")
    stream = RedisEventStream(client, prefix=prefix)
    # Time from Redis (one clock for all instances); per-instance buckets while Redis is away.
    limiter = RedisRateLimiter(client, prefix=prefix, fallback=MemoryRateLimiter(clock))
    await live.start()
    try:
        if wait_s > 0:
            with contextlib.suppress(TimeoutError):
                await live.wait_connected(wait_s)
            if not live.connected:
                _log.warning("Redis is not reachable yet; serving degraded until it is")
        yield Broker(live, stream, StreamingBus(live, stream), client, limiter)
    finally:
        await live.close()
        await client.aclose()


@dataclass
class Runtime:
    """Everything the entrypoints use while the process runs, built from the settings."""

    settings: Settings
    service: ChatService
    auth: AuthService
    clock: Clock
    # Whether the storage answers (for /readyz).
    ready: Callable[[], Awaitable[bool]]
    # The adapter kit behind the service (MemoryCore / SqliteCore): for tests and operators.
    core: Any
    # Real-time delivery: the durable log, the live bus, and the cursor-based reads over them.
    log: EventLog
    bus: EventBus
    updates: GetUpdates
    wait_for_updates: WaitForUpdates
    # Turns a notification off from the signed link in a mail (no login).
    unsubscribe: Unsubscribe
    # Outgoing mail; with SMTP, a spool and the sender that empties it.
    mail: MailOut
    # Who is online: live connections touch it, the server expires it.
    presence: Presence
    chat_presence: GetChatPresence
    # The outbox relay of this process (publish after commit + retrying sweep).
    relay: RelayLoop | None = None
    # Redis, when configured (CHATCORE_BROKER_URL): several instances share it.
    broker: Broker | None = None
    # Whether the storage answers, without the broker (`ready` also wants the broker).
    storage_ready: Callable[[], Awaitable[bool]] = _always_ready
    # Set when the process begins to shut down: long-lived connections (WebSocket, long-poll)
    # should end now, telling clients to reconnect elsewhere and resume from their cursors.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def readiness(self) -> dict[str, str]:
        """Each dependency's state, for /readyz: "ok", "down", or "absent" (not configured)."""
        checks = {"storage": "ok" if await self.storage_ready() else "down", "broker": "absent"}
        if self.broker is not None:
            checks["broker"] = "ok" if self.broker.live.connected else "down"
        if self.relay is not None:
            checks["relay"] = "failing" if self.relay.failing else "ok"
        return checks

    async def authenticate(self, access_token: str) -> tuple[str, str]:
        """(user id, session id) of a valid token of a live session; raises Unauthenticated."""
        claims = await self.auth.authenticate(access_token)
        return claims.user_id, claims.session_id


def secret_key(settings: Settings) -> bytes:
    """The server's key: from the settings, else generated once and kept (0600) beside the data."""
    if settings.secret_key:
        return bytes.fromhex(settings.secret_key)
    if settings.database_backend == "memory":
        return secrets.token_bytes(32)
    path = Path(settings.data_dir) / KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = bytes.fromhex(path.read_text().strip())
        if len(key) < 32:
            raise SettingsError(f"CHATCORE_SECRET_KEY: the key in {path} is too short") from None
        return key
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex())
    return key


@dataclass(frozen=True)
class MailOut:
    """Where mail goes: `mailer` for the core; `sender`, when set, must run to deliver it."""

    mailer: Mailer
    sender: Any = None  # adapters.smtp.queue.MailSender with SMTP configured


def _mail_out(settings: Settings, clock: Clock) -> MailOut:
    """SMTP mail goes through a durable spool (an outage delays it, loses nothing); without SMTP,
    each mail becomes an `.eml` file in the data directory."""
    if not settings.smtp_url:
        return MailOut(FolderMailer(Path(settings.data_dir) / "mail", clock=clock))
    from adapters.smtp.mailer import SmtpMailer
    from adapters.smtp.queue import MailSender, MailSpool, QueuedMailer
    from adapters.smtp.settings import parse_smtp_url

    try:
        smtp = SmtpMailer(parse_smtp_url(settings.smtp_url), clock=clock)
    except ValueError as exc:
        raise SettingsError(f"CHATCORE_SMTP_URL: {exc}") from None
    spool = MailSpool(Path(settings.data_dir) / "mail-spool")
    sender = MailSender(spool, smtp, clock=clock, backoff_s=settings.mail_retry_backoff_s)
    return MailOut(QueuedMailer(spool, clock=clock, on_queued=sender.wake), sender)


@dataclass(frozen=True)
class AuthStores:
    """Where logins and mailed codes live: the same database as everything else."""

    one_time: OneTimeTokenStore
    sessions: SessionStore
    failures: FailureCounter


def _presence(settings: Settings, clock: Clock, broker: Broker | None) -> Presence:
    if broker is None:
        return MemoryPresence(clock)
    from adapters.redis.presence import RedisPresence

    return RedisPresence(broker.client, prefix=settings.broker_prefix)


def _runtime(
    settings: Settings,
    core: Any,
    clock: Clock,
    storage_ready: Callable[[], Awaitable[bool]],
    stores: AuthStores,
    broker: Broker | None = None,
) -> Runtime:
    """The Runtime over one adapter kit (memory, sqlite, mongo): the same wiring for each."""
    stores = _with_session_cache(settings, stores, broker)
    relay = RelayLoop(
        core.relay,
        connected=(lambda: broker.live.connected) if broker is not None else _always_connected,
        interval_s=settings.relay_interval_s,
        backoff_max_s=settings.relay_backoff_max_s,
    )
    # The kit's own `committed` publishes inline and fails the request when the bus does; ours
    # never fails it (the records stay pending for the sweep).
    limiter = broker.limiter if broker is not None else MemoryRateLimiter(clock)
    # The same limiter throttles logins and sends, so instances sharing Redis share buckets.
    deps: Deps = replace(core.service.deps, committed=relay.after_commit, limiter=limiter)
    service = ChatService(deps)
    # Subscribers listen to the live bus; the relay publishes through the kit's bus.
    bus: EventBus = broker.live if broker is not None else core.bus
    presence = _presence(settings, clock, broker)
    mail = _mail_out(settings, clock)
    # One key per runtime (the memory backend draws a fresh one each call), one derived key per job.
    key = secret_key(settings)
    codec = CursorCodec(_derive(key, b"chatcore cursors"), settings.limits.max_cursor_chars)
    updates = GetUpdates(deps, core.log, codec)

    async def ready() -> bool:
        broker_up = broker is None or broker.live.connected
        return broker_up and await storage_ready()

    return Runtime(
        settings=settings,
        service=service,
        auth=_auth(settings, deps, clock, stores, limiter, key, mail),
        mail=mail,
        clock=clock,
        ready=ready,
        core=core,
        log=core.log,
        bus=bus,
        updates=updates,
        wait_for_updates=WaitForUpdates(deps, updates, bus),
        unsubscribe=Unsubscribe(deps, unsubscribe_key=_derive(key, b"chatcore unsubscribe")),
        presence=presence,
        chat_presence=GetChatPresence(deps, presence),
        relay=relay,
        broker=broker,
        storage_ready=storage_ready,
    )


def _auth(
    settings: Settings,
    deps: Deps,
    clock: Clock,
    stores: AuthStores,
    limiter: RateLimiter,
    key: bytes,
    mail: MailOut,
) -> AuthService:
    # Separate keys for separate jobs, derived from the one secret.
    signing = _derive(key, b"chatcore access tokens")
    return AuthService(
        deps,
        hasher=Argon2PasswordHasher(),
        tokens=JwtTokenIssuer(keys={"k1": signing}, active_kid="k1", issuer=settings.public_url),
        one_time=stores.one_time,
        sessions=stores.sessions,
        failures=stores.failures,
        limiter=limiter,
        mailer=mail.mailer,
        code_key=_derive(key, b"chatcore mailed codes"),
        settings=settings.auth,
    )


def _derive(key: bytes, purpose: bytes) -> bytes:
    import hashlib
    import hmac

    return hmac.new(key, purpose, hashlib.sha256).digest()


@asynccontextmanager
async def _memory_runtime(
    settings: Settings, clock: Clock, ids: IdGenerator, broker: Broker | None
) -> AsyncIterator[Runtime]:
    from adapters.memory.kit import memory_core

    core = memory_core(limits=settings.limits, clock=clock, ids=ids, bus=_relay_bus(broker))
    stores = AuthStores(MemoryOneTimeTokenStore(), MemorySessionStore(), MemoryFailureCounter())
    yield _runtime(settings, core, clock, _always_ready, stores, broker)


@asynccontextmanager
async def _sqlite_runtime(
    settings: Settings, clock: Clock, ids: IdGenerator, broker: Broker | None
) -> AsyncIterator[Runtime]:
    from adapters.sqlite.kit import sqlite_core

    path = settings.sqlite_path
    path.parent.mkdir(parents=True, exist_ok=True)
    kit = sqlite_core(path, limits=settings.limits, clock=clock, ids=ids, bus=_relay_bus(broker))
    async with kit as core:

        async def ready() -> bool:
            try:
                await core.db.read(lambda conn: conn.execute("SELECT 1").fetchone())
            except Exception:
                return False
            return True

        from adapters.sqlite.security import SqliteFailureCounter, SqliteOneTimeTokenStore, SqliteSessionStore

        stores = AuthStores(
            SqliteOneTimeTokenStore(core.db), SqliteSessionStore(core.db), SqliteFailureCounter(core.db)
        )
        yield _runtime(settings, core, clock, ready, stores, broker)


@asynccontextmanager
async def _mongo_runtime(
    settings: Settings, clock: Clock, ids: IdGenerator, broker: Broker | None
) -> AsyncIterator[Runtime]:
    from adapters.mongo.database import check_server
    from adapters.mongo.kit import mongo_core

    kit = mongo_core(
        settings.database_url,
        require_replica_set=settings.mongo_require_replica_set,
        timeout_ms=round(settings.mongo_timeout_s * 1000),
        limits=settings.limits,
        clock=clock,
        ids=ids,
        bus=_relay_bus(broker),
    )
    async with kit as core:

        async def ready() -> bool:
            try:
                await check_server(core.store, require_replica_set=settings.mongo_require_replica_set)
            except Exception:
                return False
            return True

        from adapters.mongo.security import MongoFailureCounter, MongoOneTimeTokenStore, MongoSessionStore

        stores = AuthStores(
            MongoOneTimeTokenStore(core.store), MongoSessionStore(core.store), MongoFailureCounter(core.store)
        )
        yield _runtime(settings, core, core.clock, ready, stores, broker)


def _with_session_cache(settings: Settings, stores: AuthStores, broker: Broker | None) -> AuthStores:
    """Live sessions answered from memory, where this process is the only one changing them.

    Without a broker there is one serving process: several workers need a broker, and a second
    server on the same SQLite database is refused (`_only_server`); workers and operator
    commands change no session. With a broker another instance may revoke a session at any
    time, so every request asks the store. MongoDB is left out as well: instances may share it
    without a broker."""
    if broker is not None or settings.database_backend == "mongodb" or not settings.session_cache_entries:
        return stores
    sessions = CachedSessionStore(stores.sessions, max_entries=settings.session_cache_entries)
    return replace(stores, sessions=sessions)


def _relay_bus(broker: Broker | None) -> EventBus | None:
    """The bus the kit's relay publishes to: the stream and the live fan-out (None: in-process)."""
    return broker.bus if broker is not None else None


def _kit_runtime(
    settings: Settings, clock: Clock, ids: IdGenerator, broker: Broker | None
) -> AbstractAsyncContextManager[Runtime]:
    backend = settings.database_backend
    if backend == "memory":
        return _memory_runtime(settings, clock, ids, broker)
    if backend == "sqlite":
        return _sqlite_runtime(settings, clock, ids, broker)
    return _mongo_runtime(settings, clock, ids, broker)


@asynccontextmanager
async def _full_runtime(
    settings: Settings, clock: Clock, ids: IdGenerator, role: Role
) -> AsyncIterator[Runtime]:
    # The sweep runs in `serve`, and in `worker` when there is a broker to publish to: without
    # one, a worker's relay would mark records dispatched that the server never fanned out.
    sweep = role == "serve" or (role == "worker" and bool(settings.broker_url))
    async with (
        _only_server(settings, role),
        _broker(settings, clock, wait_s=BROKER_START_WAIT_S if role != "cli" else 0) as broker,
        _kit_runtime(settings, clock, ids, broker) as runtime,
    ):
        relay = runtime.relay
        assert relay is not None
        stop = asyncio.Event()
        task = asyncio.create_task(relay.run(stop), name="chatcore-outbox-relay") if sweep else None
        sender = runtime.mail.sender
        sending = (
            asyncio.create_task(sender.run(stop), name="chatcore-mail-sender")
            if sender is not None and role != "cli"
            else None
        )
        try:
            yield runtime
        finally:
            # Shutdown: tell long-lived connections, stop the sweep, flush what is pending, then
            # the kit (database) and the broker close, in that order.
            runtime.stopping.set()
            stop.set()
            if task is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(task, FLUSH_TIMEOUT_S)  # cancelled if stuck on Redis
            if sending is not None:  # spooled mail waits on disk for the next start
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sending, FLUSH_TIMEOUT_S)
            if sweep or role == "cli":
                flushed = await relay.flush()
                if role != "cli":
                    _log.info("runtime stopped: outbox flushed (%d records published at shutdown)", flushed)


# A reloading worker waits this long for the one it replaces to let go of the database (granian
# stops the old worker after starting the new; its shutdown takes SHUTDOWN_S and the flush).
SERVE_LOCK_WAIT_S = 30.0


@asynccontextmanager
async def _only_server(settings: Settings, role: Role) -> AsyncIterator[None]:
    """A server without a broker holds its SQLite database's server lock (entrypoints.single_server)."""
    if role != "serve" or settings.broker_url or settings.database_backend != "sqlite":
        yield
        return
    async with waiting_sole_server(settings.sqlite_path, SERVE_LOCK_WAIT_S):
        yield


def _open_runtime(
    settings: Settings, clock: Clock, ids: IdGenerator, role: Role = "serve"
) -> AbstractAsyncContextManager[Runtime]:
    settings.database_backend  # noqa: B018 - raises on an unsupported database now
    return _full_runtime(settings, clock, ids, role)


@dataclass
class WorkerJobs:
    """What `chatcore worker` runs beside the relay sweep (which the runtime runs itself)."""

    # Each runs until the event is set; the CLI runs them in one task group.
    jobs: list[tuple[str, Job]]
    notes: list[str]


def worker_jobs(runtime: Runtime, *, consumer: str, extra: Sequence[tuple[str, Any]] = ()) -> WorkerJobs:
    """The durable consumers of `chatcore worker`: notifications, and `extra` (group, handler).

    With a broker each consumer is a Redis Streams consumer group (`StreamConsumer`, XAUTOCLAIM
    after `stream_claim_idle_s`, dead letters); without one the notification worker reads the
    log in commit order (`EventFeed`) and extra consumers are refused.
    """
    settings, broker = runtime.settings, runtime.broker
    jobs: list[tuple[str, Job]] = []
    notes: list[str] = []

    def stream_consumer(group: str, handler: Any) -> Any:
        from adapters.redis import StreamConsumer

        assert broker is not None
        return StreamConsumer(
            broker.stream,
            group=group,
            consumer=consumer,
            handler=handler,
            min_idle_s=settings.stream_claim_idle_s,
        )

    for group, handler in extra:
        if broker is None:
            raise SettingsError("CHATCORE_BROKER_URL: stream consumers need a Redis broker")
        jobs.append((f"consumer {group}", stream_consumer(group, handler).run))
    notifications = _notification_jobs(runtime, stream_consumer)
    if notifications is None:
        notes.append("notifications: not available in this build or for this database")
    else:
        jobs.append(("notifications", notifications))
    return WorkerJobs(jobs, notes)


def _notification_jobs(runtime: Runtime, stream_consumer: Callable[[str, Any], Any]) -> Job | None:
    """The notification worker over this runtime's storage, or None where it cannot run yet."""
    try:
        from chatcore.application.notification_worker import (
            CONSUMER,
            NotificationWorker,
            run_notification_worker,
        )
        from chatcore.application.notifications import (
            NotificationDeps,
            NotificationHandler,
            NotificationSettings,
        )
    except ImportError:  # pragma: no cover - a build without notifications
        return None
    settings, core, broker = runtime.settings, runtime.core, runtime.broker
    backend = settings.database_backend
    if backend == "sqlite":
        from adapters.sqlite.notifications import SqliteDigestSchedule, SqliteEventFeed

        schedule: Any = SqliteDigestSchedule(core.db)
        feed: Any = SqliteEventFeed(core.db)
    elif backend == "memory":
        from adapters.memory.notifications import MemoryDigestSchedule, MemoryEventFeed

        schedule, feed = MemoryDigestSchedule(), MemoryEventFeed(core.store)
    else:
        return None  # no MongoDB digest schedule yet
    handler = NotificationHandler(
        NotificationDeps(
            deps=runtime.service.deps,
            schedule=schedule,
            mailer=runtime.mail.mailer,
            unsubscribe_key=_derive(secret_key(settings), b"chatcore unsubscribe"),
            settings=NotificationSettings(public_url=settings.public_url),
        )
    )
    # With Redis the stream group feeds the handler; the worker then only runs the digest timer.
    worker = NotificationWorker(
        handler, schedule=schedule, clock=runtime.clock, feed=None if broker is not None else feed
    )
    consumer = stream_consumer(CONSUMER, handler.handle) if broker is not None else None

    async def run(stop: asyncio.Event) -> None:
        await run_notification_worker(worker, consumer=consumer, stop=stop)

    return run


class Container(containers.DeclarativeContainer):
    """Providers for the process. Tests override `clock`/`ids` (`container.clock.override(...)`)."""

    settings = providers.Dependency(instance_of=Settings)
    clock = providers.Singleton(SystemClock)
    ids = providers.Singleton(UlidGenerator)
    # An async context manager yielding the Runtime; entered by the app's lifespan.
    runtime = providers.Factory(_open_runtime, settings=settings, clock=clock, ids=ids)


def build_container(settings: Settings) -> Container:
    return Container(settings=settings)


def init_db(settings: Settings) -> str:
    """Create or upgrade the schema of the configured database; returns a line for the operator."""
    backend = settings.database_backend
    if backend == "sqlite":
        from adapters.sqlite import migrate

        path = settings.sqlite_path
        path.parent.mkdir(parents=True, exist_ok=True)
        version = migrate(path)
        return f"sqlite database {path} at schema version {version}"
    if backend == "memory":
        return "memory database: nothing to initialise"
    import asyncio

    from adapters.mongo.kit import mongo_core

    async def create_indexes() -> None:
        async with mongo_core(
            settings.database_url,
            require_replica_set=settings.mongo_require_replica_set,
            limits=settings.limits,
            create_indexes=True,
        ):
            pass

    asyncio.run(create_indexes())
    return "mongodb database: indexes created"
