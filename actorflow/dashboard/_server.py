"""Serving the dashboard: on a thread beside a running engine (`engine.dashboard()`), or in the
foreground for the `actorflow dashboard` command, with uvicorn on a socket bound here."""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import time
from typing import Any

import uvicorn

from storage import Journal, LmdbJournal

from ..errors import ConfigError
from ._app import Actions, EngineActions, InboxActions, create_app

__all__ = ["Dashboard", "serve_engine", "serve_data_dir", "is_loopback"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", host=host, port=port) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class Dashboard:
    """A dashboard server on a background thread; `url`, `close()` (also a context manager)."""

    def __init__(self, journal: Journal, actions: Actions | None, *, port: int = 8765, bind: str = "127.0.0.1", read_only: bool = False, source: str = "", owns_journal: bool = False) -> None:
        self.journal = journal
        self._owns_journal = owns_journal
        self.app = create_app(journal, actions, read_only=read_only, loopback_only=is_loopback(bind), source=source)
        self._sock = _bind(bind, port)
        self.host = bind
        self.port = int(self._sock.getsockname()[1])
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2, access_log=False)
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 10.0) -> Dashboard:
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, name="actorflow-dashboard", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:  # uvicorn offers no event for this
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.close()
                raise ConfigError(f"the dashboard did not start on {self.url}")
            time.sleep(0.01)
        return self

    def serve_forever(self) -> None:
        """Serve on this thread until interrupted (uvicorn handles SIGINT/SIGTERM on the main thread)."""
        try:
            self._server.run(sockets=[self._sock])
        finally:
            self._release()

    def close(self) -> None:
        self._server.should_exit = True
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(10)
        self._release()

    def _release(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass
        if self._owns_journal:
            self._owns_journal = False
            self.journal.close()

    def __enter__(self) -> Dashboard:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def serve_engine(engine: Any, *, port: int = 8765, bind: str = "127.0.0.1", read_only: bool = False) -> Dashboard:
    """The dashboard of an open engine, acting through the engine itself; stopped by `engine.close()`."""
    journal = engine.journal
    if journal is None or not engine.is_open:
        raise ConfigError("open the engine before starting its dashboard")
    source = engine.data_dir or "in-memory journal"
    return Dashboard(journal, EngineActions(engine), port=port, bind=bind, read_only=read_only, source=source).start()


def serve_data_dir(data_dir: str, *, port: int = 8765, bind: str = "127.0.0.1", read_only: bool = False) -> Dashboard:
    """A dashboard over a data directory, beside whatever engine holds it (if any): reads open the
    LMDB journal (concurrent readers are fine), actions go through the control inbox."""
    if not os.path.exists(os.path.join(data_dir, "data.mdb")):
        raise ConfigError(f"{data_dir} holds no actorflow journal (no data.mdb): check --data-dir", data_dir=data_dir)
    journal = LmdbJournal(data_dir)
    try:
        actions = None if read_only else InboxActions(journal)
        return Dashboard(journal, actions, port=port, bind=bind, read_only=read_only, source=os.path.abspath(data_dir), owns_journal=True)
    except BaseException:
        journal.close()
        raise
