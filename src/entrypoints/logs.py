"""Structured (JSON-lines) logs carrying the request id; tokens and query strings never logged."""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from contextvars import ContextVar
from typing import Any

_request_id: ContextVar[str | None] = ContextVar("chatcore_request_id", default=None)

# LogRecord attributes that are not "extra" fields.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def request_id() -> str | None:
    return _request_id.get()


def set_request_id(value: str | None) -> Any:
    return _request_id.set(value)


def reset_request_id(token: Any) -> None:
    _request_id.reset(token)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id()
        return True


# Built once: json.dumps(entry, default=str) builds a new encoder for every line. Same output
# (ASCII only, so no raw line separator from a path can split a line; values JSON has no type
# for written as their str()).
_encoder = json.JSONEncoder(default=str)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id and any extras.

    Every request writes one (the access line), so the encoder is built once and the time's
    whole seconds are formatted once per second: half the cost of json.dumps and datetime.
    """

    def __init__(self) -> None:
        super().__init__()
        self._second: tuple[int, str] = (-1, "")  # one tuple: threads swap it whole

    def _time(self, created: float) -> str:
        """`created` as ISO 8601 UTC, milliseconds truncated as `datetime.isoformat` does."""
        fraction, whole = math.modf(created)  # rounded as datetime.fromtimestamp rounds it
        second, micros = int(whole), round(fraction * 1_000_000)
        if micros >= 1_000_000:
            second, micros = second + 1, micros - 1_000_000
        cached, text = self._second
        if cached != second:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, text)
        return f"{text}.{micros // 1000:03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self._time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return _encoder.encode(entry)


def configure_logging(level: str = "INFO") -> None:
    """JSON logs on stderr for the server process (tests keep pytest's own handlers)."""
    # Thread, process and task names are never written (see JsonFormatter): not collecting
    # them saves a few microseconds on every log line, the access line of each request included.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.logAsyncioTasks = False  # type: ignore[attr-defined]  # 3.12+, not in typeshed yet
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
