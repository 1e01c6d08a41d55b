"""How event records travel through Redis: msgspec JSON, encoded once per record."""

from __future__ import annotations

import msgspec

from chatcore.domain.events import EventRecord

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(EventRecord)


def encode_record(record: EventRecord) -> bytes:
    return _encoder.encode(record)


def decode_record(payload: bytes) -> EventRecord:
    return _decoder.decode(payload)


def record_keys(record: EventRecord) -> tuple[str, ...]:
    """The keys a record wakes, in a fixed order: its own stream first, then `event.wakes`."""
    return tuple(dict.fromkeys((record.stream_id, *record.event.wakes)))


def event_type(record: EventRecord) -> str:
    """The event's tag (`message.posted`, ...), as in the JSON `type` field."""
    return str(record.event.__struct_config__.tag)
