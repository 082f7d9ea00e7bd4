"""Child process of test_enqueue_coalesce's kill -9 test: 16 threads enqueue without pause and append
each acknowledged execution id to a file (one O_APPEND write per id), until the test kills the
process with SIGKILL (argv: data dir, ack file)."""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

from actorflow import Engine


def slow(ctx: Any, input: dict[str, Any]) -> int:
    time.sleep(0.001)
    return int(input["x"])


def main(data: str, acks: str) -> None:
    e = Engine(data, sync=True)
    e.task(name="slow")(slow)
    fd = os.open(acks, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    with e:
        def produce(k: int) -> None:
            i = 0
            while True:
                eid = e.enqueue("slow", {"x": k * 1_000_000 + i})
                os.write(fd, f"{eid}\n".encode())  # after enqueue returned: acknowledged
                i += 1

        for k in range(16):
            threading.Thread(target=produce, args=(k,), daemon=True).start()
        time.sleep(300)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
