"""The composition root: the one place that reads settings and constructs adapters.

`Container(settings=...)` only describes the wiring; nothing is opened until the async context
manager from `container.runtime()` is entered (the app's lifespan, a CLI command), so importing
this module does no work.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dependency_injector import containers, providers

from adapters.mail_folder import FolderMailer
from adapters.memory.rate_limit import MemoryRateLimiter
from adapters.memory.security import MemoryFailureCounter, MemoryOneTimeTokenStore, MemorySessionStore
from adapters.security.argon2_hasher import Argon2PasswordHasher
from adapters.security.jwt_tokens import JwtTokenIssuer
from adapters.system import SystemClock, UlidGenerator
from chatcore.application.auth import AuthService
from chatcore.application.common import Deps
from chatcore.application.service import ChatService
from chatcore.application.updates import CursorCodec, GetUpdates, WaitForUpdates
from chatcore.ports.events import EventBus
from chatcore.ports.mail import Mailer
from chatcore.ports.security import FailureCounter, OneTimeTokenStore, SessionStore
from chatcore.ports.system import Clock, IdGenerator
from chatcore.ports.unit_of_work import EventLog
from entrypoints.settings import Settings, SettingsError

KEY_FILE = "secret.key"


async def _always_ready() -> bool:
    return True


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


def _mailer(settings: Settings, clock: Clock) -> Mailer:
    if settings.smtp_url:
        from adapters.smtp.mailer import SmtpMailer
        from adapters.smtp.settings import parse_smtp_url

        try:
            return SmtpMailer(parse_smtp_url(settings.smtp_url), clock=clock)
        except ValueError as exc:
            raise SettingsError(f"CHATCORE_SMTP_URL: {exc}") from None
    return FolderMailer(Path(settings.data_dir) / "mail", clock=clock)


@dataclass(frozen=True)
class AuthStores:
    """Where logins and mailed codes live: the same database as everything else."""

    one_time: OneTimeTokenStore
    sessions: SessionStore
    failures: FailureCounter


def _runtime(
    settings: Settings, core: Any, clock: Clock, ready: Callable[[], Awaitable[bool]], stores: AuthStores
) -> Runtime:
    """The Runtime over one adapter kit (memory, sqlite, mongo): the same wiring for each."""
    deps: Deps = core.service.deps
    codec = CursorCodec(_derive(secret_key(settings), b"chatcore cursors"), settings.limits.max_cursor_chars)
    updates = GetUpdates(deps, core.log, codec)
    return Runtime(
        settings=settings,
        service=core.service,
        auth=_auth(settings, deps, clock, stores),
        clock=clock,
        ready=ready,
        core=core,
        log=core.log,
        bus=core.bus,
        updates=updates,
        wait_for_updates=WaitForUpdates(deps, updates, core.bus),
    )


def _auth(settings: Settings, deps: Deps, clock: Clock, stores: AuthStores) -> AuthService:
    key = secret_key(settings)
    # Separate keys for separate jobs, derived from the one secret.
    signing = _derive(key, b"chatcore access tokens")
    return AuthService(
        deps,
        hasher=Argon2PasswordHasher(),
        tokens=JwtTokenIssuer(keys={"k1": signing}, active_kid="k1", issuer=settings.public_url),
        one_time=stores.one_time,
        sessions=stores.sessions,
        failures=stores.failures,
        limiter=MemoryRateLimiter(clock),
        mailer=_mailer(settings, clock),
        code_key=_derive(key, b"chatcore mailed codes"),
        settings=settings.auth,
    )


def _derive(key: bytes, purpose: bytes) -> bytes:
    import hashlib
    import hmac

    return hmac.new(key, purpose, hashlib.sha256).digest()


@asynccontextmanager
async def _memory_runtime(settings: Settings, clock: Clock, ids: IdGenerator) -> AsyncIterator[Runtime]:
    from adapters.memory.kit import memory_core

    core = memory_core(limits=settings.limits, clock=clock, ids=ids)
    stores = AuthStores(MemoryOneTimeTokenStore(), MemorySessionStore(), MemoryFailureCounter())
    yield _runtime(settings, core, clock, _always_ready, stores)


@asynccontextmanager
async def _sqlite_runtime(settings: Settings, clock: Clock, ids: IdGenerator) -> AsyncIterator[Runtime]:
    from adapters.sqlite.kit import sqlite_core

    path = settings.sqlite_path
    path.parent.mkdir(parents=True, exist_ok=True)
    async with sqlite_core(path, limits=settings.limits, clock=clock, ids=ids) as core:

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
        yield _runtime(settings, core, clock, ready, stores)


@asynccontextmanager
async def _mongo_runtime(settings: Settings, clock: Clock, ids: IdGenerator) -> AsyncIterator[Runtime]:
    from adapters.mongo.database import check_server
    from adapters.mongo.kit import mongo_core

    async with mongo_core(settings.database_url, limits=settings.limits, clock=clock, ids=ids) as core:

        async def ready() -> bool:
            try:
                await check_server(core.store)
            except Exception:
                return False
            return True

        from adapters.mongo.security import MongoFailureCounter, MongoOneTimeTokenStore, MongoSessionStore

        stores = AuthStores(
            MongoOneTimeTokenStore(core.store), MongoSessionStore(core.store), MongoFailureCounter(core.store)
        )
        yield _runtime(settings, core, core.clock, ready, stores)


def _open_runtime(settings: Settings, clock: Clock, ids: IdGenerator) -> AbstractAsyncContextManager[Runtime]:
    if settings.broker_url:
        # The kits build their own in-process bus; a Redis bus needs a kit that accepts one.
        raise SettingsError("CHATCORE_BROKER_URL: the Redis event bus is not wired in yet; leave it empty")
    backend = settings.database_backend
    if backend == "memory":
        return _memory_runtime(settings, clock, ids)
    if backend == "sqlite":
        return _sqlite_runtime(settings, clock, ids)
    return _mongo_runtime(settings, clock, ids)


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
        async with mongo_core(settings.database_url, limits=settings.limits, create_indexes=True):
            pass

    asyncio.run(create_indexes())
    return "mongodb database: indexes created"
