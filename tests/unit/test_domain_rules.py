"""The domain's rules as examples: each test states one rule and shows it through the use cases."""

from __future__ import annotations

import pytest

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
from chatcore.domain.errors import Conflict, Gone, InvalidInput, NotFound, PermissionDenied
from chatcore.domain.events import ChatMemberRemoved, ChatOwnershipTransferred, MessageDeleted
from chatcore.domain.groups import ADMIN_ROLE_ID
from chatcore.domain.limits import Limits
from chatcore.domain.permissions import ADMIN_ROLE_PERMISSIONS, Permission


@pytest.fixture
def core() -> MemoryCore:
    return memory_core(limits=Limits(max_message_chars=20))


async def _users(core: MemoryCore, *names: str) -> list[str]:
    return [
        (await core.service.create_user(CreateUserCommand(email=f"{n}@example.com", display_name=n))).id
        for n in names
    ]


async def _group(core: MemoryCore, owner: str, *members: str) -> str:
    group = await core.service.create_group(CreateGroupCommand(actor=owner, name="Team"))
    for member in members:
        await core.service.add_group_member(
            GroupMemberCommand(actor=owner, group_id=group.id, user_id=member)
        )
    return group.id


async def _chat(core: MemoryCore, owner: str, *members: str, group_id: str | None = None) -> str:
    chat = await core.service.create_group_chat(
        CreateGroupChatCommand(actor=owner, title="chat", member_ids=list(members), group_id=group_id)
    )
    return chat.id


async def _send(core: MemoryCore, actor: str, chat_id: str, body: str) -> int:
    result = await core.service.send_message(SendMessageCommand(actor=actor, chat_id=chat_id, body=body))
    return result.message.seq


def _state(core: MemoryCore) -> tuple[object, ...]:
    s = core.store
    return (repr(s.groups), repr(s.chats), repr(s.messages), repr(s.read_markers), len(s.log))


async def test_owner_cannot_leave_without_transfer(core: MemoryCore) -> None:
    ann, bob = await _users(core, "ann", "bob")
    group_id = await _group(core, ann, bob)
    chat_id = await _chat(core, ann, bob)

    with pytest.raises(Conflict):
        await core.service.leave_group(ann, group_id)
    with pytest.raises(Conflict):
        await core.service.leave_chat(ann, chat_id)

    await core.service.transfer_group_ownership(GroupMemberCommand(actor=ann, group_id=group_id, user_id=bob))
    await core.service.transfer_chat_ownership(ChatMemberCommand(actor=ann, chat_id=chat_id, user_id=bob))
    await core.service.leave_group(ann, group_id)
    await core.service.leave_chat(ann, chat_id)
    assert (await core.service.get_group(bob, group_id)).owner_id == bob
    assert (await core.service.get_chat(bob, chat_id)).member_ids == [bob]


async def test_direct_chat_never_gains_a_third_member(core: MemoryCore) -> None:
    ann, bob, cy = await _users(core, "ann", "bob", "cy")
    chat, created = await core.service.open_direct_chat(OpenDirectChatCommand(actor=ann, user_id=bob))
    again, created_again = await core.service.open_direct_chat(OpenDirectChatCommand(actor=bob, user_id=ann))

    with pytest.raises(PermissionDenied) as denied:
        await core.service.add_chat_member(ChatMemberCommand(actor=ann, chat_id=chat.id, user_id=cy))
    assert denied.value.permission == Permission.ADD_CHAT_MEMBERS
    with pytest.raises(Conflict):
        await core.service.leave_chat(bob, chat.id)
    assert (created, created_again, again.id) == (True, False, chat.id)
    assert chat.owner_id is None
    assert sorted((await core.service.get_chat(ann, chat.id)).member_ids) == sorted([ann, bob])


