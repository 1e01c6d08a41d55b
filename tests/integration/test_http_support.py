"""Shared helpers of the HTTP tests (no tests here): an app on the memory adapters, users with
real access tokens from the auth use cases, and a snapshot of the stored state."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import signal
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from adapters.session_cache import CachedSessionStore
from chatcore.application.profiles import CreateUserCommand
from entrypoints.container import Runtime, build_container
from entrypoints.http import create_app
from entrypoints.settings import Settings, load_settings

TEST_TIMEOUT_S = 60
_emails = itertools.count(1)


@pytest.fixture(autouse=True)
def bounded() -> Iterator[None]:
    """Every HTTP test ends within TEST_TIMEOUT_S, whatever hangs."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"test exceeded {TEST_TIMEOUT_S} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(TEST_TIMEOUT_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def memory_settings(data_dir: Path, **overrides: Any) -> Settings:
    return load_settings({}, database_url="memory://", data_dir=str(data_dir), **overrides)


@dataclasses.dataclass
class User:
    id: str
    email: str
    access_token: str
    session_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


@dataclasses.dataclass
class Api:
    app: Litestar
    client: TestClient[Litestar]

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    def run[T](self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run a coroutine function on the app's own event loop."""
        return self.client.blocking_portal.call(fn, *args)

    def user(self, name: str = "user", *, verified: bool = True) -> User:
        """A user created through the core, signed in through the auth use cases (real tokens)."""
        email = f"{name}-{next(_emails)}@example.com"
        profile = self.run(
            self.runtime.service.create_user,
            CreateUserCommand(email=email, display_name=name, email_verified=verified),
        )
        pair = self.run(self.runtime.auth.login.start_session, profile.id, "password", None, None)
        return User(profile.id, email, pair.access_token, pair.session_id)

    def snapshot(self) -> dict[str, Any]:
        """Everything stored (core tables, event log, sessions), to prove a request changed nothing."""
        # The relay publishes in the background: let it finish, so its bookkeeping (what was
        # dispatched) is not mistaken for a change made by the request under test.
        relay = self.runtime.relay
        assert relay is not None
        self.run(relay.sweep)
        store = self.runtime.core.store
        state = {
            f.name: copy.deepcopy(getattr(store, f.name))
            for f in dataclasses.fields(store)
            if isinstance(getattr(store, f.name), dict | list | set)
        }
        sessions_store = self.runtime.auth.ports.sessions
        if isinstance(sessions_store, CachedSessionStore):  # what it remembers is not stored
            sessions_store = sessions_store.inner
        sessions = vars(sessions_store)
        state["sessions"] = {
            k: copy.deepcopy(v) for k, v in sessions.items() if isinstance(v, dict | list | set)
        }
        return state


@contextmanager
def serve(settings: Settings) -> Iterator[Api]:
    app = create_app(build_container(settings))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Api(app, client)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with serve(memory_settings(tmp_path)) as running:
        yield running


def assert_problem(response: Any, status: int, *, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert {"type", "title", "status"} <= body.keys()
    if field is not None:
        assert body.get("field") == field, body
    return body
