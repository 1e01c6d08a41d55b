"""/v1/auth: registration, password and mailed-code login, sessions, verification, passwords.

The pre-login routes are public (the authentication allow-list); they answer the same for
known and unknown addresses (the use cases see to that). Mailed link tokens travel in request
bodies, never in URLs, so they stay out of access logs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import msgspec
from litestar import Controller, Request
from litestar.params import FromPath
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT

from chatcore.application.auth import (
    ChangePasswordCommand,
    CodeRequested,
    EmailCodeRequest,
    EmailVerified,
    LoginCommand,
    LogoutCommand,
    PasswordResetRequest,
    RefreshCommand,
    RegisterCommand,
    Registration,
    ResetPasswordCommand,
    RevokeSessionCommand,
    SessionView,
    TokenPair,
    VerifyEmailCodeCommand,
    VerifyEmailCommand,
    VerifyEmailLinkCommand,
)
from chatcore.domain.errors import InvalidInput
from chatcore.ports.security import EmailPurpose
from entrypoints.http.deps import Actor
from entrypoints.http.guards import PUBLIC, runtime_of
from entrypoints.http.routing import delete, get, post
from entrypoints.http.schemas import JSONBody
from entrypoints.http.schemas import Request as Body

PUBLIC_OPT = {PUBLIC: True}


class RegisterRequest(Body, frozen=True, kw_only=True):
    email: str
    password: str
    display_name: str


class LoginRequest(Body, frozen=True, kw_only=True):
    email: str
    password: str


class RefreshRequest(Body, frozen=True, kw_only=True):
    refresh_token: str


class EmailCodeRequestBody(Body, frozen=True, kw_only=True):
    email: str
    purpose: Literal["login", "verify_email"] = "login"


class VerifyCodeRequest(Body, frozen=True, kw_only=True):
    attempt_id: str
    code: str


class VerifyLinkRequest(Body, frozen=True, kw_only=True):
    token: str


class VerifyEmailRequest(Body, frozen=True, kw_only=True):
    """Either `attempt_id` + `code`, or the link's `token`."""

    attempt_id: str | None = None
    code: str | None = None
    token: str | None = None


class PasswordResetRequestBody(Body, frozen=True, kw_only=True):
    email: str


class PasswordResetConfirm(Body, frozen=True, kw_only=True):
    """The new password with either `attempt_id` + `code`, or the link's `token`."""

    new_password: str
    attempt_id: str | None = None
    code: str | None = None
    token: str | None = None


class ChangePasswordRequest(Body, frozen=True, kw_only=True):
    current_password: str
    new_password: str


class SessionList(msgspec.Struct, frozen=True, kw_only=True):
    sessions: list[SessionView]


@contextmanager
def _new_password_field() -> Iterator[None]:
    """The use cases check the new password as `password`; on this wire it is `new_password`."""
    try:
        yield
    except InvalidInput as exc:
        if exc.field == "password":
            exc.field = "new_password"
        raise


def _ip(request: Request[Any, Any, Any]) -> str | None:
    return request.client.host if request.client else None


def _agent(request: Request[Any, Any, Any]) -> str | None:
    return request.headers.get("user-agent")


