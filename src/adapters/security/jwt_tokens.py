"""The TokenIssuer port on pyjwt: HS256 access tokens from a keyring, checked against the Clock port.

Only tokens shaped exactly like the ones issued here pass (RFC 8725, RFC 9068):
- the algorithm is pinned (HS256); `alg` in the header must equal it, so `none`, `NoNe`, HS512 and
  every asymmetric algorithm fail before any signature check;
- the header holds `alg`, `typ` (`at+jwt`) and `kid` and nothing else: `jku`, `jwk`, `x5u`, `x5c`,
  `crit`, `b64` are never followed and a token carrying one is refused;
- `kid` picks a key from the configured keyring only; an unknown `kid` fails;
- `exp`, `iat`, `iss`, `aud`, `sub`, `jti` and `sid` are required; `iss` and `aud` must match
  exactly; `exp`, `nbf` and `iat` are checked against the `now` given (the Clock port), with a
  leeway of at most 10 s, because pyjwt would read the machine's clock.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import jwt
from jwt.exceptions import PyJWTError

from chatcore.domain.errors import Unauthenticated
from chatcore.ports.security import AccessClaims

ALGORITHM = "HS256"
TOKEN_TYPE = "at+jwt"  # noqa: S105 - the JWT typ (RFC 9068), not a secret
DEFAULT_AUDIENCE = "chatcore"
MIN_KEY_BYTES = 32  # RFC 7518 section 3.2: an HS256 key of at least 256 bits
MAX_LEEWAY_S = 10
MAX_TOKEN_CHARS = 4096
# Tokens whose signature and header were checked, remembered by their exact text: a client sends
# the same token with every request until it expires, and pyjwt's checks cost more than the rest
# of authentication. The claims (expiry included) are checked against the clock on every use.
VERIFIED_CACHE_SIZE = 4096
REQUIRED_CLAIMS = ("exp", "iat", "iss", "aud", "sub", "jti", "sid")
_ALLOWED_HEADER = frozenset({"alg", "typ", "kid"})
# Three base64url segments: anything else (spaces, padding, a refresh token) is not a JWT.
_JWS_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


def _reject(reason: str) -> Unauthenticated:
    # The reason stays in the exception chain for logs; the client sees the generic message.
    error = Unauthenticated()
    error.add_note(f"access token refused: {reason}")
    return error


class JwtTokenIssuer:
    """Signs with the active key; verifies with any key of the keyring, so keys rotate smoothly:
    add the new key, make it active, and remove the old one once its tokens have expired."""

    def __init__(
        self,
        *,
        keys: Mapping[str, bytes],
        active_kid: str,
        issuer: str,
        audience: str = DEFAULT_AUDIENCE,
        leeway_s: int = 5,
    ) -> None:
        if not keys:
            raise ValueError("the keyring is empty")
        for kid, key in keys.items():
            if not kid:
                raise ValueError("every key needs a non-empty kid")
            if len(key) < MIN_KEY_BYTES:
                raise ValueError(f"key {kid!r} is shorter than {MIN_KEY_BYTES} bytes")
        if active_kid not in keys:
            raise ValueError(f"the active kid {active_kid!r} is not in the keyring")
        if not 0 <= leeway_s <= MAX_LEEWAY_S:
            raise ValueError(f"leeway_s must be between 0 and {MAX_LEEWAY_S}")
        if not issuer or not audience:
            raise ValueError("issuer and audience must not be empty")
        self._keys = dict(keys)
        self._active_kid = active_kid
        self._issuer = issuer
        self._audience = audience
        self._leeway_s = leeway_s
        self._jwt = jwt.PyJWT(options={"enforce_minimum_key_length": True})
        # The keyring never changes after construction, so a token verified once stays verified.
        self._verified: dict[str, dict[str, Any]] = {}

    def issue(self, *, user_id: str, session_id: str, now: datetime, ttl_s: int) -> tuple[str, AccessClaims]:
        if ttl_s < 1:
            raise ValueError("ttl_s must be positive")
        iat = int(now.timestamp())
        exp = iat + ttl_s
        jti = secrets.token_urlsafe(16)
        payload = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": user_id,
            "sid": session_id,
            "jti": jti,
            "iat": iat,
            "exp": exp,
        }
        token = self._jwt.encode(
            payload,
            self._keys[self._active_kid],
            algorithm=ALGORITHM,
            headers={"kid": self._active_kid, "typ": TOKEN_TYPE},
        )
        claims = AccessClaims(
            user_id=user_id,
            session_id=session_id,
            token_id=jti,
            issued_at=datetime.fromtimestamp(iat, UTC),
            expires_at=datetime.fromtimestamp(exp, UTC),
        )
        return token, claims

    def verify(self, token: str, *, now: datetime) -> AccessClaims:
        payload = self._verified.get(token) if isinstance(token, str) else None
        if payload is None:
            payload = self._verify_signed(token)
            if len(self._verified) >= VERIFIED_CACHE_SIZE:
                del self._verified[next(iter(self._verified))]  # the oldest entry
            self._verified[token] = payload
        return self._claims(payload, now)

    def _verify_signed(self, token: str) -> dict[str, Any]:
        """The payload of a token whose form, header and signature are right (not its times)."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or not _JWS_COMPACT.fullmatch(token):
            raise _reject("not a compact JWS")
        try:
            header = jwt.get_unverified_header(token)
        except PyJWTError as exc:
            raise _reject("unreadable header") from exc
        key = self._check_header(header)
        try:
            payload = self._jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                options={
                    "require": list(REQUIRED_CLAIMS),
                    "strict_aud": True,
                    # Time is ours to check, against the Clock port.
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except PyJWTError as exc:
            raise _reject(type(exc).__name__) from exc
        return payload

    def _check_header(self, header: dict[str, Any]) -> bytes:
        if set(header) - _ALLOWED_HEADER:
            raise _reject(f"header parameters not allowed: {sorted(set(header) - _ALLOWED_HEADER)}")
        if header.get("alg") != ALGORITHM:
            raise _reject("algorithm not allowed")
        if header.get("typ") != TOKEN_TYPE:
            raise _reject("not an access token (typ)")
        kid = header.get("kid")
        if not isinstance(kid, str) or kid not in self._keys:
            raise _reject("unknown kid")
        return self._keys[kid]

    def _claims(self, payload: dict[str, Any], now: datetime) -> AccessClaims:
        # pyjwt checked these already; checked again so that no library default can loosen them.
        if payload.get("iss") != self._issuer or payload.get("aud") != self._audience:
            raise _reject("issuer or audience")
        sub, sid, jti = payload.get("sub"), payload.get("sid"), payload.get("jti")
        if not (
            isinstance(sub, str) and sub and isinstance(sid, str) and sid and isinstance(jti, str) and jti
        ):
            raise _reject("sub, sid and jti must be non-empty strings")
        exp, iat = payload.get("exp"), payload.get("iat")
        nbf = payload.get("nbf", iat)
        # type() rather than isinstance(): a JSON `true` must not pass for the integer 1.
        if not (type(exp) is int and type(iat) is int and type(nbf) is int):
            raise _reject("exp, iat and nbf must be integers")
        ts, leeway = now.timestamp(), self._leeway_s
        if ts >= exp + leeway:
            raise _reject("expired")
        if ts < max(nbf, iat) - leeway:
            raise _reject("not yet valid")
        return AccessClaims(
            user_id=sub,
            session_id=sid,
            token_id=jti,
            issued_at=datetime.fromtimestamp(iat, UTC),
            expires_at=datetime.fromtimestamp(exp, UTC),
        )
