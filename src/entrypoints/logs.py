"""Structured (JSON-lines) logs carrying the request id; tokens and query strings never logged."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import threading
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


class BatchedHandler(logging.Handler):
    """Lines to a file descriptor in batches: written every `flush_s` by a timer thread, and at
    once for a warning or worse, when the batch reaches BATCH_BYTES, and at exit.

    Why: a write per line is a system call per request (the access line), and each one lets
    granian's own thread take the GIL; the server then waits for it to get it back. Measured
    under `chatcore serve`, 32 connections: the access line cost 60 to 70 µs per request written
    line by line (about 12 µs of Python). The price is that a crash (SIGKILL) loses at most
    `flush_s` of INFO lines. Lines stay whole: a batch is written by whole lines, in order.
    """

    BATCH_BYTES = 64 * 1024

    def __init__(self, fd: int, flush_s: float) -> None:
        super().__init__()
        self._fd, self._flush_s = fd, flush_s
        self._lines: list[str] = []
        self._size = 0
        self._closed = threading.Event()
        if flush_s > 0:
            threading.Thread(target=self._flush_every, name="chatcore-log-flush", daemon=True).start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        # Handler.handle holds self.lock here.
        self._lines.append(line)
        self._size += len(line)
        if self._flush_s <= 0 or record.levelno >= logging.WARNING or self._size >= self.BATCH_BYTES:
            self._write()

    def flush(self) -> None:
        assert self.lock is not None  # created by Handler.__init__ (None only in its typing)
        with self.lock:
            self._write()

    def _write(self) -> None:
        if not self._lines:
            return
        data = "".join(self._lines).encode("utf-8", "backslashreplace")
        self._lines.clear()
        self._size = 0
        view = memoryview(data)
        with contextlib.suppress(OSError):  # stderr closed: nowhere left to say it
            while view:
                view = view[os.write(self._fd, view) :]

    def close(self) -> None:
        self._closed.set()
        self.flush()
        super().close()

    def _flush_every(self) -> None:
        while not self._closed.wait(self._flush_s):
            self.flush()


def configure_logging(level: str = "INFO", flush_s: float = 0.0) -> None:
    """JSON logs on stderr for the server process (tests keep pytest's own handlers), written
    in batches every `flush_s` (see BatchedHandler), line by line on a terminal."""
    # Thread, process and task names are never written (see JsonFormatter): not collecting
    # them saves a few microseconds on every log line, the access line of each request included.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.logAsyncioTasks = False  # type: ignore[attr-defined]  # 3.12+, not in typeshed yet
    # Nor where a line was logged from: the logging docs' own way to skip the frame walk.
    logging._srcfile = None
    sys.stderr.flush()
    fd = sys.stderr.fileno()
    handler = BatchedHandler(fd, 0.0 if os.isatty(fd) else flush_s)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
