"""The SMTP mailer against a real SMTP server (aiosmtpd): what arrives, what is refused, retries."""

from __future__ import annotations

import email
from collections.abc import Callable
from email import policy
from email.message import EmailMessage

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.smtp import (
    PermanentMailError,
    SmtpMailer,
    SmtpSettings,
    SmtpUrlError,
    TransientMailError,
    parse_smtp_url,
)
from chatcore.ports.mail import Mail
from chatcore.testing.doubles import FakeClock
from tests.integration.fixtures import smtp as smtp_fixtures
from tests.integration.fixtures.smtp import SelfSignedCertificate, SmtpTestServer, bounded, free_port

CODE_MAIL = Mail(
    to="ann@example.com",
    subject="Your login code",
    text="Your code is 123456.\nIt expires in 10 minutes.\n",
    html="<p>Your code is <b>123456</b>.</p>",
)

# Until tests/conftest.py registers the plugin (pytest_plugins), take its fixture by name.
smtp_server = smtp_fixtures.smtp_server
tls_certificate = smtp_fixtures.tls_certificate


def mailer_for(server: SmtpTestServer, options: str = "") -> SmtpMailer:
    url = f"{server.url}?from=Chatcore%20%3Cnoreply%40chat.example%3E&backoff=0.01{options}"
    return SmtpMailer(parse_smtp_url(url), clock=FakeClock())


def raw_message(server: SmtpTestServer, index: int = 0) -> EmailMessage:
    message = email.message_from_bytes(server.received[index].data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


# -- settings from the URL -------------------------------------------------------------------


def test_url_gives_host_port_tls_mode_credentials_and_options() -> None:
    settings = parse_smtp_url(
        "smtp+starttls://mailer%40chat.example:p%40ss%2Fw@smtp.example.com?timeout=7.5&attempts=5"
        "&backoff=2&from=Chat%20%3Cno-reply%40chat.example%3E&validate_certs=false"
    )
    assert settings == SmtpSettings(
        host="smtp.example.com",
        port=587,
        security="starttls",
        username="mailer@chat.example",
        password="p@ss/w",
        timeout_s=7.5,
        sender="Chat <no-reply@chat.example>",
        attempts=5,
        backoff_s=2.0,
        validate_certs=False,
    )


@pytest.mark.parametrize(
    ("url", "security", "port"),
    [
        ("smtp://mail.example.com", "none", 25),
        ("smtp+starttls://mail.example.com", "starttls", 587),
        ("smtps://mail.example.com", "tls", 465),
        ("SMTPS://mail.example.com:2465", "tls", 2465),
    ],
)
def test_scheme_decides_tls_mode_and_default_port(url: str, security: str, port: int) -> None:
    settings = parse_smtp_url(url)
    assert (settings.security, settings.port) == (security, port)


@pytest.mark.parametrize(
    ("url", "names"),
    [
        ("http://mail.example.com", "scheme 'http'"),
        ("mail.example.com:25", "scheme"),
        ("smtp://", "no host"),
        ("smtp://user:secret@mail.example.com:port", "port"),
        ("smtp://mail.example.com:70000", "port"),
        ("smtp://mail.example.com/inbox", "path"),
        ("smtp://mail.example.com#x", "fragment"),
        ("smtp://:secret@mail.example.com", "no user name"),
        ("smtp://mail.example.com?retries=3", "'retries' is unknown"),
        ("smtp://mail.example.com?timeout=0", "'timeout'"),
        ("smtp://mail.example.com?timeout=abc", "'timeout'"),
        ("smtp://mail.example.com?attempts=0", "'attempts'"),
        ("smtp://mail.example.com?backoff=-1", "'backoff'"),
        ("smtp://mail.example.com?validate_certs=maybe", "'validate_certs'"),
        ("smtp://mail.example.com?from=a%40x,b%40y", "'from'"),
        ("smtp://mail.example.com?from=a%40x%0D%0ABcc:%20e%40vil", "'from'"),
        ("smtp://mail.example.com?timeout=1&timeout=2", "twice"),
    ],
)
def test_bad_url_is_refused_naming_the_bad_part_and_never_the_password(url: str, names: str) -> None:
    with pytest.raises(SmtpUrlError, match=names) as refused:
        parse_smtp_url(url)
    assert "secret" not in str(refused.value)


def test_settings_repr_hides_the_password() -> None:
    settings = parse_smtp_url("smtps://user:hunter2@mail.example.com")
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings)


# -- what arrives ------------------------------------------------------------------------------


@bounded(30)
async def test_mail_arrives_with_recipient_subject_text_and_html(smtp_server: SmtpTestServer) -> None:
    await mailer_for(smtp_server).send(CODE_MAIL)

    (received,) = smtp_server.received
    assert received.rcpt_tos == ["ann@example.com"]
    assert received.mail_from == "noreply@chat.example"
    got = received.mail
    assert (got.to, got.subject) == (CODE_MAIL.to, CODE_MAIL.subject)
    assert got.text == CODE_MAIL.text
    assert got.html is not None and got.html.strip() == CODE_MAIL.html
    message = raw_message(smtp_server)
    assert message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]


