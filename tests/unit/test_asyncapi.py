"""The AsyncAPI document describes every frame the protocol sends, from the same types."""

from __future__ import annotations

from typing import Any, get_args

import msgspec

from chatcore.application.asyncapi import asyncapi_document
from chatcore.application.realtime import AnyClientFrame, AnyServerFrame, CloseCode, SendFrame
from chatcore.domain.events import AnyEvent


def _doc() -> dict[str, Any]:
    return asyncapi_document(title="chatcore", version="1", ws_path="/v1/ws", updates_path="/v1/updates")


def test_every_frame_and_event_type_has_a_schema_and_refs_resolve() -> None:
    doc = _doc()
    schemas = doc["components"]["schemas"]
    for kind in (*get_args(AnyClientFrame), *get_args(AnyServerFrame), *get_args(AnyEvent)):
        assert kind.__name__ in schemas
    refs: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            refs.extend(v for k, v in node.items() if k == "$ref" and isinstance(v, str))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    for ref in refs:
        target: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
        assert isinstance(target, dict)


def test_the_client_frame_schema_names_the_discriminator_of_every_frame() -> None:
    mapping = _doc()["components"]["schemas"]["ClientFrame"]["discriminator"]["mapping"]
    assert set(mapping) == {"send", "edit", "delete", "read", "ping", "typing", "reauth"}
    frame = msgspec.json.decode(b'{"type":"send","id":"1","chat_id":"c","body":"hi"}', type=AnyClientFrame)
    assert isinstance(frame, SendFrame)


def test_close_codes_are_documented() -> None:
    codes = _doc()["info"]["x-close-codes"]
    assert codes[str(CloseCode.RESUME_FROM_CURSOR.value)] == "resume_from_cursor"
    assert len(codes) == len(CloseCode)