class AuthController(Controller):
    path = "/v1/auth"
    tags = ["auth"]

    @post("/register", opt=PUBLIC_OPT, status_code=HTTP_202_ACCEPTED)
    async def register(
        self, request: Request[Any, Any, Any], data: JSONBody[RegisterRequest]
    ) -> Registration:
        """Create an account; a verification code is mailed. The same answer for a taken address."""
        return await runtime_of(request).auth.register(
            RegisterCommand(
                email=data.email, password=data.password, display_name=data.display_name, ip=_ip(request)
            )
        )

    @post("/login", opt=PUBLIC_OPT, status_code=HTTP_200_OK)
    async def login(self, request: Request[Any, Any, Any], data: JSONBody[LoginRequest]) -> TokenPair:
        return await runtime_of(request).auth.login(
            LoginCommand(
                email=data.email, password=data.password, ip=_ip(request), user_agent=_agent(request)
            )
        )

    @post("/refresh", opt=PUBLIC_OPT, status_code=HTTP_200_OK)
    async def refresh(self, request: Request[Any, Any, Any], data: JSONBody[RefreshRequest]) -> TokenPair:
        """Rotate the refresh token; replaying a rotated one ends the whole session."""
        return await runtime_of(request).auth.refresh(RefreshCommand(refresh_token=data.refresh_token))

    @post("/logout", status_code=HTTP_204_NO_CONTENT)
    async def logout(self, request: Request[Any, Any, Any], actor: Actor) -> None:
        """End the caller's session: its refresh token and access tokens stop working at once."""
        await runtime_of(request).auth.logout(LogoutCommand(actor=actor, session_id=request.state.session_id))

    @get("/sessions")
    async def list_sessions(self, request: Request[Any, Any, Any], actor: Actor) -> SessionList:
        sessions = await runtime_of(request).auth.list_sessions(
            actor, current_session_id=request.state.session_id
        )
        return SessionList(sessions=sessions)

    @delete("/sessions/{session_id:str}", status_code=HTTP_204_NO_CONTENT)
    async def revoke_session(
        self, request: Request[Any, Any, Any], actor: Actor, session_id: FromPath[str]
    ) -> None:
        await runtime_of(request).auth.revoke_session(
            RevokeSessionCommand(actor=actor, session_id=session_id)
        )

    @post("/email-code", opt=PUBLIC_OPT, status_code=HTTP_202_ACCEPTED)
    async def request_email_code(
        self, request: Request[Any, Any, Any], data: JSONBody[EmailCodeRequestBody]
    ) -> CodeRequested:
        """Mail a 6-digit code and a link (login, or email verification). Same answer for any address."""
        return await runtime_of(request).auth.request_email_code(
            EmailCodeRequest(email=data.email, purpose=EmailPurpose(data.purpose), ip=_ip(request))
        )

    @post("/email-code/verify", opt=PUBLIC_OPT, status_code=HTTP_200_OK)
    async def verify_email_code(
        self, request: Request[Any, Any, Any], data: JSONBody[VerifyCodeRequest]
    ) -> TokenPair:
        """Sign in with a mailed login code, bound to the attempt it was requested with."""
        return await runtime_of(request).auth.verify_email_code(
            VerifyEmailCodeCommand(
                attempt_id=data.attempt_id, code=data.code, ip=_ip(request), user_agent=_agent(request)
            )
        )

    @post("/email-link/verify", opt=PUBLIC_OPT, status_code=HTTP_200_OK)
    async def verify_email_link(
        self, request: Request[Any, Any, Any], data: JSONBody[VerifyLinkRequest]
    ) -> TokenPair:
        """Sign in with the token of a mailed login link (the client page posts it from the fragment)."""
        return await runtime_of(request).auth.verify_email_link(
            VerifyEmailLinkCommand(token=data.token, ip=_ip(request), user_agent=_agent(request))
        )

    @post("/verify-email", opt=PUBLIC_OPT, status_code=HTTP_200_OK)
    async def verify_email(
        self, request: Request[Any, Any, Any], data: JSONBody[VerifyEmailRequest]
    ) -> EmailVerified:
        return await runtime_of(request).auth.verify_email(
            VerifyEmailCommand(attempt_id=data.attempt_id, code=data.code, token=data.token, ip=_ip(request))
        )

    @post("/password-reset", opt=PUBLIC_OPT, status_code=HTTP_202_ACCEPTED)
    async def request_password_reset(
        self, request: Request[Any, Any, Any], data: JSONBody[PasswordResetRequestBody]
    ) -> CodeRequested:
        return await runtime_of(request).auth.request_password_reset(
            PasswordResetRequest(email=data.email, ip=_ip(request))
        )

    @post("/password-reset/confirm", opt=PUBLIC_OPT, status_code=HTTP_204_NO_CONTENT)
    async def reset_password(
        self, request: Request[Any, Any, Any], data: JSONBody[PasswordResetConfirm]
    ) -> None:
        """Set a new password with a mailed reset code or link; every session of the user ends."""
        with _new_password_field():
            await runtime_of(request).auth.reset_password(
                ResetPasswordCommand(
                    new_password=data.new_password,
                    attempt_id=data.attempt_id,
                    code=data.code,
                    token=data.token,
                    ip=_ip(request),
                )
            )

    @post("/password", status_code=HTTP_204_NO_CONTENT)
    async def change_password(
        self, request: Request[Any, Any, Any], actor: Actor, data: JSONBody[ChangePasswordRequest]
    ) -> None:
        """Change the password (the current one is required); the caller's other sessions end."""
        with _new_password_field():
            await runtime_of(request).auth.change_password(
                ChangePasswordCommand(
                    actor=actor,
                    session_id=request.state.session_id,
                    current_password=data.current_password,
                    new_password=data.new_password,
                    ip=_ip(request),
                )
            )
