"""Access tokens (SECURITY T1-T5): the JWT negative corpus, key rules and rotation, the Clock port.

Forged tokens are built by hand (base64url JSON + HMAC) so that nothing in pyjwt shapes them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.metadata
import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from adapters.security.jwt_tokens import JwtTokenIssuer
from chatcore.domain.errors import Unauthenticated

KEY = secrets.token_bytes(32)
ISSUER = "https://chat.example.test"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
T0 = int(NOW.timestamp())
LEEWAY = 5

# A public key, as an attacker would find it published, to use as an HMAC secret (alg confusion).
PUBLIC_PEM = b"""-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=
-----END PUBLIC KEY-----
"""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _json(value: dict[str, Any]) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode())


def forge(
    header: dict[str, Any],
    payload: dict[str, Any],
    key: bytes = KEY,
    digest: Callable[[], Any] | None = hashlib.sha256,
) -> str:
    signing_input = f"{_json(header)}.{_json(payload)}"
    signature = hmac.new(key, signing_input.encode(), digest).digest() if digest else b""
    return f"{signing_input}.{_b64(signature)}"


def good_header(**changes: Any) -> dict[str, Any]:
    return {"alg": "HS256", "typ": "at+jwt", "kid": "k1", **changes}


def good_payload(**changes: Any) -> dict[str, Any]:
    payload = {
        "iss": ISSUER,
        "aud": "chatcore",
        "sub": "user-1",
        "sid": "session-1",
        "jti": "token-1",
        "iat": T0,
        "exp": T0 + 900,
    }
    payload.update(changes)
    return {k: v for k, v in payload.items() if v is not None}


def without(payload: dict[str, Any], claim: str) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != claim}


@pytest.fixture
def issuer() -> JwtTokenIssuer:
    return JwtTokenIssuer(keys={"k1": KEY}, active_kid="k1", issuer=ISSUER, leeway_s=LEEWAY)


def test_pyjwt_is_at_least_2_13_0() -> None:
    version = importlib.metadata.version("pyjwt")
    assert tuple(int(part) for part in version.split(".")[:3]) >= (2, 13, 0)


def test_a_forged_token_of_the_right_shape_is_accepted(issuer: JwtTokenIssuer) -> None:
    # Proves the corpus below fails for the one thing each entry changes.
    claims = issuer.verify(forge(good_header(), good_payload()), now=NOW)
    assert (claims.user_id, claims.session_id, claims.token_id) == ("user-1", "session-1", "token-1")


def test_issued_tokens_carry_the_pinned_header_and_every_required_claim(issuer: JwtTokenIssuer) -> None:
    token, claims = issuer.issue(user_id="u", session_id="s", now=NOW, ttl_s=900)
    header_part, payload_part, _ = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(header_part + "=="))
    payload = json.loads(base64.urlsafe_b64decode(payload_part + "=="))
    assert header == {"alg": "HS256", "typ": "at+jwt", "kid": "k1"}
    assert set(payload) == {"iss", "aud", "sub", "sid", "jti", "iat", "exp"}
    assert payload["exp"] - payload["iat"] == 900
    assert issuer.verify(token, now=NOW) == claims


def test_each_token_gets_its_own_jti(issuer: JwtTokenIssuer) -> None:
    ids = {issuer.issue(user_id="u", session_id="s", now=NOW, ttl_s=60)[1].token_id for _ in range(1000)}
    assert len(ids) == 1000


NEGATIVE_CORPUS: dict[str, str] = {
    "alg none, empty signature": forge(good_header(alg="none"), good_payload(), digest=None),
    "alg none, with a signature": forge(good_header(alg="none"), good_payload()),
    "alg NoNe": forge(good_header(alg="NoNe"), good_payload()),
    "HS512 when HS256 is pinned": forge(good_header(alg="HS512"), good_payload(), digest=hashlib.sha512),
    "RS256 header, HMAC with the public key": forge(good_header(alg="RS256"), good_payload(), key=PUBLIC_PEM),
    "EdDSA header, HMAC with the public key": forge(good_header(alg="EdDSA"), good_payload(), key=PUBLIC_PEM),
    "HS256 signed with a public key as secret": forge(good_header(), good_payload(), key=PUBLIC_PEM),
    "bad signature": forge(good_header(), good_payload(), key=secrets.token_bytes(32)),
    "missing exp": forge(good_header(), without(good_payload(), "exp")),
    "missing iat": forge(good_header(), without(good_payload(), "iat")),
    "missing iss": forge(good_header(), without(good_payload(), "iss")),
    "missing sub": forge(good_header(), without(good_payload(), "sub")),
    "missing jti": forge(good_header(), without(good_payload(), "jti")),
    "missing sid": forge(good_header(), without(good_payload(), "sid")),
    "empty sid": forge(good_header(), good_payload(sid="")),
    "iss as a prefix": forge(good_header(), good_payload(iss="https://chat.example")),
    "iss extended": forge(good_header(), good_payload(iss=ISSUER + ".evil.example")),
    "iss as a substring": forge(good_header(), good_payload(iss="chat.example.test")),
    "iss in a list": forge(good_header(), good_payload(iss=[ISSUER])),
    "other iss": forge(good_header(), good_payload(iss="https://evil.example")),
    "missing aud": forge(good_header(), without(good_payload(), "aud")),
    "wrong aud": forge(good_header(), good_payload(aud="other-service")),
    "aud list with ours and another": forge(good_header(), good_payload(aud=["chatcore", "other"])),
    "aud as a prefix": forge(good_header(), good_payload(aud="chat")),
    "unknown kid": forge(good_header(kid="k9"), good_payload()),
    "no kid": forge(without(good_header(), "kid"), good_payload()),
    "kid not a string": forge(good_header(kid=1), good_payload()),
    "embedded jwk": forge(
        good_header(jwk={"kty": "oct", "k": _b64(b"a" * 32)}), good_payload(), key=b"a" * 32
    ),
    "embedded jwk, signed with our key": forge(
        good_header(jwk={"kty": "oct", "k": _b64(KEY)}), good_payload()
    ),
    "jku": forge(good_header(jku="https://evil.example/keys"), good_payload()),
    "x5u": forge(good_header(x5u="https://evil.example/cert"), good_payload()),
    "x5c": forge(good_header(x5c=["MIIB"]), good_payload()),
    "crit": forge(good_header(crit=["exp"]), good_payload()),
    "b64 false": forge(good_header(b64=False, crit=["b64"]), good_payload()),
    "typ JWT": forge(good_header(typ="JWT"), good_payload()),
    "no typ": forge(without(good_header(), "typ"), good_payload()),
    "typ of another token kind": forge(good_header(typ="refresh+jwt"), good_payload()),
    "exp as a string": forge(good_header(), good_payload(exp=str(T0 + 900))),
    "exp as a boolean": forge(good_header(), good_payload(exp=True)),
    "not before the future": forge(good_header(), good_payload(nbf=T0 + 60)),
    "issued in the future": forge(good_header(), good_payload(iat=T0 + 60, exp=T0 + 960)),
    "expired long ago": forge(good_header(), good_payload(iat=T0 - 2000, exp=T0 - 1100)),
    "a refresh token": secrets.token_urlsafe(32),
    "an email link token": secrets.token_urlsafe(32),
    "empty": "",
    "two segments": ".".join(forge(good_header(), good_payload()).split(".")[:2]),
    "four segments": forge(good_header(), good_payload()) + ".x",
    "padding characters": forge(good_header(), good_payload()) + "==",
    "a space inside": " " + forge(good_header(), good_payload()),
    "a Bearer prefix": "Bearer " + forge(good_header(), good_payload()),
    "non-ASCII characters": forge(good_header(), good_payload()).replace(".", "\u2024", 1),
    "oversized": forge(good_header(), good_payload(pad="x" * 5000)),
}


@pytest.mark.parametrize("name", list(NEGATIVE_CORPUS))
def test_negative_corpus_is_refused(issuer: JwtTokenIssuer, name: str) -> None:
    with pytest.raises(Unauthenticated) as caught:
        issuer.verify(NEGATIVE_CORPUS[name], now=NOW)
    assert caught.value.detail == "authentication failed"  # one vague message for every cause


def test_a_tampered_payload_is_refused(issuer: JwtTokenIssuer) -> None:
    token, _ = issuer.issue(user_id="user-1", session_id="s", now=NOW, ttl_s=900)
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "admin"
    with pytest.raises(Unauthenticated):
        issuer.verify(f"{header}.{_json(claims)}.{signature}", now=NOW)


def test_a_flipped_signature_bit_is_refused(issuer: JwtTokenIssuer) -> None:
    token, _ = issuer.issue(user_id="user-1", session_id="s", now=NOW, ttl_s=900)
    head, _, signature = token.rpartition(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
    raw[0] ^= 1
    with pytest.raises(Unauthenticated):
        issuer.verify(f"{head}.{_b64(bytes(raw))}", now=NOW)


def test_expiry_is_checked_against_the_given_clock_with_the_leeway(issuer: JwtTokenIssuer) -> None:
    token, claims = issuer.issue(user_id="u", session_id="s", now=NOW, ttl_s=900)
    exp = claims.expires_at
    # The machine's clock says 2026 is long gone or far ahead: only `now` counts.
    assert issuer.verify(token, now=exp + timedelta(seconds=LEEWAY - 1)) == claims
    with pytest.raises(Unauthenticated):
        issuer.verify(token, now=exp + timedelta(seconds=LEEWAY + 1))
    with pytest.raises(Unauthenticated):
        issuer.verify(token, now=NOW - timedelta(seconds=LEEWAY + 1))  # before iat


def test_a_token_valid_by_the_real_clock_but_not_the_port_clock_is_refused(issuer: JwtTokenIssuer) -> None:
    now = datetime.now(UTC)
    token, _ = issuer.issue(user_id="u", session_id="s", now=now, ttl_s=900)
    with pytest.raises(Unauthenticated):
        issuer.verify(token, now=now + timedelta(seconds=900 + LEEWAY + 1))


def test_keys_shorter_than_32_bytes_are_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        JwtTokenIssuer(keys={"k1": b"k" * 31}, active_kid="k1", issuer=ISSUER)
    with pytest.raises(ValueError, match="32 bytes"):
        JwtTokenIssuer(keys={"k1": KEY, "old": b"short"}, active_kid="k1", issuer=ISSUER)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"keys": {}, "active_kid": "k1"},
        {"keys": {"k1": KEY}, "active_kid": "k2"},
        {"keys": {"k1": KEY}, "active_kid": "k1", "leeway_s": 11},
        {"keys": {"k1": KEY}, "active_kid": "k1", "audience": ""},
    ],
)
def test_unsafe_issuer_settings_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each setting has its own message
        JwtTokenIssuer(issuer=ISSUER, **kwargs)


def test_rotation_accepts_the_old_kid_until_it_is_removed() -> None:
    new_key = secrets.token_bytes(32)
    before = JwtTokenIssuer(keys={"k1": KEY}, active_kid="k1", issuer=ISSUER)
    old_token, _ = before.issue(user_id="u", session_id="s", now=NOW, ttl_s=900)

    during = JwtTokenIssuer(keys={"k1": KEY, "k2": new_key}, active_kid="k2", issuer=ISSUER)
    new_token, _ = during.issue(user_id="u", session_id="s", now=NOW, ttl_s=900)
    assert json.loads(base64.urlsafe_b64decode(new_token.split(".")[0] + "=="))["kid"] == "k2"
    assert during.verify(old_token, now=NOW).user_id == "u"
    assert during.verify(new_token, now=NOW).user_id == "u"

    after = JwtTokenIssuer(keys={"k2": new_key}, active_kid="k2", issuer=ISSUER)
    assert after.verify(new_token, now=NOW).user_id == "u"
    with pytest.raises(Unauthenticated):
        after.verify(old_token, now=NOW)


def test_a_token_signed_with_one_kid_does_not_verify_under_another() -> None:
    other = secrets.token_bytes(32)
    ring = JwtTokenIssuer(keys={"k1": KEY, "k2": other}, active_kid="k1", issuer=ISSUER)
    # Signed with k1's key but naming k2: the keyring's k2 key is used, and fails.
    with pytest.raises(Unauthenticated):
        ring.verify(forge(good_header(kid="k2"), good_payload()), now=NOW)


def test_another_issuer_or_audience_configuration_refuses_our_tokens(issuer: JwtTokenIssuer) -> None:
    token, _ = issuer.issue(user_id="u", session_id="s", now=NOW, ttl_s=900)
    for other in (
        JwtTokenIssuer(keys={"k1": KEY}, active_kid="k1", issuer=ISSUER + "/"),
        JwtTokenIssuer(keys={"k1": KEY}, active_kid="k1", issuer=ISSUER, audience="chatcore-admin"),
    ):
        with pytest.raises(Unauthenticated):
            other.verify(token, now=NOW)


def test_remembered_verifications_are_bounded_and_never_skip_the_clock(issuer: JwtTokenIssuer) -> None:
    from adapters.security import jwt_tokens

    first, claims = issuer.issue(user_id="u", session_id="s", now=NOW, ttl_s=60)
    assert issuer.verify(first, now=NOW) == claims
    for i in range(jwt_tokens.VERIFIED_CACHE_SIZE + 10):
        token, _ = issuer.issue(user_id=f"u{i}", session_id="s", now=NOW, ttl_s=60)
        issuer.verify(token, now=NOW)
    assert len(issuer._verified) == jwt_tokens.VERIFIED_CACHE_SIZE
    assert first not in issuer._verified  # the oldest went first; it verifies again from scratch
    assert issuer.verify(first, now=NOW) == claims
    with pytest.raises(Unauthenticated):  # remembered, yet expired by the clock it is given
        issuer.verify(first, now=claims.expires_at + timedelta(seconds=LEEWAY + 1))
    head, payload, signature = first.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    with pytest.raises(Unauthenticated):  # a remembered token's neighbour is checked in full
        issuer.verify(f"{head}.{payload}.{flipped}", now=NOW)
