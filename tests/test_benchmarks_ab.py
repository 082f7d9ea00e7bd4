"""benchmarks.ab: medians per side over the metrics both sides reported, and its argument checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.ab import compare, main


def test_compare_takes_medians_of_the_metrics_every_repetition_reported() -> None:
    base = [{"cpu": 10.0, "wall": 1.0}, {"cpu": 30.0, "wall": 3.0}, {"cpu": 20.0}]
    new = [{"cpu": 5.0, "wall": 2.0, "extra": 1.0}, {"cpu": 7.0, "wall": 2.0}, {"cpu": 6.0, "wall": 9.0}]
    # "wall" is missing from one base repetition and "extra" from most: only "cpu" is compared
    assert compare(base, new) == [("cpu", 20.0, 6.0)]


def test_a_directory_that_is_not_a_checkout_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["steps100", "--base", str(tmp_path), "--reps", "1"])
    assert "is not an actorflow checkout" in capsys.readouterr().err
