"""The README's first command runs `actorflow demo`: it must finish cleanly, as a newcomer sees it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_runs_to_the_end_without_tracebacks(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "actorflow", "demo", "--data-dir", str(tmp_path / "data"), "--sleep", "0.2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "order-o-1: delivered" in proc.stdout
    assert "order-o-2: failed" in proc.stdout and "card declined" in proc.stdout
    assert "released 2 widget for o-2" in proc.stdout  # the saga's compensation ran
    # e.g. an event loop left open and collected at interpreter exit prints "Exception ignored in ..."
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
