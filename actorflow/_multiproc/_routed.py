"""The facade's journal when member nodes own shards: each run's reads and writes go to its owner.

A shard owned by a member node (`Engine(shard_nodes=...)`, README "Multiple machines") journals its
runs in its own LMDB environment on that node; the engine's data directory holds the other shards'
runs. `RoutedJournal` is what the Engine facade uses as `rt.journal` then: an op of a run of a
node-owned shard (a start's `create_run`, a signal's `put_signal`, a fork's events) is sent to the
shard as a `JournalCall` and committed there by the shard's own group commit; the facade's future
resolves with the owner's per-op results only once that commit is durable (a `Reply` by request
id). Everything else (kv: the control inbox, tasks' indexes, the shard map) stays in the engine's
journal. Reads of such a run (`status`, `history`, `result()` of a finished run) ask the owner;
`runs()` asks every shard and merges.

A batch whose ops go to several journals commits per journal, not atomically across them (a
`start_many` group spanning shards is one commit per journal). The gateway thread must never wait
on a remote call (it is the one that receives the reply): such a call raises instead.
"""

from __future__ import annotations

import functools
import heapq
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any

from storage import Journal, RunRecord
from storage._journal import (
    OP_APPEND,
    OP_CREATE_RUN,
    OP_DEL_SIGNAL,
    OP_DEL_TIMER,
    OP_PUT_RUN,
    OP_PUT_SIGNAL,
    OP_PUT_TIMER,
    Event,
    WriteBatch,
)

from .._messages import message
from ..errors import ActorflowError, ShardUnavailable

__all__ = ["JournalCall", "OwnerCalls", "RoutedJournal", "ShardUnavailable", "serve_call"]

_WAIT = 30.0  # seconds a read waits for the owning shard's answer


@message
class JournalCall:
    """Facade -> a node-owned shard: `method` of the shard's journal; the answer is a `Reply`."""

    shard: int
    request_id: int
    method: str
    args: tuple[Any, ...]


class OwnerCalls:
    """The facade's journal calls to node-owned shards, by request id (a `Reply` settles each). A
    shard whose process is replaced never answers what the old one received: `replaced` fails those
    calls at once (ShardUnavailable) instead of leaving them to time out; `expire` (the gateway's
    housekeeping, every second) fails calls unanswered for `_WAIT` seconds, so an asynchronous caller
    (`astart`, which waits on the future with no timeout of its own) is not left waiting on a lost node.
    A shard whose node is lost (`lost`, `_node_watch`) fails its calls in flight and every new one at
    once, until `back`."""

    def __init__(self, request: Callable[[], tuple[int, Future[Any]]], settle: Callable[..., None],
                 post: Callable[[Any], None]) -> None:
        self._request, self._settle, self._post = request, settle, post
        self._pending: dict[int, set[int]] = {}
        self._since: dict[int, tuple[float, int]] = {}  # request -> (monotonic time sent, shard)
        self._down: dict[int, ShardUnavailable] = {}  # shards whose node is lost: their calls fail at once
        self._lock = threading.Lock()

    def call(self, shard: int, method: str, args: tuple[Any, ...]) -> Future[Any]:
        with self._lock:
            down = self._down.get(shard)
        if down is not None:
            failed: Future[Any] = Future()
            failed.set_exception(ShardUnavailable(str(down), **down.evidence))
            return failed
        request, fut = self._request()
        with self._lock:
            self._pending.setdefault(shard, set()).add(request)
            self._since[request] = (time.monotonic(), shard)

        def answered(_: Future[Any]) -> None:
            with self._lock:
                self._pending.get(shard, set()).discard(request)
                self._since.pop(request, None)

        fut.add_done_callback(answered)
        self._post(JournalCall(shard, request, method, args))
        return fut

    def expire(self, wait: float = _WAIT) -> None:
        now = time.monotonic()
        with self._lock:
            old = [(r, shard) for r, (t, shard) in self._since.items() if now - t > wait]
        for request, shard in old:
            self._settle(request, None, ShardUnavailable(
                f"shard {shard} did not answer a journal call within {wait:g} s (its node may be gone; a "
                "start may or may not have committed: repeat it with the same run_id)", shard=shard))

    def lost(self, shard: int, why: str, **evidence: Any) -> None:
        """The shard's node is lost: fail its calls in flight, and new ones at once until `back`."""
        error = ShardUnavailable(why, shard=shard, **evidence)
        with self._lock:
            self._down[shard] = error
            lost = self._pending.pop(shard, set())
        for request in lost:
            self._settle(request, None, ShardUnavailable(why, shard=shard, **evidence))

    def back(self, shard: int) -> None:
        with self._lock:
            self._down.pop(shard, None)

    def replaced(self, shard: int) -> None:
        with self._lock:
            lost = self._pending.pop(shard, set())
        for request in lost:
            self._settle(request, None, ShardUnavailable(
                f"shard {shard} restarted while a journal call was in flight (a start may or may not have "
                "committed: repeat it with the same run_id)", shard=shard))