@bounded(30)
async def test_headers_carry_from_date_and_a_message_id(smtp_server: SmtpTestServer) -> None:
    await mailer_for(smtp_server).send(Mail(to="bob@example.com", subject="Hi", text="plain only"))

    message = raw_message(smtp_server)
    assert str(message["From"]) == "Chatcore <noreply@chat.example>"
    assert str(message["Date"]) == "Thu, 01 Jan 2026 00:00:00 +0000"  # the injected clock
    assert str(message["Message-ID"]).endswith("@chat.example>")
    assert message.get_content_type() == "text/plain"  # no HTML given, no alternative part


@bounded(30)
async def test_each_mail_gets_its_own_message_id(smtp_server: SmtpTestServer) -> None:
    mailer = mailer_for(smtp_server)
    await mailer.send(CODE_MAIL)
    await mailer.send(CODE_MAIL)
    assert raw_message(smtp_server, 0)["Message-ID"] != raw_message(smtp_server, 1)["Message-ID"]


# -- header injection (SECURITY.md M1) --------------------------------------------------------


@pytest.mark.parametrize(
    "mail",
    [
        Mail(to="ann@example.com", subject="x\r\nBcc: evil@x", text="t"),
        Mail(to="ann@example.com", subject="x\nBcc: evil@x", text="t"),
        Mail(to="ann@example.com", subject="x\rBcc: evil@x", text="t"),
        Mail(to="ann@example.com", subject="x\u2028Bcc: evil@x", text="t"),
        Mail(to="ann@example.com", subject="nul\x00byte", text="t"),
        Mail(to="ann@example.com", subject="=?utf-8?q?x=0D=0ABcc:_evil@x?=", text="t"),
        Mail(to="ann@example.com", subject="hi =?utf-8?b?QmNjOiBldmls?=", text="t"),
        Mail(to="ann@example.com\r\nBcc: evil@x", subject="s", text="t"),
        Mail(to="ann@example.com, evil@x", subject="s", text="t"),
        Mail(to="Ann <ann@example.com>", subject="s", text="t"),
        Mail(to="ann@example.com\nevil@x", subject="s", text="t"),
        Mail(to="", subject="s", text="t"),
    ],
    ids=[
        "crlf",
        "lf",
        "cr",
        "u2028",
        "nul",
        "encoded-crlf",
        "encoded-word",
        "to-crlf",
        "to-list",
        "to-display",
        "to-lf",
        "to-empty",
    ],
)
@bounded(30)
async def test_header_injection_is_refused_and_nothing_is_sent(
    smtp_server: SmtpTestServer, mail: Mail
) -> None:
    with pytest.raises(ValueError, match=r"subject|to"):
        await mailer_for(smtp_server).send(mail)
    assert smtp_server.received == []
    assert smtp_server.handler.sessions == 0  # refused before connecting


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    name=st.one_of(
        st.text(max_size=40),
        st.builds(
            lambda a, sep, b: f"{a}{sep}{b}",
            st.text(max_size=10),
            st.sampled_from(["\r\n", "\n", "\r", ", ", "; ", " <", ">", "\r\nBcc: ", "\x00", "\u2028"]),
            st.sampled_from(
                ["evil@x.example", "Bcc: evil@x.example", "To: a@b.example", "=?utf-8?q?=0D=0ABcc:_e@x?=", ""]
            ),
        ),
    )
)
@bounded(30)
async def test_any_display_name_in_subject_is_refused_or_reaches_exactly_one_recipient(
    smtp_server: SmtpTestServer, name: str
) -> None:
    before = len(smtp_server.received)
    mail = Mail(to="ann@example.com", subject=f"{name} added you to a chat", text="Open the app.")
    try:
        await mailer_for(smtp_server).send(mail)
    except ValueError:
        assert len(smtp_server.received) == before
        return
    received = smtp_server.received[before:]
    assert len(received) == 1
    assert received[0].rcpt_tos == ["ann@example.com"]
    message = raw_message(smtp_server, before)
    assert message.get_all("To") == ["ann@example.com"]
    assert message.get_all("Cc") is None and message.get_all("Bcc") is None
    # Unfolding may change runs of whitespace at the edges (RFC 5322 2.2.3); the words survive.
    assert received[0].mail.subject.split() == mail.subject.split()


# -- failures and retries ----------------------------------------------------------------------


@bounded(30)
async def test_transient_4xx_replies_are_retried_until_delivered(smtp_server: SmtpTestServer) -> None:
    smtp_server.fail_next("451 4.3.0 Try again later", times=2)
    await mailer_for(smtp_server, "&attempts=3").send(CODE_MAIL)
    assert len(smtp_server.received) == 1
    assert smtp_server.handler.sessions == 3


