"""The dedicated WebSocket listener (`CHATCORE_WS_PORT`) in a real `chatcore serve`: what it does
that granian's port does not. The protocol itself runs on both ports in `test_ws_server`."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from chatcore.application.realtime import CloseCode
from entrypoints.ws_listener import SHUTDOWN_S
from tests.integration.test_http_server_process import _free_port, _start, _stop
from tests.integration.test_ws_server import (
    BIG,
    ORIGIN,
    account,
    bearer,
    make_chat,
    post_big,
    refused_status,
    ws_url,
)
from tests.integration.test_ws_support import WsServer, stalled_socket, start_ws

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path: Path) -> Iterator[WsServer]:
    running = start_ws(tmp_path, {"CHATCORE_ALLOWED_ORIGINS": ORIGIN}, "dedicated")
    try:
        yield running
    finally:
        _stop(running.process)


def test_the_ws_port_serves_websockets_only(server: WsServer) -> None:
    _, token = account(server, "ann")
    http_url = server.ws_base.replace("ws://", "http://")
    plain = httpx.get(http_url + "/healthz", timeout=5)
    assert plain.status_code == 426  # no upgrade: the library's answer, not the API's
    response = httpx.get(http_url + "/v1/users/me", headers=bearer(token), timeout=5)
    assert response.status_code == 426 and "display_name" not in response.text

    async def scenario() -> None:
        # A refused upgrade is the app's problem+json, as on granian's port.
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(server), additional_headers={"Authorization": "Bearer eyJforged.x.y"}):
                pass
        response = refused.value.response
        assert response.status_code == 401
        assert response.headers["Content-Type"] == "application/problem+json"
        assert json.loads(response.body)["status"] == 401
        # An upgrade to a path that is no WebSocket route: refused, as on granian.
        other = server.ws_base + "/v1/users/me"
        assert await refused_status(other, additional_headers=bearer(token)) == 403
        async with connect(ws_url(server), additional_headers=bearer(token)) as ws:
            await ws.send(json.dumps({"type": "ping", "id": "p"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["id"] == "p"

    asyncio.run(asyncio.wait_for(scenario(), 20))


def _raw_upgrade(server: WsServer, *upgrade_headers: str) -> bytes:
    """The status line the WS port answers to a hand-written upgrade request."""
    host, port = server.ws_base.removeprefix("ws://").rsplit(":", 1)
    lines = [
        "GET /v1/ws HTTP/1.1",
        f"Host: {host}:{port}",
        *(f"Upgrade: {value}" for value in upgrade_headers),
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ]
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        raw.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return raw.recv(4096).split(b"\r\n", 1)[0]


def test_an_upgrade_the_library_accepts_always_goes_through_the_app(server: WsServer) -> None:
    # "websocket," is a valid Upgrade list: the app must still decide (no Origin, no token: 403),
    # never a 101 that skipped it. Two Upgrade headers are the library's 426, not a 500.
    assert _raw_upgrade(server, "websocket,") == b"HTTP/1.1 403 Forbidden"
    assert _raw_upgrade(server, "websocket") == b"HTTP/1.1 403 Forbidden"
    assert _raw_upgrade(server, "websocket", "websocket") == b"HTTP/1.1 426 Upgrade Required"
    assert "Traceback" not in server.log.read_text()


# Messages of BIG characters, sent without the per-user rate limit.
BIG_MESSAGES = {
    "CHATCORE_MAX_MESSAGE_CHARS": str(BIG),
    "CHATCORE_MAX_REQUEST_BODY_BYTES": "131072",
    "CHATCORE_SEND_BURST": "1000",
}


@pytest.fixture
def big_server(tmp_path: Path) -> Iterator[WsServer]:
    running = start_ws(tmp_path, BIG_MESSAGES, "dedicated")
    try:
        yield running
    finally:
        _stop(running.process)


async def stalled_behind(server: WsServer, count: int) -> ClientConnection:
    """Bob's socket, which stopped reading, with `count` messages of BIG characters sent to it."""
    _, ann = account(server, "ann")
    bob_id, bob = account(server, "bob")
    chat = make_chat(server, ann, bob_id)
    stalled = await stalled_socket(server, bob)
    await post_big(server, ann, chat, count)
    return stalled


def test_a_stalled_client_that_resets_leaves_no_error_in_the_log(big_server: WsServer) -> None:
    # Its sends wait for the transport to drain when the reset fails them: every failure is
    # seen, none is logged as an error nobody retrieved.
    async def stall_then_reset() -> None:
        stalled = await stalled_behind(big_server, 120)  # far more than the buffers take
        raw = stalled.transport.get_extra_info("socket")
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        stalled.transport.abort()  # a reset, not a close
        await asyncio.sleep(1.5)

    asyncio.run(asyncio.wait_for(stall_then_reset(), 25))
    with httpx.Client(base_url=big_server.url, timeout=5) as client:  # still serving
        assert client.get("/healthz").status_code == 200
    _stop(big_server.process)
    log = big_server.log.read_text()
    assert "never retrieved" not in log and "Traceback" not in log


def test_open_sockets_get_1001_on_shutdown(server: WsServer) -> None:
    # granian drops its own sockets at once on SIGTERM (1006); the dedicated listener's get the
    # close frame that tells the client to reconnect and resume.
    _, token = account(server, "ann")

    async def scenario() -> None:
        async with connect(ws_url(server), additional_headers=bearer(token)) as ws:
            await ws.send(json.dumps({"type": "ping", "id": "p"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["id"] == "p"
            server.process.send_signal(signal.SIGTERM)
            started = time.monotonic()
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == CloseCode.SERVER_RESTART
            assert time.monotonic() - started < 10

    asyncio.run(asyncio.wait_for(scenario(), 25))
    server.process.wait(timeout=15)


def test_shutdown_does_not_wait_for_a_client_that_stopped_reading(big_server: WsServer) -> None:
    # Its close handshake can never finish (it reads nothing): after SHUTDOWN_S the listener
    # drops the connection, and the worker exits instead of waiting out the 120 s close timeout.
    async def stall_then_stop() -> float:
        stalled = await stalled_behind(big_server, 60)  # megabytes it will never read
        big_server.process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        await asyncio.to_thread(big_server.process.wait, 25)
        stalled.transport.abort()
        return time.monotonic() - started

    took = asyncio.run(asyncio.wait_for(stall_then_stop(), 28))
    assert big_server.process.returncode == 0
    assert took < SHUTDOWN_S + 5


def test_a_taken_ws_port_stops_the_server_and_names_the_setting(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(AssertionError, match="CHATCORE_WS_PORT") as failed:
            running = _start(tmp_path, _free_port(), {"CHATCORE_WS_PORT": str(port)})
            _stop(running.process)  # not reached when the server refuses to start
    assert "exited" in str(failed.value) or "did not answer" in str(failed.value)
    assert "runtime stopped" in str(failed.value)  # the app was shut down again, not left open
