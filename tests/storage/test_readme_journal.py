"""The README's journal example runs as written (in a temp dir)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_journal_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    section = README.read_text().split("## The journal", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "no python example under '## The journal'"
    monkeypatch.chdir(tmp_path)
    exec(compile(code.group(1), "README.md#the-journal", "exec"), {})  # noqa: S102 - our own README
    assert (tmp_path / "journal" / "data.mdb").exists()
