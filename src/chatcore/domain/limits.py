"""Every size and count limit of the domain, in one settings object."""

from __future__ import annotations

import msgspec


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """Limits the use cases enforce. Entrypoint settings embed one of these."""

    max_message_chars: int = 4000
    max_members_per_chat: int = 1000
    max_members_per_group: int = 10_000
    max_chat_title_chars: int = 128
    max_group_name_chars: int = 128
    max_description_chars: int = 1024
    max_display_name_chars: int = 64
    max_bio_chars: int = 512
    max_role_name_chars: int = 32
    max_roles_per_group: int = 50
    max_client_msg_id_chars: int = 64
    default_page_size: int = 50
    max_page_size: int = 100
    max_edit_history: int = 50
    max_updates_per_page: int = 500
    max_cursor_chars: int = 32_768
    max_long_poll_s: int = 45
    # Per-user rates (token buckets) on the flows worth abusing (SECURITY.md R2).
    sends_per_second: float = 5.0
    send_burst: int = 20
    chats_created_per_hour: int = 20
    invites_per_hour: int = 50
