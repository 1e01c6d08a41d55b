"""Shared helpers of the failure tests (no tests here): a real `chatcore serve` on the embedded
default (SQLite in its own data directory), users with real tokens, a read-only look at the file.

The server is the child process `test_http_server_process` starts; it is stopped or killed by
its own process group, never by name.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.integration.test_http_server_process import (
    CHATCORE,
    PASSWORD,
    START_TIMEOUT_S,
    Server,
    _free_port,
    _stop,
)

__all__ = ["PASSWORD", "Server", "free_port", "kill9", "start", "stop"]

stop = _stop
free_port = _free_port


def start(workdir: Path, port: int, settings: Mapping[str, str] | None = None) -> Server:
    """`chatcore serve` in `workdir` (data in workdir/chatcore-data) on `port`, once /healthz
    answers; `settings` are CHATCORE_* variables for it (none of the caller's are passed on)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATCORE_")} | dict(settings or {})
    log = workdir / f"server-{port}-{time.monotonic_ns()}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(CHATCORE), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped or killed as one
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited: {log.read_text()}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return Server(url, workdir / "chatcore-data", process, log)
        except httpx.HTTPError:
            time.sleep(0.05)
    _stop(process)
    raise AssertionError(f"server did not answer /healthz in {START_TIMEOUT_S} s: {log.read_text()}")


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
