"""Every use case, built once from the same dependencies: the core's public face for embedders."""

from __future__ import annotations

from chatcore.application import chats, groups, messages, profiles
from chatcore.application.common import Deps


class ChatService:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        # profiles
        self.create_user = profiles.CreateUser(deps)
        self.get_my_profile = profiles.GetMyProfile(deps)
        self.update_my_profile = profiles.UpdateMyProfile(deps)
        self.get_public_profile = profiles.GetPublicProfile(deps)
        # groups
        self.create_group = groups.CreateGroup(deps)
        self.get_group = groups.GetGroup(deps)
        self.list_my_groups = groups.ListMyGroups(deps)
        self.update_group = groups.UpdateGroup(deps)
        self.delete_group = groups.DeleteGroup(deps)
        self.add_group_member = groups.AddGroupMember(deps)
        self.remove_group_member = groups.RemoveGroupMember(deps)
        self.leave_group = groups.LeaveGroup(deps)
        self.transfer_group_ownership = groups.TransferGroupOwnership(deps)
        self.define_role = groups.DefineRole(deps)
        self.edit_role = groups.EditRole(deps)
        self.delete_role = groups.DeleteRole(deps)
        self.assign_role = groups.AssignRole(deps)
        self.unassign_role = groups.UnassignRole(deps)
        # chats
        self.open_direct_chat = chats.OpenDirectChat(deps)
        self.create_group_chat = chats.CreateGroupChat(deps)
        self.get_chat = chats.GetChat(deps)
        self.rename_chat = chats.RenameChat(deps)
        self.add_chat_member = chats.AddChatMember(deps)
        self.remove_chat_member = chats.RemoveChatMember(deps)
        self.leave_chat = chats.LeaveChat(deps)
        self.transfer_chat_ownership = chats.TransferChatOwnership(deps)
        self.list_my_chats = chats.ListMyChats(deps)
        # messages
        self.send_message = messages.SendMessage(deps)
        self.get_message = messages.GetMessage(deps)
        self.get_edit_history = messages.GetEditHistory(deps)
        self.list_messages = messages.ListMessages(deps)
        self.edit_message = messages.EditMessage(deps)
        self.delete_message = messages.DeleteMessage(deps)
        self.mark_read = messages.MarkRead(deps)
