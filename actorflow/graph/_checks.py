"""Structural checks of a built graph: reachability, ends, cycles without an exit, routing and ports."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from ._errors import Problem
from ._executor import FAIL, SUCCEED, USER_TASK, ExecutorRegistry

if TYPE_CHECKING:
    from ._definition import GraphDefinition

__all__ = ["check_graph", "reachable_from"]


def reachable_from(graph: GraphDefinition, start: str) -> set[str]:
    """Every node reachable from `start` (itself included) over all edges, error edges too."""
    seen = {start}
    stack = [start]
    while stack:
        for e in graph.outgoing(stack.pop()):
            if e.target not in seen:
                seen.add(e.target)
                stack.append(e.target)
    return seen


def _sccs(graph: GraphDefinition) -> list[list[str]]:
    """Strongly connected components (Kosaraju, iterative: designer graphs may be deep)."""
    order: list[str] = []
    seen: set[str] = set()
    for root in (n.id for n in graph.nodes):
        if root in seen:
            continue
        seen.add(root)
        stack = [(root, iter(graph.outgoing(root)))]
        while stack:
            node, it = stack[-1]
            for e in it:
                if e.target not in seen:
                    seen.add(e.target)
                    stack.append((e.target, iter(graph.outgoing(e.target))))
                    break
            else:
                stack.pop()
                order.append(node)
    comps: list[list[str]] = []
    assigned: set[str] = set()
    for root in reversed(order):
        if root in assigned:
            continue
        comp, stack2 = [], [root]
        assigned.add(root)
        while stack2:
            node = stack2.pop()
            comp.append(node)
            for e in graph.incoming(node):
                if e.source not in assigned:
                    assigned.add(e.source)
                    stack2.append(e.source)
        comps.append(comp)
    return comps


def check_graph(graph: GraphDefinition, registry: ExecutorRegistry | None, problems: list[Problem]) -> None:
    """Append every structural problem of `graph` to `problems`."""
    order = {n.id: i for i, n in enumerate(graph.nodes)}
    reach = reachable_from(graph, graph.start)
    for n in graph.nodes:
        if n.id not in reach:
            what = "end node" if n.id in graph.ends else "node"
            problems.append(Problem(f"node {n.id!r}", f"unreachable: no path from start {graph.start!r} leads to this {what}"))
    if not graph.ends & reach:
        problems.append(Problem("definition", f"no end node (one without outgoing edges) is reachable from start {graph.start!r}"))
    # cycles: a strongly connected component that no edge leaves can never finish
    in_bad_cycle: set[str] = set()
    for comp in _sccs(graph):
        members = set(comp)
        looped = len(comp) > 1 or any(e.target == comp[0] for e in graph.outgoing(comp[0]))
        if not looped:
            continue
        if not any(e.target not in members for m in comp for e in graph.outgoing(m)):
            in_bad_cycle |= members
            names = " -> ".join(sorted(comp, key=order.__getitem__))
            problems.append(Problem(f"node {min(comp, key=order.__getitem__)!r}", f"a cycle without an exit: {names}"))
    # every node must be able to reach an end (else it feeds only into an exitless cycle)
    can_end = set(graph.ends)
    stack = list(can_end)
    while stack:
        for e in graph.incoming(stack.pop()):
            if e.source not in can_end:
                can_end.add(e.source)
                stack.append(e.source)
    for n in graph.nodes:
        if n.id in reach and n.id not in can_end and n.id not in in_bad_cycle:
            problems.append(Problem(f"node {n.id!r}", "cannot reach an end node (every path runs into a cycle without an exit)"))
    for n in graph.nodes:
        _check_node_edges(graph, registry, n.id, problems)


def _check_node_edges(graph: GraphDefinition, registry: ExecutorRegistry | None, nid: str, problems: list[Problem]) -> None:
    node = graph.node(nid)
    where = f"node {nid!r}"
    out = graph.outgoing(nid)
    if node.join and len(graph.incoming(nid)) < 2:
        problems.append(Problem(where, "join node needs at least two incoming edges"))
    if node.type in (SUCCEED, FAIL) and out:
        problems.append(Problem(where, f"{node.type!r} ends the run and takes no outgoing edges"))
    by_port: dict[str | None, list[str]] = defaultdict(list)
    conditional: dict[str | None, bool] = defaultdict(bool)
    for e in out:
        if e.on_error is not None:
            continue
        if e.condition is None:
            by_port[e.port].append(e.id)
        else:
            conditional[e.port] = True
    for port, has_cond in conditional.items():
        if has_cond and len(by_port.get(port, [])) > 1:
            label = "without a port" if port is None else f"on port {port!r}"
            problems.append(Problem(
                where,
                f"edges {label} mix conditions with several unconditional edges ({', '.join(by_port[port])}); "
                "keep at most one unconditional (default) edge beside conditional ones",
            ))
    ports = {e.port for e in out if e.port is not None}
    declared: tuple[str, ...] | None = None
    if node.type == USER_TASK:
        if "timeout" in ports and node.config.get("timeout") is None:
            problems.append(Problem(where, "has an edge on port 'timeout' but no config.timeout"))
        if node.config.get("port_from") is None:
            declared = ("timeout", "cancelled")
    elif registry is not None and node.type in registry:
        declared = registry.get(node.type).output_ports
    elif node.type.startswith("graph."):
        declared = ()
    if declared is not None:
        for e in out:
            if e.port is not None and e.port not in declared:
                allowed = ", ".join(declared) or "none"
                problems.append(Problem(f"edge {e.id!r}", f"port {e.port!r} is not an output port of {node.type!r} (ports: {allowed})"))
