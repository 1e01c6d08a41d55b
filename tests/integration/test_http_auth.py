"""The /v1/auth routes end to end: registration, login, refresh rotation, sessions, mailed codes
and links (read from the folder mailer), verification, password reset and change."""

from __future__ import annotations

import re
from typing import Any

from tests.integration.test_http_support import Api, api, assert_problem, bounded

__all__ = ["api", "bounded"]

PASSWORD = "correct horse battery staple 42"


def _mails(api: Api, to: str) -> list[Any]:
    mailer = api.runtime.auth.ports.mailer
    return [m for m in mailer.mails() if m.to == to]  # type: ignore[attr-defined]


def _code(mail: Any) -> str:
    found = re.search(r"\b(\d{6})\b", mail.text)
    assert found, mail.text
    return found[1]


def _link_token(mail: Any) -> str:
    found = re.search(r"#token=([A-Za-z0-9_-]+)", mail.text)
    assert found, mail.text
    return found[1]


def _bearer(pair: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {pair['access_token']}"}


def test_register_verify_login_refresh_logout(api: Api) -> None:
    email = "dana@example.com"
    r = api.client.post(
        "/v1/auth/register", json={"email": email, "password": PASSWORD, "display_name": "Dana"}
    )
    assert r.status_code == 202, r.text
    attempt = r.json()["attempt_id"]
    # The same answer for a taken address: no enumeration.
    again = api.client.post(
        "/v1/auth/register", json={"email": email, "password": PASSWORD, "display_name": "D"}
    )
    assert again.status_code == 202 and again.json().keys() == r.json().keys()
    verification = next(m for m in _mails(api, email) if _code_or_none(m))
    v = api.client.post("/v1/auth/verify-email", json={"attempt_id": attempt, "code": _code(verification)})
    assert v.status_code == 200, v.text
    login = api.client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    pair = login.json()
    me = api.client.get("/v1/users/me", headers=_bearer(pair)).json()
    assert me["email"] == email and me["email_verified"] is True
    wrong = api.client.post("/v1/auth/login", json={"email": email, "password": PASSWORD + "x"})
    unknown = api.client.post("/v1/auth/login", json={"email": "nobody@example.com", "password": PASSWORD})
    assert_problem(wrong, 401)
    assert wrong.content == unknown.content
    # refresh rotates; replaying the old token ends the family
    rotated = api.client.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert rotated.status_code == 200
    assert_problem(api.client.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}), 401)
    assert_problem(
        api.client.post("/v1/auth/refresh", json={"refresh_token": rotated.json()["refresh_token"]}), 401
    )
    assert_problem(api.client.get("/v1/users/me", headers=_bearer(rotated.json())), 401)
    # logout ends the session at once
    fresh = api.client.post("/v1/auth/login", json={"email": email, "password": PASSWORD}).json()
    assert api.client.post("/v1/auth/logout", headers=_bearer(fresh)).status_code == 204
    assert_problem(api.client.get("/v1/users/me", headers=_bearer(fresh)), 401)


def _code_or_none(mail: Any) -> str | None:
    found = re.search(r"\b(\d{6})\b", mail.text)
    return found[1] if found else None


def test_sessions_list_and_revoke(api: Api) -> None:
    alice = api.user("alice")
    other = api.run(api.runtime.auth.login.start_session, alice.id, "password", None, None)
    listed = api.client.get("/v1/auth/sessions", headers=alice.headers).json()["sessions"]
    assert {s["id"] for s in listed} == {alice.session_id, other.session_id}
    assert [s["current"] for s in listed if s["id"] == alice.session_id] == [True]
    assert "refresh" not in str(listed).lower()
    r = api.client.delete(f"/v1/auth/sessions/{other.session_id}", headers=alice.headers)
    assert r.status_code == 204
    assert_problem(
        api.client.get("/v1/users/me", headers={"Authorization": f"Bearer {other.access_token}"}), 401
    )
    bob = api.user("bob")
    assert_problem(api.client.delete(f"/v1/auth/sessions/{alice.session_id}", headers=bob.headers), 404)


