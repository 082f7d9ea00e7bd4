"""The step timeline lives in `actorflow._readmodel` (shared with the CLI); re-exported here."""

from .._readmodel._timeline import Row, Segment, Timeline, Waiting, build_timeline

__all__ = ["Row", "Segment", "Timeline", "Waiting", "build_timeline"]
