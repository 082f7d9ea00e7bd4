"""Fixtures for the dashboard tests: a live engine holding a data directory (service.py), dashboard
servers started as `actorflow dashboard` processes, and one headless Chromium for the module.

Every process started here is ended by its PID at teardown."""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICE = Path(__file__).resolve().parent / "service.py"
TIMEOUT = 30.0


def _drain(proc: subprocess.Popen[Any]) -> collections.deque[str]:
    """Keep reading a child's stdout and stderr (the last lines kept for error messages): a pipe nobody
    reads fills up (uvicorn logs every request) and then blocks the child mid-write, so the page it
    serves, or the engine it runs, stops answering."""
    tail: collections.deque[str] = collections.deque(maxlen=200)

    def pump(stream: Any) -> None:
        for line in stream:
            tail.append(line)

    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            threading.Thread(target=pump, args=(stream,), daemon=True).start()
    return tail


def _end(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Service:
    """service.py in a subprocess: an engine holding `data_dir` with runs in every state."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVICE), str(data_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            _end(self.proc)
            raise AssertionError(f"service did not start: {line!r} {self.proc.stderr.read() if self.proc.stderr else ''}")
        self.output = _drain(self.proc)

    def stop(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()  # the service closes its engine and exits
        try:
            self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        _end(self.proc)


class Server:
    """`actorflow dashboard --data-dir DIR --port 0 [--read-only]` in a subprocess."""

    def __init__(self, data_dir: Path, *extra: str) -> None:
        cmd = [sys.executable, "-c", "import sys; from actorflow._cli import main; sys.exit(main())", "dashboard", "--data-dir", str(data_dir), "--port", "0", *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = re.search(r"on (http://\S+) for", line)
        if m is None:
            _end(self.proc)
            raise AssertionError(f"dashboard did not start: {line!r} {self.proc.stderr.read() if self.proc.stderr else ''}")
        self.url = m.group(1)
        self.output = _drain(self.proc)

    def stop(self) -> None:
        _end(self.proc)  # SIGTERM: uvicorn shuts down, the command closes its journal


def http(url: str, data: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """(status, body) of a GET, or of a form POST when `data` is given; no redirects followed."""
    from urllib.parse import urlencode

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a: Any, **k: Any) -> None:
            return None

    body = None if data is None else urlencode(data).encode()
    req = urllib.request.Request(url, data=body, headers=headers or {}, method="GET" if data is None else "POST")
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=TIMEOUT) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = Service(tmp_path_factory.mktemp("dash") / "data")
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def server(service: Service) -> Iterator[Server]:
    srv = Server(service.data_dir)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def readonly_server(service: Service) -> Iterator[Server]:
    srv = Server(service.data_dir, "--read-only")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One headless Debian Chromium driven through its chromedriver (selenium), for the module."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    chromium, driver_bin = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver_bin is None:
        pytest.fail("the browser tests need Debian's chromium and chromedriver: apt-get install chromium chromium-driver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--window-size=1400,1000", f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        opts.add_argument(arg)
    svc = DriverService(executable_path=driver_bin, log_output=os.devnull)
    driver = webdriver.Chrome(options=opts, service=svc)
    driver.set_page_load_timeout(TIMEOUT)
    try:
        yield driver
    finally:
        try:
            driver.quit()  # ends chromium and its chromedriver
        finally:
            proc = getattr(svc, "process", None)
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture(params=["memory", "lmdb"])
def journal(request: Any, tmp_path: Path) -> Iterator[Any]:
    """A journal of each backend (what the list and census read)."""
    from storage import LmdbJournal, MemoryJournal

    j = MemoryJournal() if request.param == "memory" else LmdbJournal(tmp_path / "journal", sync=False)
    yield j
    j.close()