def _op_run_id(op: tuple[Any, ...]) -> str | None:
    kind = op[0]
    if kind in (OP_APPEND, OP_PUT_RUN, OP_CREATE_RUN, OP_PUT_SIGNAL, OP_DEL_SIGNAL):
        return str(op[1])
    if kind in (OP_PUT_TIMER, OP_DEL_TIMER):
        return str(op[2])
    return None  # kv ops: the engine's journal


class RoutedJournal(Journal):
    """The engine's journal plus the node-owned shards' journals, by message (module docstring)."""

    def __init__(
        self,
        local: Journal,
        remote: frozenset[int],
        shard_of: Callable[[str], int],
        call: Callable[[int, str, tuple[Any, ...]], Future[Any]],
        on_gateway: Callable[[], bool],
    ) -> None:
        self.local = local
        self.codec = local.codec
        self.remote = remote
        self._shard_of = shard_of
        self._call = call
        self._on_gateway = on_gateway

    def _owner(self, run_id: str) -> int | None:
        shard = self._shard_of(run_id)
        return shard if shard in self.remote else None

    def _ask(self, shard: int, method: str, *args: Any) -> Any:
        if self._on_gateway():
            raise ActorflowError(f"{method} of a run of node-owned shard {shard} cannot be read on the "
                                 "engine's gateway thread", shard=shard)
        fut = self._call(shard, method, args)
        try:
            return fut.result(_WAIT)
        except TimeoutError:
            raise ShardUnavailable(f"shard {shard} did not answer {method} within {_WAIT:g} s", shard=shard) from None

    # --- writes -------------------------------------------------------------------------------
    def submit(self, batch: WriteBatch) -> Future[list[Any]]:
        ops = batch.ops
        groups: dict[int, list[int]] = {}
        local: list[int] = []
        for i, op in enumerate(ops):
            rid = _op_run_id(op)
            shard = None if rid is None else self._owner(rid)
            (local if shard is None else groups.setdefault(shard, [])).append(i)
        if not groups:
            return self.local.submit(batch)  # no run of a node-owned shard: as without nodes
        parts = [(idxs, self._call(shard, "submit", ([ops[i] for i in idxs],))) for shard, idxs in groups.items()]
        after = None
        if local:  # committed once the owners' parts are durable (see _gather)
            sub = self.local.batch()
            sub.ops = [ops[i] for i in local]
            sub.creates = sum(1 for op in sub.ops if op[0] == OP_CREATE_RUN)
            after = (local, functools.partial(self.local.submit, sub))
        return _gather(len(ops), parts, after)

    def commit(self, batch: WriteBatch, timeout: float | None = None) -> list[Any]:
        fut = self.submit(batch)
        if not fut.done() and self._on_gateway():
            raise ActorflowError("a write to a node-owned shard cannot wait on the engine's gateway thread")
        try:
            return fut.result(_WAIT if timeout is None else timeout)
        except TimeoutError:
            raise ShardUnavailable(f"a node-owned shard did not confirm a commit within {_WAIT:g} s") from None

    # --- reads of one run: its owner ------------------------------------------------------------
    def events(self, run_id: str, from_seq: int = 0, *, strict: bool = True) -> list[Event]:
        shard = self._owner(run_id)
        if shard is None:
            return self.local.events(run_id, from_seq, strict=strict)
        got: list[Event] = self._ask(shard, "events", run_id, from_seq, strict)
        return got

    def last_seq(self, run_id: str) -> int:
        shard = self._owner(run_id)
        return self.local.last_seq(run_id) if shard is None else int(self._ask(shard, "last_seq", run_id))

    def get_run(self, run_id: str) -> RunRecord | None:
        shard = self._owner(run_id)
        if shard is None:
            return self.local.get_run(run_id)
        got: RunRecord | None = self._ask(shard, "get_run", run_id)
        return got

    def get_runs(self, run_ids: Iterable[str]) -> list[RunRecord | None]:
        ids = list(run_ids)
        per: dict[int | None, list[int]] = {}
        for i, rid in enumerate(ids):
            per.setdefault(self._owner(rid), []).append(i)
        out: list[RunRecord | None] = [None] * len(ids)
        for shard, idxs in per.items():
            sel = [ids[i] for i in idxs]
            got = self.local.get_runs(sel) if shard is None else self._ask(shard, "get_runs", sel)
            for i, rec in zip(idxs, got):
                out[i] = rec
        return out

    def signals(self, run_id: str, name: str | None = None) -> list[tuple[str, int, Any]]:
        shard = self._owner(run_id)
        if shard is None:
            return self.local.signals(run_id, name)
        got: list[tuple[str, int, Any]] = self._ask(shard, "signals", run_id, name)
        return got

    # --- reads over every run: every shard, merged -----------------------------------------------
    def iter_runs(self) -> Iterator[RunRecord]:
        lists: list[list[RunRecord]] = [list(self.local.iter_runs())]
        lists += [self._ask(shard, "all_runs") for shard in sorted(self.remote)]
        return heapq.merge(*lists, key=lambda r: r.run_id)

    def active_run_ids(self) -> list[str]:
        ids = self.local.active_run_ids()
        for shard in sorted(self.remote):
            ids += self._ask(shard, "active_run_ids")
        return sorted(ids)

    def runs(self, state: str | None = None, workflow: str | None = None) -> list[RunRecord]:
        lists = [self.local.runs(state, workflow)]
        lists += [self._ask(shard, "runs", state, workflow) for shard in sorted(self.remote)]
        return list(heapq.merge(*lists, key=lambda r: r.run_id))

    # --- the engine's own journal ----------------------------------------------------------------
    def timers(self, until: float, start: float = 0.0, limit: int | None = None) -> list[tuple[float, str, int, Any]]:
        return self.local.timers(until, start, limit)

    def timer_count(self) -> int:
        return self.local.timer_count()

    def kv_get(self, ns: str, key: str) -> Any:
        return self.local.kv_get(ns, key)

    def kv_scan(self, ns: str, prefix: str = "") -> list[tuple[str, Any]]:
        return self.local.kv_scan(ns, prefix)

    def change_marker(self) -> int:
        return self.local.change_marker()  # commits of the engine's journal only

    def close(self) -> None:
        self.local.close()