async def test_outsider_gets_not_found_like_a_missing_chat(core: MemoryCore) -> None:
    ann, bob, eve = await _users(core, "ann", "bob", "eve")
    chat_id = await _chat(core, ann, bob)
    await _send(core, ann, chat_id, "secret")

    answers = []
    for target in (chat_id, "no-such-chat"):
        for call in (
            lambda t=target: core.service.get_chat(eve, t),
            lambda t=target: core.service.get_message(eve, t, 1),
            lambda t=target: core.service.list_messages(ListMessagesQuery(actor=eve, chat_id=t)),
            lambda t=target: core.service.send_message(SendMessageCommand(actor=eve, chat_id=t, body="hi")),
            lambda t=target: core.service.edit_message(
                EditMessageCommand(actor=eve, chat_id=t, seq=1, body="x")
            ),
            lambda t=target: core.service.delete_message(eve, t, 1),
            lambda t=target: core.service.mark_read(MarkReadCommand(actor=eve, chat_id=t, seq=1)),
            lambda t=target: core.service.leave_chat(eve, t),
        ):
            with pytest.raises(NotFound) as missing:
                await call()
            answers.append((type(missing.value), str(missing.value), missing.value.kind))

    assert len(set(answers)) == 1
    assert answers[0] == (NotFound, "chat not found", "chat")


async def test_admin_cannot_grant_a_permission_they_lack(core: MemoryCore) -> None:
    ann, bob, cy = await _users(core, "ann", "bob", "cy")
    group_id = await _group(core, ann, bob, cy)
    # The owner narrows the admin role: admins no longer manage the group's info.
    narrowed = sorted(p.value for p in ADMIN_ROLE_PERMISSIONS - {Permission.MANAGE_GROUP})
    await core.service.edit_role(
        EditRoleCommand(actor=ann, group_id=group_id, role_id=ADMIN_ROLE_ID, permissions=narrowed)
    )
    await core.service.assign_role(
        RoleAssignmentCommand(actor=ann, group_id=group_id, user_id=bob, role_id=ADMIN_ROLE_ID)
    )
    owners_role = await core.service.define_role(
        DefineRoleCommand(actor=ann, group_id=group_id, name="editor", rank=10, permissions=["manage_group"])
    )
    editor = next(r.id for r in owners_role.roles if r.name == "editor")
    before = _state(core)

    with pytest.raises(PermissionDenied) as define:
        await core.service.define_role(
            DefineRoleCommand(actor=bob, group_id=group_id, name="mod", rank=50, permissions=["manage_group"])
        )
    with pytest.raises(PermissionDenied) as widen:
        await core.service.edit_role(
            EditRoleCommand(actor=bob, group_id=group_id, role_id="member", permissions=["manage_group"])
        )
    with pytest.raises(PermissionDenied) as hand_out:
        await core.service.assign_role(
            RoleAssignmentCommand(actor=bob, group_id=group_id, user_id=cy, role_id=editor)
        )

    assert define.value.permission == widen.value.permission == hand_out.value.permission == "manage_group"
    assert _state(core) == before
    # What the admin does hold, they may grant.
    await core.service.define_role(
        DefineRoleCommand(actor=bob, group_id=group_id, name="mod", rank=50, permissions=["edit_chat_info"])
    )


async def test_cannot_assign_role_to_member_ranked_at_or_above(core: MemoryCore) -> None:
    ann, bob, cy = await _users(core, "ann", "bob", "cy")
    group_id = await _group(core, ann, bob, cy)
    for admin in (bob, cy):
        await core.service.assign_role(
            RoleAssignmentCommand(actor=ann, group_id=group_id, user_id=admin, role_id=ADMIN_ROLE_ID)
        )
    low = await core.service.define_role(
        DefineRoleCommand(actor=ann, group_id=group_id, name="helper", rank=10, permissions=[])
    )
    helper = next(r.id for r in low.roles if r.name == "helper")
    before = _state(core)

    for target in (cy, ann, bob):  # an equal, the owner above, and oneself
        with pytest.raises(PermissionDenied) as denied:
            await core.service.assign_role(
                RoleAssignmentCommand(actor=bob, group_id=group_id, user_id=target, role_id=helper)
            )
        assert denied.value.permission == "rank"
    with pytest.raises(PermissionDenied):
        await core.service.remove_group_member(GroupMemberCommand(actor=bob, group_id=group_id, user_id=cy))
    assert _state(core) == before


