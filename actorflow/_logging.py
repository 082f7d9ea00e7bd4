"""Structured logs that respect the host's logging setup.

The engine logs through `get_logger(name)`. If the application configured structlog, its
configuration is used as is. Otherwise each line becomes a standard `logging` record on the
`actorflow.*` logger: its message reads `event [key=value ...]` for plain formatters, and every
bound field (`run_id`, `workflow`, `step`, `attempt`, `error`...) is also an attribute of the
record, so a JSON or ECS handler of the host sees them as fields. Nothing here touches the root
logger, installs a handler or calls `structlog.configure()` - unless asked:

`configure_logging(json=...)` is for applications without a logging setup of their own: one
handler on the `actorflow` logger, rendering JSON (production) or colored key=value (people).

`log_context` is a structlog processor for the host's own chain: inside a step function it adds
the step's `run_id`, `step`, `step_pos` and `attempt` to every log line the step writes.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import IO, Any

import structlog

from ._types import _current_step

__all__ = ["get_logger", "configure_logging", "log_context", "EngineLogger"]

# LogRecord attributes a field may not overwrite (logging raises KeyError): renamed `field_`
_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
_HANDLER_MARK = "_actorflow_handler"


def log_context(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: the running step's identity, when called from inside a step."""
    info = _current_step.get()
    if info is not None:
        event_dict.setdefault("run_id", info.run_id)
        event_dict.setdefault("step", info.name)
        event_dict.setdefault("step_pos", info.seq)
        event_dict.setdefault("attempt", info.attempt)
    return event_dict


class EngineLogger:
    """`log.info(event, **fields)`, `log.bind(**fields)`: structlog's API, routed as the module says."""

    __slots__ = ("name", "_std", "_ctx")

    def __init__(self, name: str, ctx: dict[str, Any] | None = None) -> None:
        self.name = name
        self._std = logging.getLogger(name)
        self._ctx = ctx or {}

    def bind(self, **fields: Any) -> EngineLogger:
        return EngineLogger(self.name, {**self._ctx, **fields})

    def _log(self, level: int, event: str, exc_info: Any, fields: dict[str, Any]) -> None:
        if structlog.is_configured():  # the host's structlog setup decides everything
            bound = structlog.get_logger(self.name).bind(**self._ctx)
            if exc_info:
                fields["exc_info"] = exc_info
            getattr(bound, logging.getLevelName(level).lower())(event, **fields)
            return
        std = self._std
        if not std.isEnabledFor(level):
            return
        data = log_context(None, "", {**self._ctx, **fields})
        extra = {(k + "_" if k in _RESERVED else k): v for k, v in data.items()}
        extra["event"] = event
        extra["actorflow_fields"] = dict(data)
        text = event + (" [" + " ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in data.items()) + "]" if data else "")
        std.log(level, "%s", text, exc_info=exc_info, extra=extra, stacklevel=3)

    def debug(self, event: str, **fields: Any) -> None:
        self._log(logging.DEBUG, event, None, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log(logging.INFO, event, None, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log(logging.WARNING, event, None, fields)

    def error(self, event: str, *, exc_info: Any = None, **fields: Any) -> None:
        self._log(logging.ERROR, event, exc_info, fields)

    def exception(self, event: str, **fields: Any) -> None:
        self._log(logging.ERROR, event, True, fields)


def get_logger(name: str) -> EngineLogger:
    return EngineLogger(name)


def _fields_from_record(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """ProcessorFormatter pre-chain: the pure event and its fields back from an engine record."""
    record: logging.LogRecord | None = event_dict.get("_record")
    fields = getattr(record, "actorflow_fields", None)
    if record is not None and isinstance(fields, dict):
        event_dict["event"] = getattr(record, "event", event_dict.get("event"))
        for k, v in fields.items():
            event_dict.setdefault(k, v)
    return event_dict


def configure_logging(json: bool = False, level: int | str = logging.INFO, stream: IO[str] | None = None) -> logging.Handler:
    """Show actorflow's logs: one handler on the `actorflow` logger (replacing one an earlier call
    installed), rendering JSON lines (`json=True`) or colored key=value lines; returns it.

    Records still propagate to the host's handlers; the root logger, other loggers and structlog's
    global configuration are left alone."""
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=stream is None and sys.stderr.isatty())
    formatter = structlog.stdlib.ProcessorFormatter(
        processor=renderer,
        foreign_pre_chain=[
            _fields_from_record,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info if json else structlog.processors.StackInfoRenderer(),
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    setattr(handler, _HANDLER_MARK, True)
    logger = logging.getLogger("actorflow")
    for old in [h for h in logger.handlers if getattr(h, _HANDLER_MARK, False)]:
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(level)
    return handler
