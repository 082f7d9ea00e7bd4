"""The dashboard's read model lives in `actorflow._readmodel` (shared with the CLI); re-exported here."""

from .._readmodel._runs import STATES, Census, RunFilter, RunPage, json_safe, list_runs, parse_time

__all__ = ["STATES", "Census", "RunFilter", "RunPage", "json_safe", "list_runs", "parse_time"]
