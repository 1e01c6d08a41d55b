"""The failure scenarios at the sizes SECURITY.md §2 gives, beyond the tests' 30 s bound.

    .venv/bin/python -m bench.failures kill9            # R5: 4 writers x 500 in 20 chats, SIGKILL, restart
    .venv/bin/python -m bench.failures broker           # R1: 1,000 sends at 100/s, Redis down 10 s, 20 WS
    .venv/bin/python -m bench.failures slow-consumer    # R4: 20,000 events, 10 healthy sockets, 1 stalled
    .venv/bin/python -m bench.failures all

Each one runs the very test that guards the scenario (`tests/integration/test_failure_*.py`),
with the size knobs that test reads from the environment, in a pytest child process bounded by
a timeout, and prints the figures line the test prints. The assertions hold at full size too:
a run fails (exit status 1) when they do not. Nothing is started here directly; the tests start
and stop their own servers by their process groups.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Scenario:
    test: str
    env: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 300.0


SCENARIOS = {
    "kill9": Scenario(
        "tests/integration/test_failure_kill9.py",
        {"CHAOS_PER_WRITER": "500", "CHAOS_CHATS": "20"},
        timeout_s=180,
    ),
    "broker": Scenario(
        "tests/integration/test_failure_broker.py",
        {"R1_SENDS": "1000", "R1_RATE": "100", "R1_OUTAGE_S": "10", "R1_CLIENTS": "20", "R1_BUDGET_S": "60"},
        timeout_s=120,
    ),
    "slow-consumer": Scenario(
        "tests/integration/test_failure_slow_consumer.py",
        {
            "SLOW_CONSUMER_BASELINE": "1000",
            "SLOW_CONSUMER_EVENTS": "20000",
            "SLOW_CONSUMER_BODY_CHARS": "1000",  # 20,000 x 4.3 KB takes longer than the budget to resume
            "SLOW_CONSUMER_BUDGET_S": "400",
        },
        timeout_s=480,
    ),
}


def run(name: str) -> bool:
    scenario = SCENARIOS[name]
    command = [sys.executable, "-m", "pytest", scenario.test, "-q", "-s", "-p", "no:cacheprovider", "-x"]
    began = time.monotonic()
    try:
        done = subprocess.run(  # noqa: S603 - our own fixed argv
            command,
            cwd=REPO,
            env=os.environ | scenario.env,
            capture_output=True,
            text=True,
            timeout=scenario.timeout_s,
        )
    except subprocess.TimeoutExpired:
        print(f"{name}: no result within {scenario.timeout_s:.0f} s")
        return False
    figures = [line for line in done.stdout.splitlines() if "figures" in line or "→" in line]
    print(f"{name} ({time.monotonic() - began:.0f} s, {'passed' if done.returncode == 0 else 'FAILED'}):")
    for line in figures:
        print("  " + line)
    if done.returncode != 0:
        print(done.stdout[-4000:])
    return done.returncode == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.failures", description=__doc__.split("\n")[0])
    parser.add_argument("scenario", choices=[*SCENARIOS, "all"])
    args = parser.parse_args(argv)
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    results = [run(name) for name in names]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
