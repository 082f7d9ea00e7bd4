"""Every Python block in the README runs as is, pasted into a file, in a fresh directory.

A block that defines `test_*` functions is a pytest example: it is run by pytest, which must collect
and pass those tests. Each block runs in its own process (as a user would run it), with a timeout.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_the_readme_has_python_examples() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs_as_is(index: int, tmp_path: Path) -> None:
    code = BLOCKS[index]
    script = tmp_path / f"readme_block_{index}.py"
    script.write_text(code)
    tests = re.findall(r"^def (test_\w+)", code, re.M)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(script)] if tests else [sys.executable, str(script)]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    first_line = code.strip().splitlines()[0]
    assert proc.returncode == 0, f"README block {index} ({first_line!r}) failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    if tests:
        assert f"{len(tests)} passed" in proc.stdout, proc.stdout
