"""The dashboard's web app (Starlette): pages, a small JSON API, and the guarded actions.

Pages are rendered on the server (Jinja2 templates shipped in the package); a few lines of JS keep
the filters in the address bar and refresh the live part of a page when the journal changes.

Writes are POSTs with a per-server token in a hidden field (pages from another site cannot read it),
and a request whose Origin names another site is refused before the token is looked at. Bound to a
loopback address, every request must also name a loopback host: a DNS-rebinding page then cannot
read the pages (or the token) through a name of its own.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import parse_qs, quote, urlsplit

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from storage import Journal

from .. import _control
from .._fork import add_fork, check_created, plan_fork
from .._readmodel import STATES, Census, RunFilter, build_timeline, json_safe, list_runs
from ..errors import (
    ActorflowError,
    ConfigError,
    InvalidRunId,
    PayloadError,
    RunFinished,
    RunIdTaken,
    RunNotFound,
)
from ._taskpages import fork_points, task_routes

__all__ = ["Actions", "InboxActions", "EngineActions", "create_app", "LOOPBACK_HOSTS"]

LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]


class Actions(Protocol):
    """How the dashboard acts on runs: through a live engine in this process, or the control inbox."""

    queued: bool  # True: commands are applied by the engine holding the directory, shortly after

    def signal(self, run_id: str, name: str, payload: Any) -> str: ...

    def cancel(self, run_id: str) -> str: ...

    def fork(self, run_id: str, from_step: int, new_run_id: str | None) -> tuple[str, str]: ...  # (message, new run id)

    def requeue(self, execution_id: str) -> str: ...


class InboxActions:
    """Another process's engine holds the data directory (or none does): durable commands for it."""

    queued = True

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def signal(self, run_id: str, name: str, payload: Any) -> str:
        cmd = _control.submit_signal(self.journal, run_id, name, payload, source="dashboard")
        return f"signal {name!r} queued (command {cmd.id}); the engine holding the data directory applies it within about a second"

    def cancel(self, run_id: str) -> str:
        cmd = _control.submit_cancel(self.journal, run_id, source="dashboard")
        return f"cancel queued (command {cmd.id}); the engine holding the data directory applies it within about a second"

    def fork(self, run_id: str, from_step: int, new_run_id: str | None) -> tuple[str, str]:
        """As `actorflow runs fork`: the new run and a "load" command for the engine, in one batch."""
        plan = plan_fork(self.journal, run_id, from_step, new_run_id)
        batch = self.journal.batch()
        idx = add_fork(batch, plan)
        _control.add_load(batch, plan.run_id, source="dashboard")
        check_created(plan, self.journal.commit(batch)[idx])
        return f"forked from {run_id} after {from_step} step(s); the engine holding the data directory loads it within about a second", plan.run_id

    def requeue(self, execution_id: str) -> str:
        cmd = _control.submit_requeue(self.journal, execution_id, source="dashboard")
        return f"requeue of {execution_id} queued (command {cmd.id}); the engine holding the data directory applies it within about a second"


class EngineActions:
    """Served from inside the service (`engine.dashboard()`): the engine's own calls."""

    queued = False

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def signal(self, run_id: str, name: str, payload: Any) -> str:
        if not name or "\x00" in name:
            raise ConfigError(f"signal name must be a non-empty string without NUL, got {name!r}")
        self.engine.signal(run_id, name, payload)
        return f"signal {name!r} delivered"

    def cancel(self, run_id: str) -> str:
        return "run cancelled" if self.engine.cancel(run_id) else "the run had already ended"

    def fork(self, run_id: str, from_step: int, new_run_id: str | None) -> tuple[str, str]:
        handle = self.engine.fork(run_id, from_step, new_run_id)
        return f"forked from {run_id} after {from_step} step(s)", str(handle.run_id)

    def requeue(self, execution_id: str) -> str:
        return f"{execution_id} requeued as {self.engine.requeue(execution_id)}"


@dataclass(frozen=True, slots=True)
class Settings:
    read_only: bool
    title: str
    source: str  # what the header says the pages read