@bounded(30)
async def test_transient_failures_beyond_the_attempts_raise_transient(smtp_server: SmtpTestServer) -> None:
    smtp_server.fail_next("421 4.7.0 Busy", times=5, stage="rcpt")
    with pytest.raises(TransientMailError) as failed:
        await mailer_for(smtp_server, "&attempts=2").send(CODE_MAIL)
    assert failed.value.code == 421
    assert smtp_server.handler.sessions == 2 and smtp_server.received == []


@pytest.mark.parametrize("stage", ["rcpt", "data"])
@bounded(30)
async def test_permanent_5xx_is_not_retried(smtp_server: SmtpTestServer, stage: str) -> None:
    smtp_server.fail_next("550 5.1.1 No such user", times=5, stage=stage)  # type: ignore[arg-type]
    with pytest.raises(PermanentMailError) as failed:
        await mailer_for(smtp_server, "&attempts=5").send(CODE_MAIL)
    assert failed.value.code == 550
    assert smtp_server.handler.sessions == 1


@bounded(30)
async def test_connection_refused_is_transient_and_retried() -> None:
    url = f"smtp://127.0.0.1:{free_port()}?attempts=3&backoff=0.01&timeout=2"
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    with pytest.raises(TransientMailError):
        await SmtpMailer(parse_smtp_url(url), sleep=sleep).send(CODE_MAIL)
    assert len(slept) == 2
    assert 0.005 <= slept[0] <= 0.01 and 0.01 <= slept[1] <= 0.02  # doubling, with jitter


@bounded(30)
async def test_starttls_required_but_not_offered_is_permanent(smtp_server: SmtpTestServer) -> None:
    # smtp+starttls:// must never fall back to plain text.
    url = smtp_server.url.replace("smtp://", "smtp+starttls://") + "?attempts=3"
    with pytest.raises(PermanentMailError):
        await SmtpMailer(parse_smtp_url(url)).send(CODE_MAIL)
    assert smtp_server.received == []


@bounded(30)
async def test_delivered_after_the_server_restarts_on_the_same_port(smtp_server: SmtpTestServer) -> None:
    mailer = mailer_for(smtp_server, "&attempts=1&timeout=2")
    smtp_server.stop()
    with pytest.raises(TransientMailError):
        await mailer.send(CODE_MAIL)
    smtp_server.start()
    await mailer.send(CODE_MAIL)
    assert [m.to for m in smtp_server.mails()] == ["ann@example.com"]


# -- TLS and credentials -----------------------------------------------------------------------


def _accept(login: bytes, password: bytes) -> Callable[..., AuthResult]:
    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: object
    ) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
            login,
            password,
        )
        return AuthResult(success=ok, handled=False)  # False: let aiosmtpd answer 535 on failure

    return authenticate


@bounded(30)
async def test_starttls_with_credentials_delivers(tls_certificate: SelfSignedCertificate) -> None:
    server = SmtpTestServer(
        tls_context=tls_certificate.server_context(),
        require_starttls=True,
        authenticator=_accept(b"mailer", b"p@ss"),
        auth_required=True,
    )
    with server:
        url = f"smtp+starttls://mailer:p%40ss@127.0.0.1:{server.port}?attempts=1"
        mailer = SmtpMailer(parse_smtp_url(url), tls_context=tls_certificate.client_context())
        await mailer.send(CODE_MAIL)
        assert [m.to for m in server.mails()] == ["ann@example.com"]


@bounded(30)
async def test_wrong_password_is_a_permanent_failure(tls_certificate: SelfSignedCertificate) -> None:
    server = SmtpTestServer(
        tls_context=tls_certificate.server_context(),
        require_starttls=True,
        authenticator=_accept(b"mailer", b"right"),
        auth_required=True,
    )
    with server:
        url = f"smtp+starttls://mailer:wrong@127.0.0.1:{server.port}?attempts=3"
        mailer = SmtpMailer(parse_smtp_url(url), tls_context=tls_certificate.client_context())
        with pytest.raises(PermanentMailError) as failed:
            await mailer.send(CODE_MAIL)
        assert failed.value.code == 535 and server.received == []


@bounded(30)
async def test_implicit_tls_delivers(tls_certificate: SelfSignedCertificate) -> None:
    with SmtpTestServer(ssl_context=tls_certificate.server_context()) as server:
        url = f"smtps://127.0.0.1:{server.port}?attempts=1"
        await SmtpMailer(parse_smtp_url(url), tls_context=tls_certificate.client_context()).send(CODE_MAIL)
        assert len(server.received) == 1


@bounded(30)
async def test_an_untrusted_certificate_is_not_accepted(tls_certificate: SelfSignedCertificate) -> None:
    with SmtpTestServer(ssl_context=tls_certificate.server_context()) as server:
        url = f"smtps://127.0.0.1:{server.port}?attempts=1&timeout=5"
        with pytest.raises(TransientMailError):
            await SmtpMailer(parse_smtp_url(url)).send(CODE_MAIL)  # system CAs only
        assert server.received == []