async def test_refused_send_consumes_no_seq(core: MemoryCore) -> None:
    ann, bob = await _users(core, "ann", "bob")
    chat_id = await _chat(core, ann, bob)
    assert await _send(core, ann, chat_id, "one") == 1
    before = _state(core)

    for body, field in (("", "body"), ("   ", "body"), ("x" * 21, "body"), ("bell\x07", "body")):
        with pytest.raises(InvalidInput) as bad:
            await _send(core, bob, chat_id, body)
        assert bad.value.field == field
    with pytest.raises(InvalidInput) as bad_reply:
        await core.service.send_message(SendMessageCommand(actor=bob, chat_id=chat_id, body="hi", reply_to=7))
    assert bad_reply.value.field == "reply_to"
    assert _state(core) == before

    assert await _send(core, bob, chat_id, "two") == 2


async def test_removing_group_member_removes_them_from_group_chats_and_passes_ownership(
    core: MemoryCore,
) -> None:
    ann, bob, cy = await _users(core, "ann", "bob", "cy")
    group_id = await _group(core, ann, bob, cy)
    bobs_chat = await _chat(core, bob, cy, group_id=group_id)  # ann, the group owner, is not in it
    shared = await _chat(core, ann, bob, cy, group_id=group_id)
    standalone = await _chat(core, bob, cy)  # outside the group: untouched

    await core.service.remove_group_member(GroupMemberCommand(actor=ann, group_id=group_id, user_id=bob))

    chat = await core.service.get_chat(ann, bobs_chat)
    assert (chat.owner_id, sorted(chat.member_ids)) == (ann, sorted([ann, cy]))
    assert bob not in (await core.service.get_chat(ann, shared)).member_ids
    assert bob in (await core.service.get_chat(bob, standalone)).member_ids
    with pytest.raises(NotFound):
        await core.service.get_chat(bob, bobs_chat)
    events = [r.event for r in core.store.log if r.stream_id == bobs_chat]
    assert any(isinstance(e, ChatOwnershipTransferred) and e.new_owner_id == ann for e in events)
    assert any(isinstance(e, ChatMemberRemoved) and e.user_id == bob for e in events)


async def test_deleted_message_is_a_tombstone_and_answers_gone(core: MemoryCore) -> None:
    ann, bob = await _users(core, "ann", "bob")
    chat_id = await _chat(core, ann, bob)
    await _send(core, bob, chat_id, "oops")
    await _send(core, ann, chat_id, "after")

    with pytest.raises(PermissionDenied):  # a standalone chat's member deletes only their own
        await core.service.delete_message(bob, chat_id, 2)
    await core.service.delete_message(bob, chat_id, 1)

    with pytest.raises(Gone):
        await core.service.get_message(ann, chat_id, 1)
    with pytest.raises(Gone):
        await core.service.edit_message(EditMessageCommand(actor=bob, chat_id=chat_id, seq=1, body="x"))
    page = await core.service.list_messages(ListMessagesQuery(actor=ann, chat_id=chat_id))
    assert [(m.seq, m.body, m.deleted) for m in page.messages] == [(1, "", True), (2, "after", False)]
    assert any(isinstance(r.event, MessageDeleted) and r.event.seq == 1 for r in core.store.log)


async def test_edit_keeps_history(core: MemoryCore) -> None:
    ann, bob = await _users(core, "ann", "bob")
    chat_id = await _chat(core, ann, bob)
    await _send(core, bob, chat_id, "frist")

    with pytest.raises(PermissionDenied):  # only the author edits, even the chat's owner may not
        await core.service.edit_message(EditMessageCommand(actor=ann, chat_id=chat_id, seq=1, body="x"))
    await core.service.edit_message(EditMessageCommand(actor=bob, chat_id=chat_id, seq=1, body="first"))
    await core.service.edit_message(EditMessageCommand(actor=bob, chat_id=chat_id, seq=1, body="First!"))

    message = await core.service.get_message(ann, chat_id, 1)
    history = await core.service.get_edit_history(ann, chat_id, 1)
    assert (message.body, message.edited_at is not None) == ("First!", True)
    assert [e.body for e in history] == ["frist", "first"]


