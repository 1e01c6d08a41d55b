"""The embedded default mailer: `.eml` files in a folder, private, whole, and logged by path only."""

from __future__ import annotations

import asyncio
import email
import logging
import stat
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from adapters.mail_folder import FolderMailer
from chatcore.ports.mail import Mail
from chatcore.testing.doubles import FakeClock
from tests.integration.fixtures.smtp import bounded

CODE_MAIL = Mail(
    to="ann@example.com",
    subject="Your login code",
    text="Your code is 493817.\nOr open https://chat.example/login#t=secret-link-token\n",
    html=(
        '<p>Your code is <b>493817</b>. <a href="https://chat.example/login#t=secret-link-token">'
        "Log in</a></p>"
    ),
)


@bounded(30)
async def test_each_mail_is_a_private_eml_file_that_parses_back(tmp_path: Path) -> None:
    folder = tmp_path / "mail"
    mailer = FolderMailer(folder, sender="Chatcore <noreply@chat.example>", clock=FakeClock())

    await mailer.send(CODE_MAIL)

    (path,) = folder.iterdir()
    assert path.suffix == ".eml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    assert isinstance(message, EmailMessage)
    assert str(message["From"]) == "Chatcore <noreply@chat.example>"
    assert str(message["To"]) == "ann@example.com"
    assert str(message["Message-ID"]).endswith("@chat.example>")
    assert str(message["Date"]) == "Thu, 01 Jan 2026 00:00:00 +0000"
    assert b"\r\n" in path.read_bytes()  # RFC 5322 line endings
    (got,) = mailer.mails()
    assert (got.to, got.subject, got.text) == (CODE_MAIL.to, CODE_MAIL.subject, CODE_MAIL.text)
    assert got.html is not None and got.html.strip() == CODE_MAIL.html


@bounded(30)
async def test_files_sort_in_the_order_mail_was_written(tmp_path: Path) -> None:
    clock = FakeClock()
    mailer = FolderMailer(tmp_path / "mail", clock=clock)
    for n in range(5):
        await mailer.send(Mail(to="ann@example.com", subject=f"mail {n}", text="t"))
        clock.advance(0.001)
    assert [m.subject for m in mailer.mails()] == [f"mail {n}" for n in range(5)]


@bounded(30)
async def test_concurrent_mails_each_get_their_own_whole_file(tmp_path: Path) -> None:
    mailer = FolderMailer(tmp_path / "mail", clock=FakeClock())  # same instant for all of them
    await asyncio.gather(
        *(mailer.send(Mail(to=f"u{n}@example.com", subject=f"s{n}", text="t" * 10_000)) for n in range(20))
    )
    files = list((tmp_path / "mail").iterdir())
    assert len(files) == 20 and all(f.suffix == ".eml" for f in files)  # no temporaries left
    assert sorted(m.to for m in mailer.mails()) == sorted(f"u{n}@example.com" for n in range(20))


@bounded(30)
async def test_log_line_names_the_file_and_never_the_body_code_link_or_recipient(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    mailer = FolderMailer(tmp_path / "mail")

    await mailer.send(CODE_MAIL)

    (path,) = (tmp_path / "mail").iterdir()
    lines = [r.getMessage() for r in caplog.records if r.name == "adapters.mail_folder"]
    assert lines == [f"mail written to {path}"]
    for secret in ("493817", "secret-link-token", "ann@example.com", "Your login code"):
        assert secret not in caplog.text


@pytest.mark.parametrize(
    "mail",
    [
        Mail(to="ann@example.com", subject="x\r\nBcc: evil@x", text="t"),
        Mail(to="ann@example.com, evil@x", subject="s", text="t"),
        Mail(to="ann@example.com", subject="=?utf-8?q?x=0D=0ABcc:_evil@x?=", text="t"),
    ],
    ids=["subject-crlf", "to-list", "subject-rfc2047"],
)
@bounded(30)
async def test_header_injection_is_refused_and_no_file_is_written(tmp_path: Path, mail: Mail) -> None:
    mailer = FolderMailer(tmp_path / "mail")
    with pytest.raises(ValueError, match=r"subject|to"):
        await mailer.send(mail)
    assert list((tmp_path / "mail").iterdir()) == []


def test_a_bad_sender_is_refused_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="from"):
        FolderMailer(tmp_path / "mail", sender="a@x.example, b@y.example")
