"""/v1/chats/{chat_id}/messages: send (idempotent by client_msg_id), page, get, edit, delete."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Response
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from chatcore.application.messages import EditMessageCommand, ListMessagesQuery, SendMessageCommand
from chatcore.application.views import MessagePage, MessageView
from chatcore.domain.permissions import Permission
from entrypoints.http.deps import Actor, Service
from entrypoints.http.guards import requires
from entrypoints.http.routing import delete, get, patch, post
from entrypoints.http.schemas import EditHistory, EditMessageRequest, JSONBody, SendMessageRequest

MESSAGE = "/{seq:int}"
# Seqs run from 1 to MAX_SEQ, the largest integer every JSON client reads exactly; outside that a
# path or cursor is a 422 here, never an overflow in a 64-bit database column.
MAX_SEQ = 2**53 - 1
Cursor = Annotated[int | None, Parameter(ge=0, le=MAX_SEQ, description="a message seq (exclusive)")]
Seq = Annotated[int, Parameter(ge=1, le=MAX_SEQ, description="the message's seq in its chat (from 1)")]

P = Permission


class MessageController(Controller):
    path = "/v1/chats/{chat_id:str}/messages"
    tags = ["messages"]

    @post(
        "/",
        opt=requires(P.SEND_MESSAGES),
        status_code=HTTP_201_CREATED,
        responses={HTTP_200_OK: ResponseSpec(MessageView, description="A retry: the message already sent")},
    )
    async def send_message(
        self, service: Service, actor: Actor, chat_id: FromPath[str], data: JSONBody[SendMessageRequest]
    ) -> Response[MessageView]:
        """Post a message. Repeating a `client_msg_id` returns the original with 200 and stores nothing;
        the same `client_msg_id` with another body is a 422."""
        result = await service.send_message(
            SendMessageCommand(
                actor=actor,
                chat_id=chat_id,
                body=data.body,
                reply_to=data.reply_to,
                client_msg_id=data.client_msg_id,
            )
        )
        message = result.message
        return Response(
            message,
            status_code=HTTP_201_CREATED if result.created else HTTP_200_OK,
            headers={"Location": f"/v1/chats/{chat_id}/messages/{message.seq}"},
        )

    @get("/", opt=requires(P.READ_CHAT))
    async def list_messages(
        self,
        service: Service,
        actor: Actor,
        chat_id: FromPath[str],
        after: Cursor = None,
        before: Cursor = None,
        limit: Annotated[int | None, Parameter(description="page size")] = None,
    ) -> MessagePage:
        """A page of history by seq: `after` pages forward, `before` pages back, neither = the newest."""
        return await service.list_messages(
            ListMessagesQuery(actor=actor, chat_id=chat_id, after=after, before=before, limit=limit)
        )

    @get(MESSAGE, opt=requires(P.READ_CHAT))
    async def get_message(
        self, service: Service, actor: Actor, chat_id: FromPath[str], seq: Seq
    ) -> MessageView:
        """One message; a deleted one answers 410 Gone."""
        return await service.get_message(actor, chat_id, seq)

    @patch(MESSAGE, opt=requires(P.EDIT_OWN_MESSAGES))
    async def edit_message(
        self,
        service: Service,
        actor: Actor,
        chat_id: FromPath[str],
        seq: Seq,
        data: JSONBody[EditMessageRequest],
    ) -> MessageView:
        return await service.edit_message(
            EditMessageCommand(actor=actor, chat_id=chat_id, seq=seq, body=data.body)
        )

    @get(MESSAGE + "/history", opt=requires(P.READ_CHAT))
    async def get_edit_history(
        self, service: Service, actor: Actor, chat_id: FromPath[str], seq: Seq
    ) -> EditHistory:
        return EditHistory(edits=await service.get_edit_history(actor, chat_id, seq))

    # Own or any: which one applies depends on the author, so the domain decides past visibility.
    @delete(MESSAGE, opt=requires(P.READ_CHAT), status_code=HTTP_204_NO_CONTENT)
    async def delete_message(self, service: Service, actor: Actor, chat_id: FromPath[str], seq: Seq) -> None:
        await service.delete_message(actor, chat_id, seq)