def _fmt_time(t: float | None) -> str:
    if not t:
        return ""
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def _fmt_dur(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = max(0.0, seconds)
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def _pretty(value: Any) -> str:
    return json.dumps(json_safe(value), indent=2, ensure_ascii=False, default=str)


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("actorflow.dashboard", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(
        t=_fmt_time,
        dur=_fmt_dur,
        pretty=_pretty,
        runurl=lambda rid: "/runs/" + quote(rid, safe=""),
        pct=lambda f: f"{f:.2f}",
    )
    return env


def create_app(journal: Journal, actions: Actions | None, *, read_only: bool = False, loopback_only: bool = True, source: str = "") -> Starlette:
    """The dashboard over `journal`; `actions` None or `read_only` hides and refuses every write."""
    env = _templates()
    token = secrets.token_urlsafe(32)
    census = Census(journal)
    settings = Settings(read_only or actions is None, "actorflow", source)

    def render(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        ctx.update(settings=settings, csrf=token, states=STATES, now=time.time(), path=request.url.path)
        return HTMLResponse(env.get_template(name).render(**ctx), status_code=status)

    def error_page(request: Request, status: int, title: str, message: str) -> HTMLResponse:
        return render(request, "error.html", status, title=title, message=message)

    def fragment(request: Request) -> bool:
        return request.headers.get("x-fragment") == "1"

    # --- pages ---------------------------------------------------------------------------------
    def runs_view(request: Request) -> Response:
        marker = journal.change_marker()  # before the data: a change after it makes the page refresh
        q = dict(request.query_params)
        try:
            f = RunFilter.from_query(q)
            limit = min(max(int(q.get("limit", "50")), 1), 500)
        except ValueError as exc:
            return error_page(request, 400, "Bad filter", str(exc))
        page = list_runs(journal, f, after=q.get("after") or None, before=q.get("before") or None, limit=limit)
        total, active = journal.run_counts()
        by_state, workflows, counted_at = census.get()
        if f.workflow and f.workflow not in workflows:
            workflows = sorted([*workflows, f.workflow])
        ctx: dict[str, Any] = dict(f=f, page=page, total=total, active=active, by_state=by_state, workflows=workflows, counted_at=counted_at, limit=limit, marker=marker)
        return render(request, "runs_live.html" if fragment(request) else "runs.html", **ctx)

    def run_view(request: Request) -> Response:
        marker = journal.change_marker()  # before the data: a change after it makes the page refresh
        run_id = request.path_params["run_id"]
        rec, events, inbox = _load(journal, run_id)
        if rec is None:
            return error_page(request, 404, "Run not found", f"There is no run with id {run_id!r} in this data directory.")
        tl = build_timeline(rec, events, time.time())
        children = [r.link for r in tl.rows if r.link]
        child_states = {c: (cr.state if cr is not None else "?") for c, cr in zip(children, journal.get_runs(children))}
        ctx: dict[str, Any] = dict(
            run=rec,
            tl=tl,
            events=events,
            inbox=inbox,
            child_states=child_states,
            commands=_control.pending(journal, run_id),
            outcomes=_control.outcomes(journal, run_id)[-10:],
            notice=request.query_params.get("notice", ""),
            queued=getattr(actions, "queued", True),
            fork_points=fork_points(events),
            marker=marker,
        )
        return render(request, "run_live.html" if fragment(request) else "run.html", **ctx)

    def not_found(request: Request, exc: Exception) -> Response:
        return error_page(request, 404, "Not found", f"Nothing at {request.url.path}.")

    # --- JSON ----------------------------------------------------------------------------------
    def api_runs(request: Request) -> Response:
        q = dict(request.query_params)
        try:
            f = RunFilter.from_query(q)
            limit = min(max(int(q.get("limit", "50")), 1), 500)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        page = list_runs(journal, f, after=q.get("after") or None, before=q.get("before") or None, limit=limit)
        total, active = journal.run_counts()
        return JSONResponse(
            {
                "runs": [_run_dict(r) for r in page.rows],
                "older": page.older,
                "newer": page.newer,
                "scanned": page.scanned,
                "partial": page.partial,
                "total": total,
                "unfinished": active,
            }
        )

    def api_run(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        rec, events, inbox = _load(journal, run_id)
        if rec is None:
            return JSONResponse({"error": f"run {run_id!r} not found"}, 404)
        tl = build_timeline(rec, events, time.time())
        return JSONResponse(
            {
                "run": _run_dict(rec),
                "waiting": [{"kind": w.kind, "name": w.name, "due": w.due, "run_id": w.run_id} for w in tl.waiting],
                "events": [e.to_dict() for e in events],
                "inbox": [{"name": n, "seq": s, "payload": json_safe(p)} for n, s, p in inbox],
                "commands": [c.id for c in _control.pending(journal, run_id)],
            }
        )

    def api_marker(request: Request) -> Response:
        return JSONResponse({"marker": journal.change_marker()})

    # --- actions -------------------------------------------------------------------------------
    async def act(request: Request) -> Response:
        kind = request.path_params["kind"]
        if settings.read_only:
            return error_page(request, 403, "Read-only", "This dashboard was started read-only (--read-only): it does not act on runs.")
        origin = request.headers.get("origin")
        if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host", ""):
            return error_page(request, 403, "Cross-site request refused", f"A request from {origin} may not act on runs here.")
        if request.headers.get("sec-fetch-site") not in (None, "same-origin", "none"):
            return error_page(request, 403, "Cross-site request refused", "Actions must come from this dashboard's own pages.")
        body = (await request.body()).decode("utf-8", "replace")
        form = {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}
        if not hmac.compare_digest(form.get("csrf", ""), token):
            return error_page(request, 403, "Missing or stale form token", "Reload the page and try again (the dashboard may have restarted).")
        run_id = form.get("run_id", "")
        back = "/runs/" + quote(run_id, safe="")
        try:
            if kind == "signal":
                name = form.get("name", "").strip()
                text = form.get("payload", "").strip()
                try:
                    payload = json.loads(text) if text else None
                except json.JSONDecodeError as exc:
                    return error_page(request, 400, "Bad signal payload", f"The payload is not JSON ({exc}); nothing was sent.")
                message = await run_in_threadpool(_checked(actions).signal, run_id, name, payload)
            elif kind == "cancel":
                message = await run_in_threadpool(_checked(actions).cancel, run_id)
            elif kind == "fork":
                try:
                    from_step = int(form.get("from_step", ""))
                except ValueError:
                    return error_page(request, 400, "Bad step", f"from_step must be a whole number, got {form.get('from_step', '')!r}; nothing was written.")
                new_id = form.get("new_run_id", "").strip() or None
                message, forked = await run_in_threadpool(_checked(actions).fork, run_id, from_step, new_id)
                back = "/runs/" + quote(forked, safe="")
            elif kind == "requeue":
                message = await run_in_threadpool(_checked(actions).requeue, run_id)
                back = "/tasks/dead-letters"
            else:
                return error_page(request, 404, "Unknown action", f"There is no action {kind!r}.")
        except RunNotFound as exc:
            return error_page(request, 404, "Run not found", str(exc))
        except RunFinished as exc:
            return error_page(request, 409, "Run already finished", str(exc))
        except RunIdTaken as exc:
            return error_page(request, 409, "Run id taken", str(exc))
        except (ConfigError, PayloadError, InvalidRunId) as exc:
            return error_page(request, 400, "Refused", str(exc))
        except ActorflowError as exc:
            return error_page(request, 500, "Action failed", str(exc))
        return RedirectResponse(f"{back}?notice={quote(message)}", status_code=303)

    def home(request: Request) -> Response:
        return RedirectResponse("/runs", status_code=307)

    routes = [
        Route("/", home),
        Route("/runs", runs_view),
        Route("/runs/{run_id:path}", run_view),
        Route("/api/runs", api_runs),
        Route("/api/runs/{run_id:path}", api_run),
        Route("/api/marker", api_marker),
        *task_routes(journal, render),
        Route("/actions/{kind}", act, methods=["POST"]),
        Mount("/static", StaticFiles(packages=[("actorflow.dashboard", "static")]), name="static"),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=LOOPBACK_HOSTS)] if loopback_only else []
    handlers: dict[Any, Callable[..., Any]] = {404: not_found}
    return Starlette(routes=routes, middleware=middleware, exception_handlers=handlers)


def _checked(actions: Actions | None) -> Actions:
    if actions is None:
        raise ConfigError("this dashboard has no way to act on runs")
    return actions


def _load(journal: Journal, run_id: str) -> tuple[Any, list[Any], list[tuple[str, int, Any]]]:
    """Record, every event and the undelivered signals of a run (finished runs too, unlike load_run)."""
    try:
        rec = journal.get_run(run_id)
    except ValueError:  # a NUL in the id: no such run
        return None, [], []
    if rec is None:
        return None, [], []
    return rec, journal.events(run_id), ([] if rec.finished else journal.signals(run_id))


def _run_dict(r: Any) -> dict[str, Any]:
    return {
        "run_id": r.run_id,
        "workflow": r.workflow,
        "state": r.state,
        "progress": r.progress,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
        "error": r.error,
        "parent": r.parent,
    }
