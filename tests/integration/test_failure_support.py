"""Shared helpers of the failure tests (no tests here): a real `chatcore serve` on the embedded
default (SQLite in its own data directory), users with real tokens, a read-only look at the file.

The server is the child process `test_http_server_process` starts; it is stopped or killed by
its own process group, never by name.
"""

from __future__ import annotations

import os
import signal
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.integration.test_http_server_process import (
    PASSWORD,
    Server,
    _free_port,
    _start,
    _stop,
)

__all__ = ["PASSWORD", "UNTHROTTLED", "Server", "free_port", "kill9", "serving", "start", "stop"]

stop = _stop
free_port = _free_port
start = _start

# Bursts from one sender are the traffic of these scenarios, not what they test: the per-user
# send rate is lifted (the limiter still runs).
UNTHROTTLED = {"CHATCORE_SENDS_PER_SECOND": "100000", "CHATCORE_SEND_BURST": "100000"}


@contextmanager
def serving(workdir: Path, settings: dict[str, str]) -> Iterator[Server]:
    """A real `chatcore serve` on a free port for the `with` block, stopped by its process group."""
    running = start(workdir, free_port(), settings)
    try:
        yield running
    finally:
        stop(running.process)


def kill9(server: Server) -> None:
    """SIGKILL the server's whole process group (granian and its workers): no shutdown runs."""
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=10)


@dataclass(frozen=True)
class Account:
    id: str
    email: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def account(client: httpx.Client, name: str) -> Account:
    """Register `name` over the API and sign in with the password (a real session and token)."""
    email = f"{name}@example.com"
    r = client.post("/v1/auth/register", json={"email": email, "password": PASSWORD, "display_name": name})
    assert r.status_code == 202, r.text
    r = client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    me = client.get("/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200, me.text
    return Account(me.json()["id"], email, token)


def database_path(server: Server) -> Path:
    return server.data_dir / "chatcore.db"


@contextmanager
def read_only(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the server's SQLite file (safe beside the live server: WAL)."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as connection:
        yield connection
