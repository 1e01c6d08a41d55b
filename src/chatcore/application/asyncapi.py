"""The AsyncAPI document of the real-time protocol, generated from the very types it sends."""

from __future__ import annotations

from typing import Any

import msgspec

from chatcore.application.realtime import AnyClientFrame, AnyServerFrame, CloseCode
from chatcore.application.updates import UpdatesPage

_REF = "#/components/schemas/{name}"


def asyncapi_document(*, title: str, version: str, ws_path: str, updates_path: str) -> dict[str, Any]:
    """An AsyncAPI 3.0 document for the WebSocket and long-polling channels."""
    (client, server, page), schemas = msgspec.json.schema_components(
        [AnyClientFrame, AnyServerFrame, UpdatesPage], ref_template=_REF
    )
    schemas |= {"ClientFrame": client, "ServerFrame": server}
    close_codes = {str(code.value): code.name.lower() for code in CloseCode}
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": f"{title} real-time protocol",
            "version": version,
            "description": (
                "One WebSocket per client carries every chat of its user. Authenticate on the handshake "
                "(Authorization: Bearer, or the subprotocol `chatcore.bearer.<token>` beside "
                "`chatcore.v1`); pass `cursor` to resume. Each client frame has an `id`, answered by an "
                "`ack` or an `error` with the same id. `event` frames carry the cursor to resume from. "
                "Long-polling returns the same events with the same cursor."
            ),
            "x-close-codes": close_codes,
        },
        "channels": {
            "realtime": {
                "address": ws_path,
                "messages": {
                    "clientFrame": {"payload": {"$ref": _REF.format(name="ClientFrame")}},
                    "serverFrame": {"payload": {"$ref": _REF.format(name="ServerFrame")}},
                },
                "bindings": {
                    "ws": {"query": {"type": "object", "properties": {"cursor": {"type": "string"}}}}
                },
            },
            "updates": {
                "address": updates_path,
                "messages": {"updatesPage": {"payload": page}},
                "bindings": {
                    "http": {
                        "method": "GET",
                        "query": {
                            "type": "object",
                            "properties": {
                                "cursor": {"type": "string"},
                                "timeout": {"type": "number", "minimum": 0},
                                "limit": {"type": "integer", "minimum": 1},
                            },
                        },
                    }
                },
            },
        },
        "operations": {
            "sendFrame": {
                "action": "send",
                "channel": {"$ref": "#/channels/realtime"},
                "messages": [{"$ref": "#/channels/realtime/messages/clientFrame"}],
            },
            "receiveFrame": {
                "action": "receive",
                "channel": {"$ref": "#/channels/realtime"},
                "messages": [{"$ref": "#/channels/realtime/messages/serverFrame"}],
            },
            "pollUpdates": {
                "action": "receive",
                "channel": {"$ref": "#/channels/updates"},
                "messages": [{"$ref": "#/channels/updates/messages/updatesPage"}],
            },
        },
        "components": {"schemas": schemas},
    }
