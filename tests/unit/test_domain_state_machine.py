"""The domain's invariants under any sequence of use-case calls, valid or not (hypothesis stateful).

The machine drives users, groups, roles, chats and messages through `core.service` on the
in-memory core. It keeps its own model of what the state should be and, for every call, works
out from that model which errors are acceptable (none: the call must succeed). After every step
it compares the store with the model and checks the invariants of ARCHITECTURE.md.
"""

from __future__ import annotations

import asyncio
import copy
import unicodedata
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from adapters.memory.kit import MemoryCore, memory_core
from chatcore.application.chats import (
    ChatMemberCommand,
    CreateGroupChatCommand,
    OpenDirectChatCommand,
    RenameChatCommand,
)
from chatcore.application.groups import (
    CreateGroupCommand,
    DefineRoleCommand,
    EditRoleCommand,
    GroupMemberCommand,
    RoleAssignmentCommand,
)
from chatcore.application.messages import (
    EditMessageCommand,
    ListMessagesQuery,
    MarkReadCommand,
    SendMessageCommand,
)
from chatcore.application.profiles import CreateUserCommand, UpdateProfileCommand
from chatcore.domain.errors import Conflict, DomainError, Gone, InvalidInput, NotFound, PermissionDenied
from chatcore.domain.events import ChatCreated, MessagePosted
from chatcore.domain.groups import ADMIN_ROLE_ID, MEMBER_ROLE_ID, OWNER_ROLE_ID
from chatcore.domain.limits import Limits
from chatcore.domain.permissions import (
    ADMIN_RANK,
    ADMIN_ROLE_PERMISSIONS,
    CHAT_OWNER_RANK,
    CHAT_SCOPE,
    IMPLIED_BY_MEMBERSHIP,
    MEMBER_RANK,
    MEMBER_ROLE_PERMISSIONS,
    OWNER_RANK,
    OWNER_ROLE_PERMISSIONS,
    OWNERSHIP_ONLY,
    ROLE_GRANTABLE,
    Permission,
    group_permissions,
    permissions_for,
)

P = Permission

# Small limits, so that the machine reaches every limit within a few steps.
LIMITS = Limits(
    max_message_chars=24,
    max_members_per_chat=4,
    max_members_per_group=5,
    max_chat_title_chars=12,
    max_group_name_chars=12,
    max_display_name_chars=12,
    max_role_name_chars=8,
    max_roles_per_group=5,
    max_client_msg_id_chars=6,
    max_edit_history=2,
)
MAX_USERS = 8
MAX_GROUPS = 3
MAX_CHATS = 7
GHOST_USER = "ghost-user"
GHOST_CHAT = "ghost-chat"
GHOST_GROUP = "ghost-group"
GHOST_ROLE = "ghost-role"
DIRECT_PERMISSIONS = frozenset({P.READ_CHAT, P.SEND_MESSAGES, P.EDIT_OWN_MESSAGES, P.DELETE_OWN_MESSAGES})

# -- inputs: valid most of the time, invalid on purpose the rest -----------------------------------


