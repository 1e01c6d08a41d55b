"""WebSocket `/v1/ws` through Litestar's sync TestClient (SECURITY.md W1-W6, T7, T10; issue 5).

Every receive has a timeout. The test client has no `websocket.http.response` extension, so a
refused handshake shows here as a close before accept (code 1008); the real-server suite
(test_ws_server.py) sees the HTTP statuses.
"""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from dependency_injector import providers
from litestar.exceptions import WebSocketDisconnect
from litestar.testing import TestClient
from litestar.testing.websocket_test_session import WebSocketTestSession

from chatcore.application.chats import ChatMemberCommand, CreateGroupChatCommand
from chatcore.application.realtime import CloseCode
from chatcore.testing.doubles import FakeClock
from entrypoints.container import build_container
from entrypoints.http import create_app
from tests.integration.test_http_support import Api, User, api, memory_settings, serve
from tests.integration.test_ws_support import bounded

__all__ = ["api", "bounded"]

WAIT_S = 3.0
ORIGIN = "http://127.0.0.1:8000"  # the default public_url's origin


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Api]:
    """Limits small enough to hit in a test."""
    with serve(memory_settings(tmp_path, ws_max_sockets_per_user=3)) as running:
        yield running


def chat_of(api: Api, owner: User, *members: User) -> str:
    command = CreateGroupChatCommand(actor=owner.id, title="t", member_ids=[m.id for m in members])
    return api.run(api.runtime.service.create_group_chat, command).id


@contextmanager
def connect(
    api: Api, user: User | None, path: str = "/v1/ws", **kwargs: Any
) -> Iterator[WebSocketTestSession]:
    headers = {**(user.headers if user else {}), **kwargs.pop("headers", {})}
    with api.client.websocket_connect(path, headers=headers, **kwargs) as ws:
        yield ws


def recv(ws: WebSocketTestSession, timeout: float = WAIT_S) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(ws.receive_text(timeout=timeout))
    return frame


def recv_until(ws: WebSocketTestSession, kind: str, timeout: float = WAIT_S) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        frame = recv(ws, max(0.05, deadline - time.monotonic()))
        if frame["type"] == kind:
            return frame


def events(ws: WebSocketTestSession, count: int) -> list[dict[str, Any]]:
    return [recv_until(ws, "event") for _ in range(count)]


def nothing_more(ws: WebSocketTestSession, wait_s: float = 0.4) -> list[dict[str, Any]]:
    """Frames arriving within `wait_s` (heartbeats aside)."""
    got = []
    deadline = time.monotonic() + wait_s
    while (left := deadline - time.monotonic()) > 0:
        try:
            frame = recv(ws, left)
        except queue.Empty:
            break
        if frame["type"] != "heartbeat":
            got.append(frame)
    return got


def close_code(ws: WebSocketTestSession, within_s: float = WAIT_S) -> int:
    """Read until the server closes the socket; its close code."""
    deadline = time.monotonic() + within_s
    with pytest.raises(WebSocketDisconnect) as caught:
        while (left := deadline - time.monotonic()) > 0:
            ws.receive_text(timeout=left)
        raise AssertionError(f"still open after {within_s} s")
    return caught.value.code


def send(ws: WebSocketTestSession, **frame: Any) -> None:
    ws.send_text(json.dumps(frame))


def post(api: Api, user: User, chat: str, body: str, **extra: Any) -> Any:
    return api.client.post(f"/v1/chats/{chat}/messages", json={"body": body, **extra}, headers=user.headers)


def body_of(frame: dict[str, Any]) -> str:
    return str(frame["record"]["event"].get("body"))


def refused(api: Api, path: str = "/v1/ws", **kwargs: Any) -> int:
    with pytest.raises(WebSocketDisconnect) as caught, api.client.websocket_connect(path, **kwargs) as ws:
        recv(ws, 1.0)
    return caught.value.code


# -- the handshake ------------------------------------------------------------------------------


