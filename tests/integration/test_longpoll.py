"""Long-polling `GET /v1/updates` (issue 5; SECURITY.md R8): the same events and cursor as the WebSocket."""

from __future__ import annotations

import threading
import time
from typing import Any

from chatcore.application.chats import ChatMemberCommand, CreateGroupChatCommand
from tests.integration.test_http_support import Api, User, api, assert_problem
from tests.integration.test_ws_support import bounded

__all__ = ["api", "bounded"]


def chat_of(api: Api, owner: User, *members: User) -> str:
    command = CreateGroupChatCommand(actor=owner.id, title="t", member_ids=[m.id for m in members])
    return api.run(api.runtime.service.create_group_chat, command).id


def poll(api: Api, user: User, **params: Any) -> Any:
    return api.client.get("/v1/updates", params=params, headers=user.headers)


def bodies(page: dict[str, Any]) -> list[str]:
    return [e["event"]["body"] for e in page["events"] if e["event"]["type"] == "message.posted"]


def test_without_a_cursor_a_fresh_cursor_at_once(api: Api) -> None:
    ann = api.user("ann")
    chat = chat_of(api, ann)
    api.client.post(f"/v1/chats/{chat}/messages", json={"body": "old"}, headers=ann.headers)
    started = time.monotonic()
    page = poll(api, ann, timeout=10).json()
    assert time.monotonic() - started < 1
    assert page["events"] == [] and page["cursor"] and page["has_more"] is False


def test_pending_events_return_at_once_in_order(api: Api) -> None:
    ann = api.user("ann")
    chat = chat_of(api, ann)
    cursor = poll(api, ann).json()["cursor"]
    for body in ("one", "two"):
        api.client.post(f"/v1/chats/{chat}/messages", json={"body": body}, headers=ann.headers)
    page = poll(api, ann, cursor=cursor, timeout=10).json()
    assert bodies(page) == ["one", "two"]
    again = poll(api, ann, cursor=page["cursor"], timeout=0).json()
    assert again["events"] == []  # delivered once


def test_returns_early_when_an_event_arrives(api: Api) -> None:
    ann, bob = api.user("ann"), api.user("bob")
    chat = chat_of(api, ann, bob)
    cursor = poll(api, bob).json()["cursor"]

    def later() -> None:
        time.sleep(0.5)
        api.client.post(f"/v1/chats/{chat}/messages", json={"body": "wake"}, headers=ann.headers)

    sender = threading.Thread(target=later)
    started = time.monotonic()
    sender.start()
    page = poll(api, bob, cursor=cursor, timeout=10).json()
    elapsed = time.monotonic() - started
    sender.join(5)
    assert bodies(page) == ["wake"]
    assert 0.4 <= elapsed < 3


def test_empty_at_the_timeout(api: Api) -> None:
    ann = api.user("ann")
    chat_of(api, ann)
    cursor = poll(api, ann).json()["cursor"]
    started = time.monotonic()
    page = poll(api, ann, cursor=cursor, timeout=1.5).json()
    elapsed = time.monotonic() - started
    assert page["events"] == []
    assert abs(elapsed - 1.5) <= 1.0


def test_a_removed_member_gets_the_removal_then_nothing(api: Api) -> None:
    ann, bob = api.user("ann"), api.user("bob")
    chat = chat_of(api, ann, bob)
    cursor = poll(api, bob).json()["cursor"]
    api.run(
        api.runtime.service.remove_chat_member, ChatMemberCommand(actor=ann.id, chat_id=chat, user_id=bob.id)
    )
    api.client.post(f"/v1/chats/{chat}/messages", json={"body": "secret"}, headers=ann.headers)
    page = poll(api, bob, cursor=cursor, timeout=1).json()
    assert [e["event"]["type"] for e in page["events"]] == ["chat.member_removed"]
    assert poll(api, bob, cursor=page["cursor"], timeout=0.2).json()["events"] == []


def test_bad_parameters_are_422_and_anonymous_is_401(api: Api) -> None:
    ann, bob = api.user("ann"), api.user("bob")
    limit = api.runtime.settings.limits.max_long_poll_s
    assert_problem(poll(api, ann, timeout=limit + 1), 422, field="timeout")
    assert poll(api, ann, timeout=-1).status_code in (400, 422)
    assert_problem(poll(api, ann, cursor="garbage"), 422, field="cursor")
    cursor = poll(api, ann).json()["cursor"]
    assert_problem(poll(api, bob, cursor=cursor), 422, field="cursor")  # bound to its user
    assert_problem(api.client.get("/v1/updates"), 401)


def test_documented_in_openapi_and_asyncapi(api: Api) -> None:
    spec = api.client.get("/schema/openapi.json").json()
    operation = spec["paths"]["/v1/updates"]["get"]
    assert {p["name"] for p in operation["parameters"]} >= {"cursor", "timeout", "limit"}
    asyncapi = api.client.get("/schema/asyncapi.json")
    assert asyncapi.status_code == 200
    document = asyncapi.json()
    assert document["channels"]["realtime"]["address"] == "/v1/ws"
    assert document["channels"]["updates"]["address"] == "/v1/updates"
    assert {"TypingFrame", "ReauthFrame", "TypingNotice"} <= set(document["components"]["schemas"])
