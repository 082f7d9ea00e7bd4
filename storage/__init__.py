"""Journal backends: the abstract `Journal`, the LMDB default and an in-memory one for tests."""

from ._codec import DEFAULT_MAX_PAYLOAD, FORMAT_VERSION, HEADER_SIZE, OLDEST_FORMAT_VERSION, Codec
from ._fsck import Finding, FsckReport, fsck
from ._group_commit import CommitFuture, GroupCommitter
from ._journal import FINISHED_STATES, Event, Journal, RunRecord, SignalResult, WriteBatch
from ._lmdb import LmdbJournal
from ._memory import MemoryJournal

__all__ = [
    "Codec",
    "DEFAULT_MAX_PAYLOAD",
    "FORMAT_VERSION",
    "OLDEST_FORMAT_VERSION",
    "HEADER_SIZE",
    "FINISHED_STATES",
    "Event",
    "CommitFuture",
    "GroupCommitter",
    "Journal",
    "RunRecord",
    "SignalResult",
    "WriteBatch",
    "LmdbJournal",
    "MemoryJournal",
    "Finding",
    "FsckReport",
    "fsck",
]
