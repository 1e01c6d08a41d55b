"""SMTP down (R9) through a real server: the API answers as usual, the mail waits in the spool
and arrives once SMTP is back."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.integration.fixtures.smtp import SmtpTestServer
from tests.integration.test_failure_support import start
from tests.integration.test_http_server_process import _free_port, _stop


def test_a_login_code_requested_while_smtp_is_down_arrives_after_it_returns(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    smtp_server.stop()
    server = start(
        tmp_path,
        _free_port(),
        {"CHATCORE_SMTP_URL": smtp_server.url + "?timeout=2", "CHATCORE_MAIL_RETRY_BACKOFF_S": "0.2"},
    )
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            registered = client.post(
                "/v1/auth/register",
                json={"email": "kim@example.com", "password": "quiet harbour lights", "display_name": "Kim"},
            )
            assert registered.status_code == 202
            asked = client.post("/v1/auth/email-code", json={"email": "kim@example.com"})
            assert asked.status_code == 202  # no API error while SMTP is away
            time.sleep(1.0)
            assert smtp_server.mails() == []
            spooled = list((server.data_dir / "mail-spool").rglob("*"))
            assert any(p.is_file() for p in spooled), "the mails wait in the spool"

            smtp_server.start()
            deadline = time.monotonic() + 20
            while len(smtp_server.mails()) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            subjects = sorted(m.subject for m in smtp_server.mails())
            assert len(subjects) == 2, subjects  # the verification mail and the sign-in code
            assert all(m.to == "kim@example.com" for m in smtp_server.mails())
            assert any("sign-in code" in s for s in subjects)
    finally:
        _stop(server.process)
