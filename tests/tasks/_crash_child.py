"""Child process of test_crash: starts a chain, a chord, a schedule and a cancelled delayed execution,
then waits to be killed with SIGKILL (argv: data dir, work dir)."""

from __future__ import annotations

import sys
import time

from actorflow import Engine

from . import _handlers as h


def main(data: str, work: str) -> None:
    e = h.register(Engine(data, sync=True))
    with e:
        e.schedule("echo", every=0.05, input={"path": f"{work}/sched", "label": "slot"})
        victim = e.enqueue("record", {"path": f"{work}/cancelled", "label": "must-not-run"}, delay=0.5)
        e.cancel_execution(victim)
        e.chain("crash-chain").then("echo").then("echo").then("echo").enqueue(
            {"path": f"{work}/chain", "label": "stage", "hold": 2.0}, chain_id="the-chain")
        e.chord([("echo", {"path": f"{work}/chord", "label": "m1"}),
                 ("echo", {"path": f"{work}/chord", "label": "m2", "hold": 2.0})], "merge").enqueue(
            chain_id="the-chord")
        with open(f"{work}/ready", "w") as f:
            f.write(victim)
        time.sleep(120)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
