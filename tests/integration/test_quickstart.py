"""The README's walk-through runs as written, against a fresh zero-config server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.integration.test_http_server_process import _free_port, _start, _stop

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "docs" / "quickstart.sh"


def test_the_readme_shows_the_quickstart_script_verbatim() -> None:
    readme = (ROOT / "README.md").read_text()
    body = SCRIPT.read_text().split("set -euo pipefail\n", 1)[1]
    assert body.strip() in readme


def test_the_quickstart_walk_through_works(tmp_path: Path) -> None:
    server = _start(tmp_path, _free_port())
    try:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CHATCORE_")},
            "BASE": server.url,
            "MAIL": str(tmp_path / "chatcore-data" / "mail"),
            "PY": sys.executable,
        }
        done = subprocess.run(
            ["bash", str(SCRIPT)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        out = done.stdout
        assert "Bob heard over WebSocket: Noon at the usual place?" in out
        assert "Bob polled: ['Or one o clock?']" in out
        assert "History: [(1, 'Noon at the usual place?'), (2, 'Or one o clock?')]" in out
        assert "Bob unread: [('Lunch', 2)]" in out
    finally:
        _stop(server.process)
