"""`python -m bench [--quick] [--only a,b] [--runs N]`: every scenario of issue 10, bounded in time.

Order: seed the data, then for each server in turn (hello-world ceiling, chatcore embedded, bare
websockets ceiling, chatcore + Redis) start it, drive it from a load-generator process
(`bench.loadgen`), stop it by its pid. Results go to bench/results/<stamp>/results.json (and
table.md); the table is printed at the end. Loopback only.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from bench import procs
from bench.report import Row, markdown, row, table
from bench.seed import Seed, chatcore_env, seed

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
SCENARIOS = ("send", "redis", "history", "fanout", "longpoll", "idle")
HOST = "127.0.0.1"


@dataclass(frozen=True)
class Profile:
    runs: int
    duration_s: float
    warmup_s: float
    concurrency: tuple[int, ...]
    fan_messages: int  # per run, at 20/s, one chat
    small_messages: int  # per run, at 100/s, across the 100 chats
    poll_rounds: int
    idle_connections: int
    budget_s: float  # the run stops starting new steps after this


DEFAULT = Profile(3, 3.0, 0.5, (1, 8, 32), 100, 200, 12, 5000, 8 * 60)
QUICK = Profile(2, 1.0, 0.3, (1, 32), 30, 100, 6, 2000, 2 * 60)


class Bench:
    def __init__(self, profile: Profile, only: set[str], workdir: Path) -> None:
        self.p, self.only, self.work = profile, only, workdir
        self.started = time.monotonic()
        self.raw: dict[str, Any] = {}
        self.notes: list[str] = []

    # -- plumbing -----------------------------------------------------------------------------

    def left_s(self) -> float:
        return self.p.budget_s - (time.monotonic() - self.started)

    def want(self, name: str) -> bool:
        return name in self.only

    def step(self, name: str, fn: Callable[[], Any]) -> None:
        if self.left_s() <= 0:
            self.notes.append(f"{name}: skipped, time budget spent")
            print(f"[bench] {name}: skipped (time budget spent)", file=sys.stderr)
            return
        t0 = time.monotonic()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        try:
            self.raw[name] = fn()
        except Exception as exc:
            self.raw[name] = {"error": repr(exc)}
        status = self.raw[name].get("error", "ok") if isinstance(self.raw[name], dict) else "ok"
        print(f"[bench] {name}: {status} ({time.monotonic() - t0:.1f} s)", file=sys.stderr, flush=True)

    def load(self, spec: dict[str, Any], timeout_s: float = 120) -> dict[str, Any]:
        done = subprocess.run(  # noqa: S603 - our own module
            [procs.PYTHON, "-m", "bench.loadgen"],
            input=msgspec.json.encode(spec),
            capture_output=True,
            cwd=ROOT,
            timeout=timeout_s,
            check=False,
        )
        if done.returncode != 0:
            return {"error": done.stderr.decode()[-2000:]}
        result: dict[str, Any] = msgspec.json.decode(done.stdout)
        return result

    def chatcore(self, name: str, data_dir: Path, **env: str) -> tuple[subprocess.Popen[bytes], int]:
        port = procs.free_port()
        log = self.work / f"{name}.log"
        process = procs.start(
            [str(procs.BIN / "chatcore"), "serve", "--host", HOST, "--port", str(port), "--workers", "1"],
            log=log,
            env=chatcore_env(str(data_dir), **env),
            cwd=self.work,
        )
        procs.wait_until(lambda: procs.http_ok(port, "/healthz"), process, timeout_s=60, log=log)
        return process, port

    # -- the steps ----------------------------------------------------------------------------

    def http(
        self, port: int, pid: int, workers: list[dict[str, Any]], runs: int | None = None
    ) -> dict[str, Any]:
        spec = {
            "kind": "http",
            "host": HOST,
            "port": port,
            "pid": pid,
            "workers": workers,
            "runs": self.p.runs if runs is None else runs,
            "duration_s": self.p.duration_s,
            "warmup_s": self.p.warmup_s,
        }
        return self.load(spec)

    def start_hello(self) -> tuple[subprocess.Popen[bytes], int]:
        """The hello-world server (the ceilings); it runs until `run` ends, beside chatcore."""
        port = procs.free_port()
        log = self.work / "hello.log"
        argv = [str(procs.BIN / "granian"), "--interface", "asgi", "--loop", "uvloop", "--workers", "1"]
        argv += ["--host", HOST, "--port", str(port), "--no-access-log", "bench.hello:app"]
        process = procs.start(argv, log=log, cwd=ROOT)
        procs.wait_until(lambda: procs.http_ok(port, "/healthz"), process, timeout_s=30, log=log)
        return process, port

    def hello(self, process: subprocess.Popen[bytes], port: int) -> None:
        """The ceilings measured on their own: idle sockets and GETs (hello POST runs beside each
        send run, see `sends`)."""
        if self.want("idle"):  # granian + Litestar holding idle sockets, no chatcore code
            self.idle(port, process.pid, ref=True, name="idle.granian")
        if not (self.want("send") or self.want("redis") or self.want("history")):
            return
        if self.want("history") and 8 not in self.p.concurrency:  # the history ceiling
            get8 = [{"mode": "get", "path": "/hello"}] * 8
            self.step("hello.get.c8", lambda: self.http(port, process.pid, get8))
        for c in self.p.concurrency:
            self.step(
                f"hello.get.c{c}",
                lambda c=c: self.http(port, process.pid, [{"mode": "get", "path": "/hello"}] * c),
            )

    def sends(self, port: int, pid: int, prefix: str, hello: tuple[subprocess.Popen[bytes], int]) -> None:
        """Each send run right after a hello POST run at the same concurrency, alternating: the
        machine's speed drifts over minutes, and a ratio of runs taken far apart would carry it.
        The embedded default's pairs are `hello.post.cN`; the Redis run's `hello.post.cN.redis`."""
        s, (hello_process, hello_port) = self.seed, hello
        path = f"/v1/chats/{s.send_chat}/messages"
        token = s.sender["token"]  # the same headers as a chatcore send
        for c in self.p.concurrency:
            workers = [{"mode": "post", "path": path, "token": s.senders[i]["token"]} for i in range(c)]
            post = [{"mode": "post", "path": "/hello", "token": token}] * c
            ceiling = f"hello.post.c{c}" + ("" if prefix == "send.embedded" else "." + prefix.split(".")[-1])
            self.step_pair(
                (ceiling, lambda post=post: self.http(hello_port, hello_process.pid, post, runs=1)),
                (f"{prefix}.c{c}", lambda w=workers: self.http(port, pid, w, runs=1)),
            )

    def step_pair(self, *steps: tuple[str, Callable[[], dict[str, Any]]]) -> None:
        """`steps` (one run each) in turn, self.p.runs times; each name gets all of its runs."""
        if self.left_s() <= 0:
            for name, _ in steps:
                self.notes.append(f"{name}: skipped, time budget spent")
            return
        names = " + ".join(name for name, _ in steps)
        t0 = time.monotonic()
        print(f"[bench] {names} ...", file=sys.stderr, flush=True)
        got: dict[str, dict[str, Any]] = {name: {"runs": []} for name, _ in steps}
        for _ in range(self.p.runs):
            for name, fn in steps:
                try:
                    result = fn()
                except Exception as exc:
                    result = {"error": repr(exc)}
                if "error" in result:
                    got[name] = result
                elif "error" not in got[name]:
                    got[name]["runs"] += result["runs"]
        self.raw.update(got)
        errors = [r["error"] for r in got.values() if "error" in r]
        status = errors[0] if errors else "ok"
        print(f"[bench] {names}: {status} ({time.monotonic() - t0:.1f} s)", file=sys.stderr, flush=True)

    def history(self, port: int, pid: int) -> None:
        s = self.seed
        workers = [
            {
                "mode": "history",
                "path": f"/v1/chats/{s.history_chat}/messages",
                "token": s.senders[i]["token"],
                "max_before": s.history_messages + 1,
            }
            for i in range(8)
        ]
        self.step("history.c8", lambda: self.http(port, pid, workers))

    def fanouts(self, port: int, pid: int, ref: bool, ws_port: int | None = None) -> None:
        """`ws_port`: chatcore's sockets on its dedicated listener (rows `.dedicated`)."""
        s = self.seed
        who = "ref" if ref else "dedicated" if ws_port else "chatcore"

        def subs(chat: str, indexes: list[int]) -> list[dict[str, Any]]:
            if ref:
                return [{"path": f"/sub/{chat}", "room": chat} for _ in indexes]
            return [{"path": "/v1/ws", "token": s.subs[i]["token"], "room": chat} for i in indexes]

        cases = [
            ("fanout.100", subs(s.fan_100, list(range(100))), [s.fan_100], 20, self.p.fan_messages),
            ("fanout.1000", subs(s.fan_1000, list(range(1000))), [s.fan_1000], 20, self.p.fan_messages),
            (
                "fanout.100x10",
                [x for chat, m in zip(s.small_chats, s.small_members, strict=True) for x in subs(chat, m)],
                s.small_chats,
                100,
                self.p.small_messages,
            ),
        ]
        for name, subscribers, rooms, rate, count in cases:
            spec = {
                "kind": "fanout",
                "mode": "ref" if ref else "chatcore",
                "host": HOST,
                "port": port,
                "ws_port": ws_port,
                "pid": pid,
                "subs": subscribers,
                "rooms": rooms,
                "token": s.sender["token"],
                "rate": rate,
                "messages": count,
                "runs": self.p.runs,
            }
            self.step(f"{name}.{who}", lambda spec=spec: self.load(spec, timeout_s=180))

    def longpoll(self, port: int, pid: int) -> None:
        s = self.seed
        spec = {
            "kind": "longpoll",
            "host": HOST,
            "port": port,
            "pid": pid,
            "tokens": [u["token"] for u in s.subs[:100]],
            "token": s.sender["token"],
            "chat": s.poll_chat,
            "rounds": self.p.poll_rounds,
            "runs": self.p.runs,
        }
        self.step("longpoll.100", lambda: self.load(spec))

    def idle(
        self, port: int, pid: int, ref: bool, name: str | None = None, ws_port: int | None = None
    ) -> None:
        n, s = self.p.idle_connections, self.seed
        if ref:
            subs = [{"path": "/sub/idle"} for _ in range(n)]
        else:
            subs = [{"path": "/v1/ws", "token": s.subs[i % len(s.subs)]["token"]} for i in range(n)]
        spec = {"kind": "idle", "host": HOST, "port": port, "ws_port": ws_port, "pid": pid, "subs": subs}
        name = name or f"idle.{'ref' if ref else 'dedicated' if ws_port else 'chatcore'}"
        self.step(name, lambda: self.load(spec, timeout_s=240))

    def run(self) -> None:
        data = self.work / "data"
        t0 = time.monotonic()
        print("[bench] seeding users, chats and 100,000 history messages ...", file=sys.stderr, flush=True)
        self.seed: Seed = seed(
            chatcore_env(str(data)), n_senders=32, n_subs=1000, n_small=100, history=100_000
        )
        self.raw["seed_s"] = round(time.monotonic() - t0, 1)
        hello = self.start_hello()
        try:
            self.chatcore_steps(data, hello)
        finally:
            procs.stop(hello[0])

    def chatcore_steps(self, data: Path, hello: tuple[subprocess.Popen[bytes], int]) -> None:
        if self.want("send") or self.want("redis") or self.want("history") or self.want("idle"):
            self.hello(*hello)
        # WebSockets on granian's port, and on the dedicated listener (CHATCORE_WS_PORT).
        ws_port = procs.free_port()
        process, port = self.chatcore("chatcore", data, CHATCORE_WS_PORT=str(ws_port))
        try:
            self.raw["rss_idle_server"] = procs.memory(process.pid)
            if self.want("send"):
                self.sends(port, process.pid, "send.embedded", hello)
            if self.want("history"):
                self.history(port, process.pid)
            if self.want("longpoll"):
                self.longpoll(port, process.pid)
            if self.want("fanout"):
                self.fanouts(port, process.pid, ref=False)
                self.fanouts(port, process.pid, ref=False, ws_port=ws_port)
            if self.want("idle"):
                self.idle(port, process.pid, ref=False)
        finally:
            procs.stop(process)
        if self.want("idle"):
            # A fresh process: sockets opened after others closed would reuse their freed memory.
            ws_port = procs.free_port()
            process, port = self.chatcore("chatcore-ws-port", data, CHATCORE_WS_PORT=str(ws_port))
            try:
                self.idle(port, process.pid, ref=False, ws_port=ws_port)
            finally:
                procs.stop(process)
        if self.want("fanout") or self.want("idle"):
            port = procs.free_port()
            log = self.work / "wsref.log"
            ref = procs.start([procs.PYTHON, "-m", "bench.wsref", str(port)], log=log, cwd=ROOT)
            try:
                procs.wait_until(lambda: procs.tcp_open(port), ref, timeout_s=30, log=log)
                if self.want("fanout"):
                    self.fanouts(port, ref.pid, ref=True)
                if self.want("idle"):
                    self.idle(port, ref.pid, ref=True)
            finally:
                procs.stop(ref)
        if self.want("redis"):
            self.redis(data, hello)

    def redis(self, data: Path, hello: tuple[subprocess.Popen[bytes], int]) -> None:
        server = shutil.which("redis-server")
        if server is None:
            self.notes.append("redis: skipped, no redis-server on PATH")
            return
        port = procs.free_port()
        log = self.work / "redis.log"
        argv = [server, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"]
        redis = procs.start(argv, log=log, cwd=self.work)
        try:
            procs.wait_until(lambda: procs.tcp_open(port), redis, timeout_s=30, log=log)
            broker = f"redis://{HOST}:{port}/0"
            process, http_port = self.chatcore("chatcore-redis", data, CHATCORE_BROKER_URL=broker)
            try:
                self.sends(http_port, process.pid, "send.redis", hello)
            finally:
                procs.stop(process)
        finally:
            procs.stop(redis)

    # -- figures ------------------------------------------------------------------------------

    def runs(self, name: str) -> list[dict[str, Any]]:
        got = self.raw.get(name)
        if not isinstance(got, dict) or "runs" not in got:
            return []
        runs: list[dict[str, Any]] = got["runs"]
        return runs

    def rows(self) -> list[Row]:
        out = self._rows()
        for r in out:
            if r.median is None and r.note is None:
                r.note = "no figure (see raw errors)"
        return out

    def _rows(self) -> list[Row]:
        out: list[Row] = []
        for c in self.p.concurrency:
            for method in ("get", "post"):
                if runs := self.runs(f"hello.{method}.c{c}"):
                    out.append(row(f"hello {method.upper()} c={c}", "rps", "req/s", runs))
        for backend in ("embedded", "redis"):
            for c in self.p.concurrency:
                # Each backend's own hello POST runs, taken beside its sends (see `sends`).
                ceiling = self.runs(f"hello.post.c{c}" + ("" if backend == "embedded" else f".{backend}"))
                runs = self.runs(f"send.{backend}.c{c}")
                if not runs:
                    continue
                target, check = None, None
                if c == 32 and backend == "embedded":
                    target, check = (
                        ">= 0.25 x hello POST",
                        (lambda r: r.ratio is not None and r.ratio >= 0.25),
                    )
                out.append(
                    row(
                        f"send {backend} c={c}",
                        "rps",
                        "msg/s",
                        runs,
                        ceiling_runs=ceiling,
                        ceiling_name="hello POST",
                        target=target,
                        check=check,
                        paired=True,
                    )
                )
                out.append(row(f"send {backend} c={c}", "p50_ms", "ms", runs))
                out.append(row(f"send {backend} c={c}", "p99_ms", "ms", runs))
        if runs := self.runs("history.c8"):
            out.append(
                row(
                    "history 8 readers",
                    "rps",
                    "pages/s",
                    runs,
                    ceiling_runs=self.runs("hello.get.c8"),
                    ceiling_name="hello GET c=8",
                    target=">= 1,000 pages/s",
                    check=lambda r: r.median >= 1000,
                )
            )
            out.append(row("history 8 readers", "p99_ms", "ms", runs))
        if runs := self.runs("longpoll.100"):
            out.append(row("long-poll 100 waiting", "p50_ms", "ms", runs))
            out.append(
                row(
                    "long-poll 100 waiting",
                    "p99_ms",
                    "ms",
                    runs,
                    target="<= 50 ms",
                    check=lambda r: r.median <= 50,
                )
            )
        # chatcore's sockets on granian's port, then on the dedicated WebSocket listener.
        for who, where in (("chatcore", ""), ("dedicated", " (WS port)")):
            out += self._fanout_rows(who, where)
            out += self._idle_rows(who, where)
        return out

    def _fanout_rows(self, who: str, where: str) -> list[Row]:
        out: list[Row] = []
        for case, label in (
            ("fanout.100", "fan-out 1x100"),
            ("fanout.1000", "fan-out 1x1000"),
            ("fanout.100x10", "fan-out 100x10"),
        ):
            runs, ref = self.runs(f"{case}.{who}"), self.runs(f"{case}.ref")
            if not runs:
                continue
            for metric in ("p50_ms", "p99_ms", "max_ms"):
                target, check = None, None
                if case == "fanout.1000" and metric == "p99_ms":
                    target, check = "<= 2 x bare p99", (lambda r: r.ratio is not None and r.ratio <= 2)
                out.append(
                    row(
                        label + where,
                        metric,
                        "ms",
                        runs,
                        ceiling_runs=ref,
                        ceiling_name="bare websockets",
                        target=target,
                        check=check,
                    )
                )
            out.append(
                row(
                    label + where,
                    "per_s",
                    "deliveries/s",
                    runs,
                    ceiling_runs=ref,
                    ceiling_name="bare websockets",
                )
            )
            lost = sum(r["expected"] - r["deliveries"] for r in runs)
            if lost:
                out[-1].note = f"{lost} deliveries missing"
        return out

    def _idle_rows(self, who: str, where: str) -> list[Row]:
        runs, label = self.runs(f"idle.{who}"), "idle WS connections" + where
        if not runs:
            return []
        bare = self.runs("idle.ref")
        out = [
            row(
                label,
                "per_gib_marginal",
                "conns/GiB",
                runs,
                ceiling_runs=bare,
                ceiling_name="bare websockets",
                target=">= 10,000 per GiB",
                check=lambda r: r.median >= 10_000,
            ),
            row(label, "per_gib_total", "conns/GiB", runs, ceiling_runs=bare, ceiling_name="bare websockets"),
        ]
        # KiB per socket against bare websockets and, when measured, the same server stack
        # (Litestar on granian) without chatcore.
        ceilings = [("idle.ref", "bare websockets")]
        if self.runs("idle.granian"):
            ceilings.append(("idle.granian", "bare Litestar WS on granian"))
        for ceiling, name in ceilings:
            out.append(
                row(label, "kib_per_conn", "KiB", runs, ceiling_runs=self.runs(ceiling), ceiling_name=name)
            )
        return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs (about 2 minutes)")
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(SCENARIOS)}")
    parser.add_argument("--runs", type=int, help="runs per figure (default 3, quick 2)")
    parser.add_argument("--keep-data", action="store_true", help="keep the seeded data directory")
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else DEFAULT
    if args.runs:
        profile = Profile(**{**profile.__dict__, "runs": max(1, min(args.runs, 10))})
    only = set(args.only.split(",")) if args.only else set(SCENARIOS)
    if unknown := only - set(SCENARIOS):
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = RESULTS / f"{stamp}{'-quick' if args.quick else ''}"
    workdir.mkdir(parents=True)
    procs.install_cleanup()
    bench = Bench(profile, only, workdir)
    try:
        bench.run()
    except KeyboardInterrupt:
        bench.notes.append("interrupted")
    finally:
        procs.stop_all()
        if not args.keep_data:
            shutil.rmtree(workdir / "data", ignore_errors=True)
    rows = bench.rows()
    result = {
        "profile": profile.__dict__,
        "elapsed_s": round(time.monotonic() - bench.started, 1),
        "machine": {"cpus": _cpus(), "python": sys.version.split()[0]},
        "notes": bench.notes,
        "rows": rows,
        "raw": bench.raw,
    }
    (workdir / "results.json").write_bytes(msgspec.json.format(msgspec.json.encode(result)))
    (workdir / "table.md").write_text(markdown(rows) + "\n")
    print(table(rows))
    for note in bench.notes:
        print(f"note: {note}")
    print(f"\n{result['elapsed_s']} s; results in {workdir / 'results.json'}")
    return 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))