async def test_read_marker_only_moves_forward(core: MemoryCore) -> None:
    ann, bob = await _users(core, "ann", "bob")
    chat_id = await _chat(core, ann, bob)
    for body in ("a", "b", "c"):
        await _send(core, ann, chat_id, body)
    await _send(core, bob, chat_id, "mine")  # the reader's own message is never unread

    moved = await core.service.mark_read(MarkReadCommand(actor=bob, chat_id=chat_id, seq=2))
    back = await core.service.mark_read(MarkReadCommand(actor=bob, chat_id=chat_id, seq=1))
    with pytest.raises(InvalidInput) as beyond:
        await core.service.mark_read(MarkReadCommand(actor=bob, chat_id=chat_id, seq=5))

    assert (moved.seq, moved.unread_count) == (2, 1)
    assert (back.seq, back.unread_count) == (2, 1)
    assert beyond.value.field == "seq"
    (summary,) = await core.service.list_my_chats(bob)
    assert (summary.read_seq, summary.unread_count) == (2, 1)


@pytest.mark.parametrize("name", ["Eve\r\nBcc: all@example.com", "Eve\nX", "Eve\rX", "Eve\x00", "\u202eEve"])
async def test_control_characters_in_names_refused(core: MemoryCore, name: str) -> None:
    (ann,) = await _users(core, "ann")

    with pytest.raises(InvalidInput) as refused:
        await core.service.update_my_profile(UpdateProfileCommand(actor=ann, display_name=name))
    assert refused.value.field == "display_name"
    with pytest.raises(InvalidInput) as on_create:
        await core.service.create_user(CreateUserCommand(email="eve@example.com", display_name=name))
    assert on_create.value.field == "display_name"
    assert (await core.service.get_my_profile(ann)).display_name == "ann"


async def test_unknown_member_is_refused_naming_the_field(core: MemoryCore) -> None:
    ann, bob = await _users(core, "ann", "bob")
    group_id = await _group(core, ann)
    chat_id = await _chat(core, ann, bob)
    before = _state(core)

    with pytest.raises(InvalidInput) as unknown_chat_member:
        await core.service.add_chat_member(ChatMemberCommand(actor=ann, chat_id=chat_id, user_id="nobody"))
    with pytest.raises(InvalidInput) as unknown_group_member:
        await core.service.add_group_member(
            GroupMemberCommand(actor=ann, group_id=group_id, user_id="nobody")
        )
    with pytest.raises(InvalidInput) as unknown_in_new_chat:
        await _chat(core, ann, "nobody")
    with pytest.raises(InvalidInput) as not_in_group:
        await _chat(core, ann, bob, group_id=group_id)

    assert unknown_chat_member.value.field == unknown_group_member.value.field == "user_id"
    assert unknown_in_new_chat.value.field == not_in_group.value.field == "member_ids"
    assert _state(core) == before


async def test_standalone_member_cannot_rename_or_remove(core: MemoryCore) -> None:
    ann, bob, cy = await _users(core, "ann", "bob", "cy")
    chat_id = await _chat(core, ann, bob, cy)

    with pytest.raises(PermissionDenied) as rename:
        await core.service.rename_chat(RenameChatCommand(actor=bob, chat_id=chat_id, title="mine"))
    with pytest.raises(PermissionDenied) as remove:
        await core.service.remove_chat_member(ChatMemberCommand(actor=bob, chat_id=chat_id, user_id=cy))
    with pytest.raises(PermissionDenied) as remove_owner:
        await core.service.remove_chat_member(ChatMemberCommand(actor=bob, chat_id=chat_id, user_id=ann))

    assert rename.value.permission == Permission.EDIT_CHAT_INFO
    assert remove.value.permission == remove_owner.value.permission == Permission.REMOVE_CHAT_MEMBERS


async def test_unknown_permission_answers_the_same_for_any_group(core: MemoryCore) -> None:
    """Request validation comes before the group is even looked up: no existence leak to outsiders."""
    ann, eve = await _users(core, "ann", "eve")
    group_id = await _group(core, ann)

    answers = []
    for target in (group_id, "no-such-group"):
        with pytest.raises(InvalidInput) as refused:
            await core.service.define_role(
                DefineRoleCommand(actor=eve, group_id=target, name="x", rank=1, permissions=["fly"])
            )
        answers.append((refused.value.field, str(refused.value)))
    assert answers[0] == answers[1]
