"""The route-inventory matrix (SECURITY.md AC1, AC2, AC5; Synapse's RoomPermissionsTestCase).

Every route is listed below. Routes with an object id in their path or body are walked as
anonymous, outsider, member, admin and owner with real ids from a chat and group the outsider
is not in; the expected status comes from `permissions_for` on the stored objects, and a
denied call changes nothing. A route that appears in the app but not here fails the test.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from litestar.routes import HTTPRoute, WebSocketRoute

from chatcore.application.chats import CreateGroupChatCommand
from chatcore.application.groups import (
    CreateGroupCommand,
    DefineRoleCommand,
    GroupMemberCommand,
    RoleAssignmentCommand,
)
from chatcore.application.messages import SendMessageCommand
from chatcore.domain.groups import ADMIN_ROLE_ID
from chatcore.domain.permissions import Permission, permissions_for
from entrypoints.http.guards import PERMISSION, is_public
from tests.integration.test_http_support import Api, User, bounded, memory_settings, serve

__all__ = ["bounded"]

P = Permission
ROLES = ("anonymous", "outsider", "member", "admin", "owner")
_ids = itertools.count(1)


@dataclass
class World:
    """A group with a chat, seen from five places; the outsider has a group and chat of its own."""

    users: dict[str, User]
    group_id: str
    chat_id: str
    role_id: str  # a custom role below admin, held by `target`
    other_chat_id: str
    other_group_id: str


def build_world(api: Api, *, standalone: bool = False) -> World:
    """With `standalone`, the chat belongs to no group: "admin" is then a plain chat member."""
    s = api.runtime.service
    u = {
        name: api.user(name)
        for name in ("owner", "admin", "member", "member2", "target", "stranger", "outsider")
    }
    owner = u["owner"].id
    group = api.run(s.create_group, CreateGroupCommand(actor=owner, name=f"g{next(_ids)}"))
    for name in ("admin", "member", "member2", "target"):
        api.run(s.add_group_member, GroupMemberCommand(actor=owner, group_id=group.id, user_id=u[name].id))
    api.run(
        s.assign_role,
        RoleAssignmentCommand(actor=owner, group_id=group.id, user_id=u["admin"].id, role_id=ADMIN_ROLE_ID),
    )
    with_role = api.run(
        s.define_role,
        DefineRoleCommand(
            actor=owner, group_id=group.id, name="helper", rank=10, permissions=["send_messages"]
        ),
    )
    role_id = next(r.id for r in with_role.roles if r.name == "helper")
    api.run(
        s.assign_role,
        RoleAssignmentCommand(actor=owner, group_id=group.id, user_id=u["target"].id, role_id=role_id),
    )
    chat = api.run(
        s.create_group_chat,
        CreateGroupChatCommand(
            actor=owner,
            title="team",
            group_id=None if standalone else group.id,
            member_ids=[u["admin"].id, u["member"].id, u["member2"].id],
        ),
    )
    for name in ("member", "member2", "admin", "owner"):  # seqs 1, 2, 3, 4
        api.run(s.send_message, SendMessageCommand(actor=u[name].id, chat_id=chat.id, body=f"by {name}"))
    outsider = u["outsider"].id
    other_group = api.run(s.create_group, CreateGroupCommand(actor=outsider, name="mine"))
    other_chat = api.run(s.create_group_chat, CreateGroupChatCommand(actor=outsider, title="mine"))
    api.run(s.send_message, SendMessageCommand(actor=outsider, chat_id=other_chat.id, body="mine"))
    return World(u, group.id, chat.id, role_id, other_chat.id, other_group.id)


Request = Callable[[World], tuple[str, Any]]
Outcome = Callable[[World, str, frozenset[Permission]], int]


@dataclass(frozen=True)
class Case:
    scope: str | None  # "chat" | "group" | None (the id is not a chat's or group's)
    permission: Permission | None
    ok: int
    request: Request
    # What the domain answers once the permission is held (author-only edits, owners not leaving).
    outcome: Outcome | None = None


def c(w: World) -> str:
    return f"/v1/chats/{w.chat_id}"


def g(w: World) -> str:
    return f"/v1/groups/{w.group_id}"


def author_only(world: World, role: str, perms: frozenset[Permission]) -> int:
    return 200 if role == "member" else 403  # message 1 is the member's


def delete_any(world: World, role: str, perms: frozenset[Permission]) -> int:
    return 204 if P.DELETE_ANY_MESSAGE in perms else 403  # message 2 is member2's


def owner_cannot_leave(ok: int) -> Outcome:
    return lambda world, role, perms: 409 if role == "owner" else ok


def own_session_only(world: World, role: str, perms: frozenset[Permission]) -> int:
    return 204 if role == "member" else 404  # the member's session: nobody else's to see


# (method, route path as the app lists it) -> case
MATRIX: dict[tuple[str, str], Case] = {
    # users
    ("GET", "/v1/users/{user_id:str}"): Case(
        None, None, 200, lambda w: (f"/v1/users/{w.users['member2'].id}", None)
    ),
    # auth sessions
    ("DELETE", "/v1/auth/sessions/{session_id:str}"): Case(
        None,
        None,
        204,
        lambda w: (f"/v1/auth/sessions/{w.users['member'].session_id}", None),
        own_session_only,
    ),
    # groups
    ("GET", "/v1/groups/{group_id:str}"): Case("group", P.VIEW_GROUP, 200, lambda w: (g(w), None)),
    ("PATCH", "/v1/groups/{group_id:str}"): Case(
        "group", P.MANAGE_GROUP, 200, lambda w: (g(w), {"description": "changed"})
    ),
    ("DELETE", "/v1/groups/{group_id:str}"): Case("group", P.DELETE_GROUP, 204, lambda w: (g(w), None)),
    ("POST", "/v1/groups/{group_id:str}/members"): Case(
        "group", P.ADD_GROUP_MEMBERS, 200, lambda w: (g(w) + "/members", {"user_id": w.users["stranger"].id})
    ),
    ("DELETE", "/v1/groups/{group_id:str}/members/{user_id:str}"): Case(
        "group", P.REMOVE_GROUP_MEMBERS, 204, lambda w: (g(w) + f"/members/{w.users['member2'].id}", None)
    ),
    ("POST", "/v1/groups/{group_id:str}/leave"): Case(
        "group", P.VIEW_GROUP, 204, lambda w: (g(w) + "/leave", None), owner_cannot_leave(204)
    ),
    ("PUT", "/v1/groups/{group_id:str}/owner"): Case(
        "group",
        P.TRANSFER_GROUP_OWNERSHIP,
        200,
        lambda w: (g(w) + "/owner", {"user_id": w.users["member2"].id}),
    ),
    ("GET", "/v1/groups/{group_id:str}/roles"): Case(
        "group", P.VIEW_GROUP, 200, lambda w: (g(w) + "/roles", None)
    ),
    ("POST", "/v1/groups/{group_id:str}/roles"): Case(
        "group",
        P.MANAGE_ROLES,
        201,
        lambda w: (g(w) + "/roles", {"name": "mod", "rank": 50, "permissions": ["send_messages"]}),
    ),
    ("GET", "/v1/groups/{group_id:str}/roles/{role_id:str}"): Case(
        "group", P.VIEW_GROUP, 200, lambda w: (g(w) + f"/roles/{w.role_id}", None)
    ),
    ("PATCH", "/v1/groups/{group_id:str}/roles/{role_id:str}"): Case(
        "group", P.MANAGE_ROLES, 200, lambda w: (g(w) + f"/roles/{w.role_id}", {"name": "helper2"})
    ),
    ("DELETE", "/v1/groups/{group_id:str}/roles/{role_id:str}"): Case(
        "group", P.MANAGE_ROLES, 204, lambda w: (g(w) + f"/roles/{w.role_id}", None)
    ),
    ("PUT", "/v1/groups/{group_id:str}/members/{user_id:str}/roles/{role_id:str}"): Case(
        "group",
        P.MANAGE_ROLES,
        200,
        lambda w: (g(w) + f"/members/{w.users['member2'].id}/roles/{w.role_id}", None),
    ),
    ("DELETE", "/v1/groups/{group_id:str}/members/{user_id:str}/roles/{role_id:str}"): Case(
        "group",
        P.MANAGE_ROLES,
        204,
        lambda w: (g(w) + f"/members/{w.users['target'].id}/roles/{w.role_id}", None),
    ),
    # chats (a body id: the group the chat is created in)
    ("POST", "/v1/chats"): Case(
        "group",
        P.CREATE_CHATS,
        201,
        lambda w: (
            "/v1/chats",
            {"title": "new", "group_id": w.group_id, "member_ids": [w.users["member2"].id]},
        ),
    ),
    ("POST", "/v1/chats/direct"): Case(
        None, None, 201, lambda w: ("/v1/chats/direct", {"user_id": w.users["member2"].id})
    ),
    ("GET", "/v1/chats/{chat_id:str}"): Case("chat", P.READ_CHAT, 200, lambda w: (c(w), None)),
    ("GET", "/v1/chats/{chat_id:str}/presence"): Case(
        "chat", P.READ_CHAT, 200, lambda w: (c(w) + "/presence", None)
    ),
    ("PATCH", "/v1/chats/{chat_id:str}"): Case(
        "chat", P.EDIT_CHAT_INFO, 200, lambda w: (c(w), {"title": "renamed"})
    ),
    ("POST", "/v1/chats/{chat_id:str}/members"): Case(
        "chat", P.ADD_CHAT_MEMBERS, 200, lambda w: (c(w) + "/members", {"user_id": w.users["target"].id})
    ),
    ("DELETE", "/v1/chats/{chat_id:str}/members/{user_id:str}"): Case(
        "chat", P.REMOVE_CHAT_MEMBERS, 204, lambda w: (c(w) + f"/members/{w.users['member2'].id}", None)
    ),
    ("POST", "/v1/chats/{chat_id:str}/leave"): Case(
        "chat", P.READ_CHAT, 204, lambda w: (c(w) + "/leave", None), owner_cannot_leave(204)
    ),
    ("PUT", "/v1/chats/{chat_id:str}/owner"): Case(
        "chat",
        P.TRANSFER_CHAT_OWNERSHIP,
        200,
        lambda w: (c(w) + "/owner", {"user_id": w.users["member2"].id}),
    ),
    ("PUT", "/v1/chats/{chat_id:str}/read-marker"): Case(
        "chat", P.READ_CHAT, 200, lambda w: (c(w) + "/read-marker", {"seq": 2})
    ),
    # messages
    ("POST", "/v1/chats/{chat_id:str}/messages"): Case(
        "chat",
        P.SEND_MESSAGES,
        201,
        lambda w: (c(w) + "/messages", {"body": "hello", "client_msg_id": "m-1"}),
    ),
    ("GET", "/v1/chats/{chat_id:str}/messages"): Case(
        "chat", P.READ_CHAT, 200, lambda w: (c(w) + "/messages?after=0&limit=2", None)
    ),
    ("GET", "/v1/chats/{chat_id:str}/messages/{seq:int}"): Case(
        "chat", P.READ_CHAT, 200, lambda w: (c(w) + "/messages/1", None)
    ),
    ("GET", "/v1/chats/{chat_id:str}/messages/{seq:int}/history"): Case(
        "chat", P.READ_CHAT, 200, lambda w: (c(w) + "/messages/1/history", None)
    ),
    ("PATCH", "/v1/chats/{chat_id:str}/messages/{seq:int}"): Case(
        "chat", P.EDIT_OWN_MESSAGES, 200, lambda w: (c(w) + "/messages/1", {"body": "edited"}), author_only
    ),
    ("DELETE", "/v1/chats/{chat_id:str}/messages/{seq:int}"): Case(
        "chat", P.READ_CHAT, 204, lambda w: (c(w) + "/messages/2", None), delete_any
    ),
}

# Routes without an object id: authentication is their only gate.
ID_LESS: set[tuple[str, str]] = {
    ("GET", "/v1/users/me"),
    ("PATCH", "/v1/users/me"),
    ("GET", "/v1/groups"),
    ("POST", "/v1/groups"),
    ("GET", "/v1/chats"),
    ("POST", "/v1/auth/logout"),
    ("GET", "/v1/auth/sessions"),
    ("POST", "/v1/auth/password"),
    ("GET", "/v1/updates"),  # long-polling: the actor's own streams only (test_longpoll.py)
}

# Not HTTP routes, so not walked here: `/v1/ws` authenticates on its handshake and answers every
# frame through the same domain checks; its handshake, limits and per-chat 404s are covered by
# tests/integration/test_ws_*.py.
WS_COVERED: set[str] = {"/v1/ws"}

# The authentication allow-list (SECURITY.md AC5).
PUBLIC: set[tuple[str, str]] = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    *{
        ("POST", f"/v1/auth/{p}")
        for p in (
            "register",
            "login",
            "refresh",
            "email-code",
            "email-code/verify",
            "email-link/verify",
            "verify-email",
            "password-reset",
            "password-reset/confirm",
        )
    },
    ("POST", "/v1/notifications/unsubscribe"),  # the signed token is the credential
}


def is_schema(path: str) -> bool:
    return path == "/schema" or path.startswith("/schema/")


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[Api]:
    """A fresh app per case: the snapshot then compares one world's state, not every case's."""
    with serve(memory_settings(tmp_path)) as running:
        yield running


def app_routes(api: Api) -> Iterator[tuple[str, str, Any]]:
    for route in api.app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for method, (handler, _) in route.route_handler_map.items():
            if method not in ("OPTIONS", "HEAD"):
                yield method, route.path, handler


def test_every_route_is_in_the_matrix(shared: Api) -> None:
    listed = set(MATRIX) | ID_LESS | PUBLIC
    found = set()
    for method, path, _ in app_routes(shared):
        if is_schema(path):
            continue
        found.add((method, path))
    assert found - listed == set(), "routes missing from the matrix"
    assert listed - found == set(), "the matrix lists routes the app does not have"


def test_every_websocket_route_is_covered_by_the_ws_suites(shared: Api) -> None:
    found = {route.path for route in shared.app.routes if isinstance(route, WebSocketRoute)}
    assert found == WS_COVERED


def test_each_guarded_route_declares_the_matrix_permission(shared: Api) -> None:
    for method, path, handler in app_routes(shared):
        declared = {handler.opt.get(PERMISSION)} - {None}
        case = MATRIX.get((method, path))
        if declared:  # ids in the path: the guard asks the domain before the handler runs
            assert case is not None and case.permission in declared, (method, path, declared)


def test_the_allow_list_is_exactly_the_public_routes(shared: Api) -> None:
    for method, path, handler in app_routes(shared):
        assert is_public(handler) == ((method, path) in PUBLIC or is_schema(path)), (method, path)


@pytest.mark.parametrize("key", sorted(set(MATRIX) | ID_LESS))
def test_anonymous_gets_401_and_changes_nothing(shared: Api, key: tuple[str, str]) -> None:
    method, route = key
    world = build_world(shared)
    path, body = (
        MATRIX[key].request(world) if key in MATRIX else (route, {"x": 1} if method != "GET" else None)
    )
    before = shared.snapshot()
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic abc"}):
        response = shared.client.request(method, path, json=body, headers=headers)
        assert response.status_code == 401, (key, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
    assert shared.snapshot() == before


def expected_status(api: Api, world: World, case: Case, role: str) -> int:
    actor = world.users[role].id
    store = api.runtime.core.store
    if case.scope is None:
        perms: frozenset[Permission] = frozenset()
    else:
        group = store.groups[world.group_id]
        if case.scope == "chat":
            chat = store.chats[world.chat_id]
            perms = permissions_for(actor, chat, group if chat.group_id else None)
            visible = P.READ_CHAT
        else:
            perms = permissions_for(actor, None, group)
            visible = P.VIEW_GROUP
        if visible not in perms:
            return 404
        if case.permission not in perms:
            return 403
    return case.outcome(world, role, perms) if case.outcome else case.ok


CASES = [(key, False) for key in sorted(MATRIX)] + [
    (key, True) for key in sorted(MATRIX) if MATRIX[key].scope == "chat"
]


@pytest.mark.parametrize("role", ROLES[1:])
@pytest.mark.parametrize(("key", "standalone"), CASES)
def test_each_role_gets_what_permissions_for_allows(
    shared: Api, key: tuple[str, str], standalone: bool, role: str
) -> None:
    method, _ = key
    case = MATRIX[key]
    world = build_world(shared, standalone=standalone)
    path, body = case.request(world)
    expected = expected_status(shared, world, case, role)
    before = shared.snapshot()
    response = shared.client.request(method, path, json=body, headers=world.users[role].headers)
    assert response.status_code == expected, (key, role, response.text)
    if expected >= 400:
        body_json = response.json()
        assert response.headers["content-type"].startswith("application/problem+json")
        if expected == 403:
            assert body_json["permission"], body_json
        assert shared.snapshot() == before, "a denied request changed state"
    else:
        assert shared.snapshot() != before or method == "GET" or key[1].endswith("read-marker")


def _swap_ids(path: str, world: World) -> str:
    """The same request with ids that exist nowhere."""
    return path.replace(world.chat_id, "01nonexistentchatid000000x").replace(
        world.group_id, "01nonexistentgroup00000000x"
    )


@pytest.mark.parametrize("key", sorted(k for k, case in MATRIX.items() if case.scope is not None))
def test_outsider_404_is_byte_identical_to_a_nonexistent_id(shared: Api, key: tuple[str, str]) -> None:
    method, _ = key
    world = build_world(shared)
    path, body = MATRIX[key].request(world)
    if isinstance(body, dict) and "group_id" in body:
        ghost_body: Any = {**body, "group_id": "01nonexistentgroup00000000x"}
    else:
        ghost_body = body
    outsider = world.users["outsider"].headers
    real = shared.client.request(method, path, json=body, headers=outsider)
    ghost = shared.client.request(method, _swap_ids(path, world), json=ghost_body, headers=outsider)
    assert real.status_code == ghost.status_code == 404
    assert real.content == ghost.content
    assert real.headers["content-type"] == ghost.headers["content-type"]


def test_a_member_cannot_reach_another_chat_with_real_ids(shared: Api) -> None:
    world = build_world(shared)
    member = world.users["member"].headers
    foreign = f"/v1/chats/{world.other_chat_id}"
    for method, path, body in (
        ("GET", foreign, None),
        ("GET", foreign + "/messages", None),
        ("GET", foreign + "/messages/1", None),
        ("POST", foreign + "/messages", {"body": "intrusion"}),
        ("PUT", foreign + "/read-marker", {"seq": 1}),
        ("GET", f"/v1/groups/{world.other_group_id}", None),
    ):
        assert shared.client.request(method, path, json=body, headers=member).status_code == 404
