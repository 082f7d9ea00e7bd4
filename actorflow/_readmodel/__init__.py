"""What operator tools show of a data directory, read from its journal in pages: the runs list,
counts per state, one run's step timeline and what it waits on now.

Shared by the web dashboard and the `actorflow runs` commands (neither needs the other's
dependencies); every read is safe beside the engine that holds the directory.
"""

from ._runs import STATES, Census, RunFilter, RunPage, json_safe, list_runs, parse_time
from ._timeline import Row, Segment, Timeline, Waiting, build_timeline

__all__ = [
    "STATES",
    "Census",
    "RunFilter",
    "RunPage",
    "json_safe",
    "list_runs",
    "parse_time",
    "Row",
    "Segment",
    "Timeline",
    "Waiting",
    "build_timeline",
]
