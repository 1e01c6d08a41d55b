"""`/v1/ws` over a real socket: `chatcore serve` in a child process, the `websockets` client.
Every test runs on both listeners: granian's own port, and the dedicated WebSocket port
(`CHATCORE_WS_PORT`, `entrypoints.ws_listener`), which must behave the same.

What only a real server shows: HTTP statuses of refused handshakes, the 101's headers (no
compression), backpressure from a client that stops reading, and concurrency across REST and WS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from chatcore.application.realtime import CloseCode
from tests.integration.test_http_server_process import PASSWORD, _stop
from tests.integration.test_ws_support import (
    LISTENERS,
    WsServer,
    bounded,
    read_events_until_closed,
    stalled_socket,
    start_ws,
)

__all__ = ["WsServer", "bounded"]

pytestmark = pytest.mark.slow

ORIGIN = "https://app.example"


@pytest.fixture(params=LISTENERS)
def listener(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest, listener: str) -> Iterator[WsServer]:
    """`chatcore serve` with the allow-listed origin and the test's CHATCORE_* settings (an
    indirect parameter), its WebSockets on each listener in turn."""
    env = {"CHATCORE_ALLOWED_ORIGINS": ORIGIN, **getattr(request, "param", {})}
    running = start_ws(tmp_path, env, listener)
    try:
        yield running
    finally:
        _stop(running.process)


def account(server: WsServer, name: str) -> tuple[str, str]:
    """(user id, access token) of a newly registered user."""
    with httpx.Client(base_url=server.url, timeout=10) as client:
        email = f"{name}@example.com"
        r = client.post(
            "/v1/auth/register", json={"email": email, "password": PASSWORD, "display_name": name}
        )
        assert r.status_code == 202, r.text
        token = client.post("/v1/auth/login", json={"email": email, "password": PASSWORD}).json()[
            "access_token"
        ]
        me = client.get("/v1/users/me", headers={"Authorization": f"Bearer {token}"}).json()
        return me["id"], token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def ws_url(server: WsServer, query: str = "") -> str:
    return server.ws_base + "/v1/ws" + query


def make_chat(server: WsServer, token: str, *member_ids: str) -> str:
    r = httpx.post(
        server.url + "/v1/chats",
        json={"title": "t", "member_ids": list(member_ids)},
        headers=bearer(token),
        timeout=10,
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def refused_status(url: str, **kwargs: Any) -> int:
    with pytest.raises(InvalidStatus) as caught:
        async with connect(url, open_timeout=5, **kwargs):
            pass
    return caught.value.response.status_code


def test_handshake_statuses_and_no_compression(server: WsServer) -> None:
    _, token = account(server, "ann")

    async def scenario() -> None:
        url = ws_url(server)
        assert (
            await refused_status(url, additional_headers={**bearer(token), "Origin": "https://evil.example"})
            == 403
        )
        assert await refused_status(url) == 403  # no Origin and no header: not even a browser
        assert await refused_status(url, additional_headers={"Origin": ORIGIN}) == 401
        assert await refused_status(url, additional_headers={"Authorization": "Bearer eyJforged.x.y"}) == 401
        assert (
            await refused_status(ws_url(server, f"?access_token={token}"), additional_headers=bearer(token))
            == 401
        )
        assert await refused_status(ws_url(server, "?cursor=nope"), additional_headers=bearer(token)) == 422
        # An allowed origin with the browser's subprotocol auth: 101, chatcore.v1 echoed, and no
        # permessage-deflate although the client offers it (the websockets client does by default).
        protocols: Any = ["chatcore.v1", f"chatcore.bearer.{token}"]
        async with connect(url, subprotocols=protocols, additional_headers={"Origin": ORIGIN}) as ws:
            assert ws.response.status_code == 101
            assert ws.subprotocol == "chatcore.v1"
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
            await ws.send(json.dumps({"type": "ping", "id": "p"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["id"] == "p"

    asyncio.run(asyncio.wait_for(scenario(), 20))
    assert "eyJ" not in server.log.read_text()


def is_post(frame: dict[str, Any]) -> bool:
    return bool(frame["record"]["event"]["type"] == "message.posted")


def index(frame: dict[str, Any]) -> int:
    return int(frame["record"]["event"]["body"][:5])


BIG = 50_000  # chars per message: a few MB in flight fill granian's buffers with few events


async def post_big(server: WsServer, token: str, chat: str, count: int) -> None:
    """`count` messages of BIG characters, numbered in their first five."""
    async with httpx.AsyncClient(base_url=server.url, timeout=20) as client:
        for i in range(count):
            r = await client.post(
                f"/v1/chats/{chat}/messages",
                json={"body": f"{i:05d}" + "x" * (BIG - 5)},
                headers=bearer(token),
            )
            assert r.status_code == 201


@pytest.mark.parametrize(
    "server",
    [
        {
            "CHATCORE_MAX_MESSAGE_CHARS": str(BIG),
            "CHATCORE_MAX_REQUEST_BODY_BYTES": "131072",
            "CHATCORE_WS_SEND_QUEUE_FRAMES": "10",
            # The flood is the point of this test: lift the per-user send rate.
            "CHATCORE_SEND_BURST": "1000",
        }
    ],
    indirect=True,
)
def test_a_stalled_consumer_is_closed_with_4000_and_resumes_without_gaps(server: WsServer) -> None:
    _, ann = account(server, "ann")
    bob_id, bob = account(server, "bob")
    carl_id, carl = account(server, "carl")
    chat = make_chat(server, ann, bob_id, carl_id)
    count = 150

    async def scenario() -> None:
        stalled = await stalled_socket(server, bob)  # Bob's client stops reading
        healthy = await connect(ws_url(server), additional_headers=bearer(carl), max_size=None)
        carl_got: list[dict[str, Any]] = []

        async def carl_reads() -> None:
            async for message in healthy:
                frame = json.loads(message)
                if frame["type"] == "event" and frame["record"]["event"]["type"] == "message.posted":
                    carl_got.append(frame)
                    if len(carl_got) == count:
                        return

        reader = asyncio.create_task(carl_reads())
        await post_big(server, ann, chat, count)
        await asyncio.wait_for(reader, 20)
        assert [index(f) for f in carl_got] == list(range(count))  # every event, in order
        await healthy.close()

        # Bob reads again: what was in flight, then the resume code.
        bob_got: list[dict[str, Any]] = []
        code = await asyncio.wait_for(read_events_until_closed(stalled, bob_got), 20)
        assert code == CloseCode.RESUME_FROM_CURSOR
        assert len(bob_got) < count
        seqs = [f["record"]["seq"] for f in bob_got if f["record"]["stream_id"] == chat]
        posted = [index(f) for f in bob_got if is_post(f)]
        assert posted == list(range(len(posted)))
        # ... and resumes from the last cursor he received: the rest, once, in order.
        cursor = bob_got[-1]["cursor"]
        async with connect(
            ws_url(server, f"?cursor={cursor}"), additional_headers=bearer(bob), max_size=None
        ) as again:
            while True:
                frame = json.loads(await asyncio.wait_for(again.recv(), 10))
                if frame["type"] == "event" and frame["record"]["stream_id"] == chat:
                    seqs.append(frame["record"]["seq"])
                    if is_post(frame):
                        posted.append(index(frame))
                if len(posted) == count:
                    break
        assert posted == list(range(count))  # every message once, in order
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # the chat's events: 0 gaps, 0 duplicates

    asyncio.run(asyncio.wait_for(scenario(), 28))


@pytest.mark.parametrize(
    "server", [{"CHATCORE_WS_FRAMES_PER_MINUTE": "6000", "CHATCORE_WS_BURST": "50"}], indirect=True
)
def test_50_concurrent_duplicates_over_rest_and_ws_store_one(server: WsServer) -> None:
    _, ann = account(server, "ann")
    chat = make_chat(server, ann)
    body = {"body": "once", "client_msg_id": "dup-1"}

    async def scenario() -> None:
        async with (
            httpx.AsyncClient(base_url=server.url, timeout=20) as client,
            connect(ws_url(server), additional_headers=bearer(ann)) as ws,
        ):

            async def rest() -> tuple[int, str, int]:
                r = await client.post(f"/v1/chats/{chat}/messages", json=body, headers=bearer(ann))
                m = r.json()
                return r.status_code, m["id"], m["seq"]

            for i in range(25):
                await ws.send(json.dumps({"type": "send", "id": f"w{i}", "chat_id": chat, **body}))
            replies = await asyncio.gather(*(rest() for _ in range(25)))
            acks: list[dict[str, Any]] = []
            while len(acks) < 25:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if frame["type"] in ("ack", "error"):
                    acks.append(frame)
            assert all(a["type"] == "ack" for a in acks), acks
            created = [s for s, _, _ in replies if s == 201] + [a for a in acks if a["created"]]
            assert len(created) == 1
            assert {s for s, _, _ in replies} <= {200, 201}
            ids = {(i, seq) for _, i, seq in replies} | {
                (a["message"]["id"], a["message"]["seq"]) for a in acks
            }
            assert len(ids) == 1 and next(iter(ids))[1] == 1
            page = (await client.get(f"/v1/chats/{chat}/messages", headers=bearer(ann))).json()
            assert len(page["messages"]) == 1
            other = await client.post(
                f"/v1/chats/{chat}/messages", json={**body, "body": "different"}, headers=bearer(ann)
            )
            assert other.status_code == 422

    asyncio.run(asyncio.wait_for(scenario(), 25))


@pytest.mark.parametrize(
    "server", [{"CHATCORE_WS_PING_INTERVAL_S": "0.2", "CHATCORE_WS_PING_TIMEOUT_S": "0.2"}], indirect=True
)
def test_a_client_that_stops_answering_is_closed_within_1_s(server: WsServer) -> None:
    _, token = account(server, "ann")

    async def scenario() -> None:
        async with connect(ws_url(server), additional_headers=bearer(token)) as ws:
            started = time.monotonic()
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 2)  # never answers the heartbeat's ask
            assert ws.close_code == CloseCode.POLICY
            assert time.monotonic() - started <= 1.0

    asyncio.run(asyncio.wait_for(scenario(), 10))


@pytest.mark.parametrize(
    "server", [{"CHATCORE_WS_MAX_FRAME_BYTES": "2048", "CHATCORE_WS_BURST": "3"}], indirect=True
)
def test_an_oversize_frame_closes_1009_and_a_flood_1008_through_the_server(server: WsServer) -> None:
    # The close frame goes out through the same hand-over to the server as the frames before it.
    _, token = account(server, "ann")

    async def closed_with(frames: list[str]) -> tuple[int | None, list[str]]:
        got: list[str] = []
        async with connect(ws_url(server), additional_headers=bearer(token)) as ws:

            async def send_all() -> None:
                # The server may close while frames are still on their way: sending stops there.
                with contextlib.suppress(ConnectionClosed, ConnectionResetError):
                    for frame in frames:
                        await ws.send(frame)

            sending = asyncio.create_task(send_all())
            with pytest.raises(ConnectionClosed):
                while True:
                    got.append(json.loads(await asyncio.wait_for(ws.recv(), 5))["type"])
            await sending
            return ws.close_code, got

    async def scenario() -> None:
        code, _ = await closed_with(["x" * 4096])
        assert code == CloseCode.TOO_BIG
        # 3 within the burst, 3 refused with an error frame, and the 4th refused in a row closes:
        # no frame is left unread, so the close is not lost to a reset.
        pings = [json.dumps({"type": "ping", "id": f"p{i}"}) for i in range(7)]
        code, got = await closed_with(pings)
        assert code == CloseCode.POLICY
        assert got == ["ack"] * 3 + ["error"] * 3  # refused frames are answered before the close

    asyncio.run(asyncio.wait_for(scenario(), 20))


@pytest.mark.parametrize(
    "server",
    [
        {
            "CHATCORE_MAX_MESSAGE_CHARS": str(BIG),
            "CHATCORE_MAX_REQUEST_BODY_BYTES": "131072",
            "CHATCORE_WS_SEND_TIMEOUT_S": "1",
            # A queue that cannot overflow here: only the timer can close the socket.
            "CHATCORE_WS_SEND_QUEUE_BYTES": str(64 * 1024 * 1024),
            "CHATCORE_SEND_BURST": "1000",
        }
    ],
    indirect=True,
)
def test_a_send_unfinished_past_the_send_timeout_closes_4000_before_the_queue_fills(server: WsServer) -> None:
    # 120 frames of 50 KB: the kernel and granian take a few MB, then a send stays unfinished
    # and the rest wait in a queue that cannot overflow: the timer closes the socket.
    _, ann = account(server, "ann")
    bob_id, bob = account(server, "bob")
    chat = make_chat(server, ann, bob_id)
    count = 120

    async def scenario() -> None:
        stalled = await stalled_socket(server, bob)
        await post_big(server, ann, chat, count)
        await asyncio.sleep(3)  # past the 1 s timeout, and the 0.25 s timer tick
        got: list[dict[str, Any]] = []
        code = await asyncio.wait_for(read_events_until_closed(stalled, got), 20)
        assert code == CloseCode.RESUME_FROM_CURSOR
        posted = [index(f) for f in got if is_post(f)]
        assert 0 < len(posted) < count and posted == list(range(len(posted)))

    asyncio.run(asyncio.wait_for(scenario(), 28))
