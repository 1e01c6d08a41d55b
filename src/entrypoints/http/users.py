"""/v1/users: the caller's own profile and other users' public profiles."""

from __future__ import annotations

from litestar import Controller
from litestar.params import FromPath

from chatcore.application.profiles import UpdateProfileCommand
from chatcore.application.views import ProfileView, PublicProfileView
from entrypoints.http.deps import Actor, Service
from entrypoints.http.routing import get, patch
from entrypoints.http.schemas import JSONBody, UpdateProfileRequest


class UserController(Controller):
    path = "/v1/users"
    tags = ["users"]

    @get("/me")
    async def get_me(self, service: Service, actor: Actor) -> ProfileView:
        return await service.get_my_profile(actor)

    @patch("/me")
    async def update_me(
        self, service: Service, actor: Actor, data: JSONBody[UpdateProfileRequest]
    ) -> ProfileView:
        return await service.update_my_profile(
            UpdateProfileCommand(
                actor=actor,
                display_name=data.display_name,
                bio=data.bio,
                notify_missed_messages=data.notify_missed_messages,
                notify_added=data.notify_added,
            )
        )

    @get("/{user_id:str}")
    async def get_profile(self, service: Service, user_id: FromPath[str]) -> PublicProfileView:
        return await service.get_public_profile(user_id)
