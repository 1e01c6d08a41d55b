"""End to end through Litestar's test client: every route's happy path, errors, limits, mass assignment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chatcore.application.notifications import NotificationKind, UnsubscribeTokens
from chatcore.domain.errors import RateLimited
from entrypoints.container import _derive
from tests.integration.test_http_support import Api, api, assert_problem, bounded, memory_settings, serve

__all__ = ["api", "bounded"]


def _chat(api: Api, owner: Any, *members: Any, title: str = "chat") -> str:
    r = api.client.post(
        "/v1/chats", json={"title": title, "member_ids": [m.id for m in members]}, headers=owner.headers
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


# -- users ----------------------------------------------------------------------------------


def test_profile_read_update_and_public_view(api: Api) -> None:
    alice, bob = api.user("alice"), api.user("bob")
    me = api.client.get("/v1/users/me", headers=alice.headers).json()
    assert me["email"] == alice.email and me["email_verified"] is True
    r = api.client.patch("/v1/users/me", json={"display_name": "Alice A", "bio": "hi"}, headers=alice.headers)
    assert r.status_code == 200 and r.json()["display_name"] == "Alice A"
    public = api.client.get(f"/v1/users/{alice.id}", headers=bob.headers).json()
    assert public == {"id": alice.id, "display_name": "Alice A", "bio": "hi"}  # no email
    assert_problem(api.client.get("/v1/users/nobody", headers=bob.headers), 404)


def test_notification_preferences_are_part_of_my_profile_only(api: Api) -> None:
    alice, bob = api.user("alice"), api.user("bob")
    me = api.client.get("/v1/users/me", headers=alice.headers).json()
    assert (me["notify_missed_messages"], me["notify_added"]) == (True, True)
    r = api.client.patch("/v1/users/me", json={"notify_missed_messages": False}, headers=alice.headers)
    assert r.status_code == 200
    assert (r.json()["notify_missed_messages"], r.json()["notify_added"]) == (False, True)
    public = api.client.get(f"/v1/users/{alice.id}", headers=bob.headers).json()
    assert "notify_missed_messages" not in public
    assert (
        api.client.patch("/v1/users/me", json={"notify_added": "yes"}, headers=alice.headers).status_code
        == 422
    )


def test_mass_assignment_is_refused_and_changes_nothing(api: Api) -> None:
    alice = api.user("alice", verified=False)
    before = api.client.get("/v1/users/me", headers=alice.headers).json()
    snapshot = api.snapshot()
    for field, value in (
        ("email_verified", True),
        ("role", "admin"),
        ("id", "someone-else"),
        ("email", "other@example.com"),
        ("created_at", "2020-01-01T00:00:00Z"),
    ):
        r = api.client.patch("/v1/users/me", json={"display_name": "x", field: value}, headers=alice.headers)
        assert_problem(r, 422, field=field)
    assert api.snapshot() == snapshot
    assert api.client.get("/v1/users/me", headers=alice.headers).json() == before


def test_no_request_type_carries_a_server_owned_field(api: Api) -> None:
    from entrypoints.http import auth, schemas

    forbidden = {"role", "owner_id", "email_verified", "author_id", "seq", "created_at", "edited_at", "id"}
    for module in (schemas, auth):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, schemas.Request):
                # A read marker names the seq read up to: a position, not a message's own seq.
                allowed = {"seq"} if value is schemas.ReadMarkerRequest else set()
                assert forbidden.isdisjoint(set(value.__struct_fields__) - allowed), value
                assert value.__struct_config__.forbid_unknown_fields, value


# -- groups ---------------------------------------------------------------------------------


def test_group_lifecycle(api: Api) -> None:
    owner, bob, carol = api.user("owner"), api.user("bob"), api.user("carol")
    r = api.client.post("/v1/groups", json={"name": "Team", "description": "d"}, headers=owner.headers)
    assert r.status_code == 201
    gid = r.json()["id"]
    assert r.headers["location"] == f"/v1/groups/{gid}"
    assert [g["id"] for g in api.client.get("/v1/groups", headers=owner.headers).json()["groups"]] == [gid]
    for user in (bob, carol):
        r = api.client.post(f"/v1/groups/{gid}/members", json={"user_id": user.id}, headers=owner.headers)
        assert r.status_code == 200
    assert_problem(
        api.client.post(f"/v1/groups/{gid}/members", json={"user_id": bob.id}, headers=owner.headers), 409
    )
    assert_problem(
        api.client.post(f"/v1/groups/{gid}/members", json={"user_id": "ghost"}, headers=owner.headers),
        422,
        field="user_id",
    )
    r = api.client.patch(f"/v1/groups/{gid}", json={"name": "Team 2"}, headers=owner.headers)
    assert r.json()["name"] == "Team 2"
    # roles
    r = api.client.post(
        f"/v1/groups/{gid}/roles",
        json={"name": "mod", "rank": 50, "permissions": ["delete_any_message"]},
        headers=owner.headers,
    )
    assert r.status_code == 201
    role = r.json()
    assert r.headers["location"] == f"/v1/groups/{gid}/roles/{role['id']}"
    assert api.client.get(r.headers["location"], headers=bob.headers).json() == role
    names = {
        x["name"] for x in api.client.get(f"/v1/groups/{gid}/roles", headers=bob.headers).json()["roles"]
    }
    assert names == {"owner", "admin", "member", "mod"}
    assert_problem(
        api.client.post(
            f"/v1/groups/{gid}/roles",
            json={"name": "x", "rank": 5, "permissions": ["nope"]},
            headers=owner.headers,
        ),
        422,
        field="permissions",
    )
    r = api.client.patch(f"/v1/groups/{gid}/roles/{role['id']}", json={"rank": 60}, headers=owner.headers)
    assert r.json()["rank"] == 60
    r = api.client.put(f"/v1/groups/{gid}/members/{bob.id}/roles/{role['id']}", headers=owner.headers)
    member = next(m for m in r.json()["members"] if m["user_id"] == bob.id)
    assert role["id"] in member["role_ids"]
    r = api.client.delete(f"/v1/groups/{gid}/members/{bob.id}/roles/{role['id']}", headers=owner.headers)
    assert r.status_code == 204
    assert api.client.delete(f"/v1/groups/{gid}/roles/{role['id']}", headers=owner.headers).status_code == 204
    assert_problem(api.client.get(f"/v1/groups/{gid}/roles/{role['id']}", headers=owner.headers), 404)
    # members leave / are removed; ownership
    assert api.client.delete(f"/v1/groups/{gid}/members/{carol.id}", headers=owner.headers).status_code == 204
    assert_problem(api.client.post(f"/v1/groups/{gid}/leave", headers=owner.headers), 409)
    r = api.client.put(f"/v1/groups/{gid}/owner", json={"user_id": bob.id}, headers=owner.headers)
    assert r.status_code == 200 and r.json()["owner_id"] == bob.id
    assert api.client.post(f"/v1/groups/{gid}/leave", headers=owner.headers).status_code == 204
    assert_problem(api.client.get(f"/v1/groups/{gid}", headers=owner.headers), 404)
    assert api.client.delete(f"/v1/groups/{gid}", headers=bob.headers).status_code == 204
    assert_problem(api.client.get(f"/v1/groups/{gid}", headers=bob.headers), 404)


# -- chats ----------------------------------------------------------------------------------


def test_chat_lifecycle_and_my_chats(api: Api) -> None:
    owner, bob, carol = api.user("owner"), api.user("bob"), api.user("carol")
    r = api.client.post("/v1/chats", json={"title": "Room", "member_ids": [bob.id]}, headers=owner.headers)
    assert r.status_code == 201
    cid = r.json()["id"]
    assert r.headers["location"] == f"/v1/chats/{cid}"
    assert api.client.get(f"/v1/chats/{cid}", headers=bob.headers).json()["title"] == "Room"
    assert (
        api.client.patch(f"/v1/chats/{cid}", json={"title": "Hall"}, headers=owner.headers).json()["title"]
        == "Hall"
    )
    assert_problem(api.client.patch(f"/v1/chats/{cid}", json={"title": "x"}, headers=bob.headers), 403)
    r = api.client.post(f"/v1/chats/{cid}/members", json={"user_id": carol.id}, headers=owner.headers)
    assert carol.id in r.json()["member_ids"]
    assert api.client.delete(f"/v1/chats/{cid}/members/{carol.id}", headers=owner.headers).status_code == 204
    assert_problem(api.client.get(f"/v1/chats/{cid}", headers=carol.headers), 404)
    # unread counts and the last message
    for body in ("one", "two", "three"):
        api.client.post(f"/v1/chats/{cid}/messages", json={"body": body}, headers=owner.headers)
    mine = api.client.get("/v1/chats", headers=bob.headers).json()["chats"]
    assert [(s["chat"]["id"], s["unread_count"], s["last_message"]["body"]) for s in mine] == [
        (cid, 3, "three")
    ]
    r = api.client.put(f"/v1/chats/{cid}/read-marker", json={"seq": 2}, headers=bob.headers)
    assert r.json() == {"chat_id": cid, "seq": 2, "unread_count": 1}
    assert_problem(
        api.client.put(f"/v1/chats/{cid}/read-marker", json={"seq": 99}, headers=bob.headers),
        422,
        field="seq",
    )
    assert api.client.get("/v1/chats", headers=bob.headers).json()["chats"][0]["unread_count"] == 1
    # ownership and leaving
    assert_problem(api.client.post(f"/v1/chats/{cid}/leave", headers=owner.headers), 409)
    r = api.client.put(f"/v1/chats/{cid}/owner", json={"user_id": bob.id}, headers=owner.headers)
    assert r.json()["owner_id"] == bob.id
    assert api.client.post(f"/v1/chats/{cid}/leave", headers=owner.headers).status_code == 204
    assert api.client.get("/v1/chats", headers=owner.headers).json()["chats"] == []


def test_direct_chat_opens_once(api: Api) -> None:
    alice, bob = api.user("alice"), api.user("bob")
    first = api.client.post("/v1/chats/direct", json={"user_id": bob.id}, headers=alice.headers)
    assert first.status_code == 201
    again = api.client.post("/v1/chats/direct", json={"user_id": alice.id}, headers=bob.headers)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]
    cid = first.json()["id"]
    assert_problem(api.client.post(f"/v1/chats/{cid}/leave", headers=alice.headers), 409)
    assert_problem(
        api.client.post("/v1/chats/direct", json={"user_id": alice.id}, headers=alice.headers),
        422,
        field="user_id",
    )


# -- messages -------------------------------------------------------------------------------


def test_send_is_idempotent_by_client_msg_id(api: Api) -> None:
    alice = api.user("alice")
    cid = _chat(api, alice)
    url = f"/v1/chats/{cid}/messages"
    first = api.client.post(url, json={"body": "hi", "client_msg_id": "c-1"}, headers=alice.headers)
    assert first.status_code == 201
    assert first.headers["location"] == f"{url}/1"
    replay = api.client.post(url, json={"body": "hi", "client_msg_id": "c-1"}, headers=alice.headers)
    assert replay.status_code == 200 and replay.content == first.content
    other = api.client.post(url, json={"body": "changed", "client_msg_id": "c-1"}, headers=alice.headers)
    assert_problem(other, 422, field="client_msg_id")
    assert api.client.get(url, headers=alice.headers).json()["messages"][-1]["body"] == "hi"
    assert api.client.get(f"/v1/chats/{cid}", headers=alice.headers).json()["last_seq"] == 1


def test_history_pages_both_ways(api: Api) -> None:
    alice = api.user("alice")
    cid = _chat(api, alice)
    url = f"/v1/chats/{cid}/messages"
    for i in range(1, 8):
        api.client.post(url, json={"body": f"m{i}"}, headers=alice.headers)

    def seqs(query: str) -> tuple[list[int], bool]:
        page = api.client.get(url + query, headers=alice.headers).json()
        return [m["seq"] for m in page["messages"]], page["has_more"]

    assert seqs("?limit=3") == ([5, 6, 7], True)
    assert seqs("?before=5&limit=3") == ([2, 3, 4], True)
    assert seqs("?before=2&limit=3") == ([1], False)
    assert seqs("?after=0&limit=3") == ([1, 2, 3], True)
    assert seqs("?after=6&limit=3") == ([7], False)
    assert_problem(api.client.get(url + "?after=1&before=3", headers=alice.headers), 422, field="before")
    assert_problem(api.client.get(url + "?after=-1", headers=alice.headers), 422, field="after")
    assert_problem(api.client.get(url + "?limit=abc", headers=alice.headers), 422, field="limit")


def test_edit_history_delete_and_gone(api: Api) -> None:
    alice, bob = api.user("alice"), api.user("bob")
    cid = _chat(api, alice, bob)
    url = f"/v1/chats/{cid}/messages"
    api.client.post(url, json={"body": "v1"}, headers=alice.headers)
    r = api.client.patch(f"{url}/1", json={"body": "v2"}, headers=alice.headers)
    assert r.json()["body"] == "v2" and r.json()["edited_at"]
    assert_problem(api.client.patch(f"{url}/1", json={"body": "hack"}, headers=bob.headers), 403)
    history = api.client.get(f"{url}/1/history", headers=bob.headers).json()["edits"]
    assert [e["body"] for e in history] == ["v1"]
    assert_problem(api.client.delete(f"{url}/1", headers=bob.headers), 403)
    assert api.client.delete(f"{url}/1", headers=alice.headers).status_code == 204
    assert_problem(api.client.get(f"{url}/1", headers=bob.headers), 410)
    assert_problem(api.client.get(f"{url}/1/history", headers=bob.headers), 410)
    assert_problem(api.client.get(f"{url}/2", headers=bob.headers), 404)
    listed = api.client.get(url, headers=bob.headers).json()["messages"]
    assert listed == [{**listed[0], "deleted": True, "body": ""}]


# -- errors and input handling -----------------------------------------------------------------


def test_bad_bodies_never_give_a_500(api: Api) -> None:
    alice = api.user("alice")
    cid = _chat(api, alice)
    url = f"/v1/chats/{cid}/messages"
    h = alice.headers
    assert_problem(
        api.client.post(url, content=b"{not json", headers={**h, "content-type": "application/json"}), 400
    )
    assert_problem(
        api.client.post(url, content=b'{"body":"x"}', headers={**h, "content-type": "text/plain"}), 415
    )
    assert_problem(api.client.post(url, content=b'{"body":"x"}', headers=h), 415)  # no content type
    assert_problem(api.client.post(url, json={"body": 5}, headers=h), 422, field="body")
    assert_problem(api.client.post(url, json={}, headers=h), 422, field="body")
    assert_problem(api.client.post(url, json=[1, 2], headers=h), 422)
    assert_problem(api.client.post(url, json={"body": {"$ne": None}}, headers=h), 422, field="body")
    assert_problem(api.client.post(url, json={"body": "x\u0000y"}, headers=h), 422, field="body")
    assert_problem(
        api.client.post(url, json={"body": "ok", "reply_to": 99}, headers=h), 422, field="reply_to"
    )
    assert_problem(api.client.get(f"{url}/notanumber", headers=h), 404)
    assert_problem(api.client.put(url, json={"body": "x"}, headers=h), 405)
    assert_problem(api.client.get("/v1/nothing-here", headers=h), 404)
    r = api.client.patch("/v1/users/me", json={"display_name": "Bob\r\nBcc: x@evil.example"}, headers=h)
    assert_problem(r, 422, field="display_name")


def test_unexpected_errors_are_generic_500s(api: Api, caplog: Any) -> None:
    alice = api.user("alice")

    async def boom(actor: str) -> None:
        raise RuntimeError("secret internals at /srv/db")

    api.runtime.service.get_my_profile = boom  # type: ignore[assignment]
    r = api.client.get("/v1/users/me", headers=alice.headers)
    body = assert_problem(r, 500)
    assert "secret" not in r.text and "Traceback" not in r.text
    assert body["detail"] == "an unexpected error occurred"
    assert any(
        rec.request_id == r.headers["x-request-id"] for rec in caplog.records if hasattr(rec, "request_id")
    ) or any(r.headers["x-request-id"] in rec.getMessage() for rec in caplog.records)


def test_rate_limited_is_429_with_retry_after(api: Api) -> None:
    alice = api.user("alice")

    async def limited(actor: str) -> None:
        raise RateLimited(7)

    api.runtime.service.list_my_chats = limited  # type: ignore[assignment]
    r = api.client.get("/v1/chats", headers=alice.headers)
    assert_problem(r, 429)
    assert r.headers["retry-after"] == "7"


def test_request_ids_are_echoed_and_tokens_never_logged(api: Api, caplog: Any) -> None:
    caplog.set_level("DEBUG")
    alice = api.user("alice")
    r = api.client.get("/v1/users/me?access_token=leak", headers={**alice.headers, "X-Request-ID": "req-123"})
    assert r.headers["x-request-id"] == "req-123"
    generated = api.client.get("/healthz").headers["x-request-id"]
    assert len(generated) >= 16
    assert (
        api.client.get("/healthz", headers={"X-Request-ID": "bad id\n"}).headers["x-request-id"] != "bad id\n"
    )
    # Everything the server logged (httpx's lines are the test client's own).
    server = [rec for rec in caplog.records if not rec.name.startswith(("httpx", "httpcore"))]
    text = "\n".join(f"{rec.getMessage()} {vars(rec)}" for rec in server)
    assert "req-123" in text
    assert alice.access_token not in text and "eyJ" not in text and "leak" not in text


def test_health_readiness_and_schema(api: Api) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok"}
    assert api.client.get("/readyz").json() == {"status": "ok"}
    schema = api.client.get("/schema/openapi.json").json()
    assert schema["openapi"].startswith("3.1")
    assert "/v1/chats/{chat_id}/messages" in schema["paths"]
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert api.client.get("/schema/swagger").status_code == 200
    assert api.client.get("/schema").status_code == 200
    public = {"/healthz", "/readyz", "/v1/notifications/unsubscribe"}
    for path, operations in schema["paths"].items():
        if path.startswith("/schema"):
            continue
        for method, op in operations.items():
            responses = op["responses"]
            assert "422" in responses, (method, path)
            if path in public or (path.startswith("/v1/auth/") and "security" not in op):
                continue
            assert op["security"] == [{"bearer": []}], (method, path)
            assert responses["401"]["content"].keys() == {"application/problem+json"}
            assert "404" in responses and "403" in responses


def test_readyz_reports_unready_storage(api: Api) -> None:
    async def down() -> bool:
        return False

    api.runtime.ready = down
    assert_problem(api.client.get("/readyz"), 503)


def test_cors_follows_the_settings(tmp_path: Path) -> None:
    settings = memory_settings(tmp_path, cors_origins=["https://app.example"])
    with serve(settings) as api:
        ok = api.client.options(
            "/v1/chats", headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET"}
        )
        assert ok.headers.get("access-control-allow-origin") == "https://app.example"
        evil = api.client.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in evil.headers


# -- limits: the limit passes, limit + 1 is refused naming the field -------------------------------


def test_limits_pass_at_the_limit_and_fail_one_above(tmp_path: Path) -> None:
    settings = memory_settings(tmp_path, limits={"max_members_per_chat": 3})
    limits = settings.limits
    with serve(settings) as api:
        alice = api.user("alice")
        h = alice.headers
        cid = _chat(api, alice)
        url = f"/v1/chats/{cid}/messages"
        n = limits.max_message_chars
        assert api.client.post(url, json={"body": "a" * n}, headers=h).status_code == 201
        assert_problem(api.client.post(url, json={"body": "a" * (n + 1)}, headers=h), 422, field="body")
        n = limits.max_display_name_chars
        assert api.client.patch("/v1/users/me", json={"display_name": "d" * n}, headers=h).status_code == 200
        assert_problem(
            api.client.patch("/v1/users/me", json={"display_name": "d" * (n + 1)}, headers=h),
            422,
            field="display_name",
        )
        n = limits.max_chat_title_chars
        assert api.client.patch(f"/v1/chats/{cid}", json={"title": "t" * n}, headers=h).status_code == 200
        assert_problem(
            api.client.patch(f"/v1/chats/{cid}", json={"title": "t" * (n + 1)}, headers=h), 422, field="title"
        )
        n = limits.max_client_msg_id_chars
        assert (
            api.client.post(url, json={"body": "x", "client_msg_id": "c" * n}, headers=h).status_code == 201
        )
        r = api.client.post(url, json={"body": "x", "client_msg_id": "c" * (n + 1)}, headers=h)
        assert_problem(r, 422, field="client_msg_id")
        n = limits.max_page_size
        assert api.client.get(f"{url}?limit={n}", headers=h).status_code == 200
        assert_problem(api.client.get(f"{url}?limit={n + 1}", headers=h), 422, field="limit")
        # members per chat (the owner counts)
        others = [api.user(f"m{i}") for i in range(limits.max_members_per_chat)]
        full = [o.id for o in others[: limits.max_members_per_chat - 1]]
        r = api.client.post("/v1/chats", json={"title": "full", "member_ids": full}, headers=h)
        assert r.status_code == 201
        r = api.client.post(f"/v1/chats/{r.json()['id']}/members", json={"user_id": others[-1].id}, headers=h)
        assert_problem(r, 422, field="members")
        too_many = [o.id for o in others]
        assert_problem(
            api.client.post("/v1/chats", json={"title": "x", "member_ids": too_many}, headers=h),
            422,
            field="member_ids",
        )


def test_request_body_size_limit(tmp_path: Path) -> None:
    settings = memory_settings(tmp_path, max_request_body_bytes=2048)
    limit = settings.max_request_body_bytes
    with serve(settings) as api:
        alice = api.user("alice")
        h = {**alice.headers, "content-type": "application/json"}
        url = f"/v1/chats/{_chat(api, alice)}/messages"

        def body_of(size: int) -> bytes:
            prefix, suffix = b'{"body":"', b'"}'
            return prefix + b"a" * (size - len(prefix) - len(suffix)) + suffix

        assert api.client.post(url, content=body_of(limit), headers=h).status_code == 201
        r = api.client.post(url, content=body_of(limit + 1), headers=h)
        body = assert_problem(r, 413)
        assert "body" in body["detail"].lower() or body["title"]
        big = api.client.post(url, content=b"x" * 10_000_000, headers=h)
        assert_problem(big, 413)
        assert api.client.get(url, headers=alice.headers).json()["messages"][-1]["seq"] == 1


def test_fifty_concurrent_duplicate_sends_store_one_message(api: Api) -> None:
    import asyncio

    import httpx

    alice = api.user("alice")
    url = f"/v1/chats/{_chat(api, alice)}/messages"
    payload = {"body": "once", "client_msg_id": "dup-1"}

    async def burst() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=api.app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://chatcore.test") as client:
            return list(
                await asyncio.gather(
                    *(client.post(url, json=payload, headers=alice.headers) for _ in range(50))
                )
            )

    responses = api.run(burst)
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 49 + [201]
    assert len({(r.json()["id"], r.json()["seq"]) for r in responses}) == 1
    assert [m["seq"] for m in api.client.get(url, headers=alice.headers).json()["messages"]] == [1]


def test_the_21st_message_of_a_burst_is_throttled_and_retries_are_not(api: Api) -> None:
    alice = api.user("alice")
    chat = api.client.post("/v1/chats", json={"title": "Burst"}, headers=alice.headers).headers["location"]
    burst = api.runtime.settings.limits.send_burst
    for i in range(burst):
        r = api.client.post(
            chat + "/messages", json={"body": f"m{i}", "client_msg_id": f"k{i}"}, headers=alice.headers
        )
        assert r.status_code == 201
    again = api.client.post(
        chat + "/messages", json={"body": "m0", "client_msg_id": "k0"}, headers=alice.headers
    )
    assert again.status_code == 200  # a retry is answered, not throttled
    refused = api.client.post(chat + "/messages", json={"body": "one more"}, headers=alice.headers)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1


def test_an_unsubscribe_link_turns_its_kind_of_mail_off_without_a_login(tmp_path: Path) -> None:
    key = bytes(range(32))
    token = UnsubscribeTokens(_derive(key, b"chatcore unsubscribe"))
    with serve(memory_settings(tmp_path, secret_key=key.hex())) as api:
        alice = api.user("alice")
        link = token.issue(alice.id, NotificationKind.MISSED_MESSAGES)
        tampered = link[:-2] + ("AA" if not link.endswith("AA") else "BB")
        assert_problem(api.client.post("/v1/notifications/unsubscribe", json={"token": tampered}), 422)
        assert api.client.get("/v1/users/me", headers=alice.headers).json()["notify_missed_messages"] is True
        done = api.client.post("/v1/notifications/unsubscribe", json={"token": link})
        assert done.status_code == 200, done.text
        assert done.json() == {"kind": NotificationKind.MISSED_MESSAGES.value}
        me = api.client.get("/v1/users/me", headers=alice.headers).json()
        assert (me["notify_missed_messages"], me["notify_added"]) == (False, True)
        assert api.client.get("/v1/notifications/unsubscribe", params={"token": link}).status_code == 405
