"""The task-queue pages (queues, dead letters, schedules) and the choices of the fork form.

Read-only views over the journal (`actorflow._readmodel._tasks`); the requeue and fork writes go
through the guarded `/actions/...` POSTs of `_app`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from storage import Event, Journal

from .._readmodel._tasks import TASK_STATES, dead_letters, queue_view, schedules

__all__ = ["fork_points", "task_routes"]

Render = Callable[..., Response]
_OUTCOMES = ("step_completed", "step_failed")


def fork_points(events: list[Event]) -> list[tuple[int, str]]:
    """(N, label) for each `from_step` a fork of this run accepts: 0 reruns everything, N keeps the
    first N steps whose outcome is journaled (as `actorflow._fork` counts them)."""
    names: dict[int, str] = {}
    for ev in events:
        if ev.kind in _OUTCOMES and ev.pos not in names:
            names[ev.pos] = ev.name
    points = [(0, "0 - run every step again")]
    for n, name in enumerate(names.values(), start=1):
        points.append((n, f"{n} - keep up to {name}"))
    return points


def task_routes(journal: Journal, render: Render) -> list[Route]:
    def queues(request: Request) -> Response:
        view = queue_view(journal, time.time())
        return render(request, "tasks.html", view=view, task_states=TASK_STATES)

    def dead(request: Request) -> Response:
        return render(request, "dead_letters.html", letters=dead_letters(journal), notice=request.query_params.get("notice", ""))

    def scheds(request: Request) -> Response:
        return render(request, "schedules.html", schedules=schedules(journal))

    return [
        Route("/tasks", queues),
        Route("/tasks/dead-letters", dead),
        Route("/tasks/schedules", scheds),
    ]
