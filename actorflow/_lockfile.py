"""One engine per data directory: an exclusive OS lock, released by the kernel if the process dies."""

from __future__ import annotations

import fcntl
import os

from .errors import ConfigError, StorageError

__all__ = ["DirLock"]


class DirLock:
    """`flock` on `<data_dir>/engine.lock`; two engines recovering the same runs would run steps twice."""

    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir
        self.path = os.path.join(data_dir, "engine.lock")
        self._fd: int | None = None

    def acquire(self) -> None:
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
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
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

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