def _gather(
    n: int,
    parts: list[tuple[list[int], Future[Any]]],
    after: tuple[list[int], Callable[[], Future[Any]]] | None,
) -> Future[list[Any]]:
    """One future for a batch split over journals: per-op results in the batch's order, or the
    first error. The engine's own ops (`after`: e.g. the control inbox's command removal beside a
    signal) are submitted only once every owner's part is durable, so a crash in between repeats
    such a command rather than losing it; they are not written if a part failed."""
    out: Future[list[Any]] = Future()
    results: list[Any] = [None] * n
    left = [len(parts)]
    lock = threading.Lock()

    def finish(exc: BaseException | None) -> None:
        if out.done():
            return
        if exc is not None:
            out.set_exception(exc)
        else:
            out.set_result(results)

    def local_done(idxs: list[int], fut: Future[Any]) -> None:
        exc = fut.exception()
        if exc is None:
            for i, value in zip(idxs, fut.result()):
                results[i] = value
        finish(exc)

    def done(idxs: list[int], fut: Future[Any]) -> None:
        exc = fut.exception()
        with lock:
            if exc is None:
                for i, value in zip(idxs, fut.result()):
                    results[i] = value
            elif not out.done():
                out.set_exception(exc)
            left[0] -= 1
            last = left[0] == 0
        if not last or out.done():
            return
        if after is None:
            finish(None)
            return
        idxs_after, submit = after
        try:
            submit().add_done_callback(lambda f: local_done(idxs_after, f))
        except BaseException as err:  # noqa: BLE001 - the caller gets it
            finish(err)

    for idxs, fut in parts:
        fut.add_done_callback(lambda f, idxs=idxs: done(idxs, f))  # type: ignore[misc]
    return out


# --- the shard's side ---------------------------------------------------------------------------
_READS: dict[str, Callable[..., Any]] = {
    "events": lambda j, run_id, from_seq, strict: j.events(run_id, from_seq, strict=strict),
    "last_seq": lambda j, run_id: j.last_seq(run_id),
    "get_run": lambda j, run_id: j.get_run(run_id),
    "get_runs": lambda j, run_ids: j.get_runs(run_ids),
    "signals": lambda j, run_id, name: j.signals(run_id, name),
    "all_runs": lambda j: list(j.iter_runs()),
    "active_run_ids": lambda j: j.active_run_ids(),
    "runs": lambda j, state, workflow: j.runs(state, workflow),
}


def serve_call(journal: Journal, call: JournalCall, reply: Callable[[int, Any, BaseException | None], None]) -> None:
    """On a node-owned shard: answer `call` from its journal. A write is answered from the commit
    thread once durable (`reply` must be thread-safe); a read at once."""
    req = call.request_id
    if call.method == "submit":
        batch = journal.batch()
        batch.ops = list(call.args[0])
        batch.creates = sum(1 for op in batch.ops if op[0] == OP_CREATE_RUN)

        def committed(fut: Future[list[Any]]) -> None:
            exc = fut.exception()
            reply(req, None if exc is not None else fut.result(), exc)

        journal.submit(batch).add_done_callback(committed)
        return
    read = _READS.get(call.method)
    if read is None:
        reply(req, None, ActorflowError(f"unknown journal call {call.method!r}", method=call.method))
        return
    try:
        value = read(journal, *call.args)
    except Exception as exc:  # noqa: BLE001 - the caller gets it, the shard goes on
        reply(req, None, exc)
        return
    reply(req, value, None)
