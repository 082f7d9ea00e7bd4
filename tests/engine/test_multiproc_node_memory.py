"""The long-running processes of a multiprocess engine keep glibc's freed memory in check (issue 12 item 11).

`actorflow._malloc.pin_mmap_threshold()` is called by every long-running process, not only the
engine's: a shard process (on the engine's machine or on a member node) and a member node's worker
(whose admin and step actors are forked from it). And the facade, which never appends to a run twice
(its shards do), keeps no append cache: the ids of the runs it started are not held until its next
write. Every process a test started is stopped by PID.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from _node_cluster import TIMEOUT, Nodes

from actorflow import Engine, _malloc
from storage import LmdbJournal

from .test_multiproc_node_shards import NODE, _engine, _ids, admin

__all__ = ["admin"]  # the fixture, imported for this module's tests


def _pinned() -> tuple[int, list[bool]]:
    """In the process running the step: its PID and whether it pinned the threshold."""
    return os.getpid(), list(_malloc._done)


async def where_pinned(ctx: Any) -> Any:
    here = await ctx.step("here", _pinned)
    node = await ctx.step("node", _pinned, requires={"actorflow.worker": True})
    return here, node


def test_shard_and_node_processes_pin_the_mmap_threshold(
    tmp_path: Path, leader_port: int, admin: int, nodes: Nodes
) -> None:
    sid = os.getsid(next(iter(nodes.start(args=("--data-dir", str(tmp_path / "nodeb"), "--node-id", NODE)))))
    engine = _engine(tmp_path, leader_port)
    engine.workflow()(where_pinned)
    with engine:
        rt: Any = engine._runtime()
        for shard in (0, 1):  # the engine's shard process, and the one on the node
            (pid, here), (node_pid, node) = engine.run(where_pinned, run_id=_ids("m", shard, 1)[0], timeout=TIMEOUT)
            assert pid == rt.shard_pids[shard] and here == [True]
            assert node_pid in Nodes.pids(sid) and node == [True]  # a step actor forked from the node's worker


async def noop(ctx: Any, i: int) -> int:
    return i


def test_the_facade_keeps_no_append_cache(tmp_path: Path) -> None:
    with Engine(tmp_path / "d", system="multiproc", shards=2) as engine:
        engine.workflow()(noop)
        handles = engine.start_many(noop, [(i,) for i in range(50)])
        journal = engine._runtime().journal
        assert isinstance(journal, LmdbJournal) and journal._tails == {}  # its creates' ids not kept
        assert [h.result(timeout=TIMEOUT) for h in handles] == list(range(50))