def test_no_forged_or_url_token_is_refused_before_accept(api: Api) -> None:
    user = api.user("ann")
    assert refused(api) == CloseCode.POLICY
    assert refused(api, headers={"Authorization": "Bearer not.a.jwt"}) == CloseCode.POLICY
    forged = user.access_token[:-4] + ("AAAA" if not user.access_token.endswith("AAAA") else "BBBB")
    assert refused(api, headers={"Authorization": f"Bearer {forged}"}) == CloseCode.POLICY
    # A token in the URL is refused even beside a valid header.
    assert refused(api, f"/v1/ws?access_token={user.access_token}", headers=user.headers) == CloseCode.POLICY
    assert refused(api, f"/v1/ws?token={user.access_token}", headers=user.headers) == CloseCode.POLICY
    assert api.app.state.get("ws_sockets") is None  # nothing was allocated


def test_origin_allow_list(api: Api) -> None:
    user = api.user("ann")
    assert refused(api, headers={**user.headers, "Origin": "https://evil.example"}) == CloseCode.POLICY
    with connect(api, user, headers={"Origin": ORIGIN}) as ws:
        send(ws, type="ping", id="p")
        assert recv(ws)["type"] == "ack"


def test_browser_subprotocol_auth_echoes_only_the_protocol(api: Api) -> None:
    user = api.user("ann")
    protocols = ["chatcore.v1", f"chatcore.bearer.{user.access_token}"]
    with api.client.websocket_connect("/v1/ws", subprotocols=protocols, headers={"Origin": ORIGIN}) as ws:
        assert ws.accepted_subprotocol == "chatcore.v1"
        send(ws, type="ping", id="p")
        assert recv(ws)["id"] == "p"
    # Without Origin the subprotocol token is not enough: browsers always send Origin.
    assert refused(api, subprotocols=protocols) == CloseCode.POLICY
    # The bearer entry without chatcore.v1 is not accepted either.
    assert refused(api, subprotocols=protocols[1:], headers={"Origin": ORIGIN}) == CloseCode.POLICY


def test_expired_token_refused_and_open_socket_closed_at_exp(tmp_path: Path) -> None:
    clock = FakeClock(start=__import__("datetime").datetime.now(__import__("datetime").UTC))
    container = build_container(memory_settings(tmp_path, ws_heartbeat_s=0.2))
    container.clock.override(providers.Object(clock))
    app = create_app(container)
    with TestClient(app, raise_server_exceptions=False) as client:
        api = Api(app, client)
        user, fresh_later = api.user("ann"), None
        with connect(api, user) as ws:
            send(ws, type="ping", id="p")
            assert recv(ws)["type"] == "ack"
            clock.advance(api.runtime.settings.auth.access_token_ttl_s - 5)
            fresh_later = api.user("ann-again")  # another user's token: reauth must refuse it
            send(ws, type="reauth", id="r1", token=fresh_later.access_token)
            assert recv_until(ws, "error")["status"] == 401
            clock.advance(10)  # past exp
            assert close_code(ws) == CloseCode.POLICY
        assert refused(api, headers=user.headers) == CloseCode.POLICY  # expired: refused


def test_reauth_extends_the_socket_past_the_first_tokens_expiry(tmp_path: Path) -> None:
    import datetime as dt

    clock = FakeClock(start=dt.datetime.now(dt.UTC))
    container = build_container(memory_settings(tmp_path))
    container.clock.override(providers.Object(clock))
    app = create_app(container)
    with TestClient(app, raise_server_exceptions=False) as client:
        api = Api(app, client)
        user = api.user("ann")
        with connect(api, user) as ws:
            clock.advance(api.runtime.settings.auth.access_token_ttl_s - 5)
            pair = api.run(api.runtime.auth.login.start_session, user.id, "password", None, None)
            send(ws, type="reauth", id="r", token=pair.access_token)
            assert recv_until(ws, "ack")["id"] == "r"
            clock.advance(10)  # past the first token's exp, before the second's
            send(ws, type="ping", id="still")
            assert recv_until(ws, "ack")["id"] == "still"


def test_bad_cursor_is_refused_at_the_handshake(api: Api) -> None:
    ann, bob = api.user("ann"), api.user("bob")
    page = api.client.get("/v1/updates", headers=ann.headers).json()
    assert refused(api, "/v1/ws?cursor=garbage", headers=ann.headers) == CloseCode.POLICY
    # A cursor is bound to its user.
    assert refused(api, f"/v1/ws?cursor={page['cursor']}", headers=bob.headers) == CloseCode.POLICY


