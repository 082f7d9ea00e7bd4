"""The gateway's watch over shards owned by member nodes: a lost node's shard, and its return.

Thespian does not tell the engine's supervisor that a member node went away (its admin would learn
it only after missing convention check-ins, many minutes): nothing would fail calls for the node's
shard but their own 30 s wait, and nothing would create the shard again when the node came back.
So the gateway watches: a node-owned shard answers each `GatewayBeat` (every second) with a
`ShardAlive`; one not heard for `node_timeout` seconds (at least 3) is *down*. Calls for its runs then fail at
once (`OwnerCalls.lost`: the ones in flight and every new one, with `ShardUnavailable`), the other
shards go on. While a shard is down, a probe thread asks the convention every few seconds whether a
member advertises the shard's node id again from another worker process than the one the shard ran
under (the node rejoined: `actorflow worker --join ... --data-dir DIR --node-id ID`, same id and
directory; each shard reports the "host:pid" of its worker, `ACTORFLOW_NODE`). Then the gateway asks
the supervisor to create the shard again (`supervisors.Respawn`: Thespian places it on that node by
its capability, on the registration with the fewest actors: the new one, not the dead one's that the
convention still lists). The same worker still there after 3 x node_timeout (a shard that stopped
itself after a partition, or is stuck) gets its shard created again too.
The new shard reopens the node's journal and recovers its runs by replay; its `ShardReady` ends the
outage. Nothing is sent to a down shard meanwhile, beats included (a lost machine's address may take
long to refuse a connection, and the gateway would wait): an old process cut off by a partition
stops itself after 2 x node_timeout without beats, and is created again as said.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import structlog

from ._node_shards import SHARD_NODE_CAPABILITY
from ._routed import OwnerCalls

__all__ = ["NodeWatch"]

log = structlog.get_logger("actorflow.multiproc")

_MIN_SILENCE = 3.0  # seconds: beats go every second, fewer than 3 unanswered is jitter, not a lost node
_PROBE_EVERY = 2.0  # seconds between asks of the convention while a shard is down
_PROBE_WAIT = 2.0  # seconds a member may take to answer a probe (a dead registration never does)
_SAME_NODE = 3.0  # x node_timeout: a shard down this long is created again on the same worker process
_RESPAWN_AGAIN = 60.0  # seconds after a respawn request without ShardReady before asking again


class NodeWatch:
    """Liveness of the node-owned shards, kept by the gateway thread (module docstring).

    `members(timeout)` lists the convention's members with their capabilities (it opens its own
    Thespian handle: called on the probe thread only); `respawn(shard)` asks the supervisor to create
    the shard again (called on the gateway thread, from `tick`)."""

    def __init__(
        self,
        shard_nodes: dict[int, str],
        timeout: float,
        calls: OwnerCalls,
        members: Callable[[float], list[tuple[str, dict[str, Any]]]],
        respawn: Callable[[int], None],
    ) -> None:
        self.nodes = dict(shard_nodes)
        self.timeout = max(timeout, _MIN_SILENCE)
        self._calls = calls
        self._members = members
        self._respawn = respawn
        now = time.monotonic()
        self.heard: dict[int, float] = {shard: now for shard in self.nodes}
        self.worker: dict[int, str] = {}  # shard -> "host:pid" of the node's worker process it runs under
        self.down: dict[int, float] = {}  # shard -> monotonic time it was found lost
        self._asked: dict[int, float] = {}  # shard -> monotonic time a respawn was requested
        self._back: set[int] = set()  # found in the convention by the probe: respawn on the next tick
        self._probing = False
        self._next_probe = 0.0
        self._lock = threading.Lock()

    def alive(self, shard: int, worker: str = "") -> None:
        """A beat's answer (or ShardReady) from the shard, under the node's `worker`: it is there."""
        if shard not in self.heard:
            return
        self.heard[shard] = time.monotonic()
        if worker:
            self.worker[shard] = worker
        if shard in self.down:
            since = self.down.pop(shard)
            self._asked.pop(shard, None)
            self._calls.back(shard)
            log.warning("node-owned shard is back", shard=shard, node=self.nodes[shard],
                        down_for=round(time.monotonic() - since, 1))

    def restarted(self, shard: int) -> None:
        """The supervisor created the shard again (its new process has not answered yet): its silence
        is counted from now, not from the old process's last beat."""
        if shard in self.down:  # created again while down (Thespian restarts it itself when the node
            self._asked[shard] = time.monotonic()  # rejoins on the same address): no respawn meanwhile
        elif shard in self.heard:
            self.heard[shard] = time.monotonic()

    def restarted_all(self) -> None:
        for shard in self.heard:
            self.restarted(shard)

    def tick(self) -> None:
        """On the gateway thread, every second: find lost shards, respawn those whose node is back."""
        now = time.monotonic()
        for shard, heard in self.heard.items():
            if shard not in self.down and now - heard > self.timeout:
                self.down[shard] = now
                why = (f"shard {shard} (node {self.nodes[shard]!r}) has not answered for {now - heard:.1f} s: "
                       "its node is lost; calls for its runs fail until the node rejoins")
                log.warning("node-owned shard lost", shard=shard, node=self.nodes[shard])
                self._calls.lost(shard, why, node=self.nodes[shard])
        if not self.down:
            return
        with self._lock:
            back, self._back = self._back, set()
        for shard in back:
            if shard in self.down and now - self._asked.get(shard, -_RESPAWN_AGAIN) >= _RESPAWN_AGAIN:
                self._asked[shard] = now
                log.warning("node rejoined: its shard is created again", shard=shard, node=self.nodes[shard])
                self._respawn(shard)
        if not self._probing and now >= self._next_probe:
            self._probing = True
            self._next_probe = now + _PROBE_EVERY
            wanted = {shard: (self.nodes[shard], self.worker.get(shard, ""),
                              now - self.down[shard] > _SAME_NODE * self.timeout) for shard in self.down}
            threading.Thread(target=self._probe, args=(wanted,), name="actorflow-node-probe", daemon=True).start()

    def _probe(self, wanted: dict[int, tuple[str, str, bool]]) -> None:
        try:
            present = {(caps.get(SHARD_NODE_CAPABILITY), f"{caps.get('actorflow.host')}:{caps.get('actorflow.pid')}")
                       for _, caps in self._members(_PROBE_WAIT) if caps.get(SHARD_NODE_CAPABILITY)}
            back = {shard for shard, (node, old, any_worker) in wanted.items()
                    if any(n == node and (any_worker or w != old) for n, w in present)}
            with self._lock:
                self._back.update(back)
        except Exception:  # noqa: BLE001 - asked again after _PROBE_EVERY
            log.exception("probing the convention for rejoined nodes failed")
        finally:
            self._probing = False
