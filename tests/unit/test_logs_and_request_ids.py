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


def _pending(fd: int) -> bytes:
    """What has been written to the pipe so far (never blocks)."""
    import os

    os.set_blocking(fd, False)
    try:
        return os.read(fd, 1 << 20)
    except BlockingIOError:
        return b""


def test_info_lines_wait_in_the_batch_and_a_warning_writes_them_all_in_order() -> None:
    import os

    from entrypoints.logs import BatchedHandler

    read_end, write_end = os.pipe()
    handler = BatchedHandler(write_end, flush_s=60)  # the timer does not fire during the test
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log = logging.getLogger("chatcore.test.batched")
    log.propagate, log.level = False, logging.INFO
    log.addHandler(handler)
    try:
        log.info("one")
        log.info("two")
        assert _pending(read_end) == b""  # batched: no write per line
        log.warning("three")  # a warning is written at once, behind what waits
        assert _pending(read_end) == b"INFO one\nINFO two\nWARNING three\n"
        log.info("four")
        handler.flush()  # what the timer and the app's shutdown do
        assert _pending(read_end) == b"INFO four\n"
    finally:
        log.removeHandler(handler)
        handler.close()
        os.close(read_end)
        os.close(write_end)


def test_with_no_delay_every_line_is_written_at_once() -> None:
    import os

    from entrypoints.logs import BatchedHandler

    read_end, write_end = os.pipe()
    handler = BatchedHandler(write_end, flush_s=0)
    handler.setFormatter(logging.Formatter("%(message)s"))
    try:
        handler.handle(logging.LogRecord("x", logging.INFO, "f.py", 1, "now", None, None))
        assert _pending(read_end) == b"now\n"
    finally:
        os.close(read_end)
        os.close(write_end)


# The child only writes to a pipe and exits: other threads of the test process do not matter.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_generated_request_ids_are_unique_and_a_forked_child_has_its_own() -> None:
    import os

    from entrypoints.http.middleware import new_request_id

    ids = [new_request_id() for _ in range(1000)]
    assert len(set(ids)) == 1000 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write_end, new_request_id().encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        child = pipe.read()
    os.waitpid(pid, 0)
    assert child[:16] != ids[0][:16]  # another prefix: no id of the parent's can repeat
