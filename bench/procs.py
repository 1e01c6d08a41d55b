"""Child processes of the benchmark: free loopback ports, start, wait, stop by pid, and RSS.

Every process is started in a session of its own (its pid is its process group id) and kept in
`STARTED`; `stop()` signals that group by the child's own pid, and `stop_all()` runs at exit and
on SIGTERM/SIGINT, so nothing started here outlives the run.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

PYTHON = sys.executable
BIN = Path(sys.executable).parent
STARTED: dict[int, subprocess.Popen[bytes]] = {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(
    argv: Sequence[str], *, log: Path, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        process = subprocess.Popen(  # noqa: S603 - our own fixed argv
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    STARTED[process.pid] = process
    return process


def stop(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM to the child's own process group (its workers), then SIGKILL after `timeout_s`."""
    STARTED.pop(process.pid, None)
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def stop_all() -> None:
    for process in list(STARTED.values()):
        stop(process)


def _on_signal(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def install_cleanup() -> None:
    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, _on_signal)


def wait_until(
    ready: Callable[[], bool], process: subprocess.Popen[bytes], *, timeout_s: float, log: Path
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}: see {log}")
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.1)
    stop(process)
    raise RuntimeError(f"{process.args!r} not ready in {timeout_s} s: see {log}")


def http_ok(port: int, path: str = "/healthz") -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        return s.recv(16).startswith(b"HTTP/1.1 200")


def tcp_open(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


# -- memory -------------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                kids.extend(int(k) for k in f.read().split())
    return kids


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo.extend(_children(p))
    return pids


def rss_kib(pid: int) -> int:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def memory(pid: int) -> dict[str, float]:
    """RSS in MiB of the process tree, and of its largest process (the serving worker)."""
    sizes = [rss_kib(p) for p in tree(pid)]
    return {"rss_total_mib": round(sum(sizes) / 1024, 1), "rss_max_proc_mib": round(max(sizes) / 1024, 1)}
