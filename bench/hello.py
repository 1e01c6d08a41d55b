"""The reference ceiling for REST: a Litestar hello-world JSON app, served by granian like chatcore.

`granian --interface asgi --loop uvloop bench.hello:app`. GET /hello answers a small JSON object;
POST /hello decodes a JSON body shaped like a message send (a msgspec Struct) and answers 201.
"""

from __future__ import annotations

import msgspec
from litestar import Litestar, get, post


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


app = Litestar(route_handlers=[hello, hello_post, healthz], debug=False, logging_config=None)
