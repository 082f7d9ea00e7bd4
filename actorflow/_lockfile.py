"""One engine per data directory: an exclusive OS lock, released by the kernel if the process dies."""

from __future__ import annotations

import fcntl
import os
import time
import weakref

from .errors import ConfigError, StorageError

__all__ = ["DirLock"]

_held: weakref.WeakSet[DirLock] = weakref.WeakSet()  # locks this process holds


def _drop_in_child() -> None:
    """A forked child (a multiproc engine's admin and its actors, a step worker process) shares the
    lock's open file description: were it kept, an orphan of an engine killed with -9 would hold the
    directory for good and no engine could open it again. The parent's lock is not touched."""
    for lock in list(_held):
        if lock._fd is not None:
            try:
                os.close(lock._fd)
            except OSError:
                pass
            lock._fd = None
    _held.clear()


os.register_at_fork(after_in_child=_drop_in_child)


class DirLock:
    """`flock` on `<data_dir>/engine.lock`; two engines recovering the same runs would run steps twice.

    `name`: another lock of the directory (a multiproc engine's shard process holds `shard-N.lock`, so
    a restarted engine's shard N waits for the one an engine killed with -9 left running)."""

    def __init__(self, data_dir: str, name: str = "engine.lock") -> None:
        self.data_dir = data_dir
        self.path = os.path.join(data_dir, name)
        self._fd: int | None = None

    def acquire(self, wait: float = 0.0) -> None:
        """Take the lock, waiting up to `wait` seconds for its holder to let go; else ConfigError."""
        try:
            os.makedirs(self.data_dir, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except (FileExistsError, NotADirectoryError) as exc:
            raise ConfigError(
                f"data directory {self.data_dir!r} is not a directory (a file is in the way: {exc.filename!r})",
                path=self.data_dir,
            ) from None
        except OSError as exc:
            raise StorageError(
                f"cannot use data directory {self.data_dir!r}: {exc.strerror} ({exc.filename!r}); "
                "it must be a writable directory",
                path=self.data_dir,
                errno=exc.errno,
            ) from None
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.01)
                    continue
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise ConfigError(
                    f"another engine (pid {holder}) already runs on {os.path.dirname(self.path)}; "
                    "one engine per data directory (read-only tools may open storage.LmdbJournal instead)",
                    path=self.path,
                    pid=holder,
                ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        _held.add(self)

    def release(self) -> None:
        _held.discard(self)
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
