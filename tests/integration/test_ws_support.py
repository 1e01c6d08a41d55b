"""Shared helpers of the real-time tests (no tests here): a 30 s bound on every test, and a real
server with its WebSockets on either listener."""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.integration.test_http_server_process import Server, _free_port, _start

WS_TEST_TIMEOUT_S = 30
# Where a real server's WebSockets are served: granian's own port, or the dedicated one
# (`CHATCORE_WS_PORT`, `entrypoints.ws_listener`). The tests that matter run on both.
LISTENERS = ["granian", "dedicated"]


@dataclass
class WsServer(Server):
    ws_base: str = ""  # ws://host:port of the listener under test


def start_ws(workdir: Path, settings: Mapping[str, str], listener: str) -> WsServer:
    """`chatcore serve` (see `_start`) with its WebSockets on `listener`."""
    env, ws_port = dict(settings), _free_port()
    if listener == "dedicated":
        env["CHATCORE_WS_PORT"] = str(ws_port)
    running = _start(workdir, _free_port(ws_port), env)
    base = f"ws://127.0.0.1:{ws_port}" if listener == "dedicated" else running.url.replace("http://", "ws://")
    return WsServer(**vars(running), ws_base=base)


@pytest.fixture(autouse=True)
def bounded() -> Iterator[None]:
    """Every real-time test ends within WS_TEST_TIMEOUT_S, whatever hangs."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"test exceeded {WS_TEST_TIMEOUT_S} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(WS_TEST_TIMEOUT_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


async def stalled_socket(server: WsServer, token: str) -> ClientConnection:
    """A client that takes little from the network (a 4 KiB receive buffer) and stops reading.
    No keepalive of its own: its pings would go unanswered while it does not read, and it would
    close the connection itself (1011) before reading the server's close frame."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", int(server.ws_base.rsplit(":", 1)[1])))
    raw.setblocking(False)
    headers = {"Authorization": f"Bearer {token}"}
    return await connect(
        server.ws_base + "/v1/ws", sock=raw, additional_headers=headers, max_queue=1, ping_interval=None
    )


async def read_events_until_closed(ws: ClientConnection, into: list[dict[str, Any]]) -> int:
    """Collect event frames until the server closes; the close code."""
    try:
        async for raw in ws:
            frame = json.loads(raw)
            if frame["type"] == "event":
                into.append(frame)
    except ConnectionClosed:
        pass
    assert ws.close_code is not None
    return ws.close_code
