"""The API over a real socket: `chatcore serve` in a child process on the zero-config default
(SQLite file and folder mailer in the data directory), stopped by its own pid at the end."""

from __future__ import annotations

import email
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from email import policy
from pathlib import Path

import httpx
import pytest

from tests.integration.test_http_support import bounded

__all__ = ["bounded"]

pytestmark = pytest.mark.slow

START_TIMEOUT_S = 30
PASSWORD = "a long enough passphrase 77"
CHATCORE = Path(sys.executable).parent / "chatcore"


def _free_port(*taken: int) -> int:
    """A free loopback port, none of `taken` (the OS may hand a just-closed port out again)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in taken:
            return port


@dataclass
class Server:
    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log: Path


def _stop(process: subprocess.Popen[bytes], signum: int = signal.SIGTERM) -> None:
    """Stop our own child's process group (granian and its workers), escalating to SIGKILL."""
    if process.poll() is None:
        os.killpg(process.pid, signum)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


def _start(workdir: Path, port: int, settings: Mapping[str, str] | None = None) -> Server:
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
            time.sleep(0.1)
    _stop(process)
    raise AssertionError(f"server did not answer /healthz in {START_TIMEOUT_S} s: {log.read_text()}")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = _start(tmp_path, _free_port())
    try:
        yield running
    finally:
        _stop(running.process)


def _login(client: httpx.Client, email_address: str) -> dict[str, str]:
    r = client.post("/v1/auth/login", json={"email": email_address, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def test_zero_config_server_end_to_end(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/readyz").json() == {"status": "ok"}
        assert client.get("/schema/openapi.json").json()["openapi"].startswith("3.1")
        anonymous = client.get("/v1/chats")
        assert anonymous.status_code == 401
        assert anonymous.headers["content-type"].startswith("application/problem+json")
        r = client.post(
            "/v1/auth/register",
            json={"email": "zed@example.com", "password": PASSWORD, "display_name": "Zed"},
        )
        assert r.status_code == 202, r.text
        # The folder mailer wrote the verification mail into the data directory.
        mails = sorted((server.data_dir / "mail").glob("*.eml"))
        assert mails, "no mail written"
        message = email.message_from_bytes(mails[-1].read_bytes(), policy=policy.default)
        assert message["To"] == "zed@example.com"
        assert re.search(r"\b\d{6}\b", message.get_body(("plain",)).get_content())  # type: ignore[union-attr]
        headers = _login(client, "zed@example.com")
        r = client.post("/v1/chats", json={"title": "Ops"}, headers=headers)
        assert r.status_code == 201
        chat_url = r.headers["location"]
        sent = client.post(
            chat_url + "/messages", json={"body": "over the wire", "client_msg_id": "w1"}, headers=headers
        )
        assert sent.status_code == 201
        replay = client.post(
            chat_url + "/messages", json={"body": "over the wire", "client_msg_id": "w1"}, headers=headers
        )
        assert replay.status_code == 200 and replay.json() == sent.json()
        assert client.get(sent.headers["location"], headers=headers).json()["body"] == "over the wire"
        bad = client.post(
            chat_url + "/messages", content=b"{", headers={**headers, "content-type": "application/json"}
        )
        assert bad.status_code == 400
        assert client.post(chat_url + "/messages", content=b"x", headers=headers).status_code == 415
        assert (
            client.post(
                chat_url + "/messages",
                content=b"x" * 200_000,
                headers={**headers, "content-type": "application/json"},
            ).status_code
            == 413
        )
    log = server.log.read_text()
    assert '"logger": "chatcore.access"' in log and "request_id" in log
    assert "eyJ" not in log and PASSWORD not in log


def test_data_and_keys_survive_a_restart(tmp_path: Path) -> None:
    port = _free_port()
    first = _start(tmp_path, port)
    try:
        with httpx.Client(base_url=first.url, timeout=10) as client:
            client.post(
                "/v1/auth/register",
                json={"email": "kim@example.com", "password": PASSWORD, "display_name": "Kim"},
            )
            headers = _login(client, "kim@example.com")
            chat_url = client.post("/v1/chats", json={"title": "Log"}, headers=headers).headers["location"]
            for body in ("one", "two", "three"):
                client.post(chat_url + "/messages", json={"body": body}, headers=headers)
    finally:
        _stop(first.process)
    key = tmp_path / "chatcore-data" / "secret.key"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    second = _start(tmp_path, port)
    try:
        with httpx.Client(base_url=second.url, timeout=10) as client:
            # The login made before the restart still holds: sessions live in the database.
            page = client.get(chat_url + "/messages", headers=headers).json()
            assert [(m["seq"], m["body"]) for m in page["messages"]] == [(1, "one"), (2, "two"), (3, "three")]
            again = _login(client, "kim@example.com")
            assert client.get("/v1/users/me", headers=again).status_code == 200
    finally:
        _stop(second.process)


def test_invalid_settings_stop_start_up_naming_the_setting(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATCORE_")}
    env["CHATCORE_MAX_PAGE_SIZE"] = "lots"
    done = subprocess.run(
        [str(CHATCORE), "serve", "--port", str(_free_port())],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert b"CHATCORE_MAX_PAGE_SIZE" in done.stderr


def test_init_db_and_create_user_commands(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATCORE_")}

    def chatcore(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(CHATCORE), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30
        )

    init = chatcore("init-db")
    assert init.returncode == 0 and "schema version" in init.stdout
    assert (tmp_path / "chatcore-data" / "chatcore.db").exists()
    created = chatcore("create-user", "--email", "Op@Example.com", "--display-name", "Operator", "--verified")
    assert created.returncode == 0, created.stderr
    assert re.fullmatch(r"[0-9a-z]{26}\n", created.stdout)
    again = chatcore("create-user", "--email", "op@example.com", "--display-name", "Operator")
    assert again.returncode == 1 and "exists" in again.stderr
