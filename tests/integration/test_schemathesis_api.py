"""Schemathesis over the whole OpenAPI document against a real `chatcore serve` (SECURITY.md §3.5).

The server is a child process on the embedded default; the fuzzer is the `st` CLI in a child
process, authenticated with the Bearer token of a real user, bounded by `--max-time`. Its
stateful phase chains operations through the links it infers from `Location` headers (every
create returns one). Asserted: 0 failures of the checks below (so 0 5xx and 0 responses off
the documented schema, status or content type), and the server logged no 5xx and no unhandled
error. The token's session must still be live at the end (otherwise everything after its loss
would have been a trivially conforming 401).

Left out, with reasons:
- Routes that end the fuzzing session: logout, session revoke, password change.
- Checks `positive_data_acceptance` (domain rules beyond JSON Schema answer 422: a valid email,
  a non-blank title, a direct chat with someone else, role rules), `negative_data_rejection`
  (litestar 2 converts bodies with msgspec `strict=False`, so `0` passes for `false` and `"5"`
  for `5`) and `ensure_resource_availability` (a 404 names a user or member given in the body,
  e.g. `PUT /groups/{id}/owner` with an unknown `user_id`, not the resource just created).
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.test_failure_support import Server, account, free_port, start, stop
from tests.integration.test_http_support import bounded

__all__ = ["bounded"]

pytestmark = pytest.mark.slow

ST = Path(sys.executable).parent / "st"
MAX_TIME_S = 30  # the whole fuzzing run; the test stays under the 60 s bound
MAX_EXAMPLES = 30
SESSION_ENDING = r"^/v1/auth/(logout|password$|sessions/)"
LEFT_OUT_CHECKS = "positive_data_acceptance,negative_data_rejection,ensure_resource_availability"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = start(tmp_path, free_port())
    try:
        yield running
    finally:
        stop(running.process)


def test_schemathesis_finds_no_server_error_and_no_schema_violation(server: Server, tmp_path: Path) -> None:
    assert ST.exists(), "schemathesis is not installed: pip install -e '.[dev]'"
    seed = int(os.environ.get("ST_SEED") or random.randrange(1_000_000))
    print(f"\nschemathesis seed: {seed} (replay with ST_SEED={seed})")
    with httpx.Client(base_url=server.url, timeout=10) as client:
        fuzzer = account(client, "fuzzer")
    report = tmp_path / "schemathesis.json"
    done = subprocess.run(
        [
            str(ST),
            "run",
            f"{server.url}/schema/openapi.json",
            "--header",
            f"Authorization: Bearer {fuzzer.token}",
            "--exclude-path-regex",
            SESSION_ENDING,
            "--checks",
            "all",
            "--exclude-checks",
            LEFT_OUT_CHECKS,
            "--max-examples",
            str(MAX_EXAMPLES),
            "--max-time",
            str(MAX_TIME_S),
            "--seed",
            str(seed),
            "--workers",
            "1",
            "--request-timeout",
            "10",
            "--generation-database",
            "none",
            "--no-color",
            "--report",
            "json",
            "--report-json-path",
            str(report),
        ],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("CHATCORE_")},
        capture_output=True,
        text=True,
        timeout=MAX_TIME_S + 20,
        check=False,
    )
    with httpx.Client(base_url=server.url, timeout=10) as client:
        still_signed_in = client.get("/v1/users/me", headers=fuzzer.headers).status_code

    result = json.loads(report.read_text())
    access = [json.loads(line) for line in server.log.read_text().splitlines() if '"chatcore.access"' in line]
    statuses = Counter(f"{entry['status'] // 100}xx" for entry in access)
    links = re.search(r"API Links:\s+(\d+) covered / (\d+) selected", done.stdout)
    figures = {
        "seed": seed,
        "operations_tested": result["operations"]["tested"],
        "operations_total": result["operations"]["total"],
        "test_cases": result["test_cases"]["generated"],
        "failures": len(result["failures"]),
        "errors": len(result["errors"]),
        "server_5xx": statuses["5xx"],
        "responses_by_class": dict(sorted(statuses.items())),
        "links_covered": f"{links[1]}/{links[2]}" if links else "?",
        "running_time_s": round(result["running_time"], 1),
    }
    print("schemathesis figures: " + json.dumps(figures))
    found = done.stdout.partition("= FAILURES =")[2].partition("= WARNINGS =")[0]
    found = found or done.stdout[-10_000:] + done.stderr[-5_000:]

    assert result["failures"] == [] and result["errors"] == [], found[:20_000]
    assert done.returncode == 0, found[:20_000]
    assert result["operations"]["tested"] == result["operations"]["selected"]
    assert statuses["5xx"] == 0, "the server answered 5xx"
    assert "unhandled error" not in server.log.read_text()
    assert still_signed_in == 200, "the fuzzing session ended before the run did"