def test_email_code_and_link_login(api: Api) -> None:
    alice = api.user("alice")
    r = api.client.post("/v1/auth/email-code", json={"email": alice.email})
    assert r.status_code == 202
    unknown = api.client.post("/v1/auth/email-code", json={"email": "ghost@example.com"})
    assert unknown.status_code == 202 and unknown.json().keys() == r.json().keys()
    mail = _mails(api, alice.email)[-1]
    bad = api.client.post(
        "/v1/auth/email-code/verify", json={"attempt_id": r.json()["attempt_id"], "code": "000000"}
    )
    if _code(mail) != "000000":
        assert_problem(bad, 401)
    ok = api.client.post(
        "/v1/auth/email-code/verify", json={"attempt_id": r.json()["attempt_id"], "code": _code(mail)}
    )
    assert ok.status_code == 200, ok.text
    assert api.client.get("/v1/users/me", headers=_bearer(ok.json())).json()["id"] == alice.id
    # the magic link: a fresh request, its token posted back in the body
    api.client.post("/v1/auth/email-code", json={"email": alice.email})
    token = _link_token(_mails(api, alice.email)[-1])
    link = api.client.post("/v1/auth/email-link/verify", json={"token": token})
    assert link.status_code == 200
    assert_problem(api.client.post("/v1/auth/email-link/verify", json={"token": token}), 401)  # single use


def test_password_reset_and_change(api: Api) -> None:
    email = "erin@example.com"
    api.client.post("/v1/auth/register", json={"email": email, "password": PASSWORD, "display_name": "Erin"})
    r = api.client.post("/v1/auth/password-reset", json={"email": email})
    assert r.status_code == 202
    new = PASSWORD + " new"
    code = _code(_mails(api, email)[-1])
    confirm = {"attempt_id": r.json()["attempt_id"], "code": code, "new_password": new}
    assert api.client.post("/v1/auth/password-reset/confirm", json=confirm).status_code == 204
    pair = api.client.post("/v1/auth/login", json={"email": email, "password": new}).json()
    short = api.client.post(
        "/v1/auth/password", json={"current_password": new, "new_password": "short"}, headers=_bearer(pair)
    )
    assert_problem(short, 422, field="new_password")
    wrong = api.client.post(
        "/v1/auth/password",
        json={"current_password": "nope nope nope", "new_password": PASSWORD},
        headers=_bearer(pair),
    )
    assert_problem(wrong, 422, field="current_password")
    ok = api.client.post(
        "/v1/auth/password", json={"current_password": new, "new_password": PASSWORD}, headers=_bearer(pair)
    )
    assert ok.status_code == 204
    assert (
        api.client.get("/v1/users/me", headers=_bearer(pair)).status_code == 200
    )  # the caller's session stays


def test_operator_injection_and_unknown_fields_are_422(api: Api) -> None:
    r = api.client.post("/v1/auth/login", json={"email": {"$ne": None}, "password": {"$gt": ""}})
    assert_problem(r, 422)
    r = api.client.post(
        "/v1/auth/register",
        json={"email": "x@example.com", "password": PASSWORD, "display_name": "x", "email_verified": True},
    )
    assert_problem(r, 422, field="email_verified")


def test_bearer_must_be_an_access_token(api: Api) -> None:
    alice = api.user("alice")
    pair = api.run(api.runtime.auth.login.start_session, alice.id, "password", None, None)
    for token in (pair.refresh_token, "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", alice.access_token + "x"):
        assert_problem(api.client.get("/v1/users/me", headers={"Authorization": f"Bearer {token}"}), 401)


def test_code_requests_are_throttled_with_retry_after(api: Api) -> None:
    limit = api.runtime.settings.auth.code_requests_per_address_per_hour
    for _ in range(limit):
        assert api.client.post("/v1/auth/email-code", json={"email": "flood@example.com"}).status_code == 202
    r = api.client.post("/v1/auth/email-code", json={"email": "flood@example.com"})
    assert_problem(r, 429)
    assert int(r.headers["retry-after"]) >= 1