def test_the_socket_cap_per_user(small: Api) -> None:
    user, other = small.user("ann"), small.user("bob")
    with connect(small, user), connect(small, user), connect(small, user):
        assert refused(small, headers=user.headers) == CloseCode.POLICY  # the 4th of 3
        with connect(small, other) as ws:  # another user is not affected
            send(ws, type="ping", id="p")
            assert recv(ws)["type"] == "ack"
    deadline = time.monotonic() + WAIT_S
    while True:  # closed sockets free their slots (once the server saw them close)
        try:
            with connect(small, user) as ws:
                send(ws, type="ping", id="p")
                assert recv(ws)["type"] == "ack"
                break
        except WebSocketDisconnect:
            assert time.monotonic() < deadline
            time.sleep(0.05)


# -- frames --------------------------------------------------------------------------------------


def test_frame_size_limit(api: Api) -> None:
    user = api.user("ann")
    chat = chat_of(api, user)
    limit = api.runtime.settings.ws_max_frame_bytes
    with connect(api, user) as ws:
        frame = {"type": "send", "id": "big", "chat_id": chat, "body": ""}
        padding = limit - len(json.dumps(frame))
        ws.send_text(json.dumps({**frame, "body": "x" * padding}))  # exactly the limit: processed
        answer = recv_until(ws, "error")
        assert answer["id"] == "big" and answer["status"] == 422  # too long a message, not a closed socket
        ws.send_text(json.dumps({**frame, "body": "x" * (padding + 1)}))
        assert close_code(ws) == CloseCode.TOO_BIG


def test_a_flood_gets_error_frames_then_1008(api: Api) -> None:
    user = api.user("ann")
    with connect(api, user) as ws:
        for i in range(200):
            send(ws, type="ping", id=f"p{i}")
        statuses: list[int | None] = []
        with pytest.raises(WebSocketDisconnect) as caught:
            while True:
                frame = recv(ws)
                statuses.append(frame.get("status"))
        assert caught.value.code == CloseCode.POLICY
        burst = api.runtime.settings.ws_burst
        assert statuses[:burst] == [None] * burst  # the burst is served
        assert set(statuses[burst:]) == {429} and len(statuses) == 2 * burst


def test_undecodable_and_invalid_frames_get_error_frames(api: Api) -> None:
    user = api.user("ann")
    with connect(api, user) as ws:
        ws.send_text("{not json")
        assert recv(ws) | {"detail": ""} == {
            "type": "error",
            "id": None,
            "status": 422,
            "title": "Invalid Input",
            "detail": "",
            "field": "frame",
            "permission": None,
            "retry_after": None,
        }
        send(ws, type="nonsense", id="n1")
        assert (lambda f: (f["id"], f["status"]))(recv(ws)) == ("n1", 422)


def test_frames_on_a_foreign_chat_get_404_and_the_outsider_sees_nothing(api: Api) -> None:
    ann, eve = api.user("ann"), api.user("eve")
    chat = chat_of(api, ann)
    with connect(api, eve) as ws:
        for kind, extra in (
            ("send", {"body": "let me in"}),
            ("read", {"seq": 1}),
            ("edit", {"seq": 1, "body": "x"}),
            ("delete", {"seq": 1}),
            ("typing", {}),
        ):
            send(ws, type=kind, id=kind, chat_id=chat, **extra)
            error = recv_until(ws, "error")
            assert (error["id"], error["status"], error["title"]) == (kind, 404, "Not Found")
        assert post(api, ann, chat, "secret").status_code == 201
        send(ws, type="typing", id="t2", chat_id=chat)
        assert [f for f in nothing_more(ws) if f["type"] in ("event", "typing")] == []
    assert api.runtime.core.store  # the outsider's failed sends stored nothing
    assert [
        m["body"]
        for m in api.client.get(f"/v1/chats/{chat}/messages", headers=ann.headers).json()["messages"]
    ] == ["secret"]


