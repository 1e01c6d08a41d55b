"""The reference ceiling for REST: a Litestar hello-world JSON app, served by granian like chatcore.

`granian --interface asgi --loop uvloop bench.hello:app`. GET /hello answers a small JSON object;
POST /hello decodes a JSON body shaped like a message send (a msgspec Struct) and answers 201.
WebSocket /sub/{room} accepts and waits for the client to leave: the idle-socket cost of
granian + Litestar with no chatcore code (the reference of the idle scenario beside websockets).
"""

from __future__ import annotations

import msgspec
from litestar import Litestar, WebSocket, get, post, websocket


class Send(msgspec.Struct, frozen=True):
    body: str
    client_msg_id: str | None = None


@get("/hello")
async def hello() -> dict[str, str]:
    return {"hello": "world"}


@post("/hello")
async def hello_post(data: Send) -> dict[str, str]:
    return {"hello": "world", "body": data.body}


@get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@websocket("/sub/{room:str}")
async def idle_socket(socket: WebSocket[None, None, None], room: str) -> None:
    await socket.accept()
    while (await socket.receive())["type"] != "websocket.disconnect":
        pass


app = Litestar(route_handlers=[hello, hello_post, healthz, idle_socket], debug=False, logging_config=None)
