"""Profile the server's hot paths with py-spy: `python -m bench.profile send|history|me [--seconds N]`.

Seeds a small data set (32 senders, a 100,000-message chat), starts `chatcore serve`, records
the server's worker with `py-spy record --subprocesses --format raw` (collapsed stacks) while the
load generator drives 32 senders (`send`) or 8 history readers (`history`), then prints the top
frames by own time and by inclusive time. py-spy is not a project dependency:
`.venv/bin/pip install py-spy`.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench import procs
from bench.run import DEFAULT, HOST, RESULTS, Bench
from bench.seed import chatcore_env, seed


def summarise(raw: Path, top: int) -> str:
    """Top frames of the serving worker, per thread kind: the event loop and the SQLite threads."""
    lines = [line.rpartition(" ") for line in raw.read_text().splitlines()]
    per_process: collections.Counter[str] = collections.Counter()
    for stack, _, count in lines:
        per_process[stack.split(";", 1)[0]] += int(count or 0)
    worker = per_process.most_common(1)[0][0] if per_process else ""  # the serving worker
    groups: dict[str, tuple[collections.Counter[str], collections.Counter[str]]] = {}
    totals: collections.Counter[str] = collections.Counter()
    for stack, _, count in lines:
        if not stack.startswith(worker + ";"):
            continue
        n = int(count)
        frames = stack.split(";")[2:]  # without the process and the thread
        kind = "sqlite threads" if any(f.startswith("_worker (") for f in frames) else "event loop + other"
        for i, f in enumerate(frames):  # drop the frames of the fork in granian's supervisor
            if f.startswith("WorkerProcess.wrap_target"):
                frames = frames[i + 1 :] or frames
                break
        own, inclusive = groups.setdefault(kind, (collections.Counter(), collections.Counter()))
        totals[kind] += n
        if frames:
            own[_short(frames[-1])] += n
        for frame in {_short(f) for f in frames}:
            inclusive[frame] += n
    total = sum(totals.values()) or 1
    out = [
        f"{total} samples of the worker (non-idle): "
        + ", ".join(f"{kind} {100 * n / total:.0f}%" for kind, n in totals.most_common())
    ]
    for kind, (own, inclusive) in groups.items():
        out += ["", f"== {kind}: own time (% of all worker samples)"]
        out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
        out += ["", f"== {kind}: inclusive time"]
        out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(out)


def _short(frame: str) -> str:
    # "function (path/to/module.py:123)" -> "function (module.py)": lines merged per function.
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = path.split("/")
    tail = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{name} ({tail})"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("scenario", choices=("send", "history", "me"))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--gil", action="store_true", help="sample only the thread holding the GIL")
    parser.add_argument("--native", action="store_true", help="include native frames (C, Rust)")
    args = parser.parse_args()
    pyspy = shutil.which("py-spy") or str(procs.BIN / "py-spy")
    work = RESULTS / f"profile-{args.scenario}-{time.strftime('%Y%m%d-%H%M%S')}"
    work.mkdir(parents=True)
    procs.install_cleanup()
    data = work / "data"
    bench = Bench(DEFAULT, {args.scenario}, work)
    bench.seed = seed(chatcore_env(str(data)), n_senders=32, n_subs=0, n_small=0, history=100_000)
    process, port = bench.chatcore("chatcore", data)
    raw = work / "profile.txt"
    try:
        spy = procs.start(
            [
                pyspy,
                "record",
                "--pid",
                str(process.pid),
                "--subprocesses",
                "--format",
                "raw",
                "--rate",
                "250",
                "--output",
                str(raw),
                "--duration",
                str(int(args.seconds) + 2),
            ],
            log=work / "py-spy.log",
        )
        time.sleep(1.0)
        s = bench.seed
        if args.scenario == "send":
            path = f"/v1/chats/{s.send_chat}/messages"
            workers = [{"mode": "post", "path": path, "token": s.senders[i]["token"]} for i in range(32)]
        elif args.scenario == "me":  # an authenticated GET with no permission check
            me = "/v1/users/me"
            workers = [{"mode": "get", "path": me, "token": s.senders[i]["token"]} for i in range(32)]
        else:
            path = f"/v1/chats/{s.history_chat}/messages"
            workers = [
                {"mode": "history", "path": path, "token": s.senders[i]["token"], "max_before": 100_001}
                for i in range(8)
            ]
        spec = {
            "kind": "http",
            "host": HOST,
            "port": port,
            "workers": workers,
            "runs": 1,
            "duration_s": args.seconds,
            "warmup_s": 0.5,
        }
        print(bench.load(spec), file=sys.stderr)
        try:
            spy.wait(timeout=args.seconds + 30)
        except subprocess.TimeoutExpired:
            procs.stop(spy)
        procs.STARTED.pop(spy.pid, None)
    finally:
        procs.stop(process)
        shutil.rmtree(data, ignore_errors=True)
    summary = summarise(raw, args.top)
    (work / "summary.txt").write_text(summary + "\n")
    print(summary)
    print(f"\nraw stacks: {raw}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
