"""Child process of test_crash: commits batches forever and acknowledges each one on stdout.

    python _crash_writer.py REPO_ROOT JOURNAL_DIR SEED [threads|callbacks|always]

threads (default): four threads each own two runs. A batch appends 1-6 events to its thread's runs
and records, in the same batch, the last seq of each touched run under kv ("last", run). Only after
`commit` returns (the batch is fsync'd) does the thread print one line "run seq" per appended event.

callbacks: each run is an actor-style writer keeping DEPTH one-event batches (event + its kv "last")
outstanding through `submit()`, and acknowledging and resubmitting from the done callback. The
callbacks spin long enough to outlast a sync, so the journal hands them to its completer thread
(the first acknowledgement printed from there is preceded by a line "overlap").

always: the callback writers on a journal opened with commit_overlap="always" and callbacks that do
not spin: every round is settled on the completer, however cheap (an acknowledgement printed from
any other thread is preceded by a line "inline").

The parent kills this process with SIGKILL at a random point and checks the journal.
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time
from typing import Any

N_RUNS = 8
N_THREADS = 4
DEPTH = 4
CALLBACK_SPIN_S = 400e-6  # x 32 outstanding: ~13 ms of callbacks per round, well over a sync


def payload(run_id: str, seq: int) -> dict[str, Any]:
    return {"run": run_id, "seq": seq, "pad": "x" * ((seq * 7919 + len(run_id)) % 300)}


def main() -> None:
    root, path, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sys.path.insert(0, root)
    import actorflow  # noqa: F401  (before storage: storage imports actorflow.errors)
    from storage import Event, LmdbJournal

    mode = sys.argv[4] if len(sys.argv) > 4 else "threads"
    j = LmdbJournal(path, sync=True, commit_overlap="always" if mode == "always" else True)
    runs = [f"run-{i}" for i in range(N_RUNS)]
    next_seq = {r: j.last_seq(r) + 1 for r in runs}
    os.write(1, b"ready\n")
    if mode in ("callbacks", "always"):
        callback_writers(j, runs, next_seq, CALLBACK_SPIN_S if mode == "callbacks" else 0.0)
        threading.Event().wait()  # until killed

    def writer(k: int) -> None:
        rnd = random.Random(seed * 1000 + k)
        mine = runs[k::N_THREADS]
        while True:
            b = j.batch()
            acks = []
            touched = {}
            for _ in range(rnd.randint(1, 6)):
                r = rnd.choice(mine)
                s = next_seq[r]
                next_seq[r] += 1
                b.append(r, Event(s, "step", f"s{s}", payload(r, s), float(s), s))
                acks.append(f"{r} {s}\n")
                touched[r] = s
            for r, s in touched.items():
                b.kv_put("last", r, s)
            j.commit(b)
            os.write(1, "".join(acks).encode())  # one write: lines of one batch stay together

    threads = [threading.Thread(target=writer, args=(k,), daemon=True) for k in range(N_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def callback_writers(j: Any, runs: list[str], next_seq: dict[str, int], spin: float) -> None:
    from storage import Event

    overlap_seen = threading.Event()

    def actor(r: str) -> None:
        lock = threading.RLock()  # a future done before add_done_callback calls back inside submit()

        def submit() -> None:
            s = next_seq[r]
            next_seq[r] += 1
            b = j.batch()
            b.append(r, Event(s, "step", f"s{s}", payload(r, s), float(s), s))
            b.kv_put("last", r, s)
            j.submit(b).add_done_callback(lambda f: done(f, s))

        def done(f: Any, s: int) -> None:
            f.result()  # raises (and is logged) if the commit failed: then nothing is acknowledged
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < spin:
                pass
            with lock:
                line = f"{r} {s}\n"
                on_completer = threading.current_thread().name.endswith("-completer")
                if on_completer and not overlap_seen.is_set():
                    overlap_seen.set()
                    line = "overlap\n" + line
                elif not on_completer:
                    line = "inline\n" + line
                os.write(1, line.encode())
                submit()

        with lock:
            for _ in range(DEPTH):
                submit()

    for r in runs:
        actor(r)


if __name__ == "__main__":
    main()
