"""Structured logs: bound fields reach the host's own handlers as record attributes; the host's
logging setup (root handlers, levels, structlog config) is left as it was."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from actorflow import configure_logging, log_context
from actorflow._control import submit_cancel
from actorflow._logging import get_logger
from actorflow.testing import memory_engine


class Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def host_logging() -> Iterator[Keep]:
    """A host with its own root handler and no structlog setup (other tests' config restored after)."""
    saved = structlog.get_config()
    was_configured = structlog.is_configured()
    structlog.reset_defaults()
    root = logging.getLogger()
    handler = Keep()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    af = logging.getLogger("actorflow")
    af_handlers, af_level = list(af.handlers), af.level
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        af.handlers[:] = af_handlers
        af.setLevel(af_level)
        if was_configured:
            structlog.configure(**saved)


def test_bound_fields_reach_the_host_handler_and_its_setup_stays(host_logging: Keep) -> None:
    root_handlers = list(logging.getLogger().handlers)
    out = io.StringIO()
    configure_logging(json=True, stream=out)
    configure_logging(json=True, stream=out)  # again: replaces its own handler, adds no second one
    assert logging.getLogger().handlers == root_handlers  # the host's root handlers untouched
    assert len(logging.getLogger("actorflow").handlers) == 1
    assert not structlog.is_configured()  # and structlog's global config too

    log = get_logger("actorflow.host").bind(run_id="r-1", workflow="checkout")
    log.warning("step attempt failed", step="charge", attempt=2, name="clash-with-LogRecord")
    (rec,) = host_logging.records
    assert rec.name == "actorflow.host" and rec.levelno == logging.WARNING
    assert (rec.run_id, rec.workflow, rec.step, rec.attempt) == ("r-1", "checkout", "charge", 2)  # type: ignore[attr-defined]
    assert rec.name_ == "clash-with-LogRecord"  # type: ignore[attr-defined]
    assert "run_id='r-1'" in rec.getMessage() and rec.getMessage().startswith("step attempt failed")
    line = json.loads(out.getvalue().splitlines()[-1])
    assert line["event"] == "step attempt failed" and line["run_id"] == "r-1" and line["attempt"] == 2
    assert line["level"] == "warning" and line["logger"] == "actorflow.host"


def test_console_renderer_for_people(host_logging: Keep) -> None:
    out = io.StringIO()
    configure_logging(json=False, stream=out)
    get_logger("actorflow.control").info("command applied", run_id="r-9")
    text = out.getvalue()
    assert "command applied" in text and "run_id" in text and "r-9" in text and not text.startswith("{")


def test_an_engine_log_line_carries_its_context(host_logging: Keep) -> None:
    with memory_engine() as e:

        @e.workflow(name="w")
        async def w(ctx: Any) -> None:
            await ctx.wait_signal("never")

        h = e.start(w, run_id="r-ctl")
        assert e.journal is not None
        cmd = submit_cancel(e.journal, "r-ctl")
        assert e._control is not None

        def broken(*a: Any) -> None:
            raise RuntimeError("apply broke")

        e._control._apply = broken  # type: ignore[method-assign]
        e._control.drain()
        h.cancel()
    recs = [r for r in host_logging.records if r.name == "actorflow.control"]
    assert recs and recs[0].run_id == "r-ctl" and recs[0].command == cmd.id and recs[0].kind == "cancel"  # type: ignore[attr-defined]
    assert recs[0].exc_info is not None


def test_log_context_adds_the_running_step_in_the_host_s_structlog_chain() -> None:
    saved = structlog.get_config()
    seen: list[dict[str, Any]] = []

    def capture(_: Any, __: str, ev: dict[str, Any]) -> str:
        seen.append(dict(ev))
        return ""

    structlog.reset_defaults()  # whatever other tests configured (a level filter...) is not this host's
    structlog.configure(processors=[log_context, capture], logger_factory=structlog.ReturnLoggerFactory())
    try:
        with memory_engine() as e:

            @e.workflow(name="w")
            async def w(ctx: Any) -> int:
                return int(await ctx.step("work", lambda: structlog.get_logger().info("inside") or 1))

            e.run(w, run_id="r-log", timeout=10)
    finally:
        structlog.configure(**saved)
    inside = [s for s in seen if s.get("event") == "inside"]
    assert inside and inside[0]["run_id"] == "r-log" and inside[0]["step"] == "work" and inside[0]["attempt"] == 1
