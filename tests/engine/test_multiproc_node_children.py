"""Child runs across journals when a member node owns a shard (issue 12, item 11, next step 1).

A parent journaled on one side (the engine's data directory, or the node's) starts a child whose
shard journals on the other: the parent's shard asks the child's owner to create it (durable there),
journals child_started once it answered, and the child's outcome comes back as ChildDone. kill -9 of
the node's shard process while the child is mid-steps - the node is the child's side, then the
parent's side: the shard is restarted on the node, the run there recovers by replay, the parent gets
its child's result, and the child's journaled step is not run again. Every process is stopped by PID.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from _node_cluster import TIMEOUT, Nodes, kill, until

from .test_multiproc_node_shards import NODE, _engine, _ids, _marks, admin, two_steps

__all__ = ["admin"]  # the fixture, imported for this module's tests


async def parent_of(ctx: Any, child_id: str, i: int, where: str) -> Any:
    got = await ctx.child(two_steps, i, where, run_id=child_id)
    return "parent", got[0]


@pytest.mark.parametrize("crash", ["child", "parent"], ids=["node-is-the-childs-side", "node-is-the-parents-side"])
def test_kill_9_of_the_nodes_shard_while_a_child_across_journals_runs(
    tmp_path: Path, leader_port: int, admin: int, nodes: Nodes, crash: str
) -> None:
    sid = os.getsid(next(iter(nodes.start(args=("--data-dir", str(tmp_path / "nodeb"), "--node-id", NODE)))))
    where = tmp_path / "marks"
    where.mkdir()
    parents = _ids("pp", 1 if crash == "parent" else 0, 3)  # shard 1: the node's
    children = _ids("cc", 1 if crash == "child" else 0, 3)
    engine = _engine(tmp_path, leader_port)
    engine.workflow()(parent_of)
    with engine:
        rt: Any = engine._runtime()
        old = rt.shard_pids[1]
        handles = [engine.start(parent_of, c, i, str(where), run_id=p) for i, (p, c) in enumerate(zip(parents, children))]
        until(lambda: len(_marks(where, "b")) == len(children), "every child's step b to start")
        for p, c in zip(parents, children):
            assert [e.kind for e in engine.history(p) if e.kind.startswith("child")] == ["child_started"]
            assert engine.status(c).parent == p
        kill(old)  # kill -9 of the node's shard process (the child's or the parent's side)
        # a child asked of the node while its shard is gone: the request is sent again until answered
        late_p, late_c = _ids("lp", 0, 1)[0], _ids("lc", 1, 1)[0]
        late = engine.start(parent_of, late_c, 7, str(where), run_id=late_p)
        until(lambda: rt.shard_pids.get(1) not in (None, old), "the node's shard to restart")
        assert rt.shard_pids[1] in Nodes.pids(sid)
        (where / "go").touch()
        assert [h.result(timeout=TIMEOUT) for h in handles] == [("parent", i) for i in range(len(parents))]
        assert late.result(timeout=TIMEOUT) == ("parent", 7)
        assert sorted(i for i, _ in _marks(where, "a")) == [*range(len(children)), 7]  # step a once per child
        for p, c in zip(parents, children):
            kinds = [e.kind for e in engine.history(p) if e.kind.startswith("child")]
            assert kinds == ["child_started", "child_completed"]  # created once, its outcome once
            assert engine.status(c).state == "completed"