def test_permission_errors_name_the_permission(api: Api) -> None:
    ann, bob = api.user("ann"), api.user("bob")
    chat = chat_of(api, ann, bob)
    post(api, ann, chat, "ann's")
    with connect(api, bob) as ws:
        send(ws, type="edit", id="e", chat_id=chat, seq=1, body="not mine")
        error = recv_until(ws, "error")
        assert error["status"] == 403 and error["permission"]


# -- events --------------------------------------------------------------------------------------


def test_reconnect_with_the_cursor_gets_every_missed_event_once_in_order(api: Api) -> None:
    ann, bob = api.user("ann"), api.user("bob")
    chat = chat_of(api, ann, bob)
    with connect(api, bob) as ws:
        for body in ("one", "two"):
            post(api, ann, chat, body)
        first = events(ws, 2)
        assert [body_of(f) for f in first] == ["one", "two"]
        cursor = first[0]["cursor"]  # as if the second had been lost in the drop
    for body in ("three", "four"):
        post(api, ann, chat, body)
    with connect(api, bob, f"/v1/ws?cursor={cursor}") as ws:
        resumed = events(ws, 3)
        assert [body_of(f) for f in resumed] == ["two", "three", "four"]
        assert [f["record"]["seq"] for f in resumed] == sorted({f["record"]["seq"] for f in resumed})
        post(api, ann, chat, "five")
        assert body_of(recv_until(ws, "event")) == "five"
        assert [f for f in nothing_more(ws) if f["type"] == "event"] == []  # no duplicates


def test_a_removed_member_receives_nothing_more_from_the_chat(api: Api) -> None:
    ann, bob = api.user("ann"), api.user("bob")
    chat = chat_of(api, ann, bob)
    with connect(api, bob) as ws:
        api.run(
            api.runtime.service.remove_chat_member,
            ChatMemberCommand(actor=ann.id, chat_id=chat, user_id=bob.id),
        )
        removal = recv_until(ws, "event")
        assert removal["record"]["event"]["type"] == "chat.member_removed"
        post(api, ann, chat, "after you left")
        send(ws, type="typing", id="t", chat_id=chat)  # no longer allowed to type there either
        assert recv_until(ws, "error")["status"] == 404
        with connect(api, ann) as ann_ws:
            send(ann_ws, type="typing", id="t", chat_id=chat)
            recv_until(ann_ws, "ack")
        assert [f for f in nothing_more(ws) if f["type"] in ("event", "typing")] == []
    with connect(api, bob, f"/v1/ws?cursor={removal['cursor']}") as ws:
        assert [f for f in nothing_more(ws) if f["type"] == "event"] == []


def test_logout_closes_the_sessions_socket_within_2_s(api: Api) -> None:
    ann = api.user("ann")
    other_device = api.user("bob")
    with connect(api, ann) as ws, connect(api, other_device) as bystander:
        started = time.monotonic()
        assert api.client.post("/v1/auth/logout", headers=ann.headers).status_code in (200, 204)
        assert close_code(ws, 2.5) == CloseCode.SESSION_ENDED
        assert time.monotonic() - started <= 2.0
        send(bystander, type="ping", id="p")  # another user's socket stays open
        assert recv_until(bystander, "ack")["id"] == "p"


# -- typing --------------------------------------------------------------------------------------


def test_typing_reaches_the_other_members_only_and_is_never_logged(api: Api) -> None:
    ann, bob, eve = api.user("ann"), api.user("bob"), api.user("eve")
    chat = chat_of(api, ann, bob)
    eve_chat = chat_of(api, eve)
    log_before = list(api.runtime.core.store.events) if hasattr(api.runtime.core.store, "events") else None
    with connect(api, ann) as a, connect(api, bob) as b, connect(api, eve) as e:
        send(a, type="typing", id="t1", chat_id=chat)
        assert recv_until(a, "ack")["id"] == "t1"
        notice = recv_until(b, "typing")
        assert (notice["chat_id"], notice["user_id"]) == (chat, ann.id)
        assert 0 < notice["expires_in_ms"] <= 6000
        assert [f for f in nothing_more(a) if f["type"] == "typing"] == []  # not echoed to the typist
        assert [f for f in nothing_more(e) if f["type"] == "typing"] == []  # nor shown to outsiders
        send(e, type="typing", id="t2", chat_id=eve_chat)  # eve's own chat: nobody else there
        recv_until(e, "ack")
    if log_before is not None:
        assert list(api.runtime.core.store.events) == log_before
    page = api.client.get(f"/v1/chats/{chat}/messages", headers=ann.headers).json()
    assert page["messages"] == []


