"""Writer run under strace by tests/storage/test_powercut.py: prints "begin N" before and "ack N"
after each acknowledged commit, each with one write(2) to stdout, so the trace orders them among the
journal's own writes and syncs.

    python powercut_writer.py REPO_ROOT DIR MODE SYNC [N]

MODE journal: one thread, `LmdbJournal.commit()` of an appended event (acknowledged = commit returned).
MODE engine: an embedded Engine; `engine.signal()` to a sleeping run (acknowledged = signal returned,
the engine's promise: durable on return) while the engine's own threads may commit beside it.
SYNC on | off (sync=False) | nometa (sync=True but the meta page that makes a commit visible after a
crash is written without a sync: LMDB's metasync off and the journal's env.sync after the commit a no-op).
"""

from __future__ import annotations

import os
import sys
from typing import Any


def main() -> None:
    root, path, mode, sync = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    n = int(sys.argv[5]) if len(sys.argv) > 5 else 20
    sys.path.insert(0, root)
    import lmdb

    if sync == "nometa":
        real_open = lmdb.open

        class NoMetaSync:
            """The environment with its commit point never synced: LMDB's metasync off, and the
            journal's own env.sync after each commit (how it makes the meta page durable) a no-op."""

            def __init__(self, env: Any) -> None:
                self._env = env

            def sync(self, force: bool = False) -> None:
                return None

            def __getattr__(self, name: str) -> Any:
                return getattr(self._env, name)

        def open_nometa(*args: Any, **kwargs: Any) -> Any:
            kwargs["metasync"] = False
            return NoMetaSync(real_open(*args, **kwargs))

        lmdb.open = open_nometa
    import actorflow
    from storage import Event, LmdbJournal, RunRecord

    on = sync != "off"
    if mode == "journal":
        j = LmdbJournal(path, sync=on)
        b = j.batch()
        b.create_run(RunRecord("r", "w"), Event(0, "run_started", "w", None, 0.0))
        j.commit(b)
        for i in range(1, n + 1):
            os.write(1, f"begin {i}\n".encode())
            b = j.batch()
            b.append("r", Event(i, "step", f"s{i}", "x" * (i * 37 % 500), float(i)))
            j.commit(b)
            os.write(1, f"ack {i}\n".encode())
        j.close()
        return
    engine = actorflow.Engine(path, sync=on)

    @engine.workflow()
    async def collect(ctx: Any) -> None:
        await ctx.sleep("nap", 3600)  # the signals wait in its durable inbox: each signal is one commit

    with engine:
        h = engine.start(collect)
        for i in range(1, n + 1):
            os.write(1, f"begin {i}\n".encode())
            engine.signal(h.run_id, "add", i)
            os.write(1, f"ack {i}\n".encode())
        assert [p for _, _, p in engine._runtime().journal.signals(h.run_id)] == list(range(1, n + 1))


if __name__ == "__main__":
    main()
