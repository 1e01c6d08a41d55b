"""kill -9 of the notification worker (SECURITY.md §2 R6), counted at a real SMTP server.

Redis broker, aiosmtpd, SQLite. Verified users are added to group chats ("you were added" mails),
plus one unverified user (no mail). A first `chatcore worker` consumes the `notifications` group
with a handler that never finishes, so it holds every entry unacked; it is SIGKILLed. A second
worker runs the real notification consumer: it reclaims the entries (XAUTOCLAIM after
CHATCORE_STREAM_CLAIM_IDLE_S) and mails through its spool. Asserted: aiosmtpd received each
expected mail exactly once (0 missing, 0 duplicates) and none to the unverified address.
Reported: expected / received / duplicate mails and the delay from the kill to the last mail.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync

from chatcore.application.chats import CreateGroupChatCommand
from chatcore.application.profiles import CreateUserCommand
from entrypoints.container import build_container
from entrypoints.settings import load_settings
from tests.integration.fixtures.smtp import SmtpTestServer
from tests.integration.test_multi_instance import stop_process, wait_until
from tests.integration.test_worker_process import Workers, _env, sync_redis, workers

__all__ = ["sync_redis", "workers"]  # fixtures shared with test_worker_process

pytestmark = pytest.mark.slow

CHATS = 3
MEMBERS_PER_CHAT = 3
GROUP = "notifications"  # the notification consumer's group (notification_worker.CONSUMER)


async def _add_users_to_chats(env: dict[str, str]) -> tuple[list[str], str]:
    """Each chat adds MEMBERS_PER_CHAT verified users and the unverified one; their addresses."""
    settings = load_settings({k: v for k, v in env.items() if k.startswith("CHATCORE_")})
    async with build_container(settings).runtime() as runtime:
        service = runtime.service

        async def user(name: str, verified: bool) -> str:
            command = CreateUserCommand(
                email=f"{name}@example.com", display_name=name, email_verified=verified
            )
            return str((await service.create_user(command)).id)

        owner = await user("owner", True)
        silent = await user("unverified", False)
        expected: list[str] = []
        for c in range(CHATS):
            names = [f"m{c}x{m}" for m in range(MEMBERS_PER_CHAT)]
            members = [await user(n, True) for n in names]
            command = CreateGroupChatCommand(actor=owner, title=f"r6-{c}", member_ids=[*members, silent])
            await service.create_group_chat(command)
            expected += [f"{n}@example.com" for n in names]
    return expected, "unverified@example.com"  # the runtime relayed its records to the stream on exit


def test_a_second_worker_mails_what_a_killed_worker_held_unacked_exactly_once(
    tmp_path: Path,
    workers: Workers,
    redis_url: str,
    redis_prefix: str,
    sync_redis: redis_sync.Redis,
    smtp_server: SmtpTestServer,
) -> None:
    env = _env(tmp_path / "data", redis_url, redis_prefix, CHATCORE_SMTP_URL=smtp_server.url)
    stream = f"{redis_prefix}events"
    sync_redis.xgroup_create(stream, GROUP, id="$", mkstream=True)
    expected, unverified = asyncio.run(_add_users_to_chats(env))
    entries = int(sync_redis.xlen(stream))

    first, first_log = workers.start(
        "w1",
        env,
        "--no-notifications",
        "--consumer",
        f"{GROUP}=tests.integration.test_worker_process:stuck_handler",
    )

    def all_pending_on_w1() -> bool:
        assert first.poll() is None, first_log.read_text()
        rows: Any = sync_redis.xpending_range(stream, GROUP, min="-", max="+", count=entries + 10)
        return len(rows) == entries and {r["consumer"] for r in rows} == {b"w1"}

    wait_until("w1 holds every entry unacked", all_pending_on_w1, 15)
    assert smtp_server.received == []
    stop_process(first, signal.SIGKILL)
    killed_at = time.monotonic()

    second, second_log = workers.start("w2", env)

    def all_mailed() -> bool:
        assert second.poll() is None, second_log.read_text()
        summary: Any = sync_redis.xpending(stream, GROUP)
        return len(smtp_server.received) >= len(expected) and int(summary["pending"]) == 0

    wait_until("w2 reclaimed the entries and sent every mail", all_mailed, 20)
    delay_s = time.monotonic() - killed_at
    time.sleep(1.5)  # a late duplicate would show up here
    received = Counter(rcpt for r in smtp_server.received for rcpt in r.rcpt_tos)
    figures = {
        "stream_entries": entries,
        "expected": len(expected),
        "received": sum(received.values()),
        "missing": len(set(expected) - set(received)),
        "duplicates": sum(n - 1 for n in received.values() if n > 1),
        "kill_to_last_mail_s": round(delay_s, 1),
    }
    print("\nworker kill -9 mail figures: " + json.dumps(figures))
    assert unverified not in received
    assert received == Counter(expected), received  # each expected mail once, nothing else
    stop_process(second)
    assert second.returncode == 0, second_log.read_text()