async def test_a_stale_typing_signal_is_dropped() -> None:
    """The server expires typing: a signal delivered after its TTL is not shown."""
    from adapters.memory.kit import memory_core
    from chatcore.application.profiles import CreateUserCommand
    from chatcore.application.realtime import TYPING_TTL_MS, RealtimeSession, TypingFrame, TypingNotice
    from chatcore.application.updates import CursorCodec, GetUpdates

    clock = FakeClock()
    core = memory_core(clock=clock)
    service = core.service
    updates = GetUpdates(service.deps, core.log, CursorCodec(b"k" * 32, 1 << 15))
    ann = (await service.create_user(CreateUserCommand(email="a@example.com", display_name="a"))).id
    bob = (await service.create_user(CreateUserCommand(email="b@example.com", display_name="b"))).id
    chat = (
        await service.create_group_chat(CreateGroupChatCommand(actor=ann, title="t", member_ids=[bob]))
    ).id
    typist, reader = (
        RealtimeSession(ann, service, updates, core.bus),
        RealtimeSession(bob, service, updates, core.bus),
    )
    await typist.open(None)
    await reader.open(None)
    await typist.handle(TypingFrame(id="1", chat_id=chat))
    clock.advance(1)
    (fresh,) = await reader.next_frames()
    assert isinstance(fresh, TypingNotice) and fresh.expires_in_ms == TYPING_TTL_MS - 1000
    await typist.handle(TypingFrame(id="2", chat_id=chat))
    clock.advance(TYPING_TTL_MS / 1000 + 1)
    assert await reader.next_frames() == []
    assert [
        r.event
        for r in await core.log.read(chat, after_seq=0, limit=100)
        if "typing" in type(r.event).__name__.lower()
    ] == []
    await typist.close()
    await reader.close()


# -- liveness ------------------------------------------------------------------------------------


def test_a_silent_client_is_asked_to_answer_then_closed(tmp_path: Path) -> None:
    settings = memory_settings(tmp_path, ws_ping_interval_s=0.2, ws_ping_timeout_s=0.2, ws_heartbeat_s=0.2)
    with serve(settings) as api:
        user = api.user("ann")
        with connect(api, user) as alive, connect(api, user) as dead:
            # For one second the live client answers every heartbeat that asks; the other is silent.
            until = time.monotonic() + 1.0
            while (left := until - time.monotonic()) > 0:
                try:
                    frame = recv(alive, left)
                except queue.Empty:
                    break
                if frame.get("reply_within_ms") is not None:
                    assert frame["reply_within_ms"] == 200
                    send(alive, type="ping", id="pong")
            # By then the silent one was asked, and closed: everything it got is already queued.
            got = []
            with pytest.raises(WebSocketDisconnect) as caught:
                while True:
                    got.append(recv(dead, 0.05))
            assert caught.value.code == CloseCode.POLICY
            assert any(f.get("reply_within_ms") == 200 for f in got)
            send(alive, type="ping", id="last")
            assert recv_until(alive, "ack")["id"] in ("pong", "last")


def test_an_open_socket_shows_its_user_online_to_chat_members_only(api: Api) -> None:
    alice, bob, eve = api.user("alice"), api.user("bob"), api.user("eve")
    chat_id = chat_of(api, alice, bob)
    presence = f"/v1/chats/{chat_id}/presence"
    assert api.client.get(presence, headers=alice.headers).json()["online"] == []
    with connect(api, bob) as ws:
        ws.send_text(json.dumps({"type": "ping", "id": "p"}))
        assert recv(ws)["type"] == "ack"  # the connection is up and running
        online = api.client.get(presence, headers=alice.headers).json()
        assert online == {"chat_id": chat_id, "online": [bob.id]}
        assert api.client.get(presence, headers=eve.headers).status_code == 404
