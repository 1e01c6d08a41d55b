"""Log lines and request ids: the JSON formatter's output, and what the middleware wraps."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

import pytest

from entrypoints.http.middleware import HEADER, request_id_middleware
from entrypoints.logs import JsonFormatter, request_id


def _record(created: float, **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("chatcore.access", logging.INFO, "f.py", 1, "got %s", ("it",), None)
    record.created = created
    record.__dict__.update(extra)
    return record


@pytest.mark.parametrize("created", [1_767_225_600.0, 1_767_225_600.0069995, 1_767_225_600.9999996])
def test_a_line_holds_the_time_as_datetime_writes_it_and_every_extra(created: float) -> None:
    extras = {
        "request_id": "r1",
        "status": 201,
        "duration_ms": 1.25,
        "gone": None,
        "when": datetime(2026, 1, 1),
    }
    line = json.loads(JsonFormatter().format(_record(created, **extras)))
    assert line == {
        "time": datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds"),
        "level": "INFO",
        "logger": "chatcore.access",
        "message": "got it",
        "request_id": "r1",
        "status": 201,
        "duration_ms": 1.25,
        "when": "2026-01-01 00:00:00",
    }


def test_a_line_is_one_ascii_line_whatever_the_values() -> None:
    formatter = JsonFormatter()
    text = formatter.format(_record(0.0, path="/v1/\u2028x\n", odd="\ud800", error=ValueError("boom")))
    assert text.isascii() and text.splitlines() == [text]
    line = json.loads(text)
    assert (line["path"], line["odd"], line["error"]) == ("/v1/\u2028x\n", "\ud800", "boom")
    try:
        raise RuntimeError("kaput")
    except RuntimeError:
        record = _record(0.0)
        record.exc_info = sys.exc_info()
    assert "RuntimeError: kaput" in json.loads(formatter.format(record))["exc_info"]


async def _run(scope_type: str) -> tuple[list[Any], list[Any], list[str | None]]:
    """Run a tiny app through the middleware: what reached the server's `send`, and the ids seen."""
    sent: list[Any] = []
    seen: list[str | None] = []

    async def server_send(message: Any) -> None:
        sent.append(message)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(request_id())
        kind = "http.response.start" if scope_type == "http" else "websocket.send"
        await send({"type": kind, "status": 200, "headers": []})
        await send({"type": "websocket.send" if scope_type != "http" else "http.response.body"})
        sends.append(send)

    sends: list[Any] = []
    scope = {"type": scope_type, "path": "/p", "headers": [(HEADER, b"rid-1")]}
    await request_id_middleware(app)(scope, None, server_send)  # type: ignore[arg-type]
    return sent, sends, seen


async def test_http_responses_get_the_id_and_websocket_frames_go_straight_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "chatcore.access")
    sent, sends, seen = await _run("http")
    assert (HEADER, b"rid-1") in sent[0]["headers"] and seen == ["rid-1"]
    sent, sends, seen = await _run("websocket")
    assert sent[0]["headers"] == [] and seen == ["rid-1"]
    assert sends[0].__name__ == "server_send"  # not wrapped: no extra call per frame
    access = [vars(r) for r in caplog.records if r.name == "chatcore.access"]
    assert [(a["request_id"], a["path"]) for a in access] == [("rid-1", "/p")] * 2