def mostly[T](good: st.SearchStrategy[T], bad: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    """Valid input four times in five, so that calls get somewhere; invalid input the rest."""
    return st.integers(0, 4).flatmap(lambda i: bad if i == 0 else good)


names = mostly(
    st.text(alphabet="abcXY -\u00e9", min_size=1, max_size=8),
    st.sampled_from(["", "   ", "Eve\r\nBcc: x", "tab\tname", "n" * 13, "\u202eevil", "zw\u200dj"]),
)
bodies = mostly(
    st.one_of(
        st.text(alphabet="ab \n\t\u00e9", min_size=1, max_size=10), st.just("x" * LIMITS.max_message_chars)
    ),
    st.sampled_from(["", " \n ", "x" * (LIMITS.max_message_chars + 1), "nul\x00", "esc\x1b[2J", "bell\x07"]),
)
client_msg_ids = st.sampled_from(
    [None, None, None, "k1", "k2", "", "k" * (LIMITS.max_client_msg_id_chars + 1)]
)
permission_names = mostly(
    st.lists(st.sampled_from(sorted(p.value for p in ROLE_GRANTABLE)), max_size=3, unique=True),
    st.lists(st.sampled_from([p.value for p in Permission] + ["fly"]), min_size=1, max_size=4, unique=True),
)
ranks = mostly(st.sampled_from([1, 10, 50, 99, 100, 101, 500, 999]), st.sampled_from([-1, 0, 1000, 2000]))
# Who acts: a group's or chat's owner, one of its members, or any user at all.
ACTOR_MODES = st.sampled_from(["owner", "member", "member", "anyone"])
# Whom an action targets: a member, an outsider, any user, or an id nobody has.
TARGET_MODES = st.sampled_from(["member", "outsider", "anyone", "ghost"])


def _forbidden(text: str, categories: frozenset[str], allowed: frozenset[str]) -> bool:
    return any(unicodedata.category(ch) in categories and ch not in allowed for ch in text)


def valid_name(raw: str, max_chars: int) -> bool:
    """The specification of a name: one trimmed, non-empty line without control/format characters."""
    value = raw.strip()
    return (
        bool(value)
        and len(value) <= max_chars
        and not _forbidden(value, frozenset({"Cc", "Cf", "Zl", "Zp"}), frozenset({"\u200c", "\u200d"}))
    )


def valid_body(body: str) -> bool:
    return (
        bool(body.strip())
        and len(body) <= LIMITS.max_message_chars
        and not _forbidden(body, frozenset({"Cc"}), frozenset({"\n", "\t"}))
    )


def valid_client_msg_id(value: str | None) -> bool:
    return value is None or (
        0 < len(value) <= LIMITS.max_client_msg_id_chars and value.isascii() and value.isprintable()
    )


# -- expected errors --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One error a call may legitimately fail with, given the model state before it."""

    kind: type[DomainError]
    arg: str | None = None  # NotFound.kind, PermissionDenied.permission or InvalidInput.field

    def matches(self, exc: DomainError) -> bool:
        if self.kind is Conflict:
            return isinstance(exc, Conflict)
        if not isinstance(exc, self.kind):
            return False
        if isinstance(exc, NotFound):
            return self.arg is None or exc.kind == self.arg
        if isinstance(exc, PermissionDenied):
            return self.arg is None or exc.permission == self.arg
        if isinstance(exc, InvalidInput):
            return self.arg is None or exc.field == self.arg
        return True


def nf(kind: str) -> Problem:
    return Problem(NotFound, kind)


def pd(permission: str | None = None) -> Problem:
    return Problem(PermissionDenied, permission)


def inv(field_name: str) -> Problem:
    return Problem(InvalidInput, field_name)


CONFLICT = Problem(Conflict)
GONE = Problem(Gone, None)
RANK = pd("rank")


# -- the model ---------------------------------------------------------------------------------------


@dataclass
class RoleM:
    name: str
    rank: int
    permissions: frozenset[Permission]
    builtin: bool = False


@dataclass
class GroupM:
    owner: str
    members: dict[str, set[str]]  # user -> assigned role ids
    roles: dict[str, RoleM]
    name: str

    def held(self, user: str) -> list[RoleM]:
        if user not in self.members:
            return []
        ids = {MEMBER_ROLE_ID} | self.members[user] | ({OWNER_ROLE_ID} if user == self.owner else set())
        return [self.roles[r] for r in ids if r in self.roles]

    def permissions(self, user: str) -> frozenset[Permission]:
        if user not in self.members:
            return frozenset()
        granted = {P.VIEW_GROUP}
        for role in self.held(user):
            granted |= role.permissions
        return frozenset(granted)

    def rank(self, user: str) -> int:
        return max((r.rank for r in self.held(user)), default=-1)


@dataclass
class ChatM:
    direct: bool
    owner: str | None
    group: str | None
    members: set[str]
    title: str | None
    last_seq: int = 0


@dataclass
class MessageM:
    author: str
    body: str
    reply_to: int | None
    client_msg_id: str | None
    history: list[str] = field(default_factory=list)
    deleted: bool = False


def builtin_roles_model() -> dict[str, RoleM]:
    return {
        OWNER_ROLE_ID: RoleM("owner", OWNER_RANK, OWNER_ROLE_PERMISSIONS, builtin=True),
        ADMIN_ROLE_ID: RoleM("admin", ADMIN_RANK, ADMIN_ROLE_PERMISSIONS, builtin=True),
        MEMBER_ROLE_ID: RoleM("member", MEMBER_RANK, MEMBER_ROLE_PERMISSIONS, builtin=True),
    }


class DomainMachine(RuleBasedStateMachine):
    users = Bundle("users")
    groups = Bundle("groups")
    chats = Bundle("chats")
    messages = Bundle("messages")
    anyone = st.one_of(users, st.just(GHOST_USER))  # an unknown user id now and then
    actors = st.tuples(ACTOR_MODES, users)
    targets = st.tuples(TARGET_MODES, users)

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.core: MemoryCore = memory_core(limits=LIMITS)
        self.m_users: dict[str, str] = {}  # id -> display name
        self.m_groups: dict[str, GroupM] = {}
        self.m_chats: dict[str, ChatM] = {}
        self.m_messages: dict[tuple[str, int], MessageM] = {}
        self.m_markers: dict[tuple[str, str], int] = {}
        self.emails = 0

    def teardown(self) -> None:
        self.loop.close()

    # -- running calls -------------------------------------------------------------------------

    def run[T](self, coro: Awaitable[T]) -> T:
        return self.loop.run_until_complete(coro)

    def snapshot(self) -> tuple[Any, ...]:
        s = self.core.store
        tables = (s.users, s.credentials, s.groups, s.chats, s.messages, s.read_markers)
        return (copy.deepcopy(tables), len(s.log), dict(s.stream_seqs))

    def call[T](self, make: Callable[[], Awaitable[T]], problems: Iterable[Problem]) -> T | None:
        """Run one use case. With no problems expected it must succeed; otherwise it must fail with
        one of them, and a refused call must leave the store exactly as it was."""
        problems = list(problems)
        before = self.snapshot()
        refused: DomainError | None = None
        try:
            result = self.run(make())
        except DomainError as exc:
            refused, result = exc, None
        if refused is None:
            assert not problems, f"accepted although one of {problems} was expected"
            return result
        assert problems, f"refused although nothing was wrong: {refused!r}"
        assert any(p.matches(refused) for p in problems), f"{refused!r} is none of {problems}"
        assert self.snapshot() == before, f"refused call ({refused!r}) changed the state"
        return None

    # -- model queries -------------------------------------------------------------------------

    def chat_group(self, chat: ChatM) -> GroupM | None:
        return self.m_groups[chat.group] if chat.group is not None else None

    def chat_perms(self, user: str, chat_id: str) -> frozenset[Permission]:
        """What the rules say `user` may do in the chat, from the model alone."""
        chat = self.m_chats[chat_id]
        if user not in chat.members:
            return frozenset()
        if chat.direct:
            return DIRECT_PERMISSIONS
        group = self.chat_group(chat)
        if group is None:
            granted = set(DIRECT_PERMISSIONS)
        else:
            granted = set(group.permissions(user) & CHAT_SCOPE) | {P.READ_CHAT}
        if chat.owner == user:
            granted |= CHAT_SCOPE
        return frozenset(granted)

    def chat_rank(self, user: str, chat_id: str) -> int:
        chat = self.m_chats[chat_id]
        if user not in chat.members:
            return -1
        if chat.owner == user:
            return CHAT_OWNER_RANK
        group = self.chat_group(chat)
        return MEMBER_RANK if group is None else group.rank(user)

    def chat_gate(self, actor: str, chat_id: str) -> list[Problem] | None:
        """The answer for a missing chat or an outsider: the same NotFound either way."""
        if chat_id not in self.m_chats or actor not in self.m_chats[chat_id].members:
            return [nf("chat")]
        return None

    def group_gate(self, actor: str, group_id: str) -> list[Problem] | None:
        if group_id not in self.m_groups or actor not in self.m_groups[group_id].members:
            return [nf("group")]
        return None

    def _among(self, user: str, pool: set[str]) -> str:
        """A member of `pool` chosen by `user` (drawn from the bundle), so that shrinking stays simple."""
        if user in pool or not pool:
            return user
        ordered = sorted(pool)
        return ordered[sorted(self.m_users).index(user) % len(ordered)]

    def resolve_actor(self, pick: tuple[str, str], members: set[str], owner: str | None) -> str:
        mode, user = pick
        if mode == "owner" and owner is not None:
            return owner
        if mode == "member":  # the owner has a mode of its own
            return self._among(user, members - {owner} or members)
        return user

    def resolve_target(self, pick: tuple[str, str], members: set[str], actor: str) -> str:
        mode, user = pick
        if mode == "member":
            return self._among(user, members - {actor} or members)
        if mode == "outsider":
            return self._among(user, set(self.m_users) - members)
        return GHOST_USER if mode == "ghost" else user

    def group_actor(self, pick: tuple[str, str], group: str) -> str:
        g = self.m_groups.get(group)
        return self.resolve_actor(pick, set(g.members), g.owner) if g else pick[1]

    def group_target(self, pick: tuple[str, str], group: str, actor: str) -> str:
        g = self.m_groups.get(group)
        return self.resolve_target(pick, set(g.members) if g else set(), actor)

    def chat_actor(self, pick: tuple[str, str], chat: str) -> str:
        c = self.m_chats.get(chat)
        return self.resolve_actor(pick, c.members, c.owner) if c else pick[1]

    def chat_target(self, pick: tuple[str, str], chat: str, actor: str) -> str:
        c = self.m_chats.get(chat)
        return self.resolve_target(pick, c.members if c else set(), actor)

    def drop_from_group_chats(self, group_id: str, user: str) -> None:
        heir = self.m_groups[group_id].owner
        for chat in self.m_chats.values():
            if chat.group == group_id and user in chat.members:
                if chat.owner == user:
                    chat.members.add(heir)
                    chat.owner = heir
                chat.members.discard(user)

    # -- users ---------------------------------------------------------------------------------

    def _create_user(self, name: str) -> str | None:
        self.emails += 1
        email = f"user{self.emails}@example.com"
        problems = [] if valid_name(name, LIMITS.max_display_name_chars) else [inv("display_name")]
        view = self.call(
            lambda: self.core.service.create_user(CreateUserCommand(email=email, display_name=name)), problems
        )
        if view is None:
            return None
        self.m_users[view.id] = name.strip()
        return view.id

    @initialize(target=users)
    def first_users(self) -> Any:
        return multiple(*(self._create_user(n) for n in ("Ann", "Bob", "Cy")))

    @initialize(target=groups)
    def a_group_with_an_admin(self) -> Any:
        """Rank rules need an admin beside plain members; random growth rarely builds one."""
        owner, admin, member = (self._create_user(n) for n in ("Dee", "Eve", "Fay"))
        assert owner is not None and admin is not None and member is not None
        group = self.create_group(owner, "Crew")
        self._add_group_member(owner, group, admin)
        self._add_group_member(owner, group, member)
        self._assign_or_unassign(owner, group, admin, ADMIN_ROLE_ID, True)
        return group

    @precondition(lambda self: len(self.m_users) < MAX_USERS)
    @rule(target=users, name=names)
    def create_user(self, name: str) -> Any:
        user = self._create_user(name)
        return multiple() if user is None else user

    @rule(actor=users, name=names)
    def update_profile(self, actor: str, name: str) -> None:
        problems = [] if valid_name(name, LIMITS.max_display_name_chars) else [inv("display_name")]
        view = self.call(
            lambda: self.core.service.update_my_profile(UpdateProfileCommand(actor=actor, display_name=name)),
            problems,
        )
        if view is not None:
            self.m_users[actor] = name.strip()

    # -- groups --------------------------------------------------------------------------------

    @precondition(lambda self: len(self.m_groups) < MAX_GROUPS)
    @rule(target=groups, actor=users, name=names)
    def create_group(self, actor: str, name: str) -> Any:
        problems = [] if valid_name(name, LIMITS.max_group_name_chars) else [inv("name")]
        view = self.call(
            lambda: self.core.service.create_group(CreateGroupCommand(actor=actor, name=name)), problems
        )
        if view is None:
            return multiple()
        self.m_groups[view.id] = GroupM(actor, {actor: set()}, builtin_roles_model(), name.strip())
        return view.id

    def group_member_problems(self, actor: str, group_id: str, permission: Permission) -> list[Problem]:
        gate = self.group_gate(actor, group_id)
        if gate:
            return gate
        return [] if permission in self.m_groups[group_id].permissions(actor) else [pd(permission.value)]

    @rule(by=actors, group=groups, whom=targets)
    def add_group_member(self, by: tuple[str, str], group: str, whom: tuple[str, str]) -> None:
        actor = self.group_actor(by, group)
        self._add_group_member(actor, group, self.group_target(whom, group, actor))

    @rule(group=groups, who=users)
    def owner_grows_group(self, group: str, who: str) -> None:
        """The common case: the owner adds someone who is not in the group yet."""
        g = self.m_groups.get(group)
        if g is not None:
            self._add_group_member(g.owner, group, self._among(who, set(self.m_users) - set(g.members)))

    def _add_group_member(self, actor: str, group: str, who: str) -> None:
        problems = self.group_member_problems(actor, group, P.ADD_GROUP_MEMBERS)
        if not problems:
            g = self.m_groups[group]
            if who not in self.m_users:
                problems = [inv("user_id")]
            elif who in g.members:
                problems = [CONFLICT]
            elif len(g.members) >= LIMITS.max_members_per_group:
                problems = [inv("members")]
        cmd = GroupMemberCommand(actor=actor, group_id=group, user_id=who)
        if self.call(lambda: self.core.service.add_group_member(cmd), problems) is not None:
            self.m_groups[group].members[who] = set()

    @rule(by=actors, group=groups, whom=targets)
    def remove_group_member(self, by: tuple[str, str], group: str, whom: tuple[str, str]) -> None:
        actor = self.group_actor(by, group)
        self._remove_group_member(actor, group, self.group_target(whom, group, actor))

    @precondition(lambda self: any(len(g.members) > 1 for g in self.m_groups.values()))
    @rule(data=st.data(), by_owner=st.booleans())
    def someone_removes_from_group(self, data: st.DataObject, by_owner: bool) -> None:
        """A group with company: its owner (or another member) removes someone, chats included."""
        group = data.draw(
            st.sampled_from(sorted(k for k, g in self.m_groups.items() if len(g.members) > 1)), label="group"
        )
        g = self.m_groups[group]
        actor = g.owner if by_owner else data.draw(st.sampled_from(sorted(g.members)), label="actor")
        who = data.draw(st.sampled_from(sorted(set(g.members) - {actor})), label="who")
        self._remove_group_member(actor, group, who)

    def _remove_group_member(self, actor: str, group: str, who: str) -> None:
        problems = self.group_member_problems(actor, group, P.REMOVE_GROUP_MEMBERS)
        if not problems:
            g = self.m_groups[group]
            if who not in g.members:
                problems = [nf("member")]
            elif g.rank(who) >= g.rank(actor):
                problems = [RANK]
        cmd = GroupMemberCommand(actor=actor, group_id=group, user_id=who)
        if self.call(lambda: self.core.service.remove_group_member(cmd), problems) is not None:
            self.drop_from_group_chats(group, who)
            del self.m_groups[group].members[who]

    @rule(by=actors, group=groups)
    def leave_group(self, by: tuple[str, str], group: str) -> None:
        actor = self.group_actor(by, group)
        problems = self.group_gate(actor, group) or []
        if not problems and self.m_groups[group].owner == actor:
            problems = [CONFLICT]
        self.call(lambda: self.core.service.leave_group(actor, group), problems)
        if not problems:
            self.drop_from_group_chats(group, actor)
            del self.m_groups[group].members[actor]

    @rule(by=actors, group=groups, whom=targets)
    def transfer_group_ownership(self, by: tuple[str, str], group: str, whom: tuple[str, str]) -> None:
        actor = self.group_actor(by, group)
        who = self.group_target(whom, group, actor)
        problems = self.group_member_problems(actor, group, P.TRANSFER_GROUP_OWNERSHIP)
        if not problems:
            if who == actor:
                problems = [inv("user_id")]
            elif who not in self.m_groups[group].members:
                problems = [nf("member")]
        cmd = GroupMemberCommand(actor=actor, group_id=group, user_id=who)
        if self.call(lambda: self.core.service.transfer_group_ownership(cmd), problems) is not None:
            g = self.m_groups[group]
            g.members[actor].add(ADMIN_ROLE_ID)
            g.owner = who

    @precondition(lambda self: bool(self.m_groups))
    @rule(by=actors, group=groups)
    def delete_group(self, by: tuple[str, str], group: str) -> None:
        actor = self.group_actor(by, group)
        problems = self.group_member_problems(actor, group, P.DELETE_GROUP)
        self.call(lambda: self.core.service.delete_group(actor, group), problems)
        if problems:
            return
        for chat in self.m_chats.values():
            if chat.group == group:
                chat.group = None
        del self.m_groups[group]

    # -- roles ---------------------------------------------------------------------------------

    def role_rules_problems(
        self, g: GroupM, actor: str, rank: int, granted: frozenset[Permission]
    ) -> list[Problem]:
        """Nobody creates or hands out a role at or above their rank, or one granting what they lack."""
        problems = []
        if rank >= g.rank(actor):
            problems.append(RANK)
        lacking = granted - g.permissions(actor)
        if lacking:
            problems.append(pd(min(lacking).value))
        return problems

    @rule(by=actors, group=groups, name=names, rank=ranks, perms=permission_names)
    def define_role(self, by: tuple[str, str], group: str, name: str, rank: int, perms: list[str]) -> None:
        actor = self.group_actor(by, group)
        cmd = DefineRoleCommand(actor=actor, group_id=group, name=name, rank=rank, permissions=perms)
        if "fly" in perms:  # an unknown permission is bad input, whoever asks about whichever group
            problems = [inv("permissions")]
        else:
            problems = self.group_member_problems(actor, group, P.MANAGE_ROLES)
        wanted = frozenset(Permission(p) for p in perms if p != "fly")
        if not problems:
            g = self.m_groups[group]
            if len(g.roles) >= LIMITS.max_roles_per_group:
                problems.append(inv("roles"))
            if not valid_name(name, LIMITS.max_role_name_chars):
                problems.append(inv("name"))
            elif any(r.name.casefold() == name.strip().casefold() for r in g.roles.values()):
                problems.append(CONFLICT)
            if not MEMBER_RANK < rank < OWNER_RANK:
                problems.append(inv("rank"))
            if not wanted <= ROLE_GRANTABLE:
                problems.append(inv("permissions"))
            problems += self.role_rules_problems(g, actor, rank, wanted)
        view = self.call(lambda: self.core.service.define_role(cmd), problems)
        if view is not None:
            g = self.m_groups[group]
            (role_id,) = {r.id for r in view.roles} - set(g.roles)
            g.roles[role_id] = RoleM(name.strip(), rank, wanted)

    def pick_role(self, data: st.DataObject, group: str) -> str:
        """Mostly a custom role of the group, else a built-in one or an id the group lacks."""
        roles = self.m_groups[group].roles if group in self.m_groups else {}
        custom = sorted(r for r, x in roles.items() if not x.builtin)
        others = [*sorted(r for r, x in roles.items() if x.builtin), GHOST_ROLE]
        return data.draw(mostly(st.sampled_from(custom or others), st.sampled_from(others)), label="role_id")

    @rule(
        by=actors,
        group=groups,
        data=st.data(),
        name=mostly(st.none(), names),
        rank=mostly(st.none(), ranks),
        perms=st.one_of(st.none(), permission_names),
    )
    def edit_role(
        self,
        by: tuple[str, str],
        group: str,
        data: st.DataObject,
        name: str | None,
        rank: int | None,
        perms: list[str] | None,
    ) -> None:
        actor = self.group_actor(by, group)
        role_id = self.pick_role(data, group)
        cmd = EditRoleCommand(
            actor=actor, group_id=group, role_id=role_id, name=name, rank=rank, permissions=perms
        )
        if perms is not None and "fly" in perms:
            problems = [inv("permissions")]
        else:
            problems = self.group_member_problems(actor, group, P.MANAGE_ROLES)
        if not problems:
            g = self.m_groups[group]
            role = g.roles.get(role_id)
            if role is None:
                problems = [nf("role")]
            elif role.rank >= g.rank(actor):
                problems = [RANK]
            else:
                new_name = role.name if name is None else name
                new_rank = role.rank if rank is None else rank
                new_perms = role.permissions if perms is None else frozenset(Permission(p) for p in perms)
                if role.builtin:
                    if new_name != role.name:
                        problems.append(inv("name"))
                    elif new_rank != role.rank:
                        problems.append(inv("rank"))
                else:
                    if not valid_name(new_name, LIMITS.max_role_name_chars):
                        problems.append(inv("name"))
                    if not MEMBER_RANK < new_rank < OWNER_RANK:
                        problems.append(inv("rank"))
                clash = new_name.strip().casefold()
                if any(r.name.casefold() == clash and r is not role for r in g.roles.values()):
                    problems.append(CONFLICT)
                if not new_perms <= ROLE_GRANTABLE:
                    problems.append(inv("permissions"))
                problems += self.role_rules_problems(g, actor, new_rank, new_perms - role.permissions)
        self.call(lambda: self.core.service.edit_role(cmd), problems)
        if not problems:
            role = self.m_groups[group].roles[role_id]
            role.name = role.name if role.builtin else new_name.strip()
            role.rank, role.permissions = new_rank, new_perms

    @rule(by=actors, group=groups, data=st.data())
    def delete_role(self, by: tuple[str, str], group: str, data: st.DataObject) -> None:
        actor = self.group_actor(by, group)
        role_id = self.pick_role(data, group)
        problems = self.group_member_problems(actor, group, P.MANAGE_ROLES)
        if not problems:
            g = self.m_groups[group]
            role = g.roles.get(role_id)
            if role is None:
                problems = [nf("role")]
            elif role.builtin:
                problems = [CONFLICT]
            elif role.rank >= g.rank(actor):
                problems = [RANK]
        self.call(lambda: self.core.service.delete_role(actor, group, role_id), problems)
        if not problems:
            g = self.m_groups[group]
            del g.roles[role_id]
            for held in g.members.values():
                held.discard(role_id)

    @rule(by=actors, group=groups, whom=targets, data=st.data(), assign=st.booleans())
    def assign_or_unassign_role(
        self, by: tuple[str, str], group: str, whom: tuple[str, str], data: st.DataObject, assign: bool
    ) -> None:
        actor = self.group_actor(by, group)
        who = self.group_target(whom, group, actor)
        self._assign_or_unassign(actor, group, who, self.pick_role(data, group), assign)

    @precondition(lambda self: any(len(g.members) > 1 for g in self.m_groups.values()))
    @rule(data=st.data(), assign=st.booleans(), by_owner=st.booleans())
    def someone_hands_out_roles(self, data: st.DataObject, assign: bool, by_owner: bool) -> None:
        """A group's owner (or another member, an admin maybe) gives or takes back a member's role."""
        group = data.draw(
            st.sampled_from(sorted(k for k, g in self.m_groups.items() if len(g.members) > 1)), label="group"
        )
        g = self.m_groups[group]
        ranked = sorted(g.members, key=lambda u: (-g.rank(u), u))
        actor = g.owner if by_owner else data.draw(st.sampled_from(ranked[:-1]), label="actor")
        below = [u for u in ranked if g.rank(u) < g.rank(actor)]  # valid targets, mostly
        who = data.draw(mostly(st.sampled_from(below or ranked), st.sampled_from(ranked)), label="who")
        role_id = data.draw(st.sampled_from(sorted(set(g.roles) - {OWNER_ROLE_ID, MEMBER_ROLE_ID})))
        self._assign_or_unassign(actor, group, who, role_id, assign)

    def _assign_or_unassign(self, actor: str, group: str, who: str, role_id: str, assign: bool) -> None:
        problems = self.group_member_problems(actor, group, P.MANAGE_ROLES)
        if not problems:
            g = self.m_groups[group]
            role = g.roles.get(role_id)
            if who not in g.members:
                problems.append(nf("member"))
            if role is None:
                problems.append(nf("role"))
            if problems:
                pass
            elif role_id in (OWNER_ROLE_ID, MEMBER_ROLE_ID):
                problems.append(inv("role_id"))
            else:
                assert role is not None
                if g.rank(who) >= g.rank(actor):
                    problems.append(RANK)
                problems += self.role_rules_problems(g, actor, role.rank, role.permissions)
                if (role_id in g.members[who]) == assign:
                    problems.append(CONFLICT)
        cmd = RoleAssignmentCommand(actor=actor, group_id=group, user_id=who, role_id=role_id)
        use_case = self.core.service.assign_role if assign else self.core.service.unassign_role
        if self.call(lambda: use_case(cmd), problems) is not None:
            held = self.m_groups[group].members[who]
            held.add(role_id) if assign else held.discard(role_id)

    # -- chats ---------------------------------------------------------------------------------

    @precondition(
        lambda self: sum(c.direct for c in self.m_chats.values()) < 3 and len(self.m_chats) < MAX_CHATS
    )
    @rule(target=chats, actor=users, other=st.one_of(users, st.just(GHOST_USER)))
    def open_direct_chat(self, actor: str, other: str) -> Any:
        existing = next(
            (
                cid
                for cid, c in self.m_chats.items()
                if c.direct and c.members == {actor, other} and actor != other
            ),
            None,
        )
        problems = []
        if existing is None and (other not in self.m_users or other == actor):
            problems = [inv("user_id")]
        cmd = OpenDirectChatCommand(actor=actor, user_id=other)
        result = self.call(lambda: self.core.service.open_direct_chat(cmd), problems)
        if result is None:
            return multiple()
        view, created = result
        assert created == (existing is None)
        if existing is not None:
            assert view.id == existing
            return multiple()
        assert view.owner_id is None
        self.m_chats[view.id] = ChatM(True, None, None, {actor, other}, None)
        return view.id

    @precondition(lambda self: len(self.m_chats) < MAX_CHATS)
    @rule(
        target=chats,
        actor=users,
        members=st.lists(anyone, max_size=5),
        group=st.one_of(st.none(), groups, st.just(GHOST_GROUP)),
        title=names,
    )
    def create_group_chat(self, actor: str, members: list[str], group: str | None, title: str) -> Any:
        if group in self.m_groups and (not members or members[0] != GHOST_USER):
            # Mostly by and with the group's own members, so that group chats get created.
            pool = set(self.m_groups[group].members)
            actor = self._among(actor, pool)
            members = [self._among(m, pool) if m != GHOST_USER else m for m in members]
        everyone = dict.fromkeys([actor, *members])
        problems = []
        if len(members) > LIMITS.max_members_per_chat:
            problems = [inv("member_ids")]
        elif group is not None and (gate := self.group_member_problems(actor, group, P.CREATE_CHATS)):
            problems = gate
        else:
            if any(m not in self.m_users for m in members):
                problems.append(inv("member_ids"))
            if group is not None and any(m not in self.m_groups[group].members for m in members):
                problems.append(inv("member_ids"))
            if len(everyone) > LIMITS.max_members_per_chat:
                problems.append(inv("member_ids"))
            if not valid_name(title, LIMITS.max_chat_title_chars):
                problems.append(inv("title"))
        cmd = CreateGroupChatCommand(actor=actor, title=title, member_ids=members, group_id=group)
        view = self.call(lambda: self.core.service.create_group_chat(cmd), problems)
        if view is None:
            return multiple()
        self.m_chats[view.id] = ChatM(False, actor, group, set(everyone), title.strip())
        return view.id

    def chat_problems(self, actor: str, chat_id: str, permission: Permission) -> list[Problem]:
        gate = self.chat_gate(actor, chat_id)
        if gate:
            return gate
        return [] if permission in self.chat_perms(actor, chat_id) else [pd(permission.value)]

    @rule(by=actors, chat=chats, title=names)
    def rename_chat(self, by: tuple[str, str], chat: str, title: str) -> None:
        actor = self.chat_actor(by, chat)
        problems = self.chat_problems(actor, chat, P.EDIT_CHAT_INFO)
        if not problems and not valid_name(title, LIMITS.max_chat_title_chars):
            problems = [inv("title")]
        cmd = RenameChatCommand(actor=actor, chat_id=chat, title=title)
        if self.call(lambda: self.core.service.rename_chat(cmd), problems) is not None:
            self.m_chats[chat].title = title.strip()

    @rule(by=actors, chat=chats, whom=targets)
    def add_chat_member(self, by: tuple[str, str], chat: str, whom: tuple[str, str]) -> None:
        actor = self.chat_actor(by, chat)
        self._add_chat_member(actor, chat, self.chat_target(whom, chat, actor))

    @rule(chat=chats, who=users)
    def owner_grows_chat(self, chat: str, who: str) -> None:
        """The common case: a group chat's owner adds someone who may join it."""
        c = self.m_chats[chat]
        if c.owner is not None:
            group = self.chat_group(c)
            eligible = set(group.members) if group is not None else set(self.m_users)
            self._add_chat_member(c.owner, chat, self._among(who, eligible - c.members))

    def _add_chat_member(self, actor: str, chat: str, who: str) -> None:
        problems = self.chat_problems(actor, chat, P.ADD_CHAT_MEMBERS)
        if not problems:
            c = self.m_chats[chat]
            group = self.chat_group(c)
            if who not in self.m_users:
                problems = [inv("user_id")]
            elif who in c.members:
                problems = [CONFLICT]
            elif group is not None and who not in group.members:
                problems = [inv("user_id")]
            elif len(c.members) >= LIMITS.max_members_per_chat:
                problems = [inv("members")]
        cmd = ChatMemberCommand(actor=actor, chat_id=chat, user_id=who)
        if self.call(lambda: self.core.service.add_chat_member(cmd), problems) is not None:
            self.m_chats[chat].members.add(who)

    @rule(by=actors, chat=chats, whom=targets)
    def remove_chat_member(self, by: tuple[str, str], chat: str, whom: tuple[str, str]) -> None:
        actor = self.chat_actor(by, chat)
        self._remove_chat_member(actor, chat, self.chat_target(whom, chat, actor))

    @precondition(lambda self: any(c.owner and len(c.members) > 1 for c in self.m_chats.values()))
    @rule(data=st.data(), by_owner=st.booleans())
    def someone_removes_from_group_chat(self, data: st.DataObject, by_owner: bool) -> None:
        """A group chat with company: its owner (or another member) removes someone from it."""
        chat = data.draw(
            st.sampled_from(sorted(k for k, c in self.m_chats.items() if c.owner and len(c.members) > 1)),
            label="chat",
        )
        c = self.m_chats[chat]
        assert c.owner is not None
        actor = c.owner if by_owner else data.draw(st.sampled_from(sorted(c.members)), label="actor")
        who = data.draw(st.sampled_from(sorted(c.members - {actor})), label="who")
        self._remove_chat_member(actor, chat, who)

    def _remove_chat_member(self, actor: str, chat: str, who: str) -> None:
        problems = self.chat_problems(actor, chat, P.REMOVE_CHAT_MEMBERS)
        if not problems:
            if who not in self.m_chats[chat].members:
                problems = [nf("member")]
            elif self.chat_rank(who, chat) >= self.chat_rank(actor, chat):
                problems = [RANK]
        cmd = ChatMemberCommand(actor=actor, chat_id=chat, user_id=who)
        if self.call(lambda: self.core.service.remove_chat_member(cmd), problems) is not None:
            self.m_chats[chat].members.discard(who)

    @rule(by=actors, chat=chats)
    def leave_chat(self, by: tuple[str, str], chat: str) -> None:
        actor = self.chat_actor(by, chat)
        problems = self.chat_gate(actor, chat) or []
        if not problems:
            c = self.m_chats[chat]
            if c.direct or c.owner == actor:  # a direct chat cannot be left; an owner transfers first
                problems = [CONFLICT]
        self.call(lambda: self.core.service.leave_chat(actor, chat), problems)
        if not problems:
            self.m_chats[chat].members.discard(actor)

    @rule(by=actors, chat=chats, whom=targets)
    def transfer_chat_ownership(self, by: tuple[str, str], chat: str, whom: tuple[str, str]) -> None:
        actor = self.chat_actor(by, chat)
        who = self.chat_target(whom, chat, actor)
        problems = self.chat_problems(actor, chat, P.TRANSFER_CHAT_OWNERSHIP)
        if not problems:
            if who == actor:
                problems = [inv("user_id")]
            elif who not in self.m_chats[chat].members:
                problems = [nf("member")]
        cmd = ChatMemberCommand(actor=actor, chat_id=chat, user_id=who)
        if self.call(lambda: self.core.service.transfer_chat_ownership(cmd), problems) is not None:
            self.m_chats[chat].owner = who

    # -- messages ------------------------------------------------------------------------------

    def pick_member(self, data: st.DataObject, chat: str, insider: bool) -> str:
        """Mostly a member (so that messages flow), sometimes anyone (so that outsiders try too)."""
        members = sorted(self.m_chats[chat].members) if chat in self.m_chats else []
        pool = members if insider and members else sorted(self.m_users)
        return data.draw(st.sampled_from(pool), label="actor")

    def _send(self, actor: str, chat: str, body: str, reply_to: int | None, client_msg_id: str | None) -> Any:
        problems = self.chat_gate(actor, chat) or []
        earlier = None
        if not problems and client_msg_id is not None:
            earlier = next(
                (
                    (key, m)
                    for key, m in self.m_messages.items()
                    if key[0] == chat and m.author == actor and m.client_msg_id == client_msg_id
                ),
                None,
            )
        if problems:
            pass
        elif earlier is not None:
            _, m = earlier
            if not (m.body == body and m.reply_to == reply_to):
                problems = [inv("client_msg_id")]
        else:
            c = self.m_chats[chat]
            if P.SEND_MESSAGES not in self.chat_perms(actor, chat):
                problems.append(pd(P.SEND_MESSAGES.value))
            if not valid_body(body):
                problems.append(inv("body"))
            if reply_to is not None and not 1 <= reply_to <= c.last_seq:
                problems.append(inv("reply_to"))
            if not valid_client_msg_id(client_msg_id):
                problems.append(inv("client_msg_id"))
        cmd = SendMessageCommand(
            actor=actor, chat_id=chat, body=body, reply_to=reply_to, client_msg_id=client_msg_id
        )
        before_log = len(self.core.store.log)
        result = self.call(lambda: self.core.service.send_message(cmd), problems)
        if result is None:
            return multiple()
        if earlier is not None:  # a retry: the original comes back and nothing is stored
            assert not result.created
            assert result.message.seq == earlier[0][1]
            assert len(self.core.store.log) == before_log
            return multiple()
        assert result.created
        c = self.m_chats[chat]
        c.last_seq += 1
        assert result.message.seq == c.last_seq
        self.m_messages[(chat, c.last_seq)] = MessageM(actor, body, reply_to, client_msg_id)
        return (chat, c.last_seq)

    @rule(
        target=messages,
        chat=chats,
        data=st.data(),
        insider=st.booleans(),
        body=bodies,
        reply_to=st.one_of(st.none(), st.integers(0, 4)),
        client_msg_id=client_msg_ids,
    )
    def send_message(
        self,
        chat: str,
        data: st.DataObject,
        insider: bool,
        body: str,
        reply_to: int | None,
        client_msg_id: str | None,
    ) -> Any:
        actor = self.pick_member(data, chat, insider)
        return self._send(actor, chat, body, reply_to, client_msg_id)

    @rule(
        target=messages,
        chat=chats,
        data=st.data(),
        body=st.text(alphabet="xyz \n", min_size=1, max_size=6).filter(str.strip),
    )
    def member_chats(self, chat: str, data: st.DataObject, body: str) -> Any:
        """The common case: a member sends a plain message."""
        return self._send(self.pick_member(data, chat, insider=True), chat, body, None, None)

    @rule(target=messages, message=messages, same=st.booleans())
    def retry_send(self, message: tuple[str, int], same: bool) -> Any:
        """A client resends a message it sent: with its client_msg_id that is the same message."""
        m = self.m_messages[message]
        body = m.body if same else m.body + "!"
        return self._send(m.author, message[0], body, m.reply_to, m.client_msg_id)

    def message_problems(self, actor: str, chat: str, seq: int) -> list[Problem]:
        gate = self.chat_gate(actor, chat)
        if gate:
            return gate
        m = self.m_messages.get((chat, seq))
        if m is None:
            return [nf("message")]
        return [GONE] if m.deleted else []

    def pick_target(
        self, data: st.DataObject, message: tuple[str, int], wrong_chat: str | None
    ) -> tuple[str, str, int]:
        chat = message[0] if wrong_chat is None else wrong_chat
        if data.draw(st.booleans(), label="as the author"):
            return self.m_messages[message].author, chat, message[1]
        actor = self.pick_member(data, chat, insider=data.draw(st.booleans(), label="insider"))
        return actor, chat, message[1]

    @rule(
        message=messages,
        data=st.data(),
        wrong_chat=st.one_of(st.none(), st.none(), chats, st.just(GHOST_CHAT)),
        body=bodies,
    )
    def edit_message(
        self, message: tuple[str, int], data: st.DataObject, wrong_chat: str | None, body: str
    ) -> None:
        actor, chat, seq = self.pick_target(data, message, wrong_chat)
        problems = self.message_problems(actor, chat, seq)
        if not problems:
            m = self.m_messages[(chat, seq)]
            if actor != m.author or P.EDIT_OWN_MESSAGES not in self.chat_perms(actor, chat):
                problems.append(pd(P.EDIT_OWN_MESSAGES.value))
            if not valid_body(body):
                problems.append(inv("body"))
        cmd = EditMessageCommand(actor=actor, chat_id=chat, seq=seq, body=body)
        if self.call(lambda: self.core.service.edit_message(cmd), problems) is not None:
            m = self.m_messages[(chat, seq)]
            m.history = [*m.history, m.body][-LIMITS.max_edit_history :]
            m.body = body

    @rule(message=messages, data=st.data(), wrong_chat=st.one_of(st.none(), st.none(), chats))
    def delete_message(self, message: tuple[str, int], data: st.DataObject, wrong_chat: str | None) -> None:
        actor, chat, seq = self.pick_target(data, message, wrong_chat)
        problems = self.message_problems(actor, chat, seq)
        if not problems:
            granted = self.chat_perms(actor, chat)
            own = actor == self.m_messages[(chat, seq)].author and P.DELETE_OWN_MESSAGES in granted
            if not own and P.DELETE_ANY_MESSAGE not in granted:
                problems = [pd(P.DELETE_ANY_MESSAGE.value)]
        self.call(lambda: self.core.service.delete_message(actor, chat, seq), problems)
        if not problems:
            m = self.m_messages[(chat, seq)]
            m.body, m.history, m.deleted = "", [], True

    @rule(message=messages, data=st.data())
    def read_message(self, message: tuple[str, int], data: st.DataObject) -> None:
        actor, chat, seq = self.pick_target(data, message, None)
        problems = self.message_problems(actor, chat, seq)
        view = self.call(lambda: self.core.service.get_message(actor, chat, seq), problems)
        history = self.call(lambda: self.core.service.get_edit_history(actor, chat, seq), problems)
        if view is not None and history is not None:
            m = self.m_messages[(chat, seq)]
            assert (view.author_id, view.body, view.reply_to) == (m.author, m.body, m.reply_to)
            assert [e.body for e in history] == m.history

    @rule(chat=chats, data=st.data(), ahead=st.integers(-1, 1))
    def mark_read(self, chat: str, data: st.DataObject, ahead: int) -> None:
        actor = self.pick_member(data, chat, insider=data.draw(st.booleans(), label="insider"))
        last = self.m_chats[chat].last_seq
        seq = data.draw(st.integers(0, last), label="seq") if ahead == 0 else (-1 if ahead < 0 else last + 1)
        problems = self.chat_gate(actor, chat) or []
        if not problems and not 0 <= seq <= self.m_chats[chat].last_seq:
            problems = [inv("seq")]
        view = self.call(
            lambda: self.core.service.mark_read(MarkReadCommand(actor=actor, chat_id=chat, seq=seq)), problems
        )
        if view is not None:
            key = (chat, actor)
            if seq > self.m_markers.get(key, 0):  # markers only move forward
                self.m_markers[key] = seq
            assert view.seq == self.m_markers.get(key, 0)
            assert view.unread_count == self.expected_unread(chat, actor)

    @rule(chat=chats, data=st.data(), limit=st.integers(1, 3))
    def page_through_history(self, chat: str, data: st.DataObject, limit: int) -> None:
        """Paging forward then back sees every seq once, in order, with the model's bodies."""
        actor = self.pick_member(data, chat, insider=True)
        problems = self.chat_gate(actor, chat) or []
        seen: list[int] = []
        after = 0
        while True:
            query = ListMessagesQuery(actor=actor, chat_id=chat, after=after, limit=limit)
            page = self.call(lambda q=query: self.core.service.list_messages(q), problems)
            if page is None:
                return
            for view in page.messages:
                m = self.m_messages[(chat, view.seq)]
                assert (view.author_id, view.body, view.deleted) == (m.author, m.body, m.deleted)
            seen += [v.seq for v in page.messages]
            if not page.has_more:
                break
            after = seen[-1]
        last = self.m_chats[chat].last_seq
        assert seen == list(range(1, last + 1))
        newest = self.call(
            lambda: self.core.service.list_messages(
                ListMessagesQuery(actor=actor, chat_id=chat, limit=limit)
            ),
            [],
        )
        assert newest is not None
        assert [v.seq for v in newest.messages] == list(range(max(1, last - limit + 1), last + 1))

    @precondition(lambda self: any(len(c.members) < len(self.m_users) for c in self.m_chats.values()))
    @rule(chat=chats, data=st.data(), body=bodies)
    def outsider_probes(self, chat: str, data: st.DataObject, body: str) -> None:
        """An outsider gets exactly what a nonexistent chat id gets, for reads and writes alike."""
        outsiders = sorted(set(self.m_users) - self.m_chats[chat].members)
        if not outsiders:
            return
        actor = data.draw(st.sampled_from(outsiders), label="outsider")
        s = self.core.service

        def probes(chat_id: str) -> list[Callable[[], Awaitable[object]]]:
            return [
                lambda: s.get_chat(actor, chat_id),
                lambda: s.list_messages(ListMessagesQuery(actor=actor, chat_id=chat_id)),
                lambda: s.get_message(actor, chat_id, 1),
                lambda: s.get_edit_history(actor, chat_id, 1),
                lambda: s.send_message(SendMessageCommand(actor=actor, chat_id=chat_id, body=body)),
                lambda: s.send_message(
                    SendMessageCommand(actor=actor, chat_id=chat_id, body=body, client_msg_id="k1")
                ),
                lambda: s.edit_message(EditMessageCommand(actor=actor, chat_id=chat_id, seq=1, body=body)),
                lambda: s.delete_message(actor, chat_id, 1),
                lambda: s.mark_read(MarkReadCommand(actor=actor, chat_id=chat_id, seq=99)),
                lambda: s.rename_chat(RenameChatCommand(actor=actor, chat_id=chat_id, title=body)),
                lambda: s.add_chat_member(ChatMemberCommand(actor=actor, chat_id=chat_id, user_id=actor)),
                lambda: s.remove_chat_member(ChatMemberCommand(actor=actor, chat_id=chat_id, user_id=actor)),
                lambda: s.transfer_chat_ownership(
                    ChatMemberCommand(actor=actor, chat_id=chat_id, user_id=actor)
                ),
                lambda: s.leave_chat(actor, chat_id),
            ]

        for real, ghost in zip(probes(chat), probes(GHOST_CHAT), strict=True):
            seen = []
            for make in (real, ghost):
                before = self.snapshot()
                try:
                    self.run(make())
                except DomainError as exc:
                    seen.append((type(exc), str(exc), getattr(exc, "kind", None)))
                else:
                    raise AssertionError("an outsider's call succeeded")
                assert self.snapshot() == before
            assert seen[0] == seen[1] == (NotFound, "chat not found", "chat"), seen

    # -- invariants ----------------------------------------------------------------------------

    def expected_unread(self, chat: str, user: str) -> int:
        read = self.m_markers.get((chat, user), 0)
        return sum(
            1
            for (cid, seq), m in self.m_messages.items()
            if cid == chat and seq > read and not m.deleted and m.author != user
        )

    @invariant()
    def store_matches_model(self) -> None:
        s = self.core.store
        assert {u: x.display_name for u, x in s.users.items()} == self.m_users
        assert set(s.groups) == set(self.m_groups)
        for gid, g in s.groups.items():
            mg = self.m_groups[gid]
            assert g.owner_id == mg.owner
            assert {u: m.role_ids for u, m in g.members.items()} == mg.members
            assert {r: (x.name, x.rank, x.permissions) for r, x in g.roles.items()} == {
                r: (x.name, x.rank, x.permissions) for r, x in mg.roles.items()
            }
        assert set(s.chats) == set(self.m_chats)
        for cid, c in s.chats.items():
            mc = self.m_chats[cid]
            assert (c.is_direct, c.owner_id, c.group_id, set(c.members), c.title, c.last_seq) == (
                mc.direct,
                mc.owner,
                mc.group,
                mc.members,
                mc.title,
                mc.last_seq,
            )
        assert set(s.messages) == set(self.m_messages)
        for key, m in s.messages.items():
            mm = self.m_messages[key]
            assert (m.author_id, m.body, m.is_deleted, [e.body for e in m.history]) == (
                mm.author,
                mm.body,
                mm.deleted,
                mm.history,
            )
        assert {k: r.seq for k, r in s.read_markers.items()} == self.m_markers

    @invariant()
    def one_owner_who_is_a_member(self) -> None:
        for g in self.core.store.groups.values():
            assert g.owner_id in g.members
            owners = [u for u in g.members if OWNER_ROLE_ID in {r.id for r in g.roles_of(u)}]
            assert owners == [g.owner_id]
        for c in self.core.store.chats.values():
            if c.is_direct:
                assert c.owner_id is None
                assert len(c.members) == 2
            else:
                assert c.owner_id in c.members
            if c.group_id is not None:
                assert set(c.members) <= set(self.core.store.groups[c.group_id].members)

    @invariant()
    def seqs_are_gapless_and_every_message_has_its_event(self) -> None:
        s = self.core.store
        by_chat: dict[str, set[int]] = defaultdict(set)
        for cid, seq in s.messages:
            by_chat[cid].add(seq)
        for cid, c in s.chats.items():
            assert by_chat.get(cid, set()) == set(range(1, c.last_seq + 1))
        per_stream: dict[str, list[int]] = defaultdict(list)
        posted: dict[tuple[str, int], MessagePosted] = {}
        created: set[str] = set()
        for record in s.log:
            per_stream[record.stream_id].append(record.seq)
            assert record.stream_id == record.event.stream_id
            if isinstance(record.event, MessagePosted):
                key = (record.event.chat_id, record.event.seq)
                assert key not in posted
                posted[key] = record.event
            elif isinstance(record.event, ChatCreated):
                created.add(record.event.chat_id)
        for stream, seqs in per_stream.items():
            assert seqs == list(range(1, len(seqs) + 1)), stream
            assert s.stream_seqs[stream] == len(seqs)
        assert set(posted) == set(s.messages)
        for key, m in s.messages.items():
            assert (posted[key].message_id, posted[key].author_id) == (m.id, m.author_id)
        assert created == set(s.chats)

    @invariant()
    def nobody_holds_a_permission_no_role_grants(self) -> None:
        s = self.core.store
        for gid, g in s.groups.items():
            for user in self.m_users:
                held = group_permissions(user, g)
                from_roles = frozenset().union(*(r.permissions for r in g.roles_of(user)))
                assert held <= from_roles | (IMPLIED_BY_MEMBERSHIP if g.is_member(user) else frozenset())
                assert held == self.m_groups[gid].permissions(user)
                if user != g.owner_id:
                    assert not held & OWNERSHIP_ONLY
        for cid, c in s.chats.items():
            group = s.groups[c.group_id] if c.group_id is not None else None
            for user in self.m_users:
                held = permissions_for(user, c, group)
                if not c.is_member(user):
                    assert held == frozenset()
                    continue
                bound: set[Permission] = set(IMPLIED_BY_MEMBERSHIP)
                if group is not None:
                    bound |= frozenset().union(*(r.permissions for r in group.roles_of(user)))
                else:  # a direct or standalone chat: membership is the only role there is
                    bound |= DIRECT_PERMISSIONS
                if c.owner_id == user:
                    bound |= CHAT_SCOPE
                assert held <= bound
                assert held == self.chat_perms(user, cid)
                if c.owner_id != user:
                    assert P.TRANSFER_CHAT_OWNERSHIP not in held

    @invariant()
    def my_chats_show_the_right_unread_counts(self) -> None:
        for user in self.m_users:
            summaries = self.run(self.core.service.list_my_chats(user))
            mine = {cid for cid, c in self.m_chats.items() if user in c.members}
            assert {x.chat.id for x in summaries} == mine
            for x in summaries:
                assert x.read_seq == self.m_markers.get((x.chat.id, user), 0)
                assert x.unread_count == self.expected_unread(x.chat.id, user)
                last = self.m_chats[x.chat.id].last_seq
                assert (x.last_message.seq if x.last_message else 0) == last


TestDomain = DomainMachine.TestCase
TestDomain.settings = settings(stateful_step_count=50, deadline=None)
