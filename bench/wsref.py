"""The reference ceiling for fan-out: a bare `websockets` server, no auth, no storage.

`python -m bench.wsref PORT`. A client on `/sub/<room>` is a subscriber of that room; each text
message a client sends on `/pub` (`<room> <payload>`) is wrapped once in a JSON frame shaped like
chatcore's event frame and broadcast to the room's subscribers (`websockets.broadcast`).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections import defaultdict

import msgspec
from websockets.asyncio.server import ServerConnection, broadcast, serve

ROOMS: dict[str, set[ServerConnection]] = defaultdict(set)
CURSOR = "x" * 120  # chatcore's event frames carry a signed cursor of about this size


async def handler(ws: ServerConnection) -> None:
    path = ws.request.path if ws.request is not None else "/"
    if path.startswith("/sub/"):
        room = ROOMS[path.removeprefix("/sub/")]
        room.add(ws)
        try:
            await ws.wait_closed()
        finally:
            room.discard(ws)
        return
    async for message in ws:
        text = message if isinstance(message, str) else message.decode()
        room_id, _, body = text.partition(" ")
        frame = msgspec.json.encode(
            {
                "type": "event",
                "cursor": CURSOR,
                "record": {
                    "id": "01JBENCH0000000000000000",
                    "stream_id": room_id,
                    "seq": 1,
                    "occurred_at": "2026-01-01T00:00:00Z",
                    "event": {"type": "message.posted", "chat_id": room_id, "body": body},
                },
            }
        ).decode()
        broadcast(ROOMS.get(room_id, ()), frame)


async def main(port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with serve(handler, "127.0.0.1", port, compression=None, ping_interval=None, max_queue=None):
        await stop.wait()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main(int(sys.argv[1])))
