"""Several processes share one LMDB journal (the multiprocess engine: a facade and shard hosts).

LMDB serializes writers across processes; what the journal must add is adopting a map another
process grew (else every later transaction here fails with MapResizedError) and not trusting its
per-run tail cache after another process wrote.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from storage import Event, LmdbJournal, RunRecord

MiB = 1024 * 1024

CHILD = textwrap.dedent(
    """
    import sys
    from storage import Event, LmdbJournal, RunRecord
    j = LmdbJournal(sys.argv[1], sync=False, map_size=1 << 20)
    print("open", flush=True)
    sys.stdin.readline()                      # the parent grows the map meanwhile
    b = j.batch()
    b.append("shared", Event(4, "step_completed", "child", "x" * 1000, 0.0, 4))
    j.commit(b)
    print(len(j.events("shared")), j.events("shared")[3].data[:3], flush=True)
    j.close()
    """
)


def test_a_map_grown_by_another_process_is_adopted(tmp_path: Path) -> None:
    d = tmp_path / "j"
    with LmdbJournal(d, sync=False, map_size=MiB) as j:
        b = j.batch()
        b.create_run(RunRecord("shared", "wf"), Event(0, "run_started", "wf", {"args": ()}, 0.0))
        j.commit(b)
    root = Path(__file__).resolve().parents[2]
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(d)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "open"
        with LmdbJournal(d, sync=False, map_size=MiB) as j:
            b = j.batch()
            for seq in (1, 2, 3):
                b.append("shared", Event(seq, "step_completed", "big", "y" * (MiB - 4096), 0.0, seq))
            j.commit(b)  # 3 MiB over the 1 MiB map: this process grows it
            assert j.map_growths >= 1
            child.stdin.write("go\n")
            child.stdin.flush()
            out, _ = child.communicate(timeout=30)
            assert child.returncode == 0, out
            assert out.split() == ["5", "yyy"]  # the child wrote seq 4 after ours and read them back
            assert [e.seq for e in j.events("shared")] == [0, 1, 2, 3, 4]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
