"""Why the journal batches its LMDB calls: py-lmdb releases the GIL around every single put.

    python -m benchmarks.lmdb_gil [--n 20000] [--dir DIR]

With another thread busy in Python, each `txn.put` has to wait to get the GIL back; one
`Cursor.putmulti` call pays that once for the whole batch. Prints one JSON line: µs per put, for
single puts and for putmulti (500 items per call), alone and with one busy thread. No fsync
(sync=False): this measures the calls, not the disk.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
from typing import Any

import lmdb


def _measure(env: lmdb.Environment, db: Any, mode: str, n: int, contended: bool) -> float:
    stop = threading.Event()

    def busy() -> None:
        x = 0
        while not stop.is_set():
            x += 1

    t = threading.Thread(target=busy) if contended else None
    if t is not None:
        t.start()
    value = os.urandom(80)
    keys = [f"{mode}-{contended}-run-{i // 5:06d}".encode() + b"\0" + (i % 5).to_bytes(8, "big") for i in range(n)]
    try:
        t0 = time.perf_counter()
        for lo in range(0, n, 500):
            with env.begin(write=True) as txn:
                if mode == "put":
                    for k in keys[lo : lo + 500]:
                        txn.put(k, value, overwrite=False, db=db)
                else:
                    txn.cursor(db=db).putmulti([(k, value) for k in keys[lo : lo + 500]], overwrite=False)
        return 1e6 * (time.perf_counter() - t0) / n
    finally:
        stop.set()
        if t is not None:
            t.join()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args(argv)
    path = tempfile.mkdtemp(dir=args.dir)
    try:
        env = lmdb.open(path, map_size=1 << 28, max_dbs=2, sync=False)
        db = env.open_db(b"events")
        out = {"bench": "lmdb_gil", "n": args.n, "py_lmdb": lmdb.__version__}
        for contended in (False, True):
            for mode in ("put", "putmulti"):
                out[f"us_per_{mode}_{'contended' if contended else 'alone'}"] = round(
                    _measure(env, db, mode, args.n, contended), 2
                )
        env.close()
    finally:
        shutil.rmtree(path, ignore_errors=True)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
