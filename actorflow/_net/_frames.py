"""HMAC-SHA256 framing of Thespian's TCP payloads: nothing is unpickled before its tag checks out.

Thespian frames every TCP message (data and ACK alike) as ``b"<len>>" + pickle``. We keep that outer
length prefix (so Thespian's stream logic is untouched) and put our own envelope inside it:

    MAGIC (4 bytes) | HMAC-SHA256(key, MAGIC | body) (32 bytes) | body (pickle)

A receive buffer checks the tag with a constant-time compare before it hands the body to
``pickle.loads``; a frame that fails is dropped, logged (rate-limited, never its content) and never
deserialized. Frames larger than ``max_frame`` are refused as soon as their length prefix is read, so an
unauthenticated peer cannot make us buffer unbounded data.

What this does not give: confidentiality (frames are readable on the wire) and replay protection (a
captured frame can be re-sent while the secret is unchanged). Use a private network or a tunnel for those.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import pickle
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog
from thespian.system.transport.streamBuffer import ReceiveBuffer

__all__ = ["MAGIC", "FrameCodec", "FrameRejected", "SecureReceiveBuffer", "log_rejection", "net_logger"]

MAGIC = b"AFH1"
_TAG = 32
_HEAD = len(MAGIC) + _TAG
DEFAULT_MAX_FRAME = 256 * 1024 * 1024
_MAX_PREFIX = 20  # decimal digits of a length, at most


class FrameRejected(Exception):
    """A frame failed authentication or framing; Thespian's receive path closes the socket on it."""


class FrameCodec:
    """Seals and opens frames under one shared key (the only place the key is used)."""

    __slots__ = ("_mac", "max_frame")

    def __init__(self, key: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        if len(key) < 16:
            raise ValueError("the frame key must be at least 16 bytes")
        self._mac = hmac.new(bytes(key), MAGIC, hashlib.sha256)  # copied per frame: the key is hashed once
        self.max_frame = max_frame

    def __repr__(self) -> str:
        return f"FrameCodec(key=<redacted>, max_frame={self.max_frame})"

    def _tag(self, body: bytes | memoryview) -> bytes:
        mac = self._mac.copy()
        mac.update(body)
        return mac.digest()

    def seal(self, body: bytes) -> bytes:
        """The inner frame (without Thespian's length prefix) for an already pickled body."""
        return MAGIC + self._tag(body) + body

    def dumps(self, obj: Any) -> bytes:
        """pickle + seal: the drop-in for Thespian's ``serializer.dumps``."""
        return self.seal(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))

    def frame(self, obj: Any) -> bytes:
        """A complete wire frame, Thespian's length prefix included (what ``toSendBuffer`` returns)."""
        inner = self.dumps(obj)
        return b"%d>" % len(inner) + inner

    def open(self, frame: bytes) -> bytes:
        """The authenticated body of an inner frame; raises FrameRejected (never unpickles)."""
        if len(frame) < _HEAD or frame[: len(MAGIC)] != MAGIC:
            raise FrameRejected("not an actorflow frame")
        body = memoryview(frame)[_HEAD:]
        if not hmac.compare_digest(frame[len(MAGIC) : _HEAD], self._tag(body)):
            raise FrameRejected("bad HMAC")
        return bytes(body)

    def loads(self, frame: bytes) -> Any:
        """open + unpickle: the drop-in for Thespian's ``serializer.loads``."""
        return pickle.loads(self.open(frame))


class _RateLimitedLog:
    """At most `burst` rejection lines per second per process: a flood must not flood the logs too."""

    def __init__(self, burst: int = 20) -> None:
        self._burst = burst
        self._lock = threading.Lock()
        self._window = 0.0
        self._count = 0
        self._suppressed = 0

    def admit(self) -> tuple[bool, int]:
        now = time.monotonic()
        with self._lock:
            if now - self._window >= 1.0:
                self._window, self._count = now, 0
                suppressed, self._suppressed = self._suppressed, 0
            else:
                suppressed = 0
            if self._count < self._burst:
                self._count += 1
                return True, suppressed
            self._suppressed += 1
            return False, 0


_limiter = _RateLimitedLog()


def net_logger() -> Any:
    """structlog over stdlib logger 'actorflow.net': the host's logging config (or Thespian's) decides output."""
    # Looked up at each use: Thespian replaces logging's root and manager in the processes it starts
    # (to forward records to its logger process); a logger fetched at import would miss that.
    return structlog.wrap_logger(
        logging.getLogger("actorflow.net"),
        processors=[structlog.processors.KeyValueRenderer(key_order=["event"], sort_keys=True)],
        wrapper_class=structlog.stdlib.BoundLogger,
    )


def log_rejection(reason: str, peer: str, local: str, size: int | None) -> None:
    """Log one dropped frame through stdlib logging (Thespian forwards it to its logger process)."""
    admitted, suppressed = _limiter.admit()
    if admitted:
        net_logger().warning(
            "net_frame_rejected", reason=reason, peer=peer, local=local, size=size, suppressed=suppressed
        )


def _peer_of(sock: socket.socket | None) -> str:
    try:
        host, port = sock.getpeername()[:2] if sock is not None else ("?", 0)
    except OSError:
        return "?"
    return f"{host}:{port}"


class SecureReceiveBuffer(ReceiveBuffer):  # type: ignore[misc]
    """Thespian's stream buffer, authenticated.

    `eager` (incoming data sockets): the frame is checked as soon as it is complete, inside ``addMore``;
    a failure raises there, where Thespian closes the socket without answering. Not eager (a sender
    waiting for its ACK): ``completed()`` returns None for a bad frame, which Thespian treats as a
    corrupted ACK and retries, so a forged ACK cannot complete or abort a send."""

    def __init__(
        self, codec: FrameCodec, sock: socket.socket | None, local: str | Callable[[], str], eager: bool
    ) -> None:
        super().__init__(self._load)
        self._codec = codec
        self._sock = sock
        self._local = local
        self._eager = eager
        self._opened: bytes | None = None  # body of the current frame once authenticated

    def _reject(self, reason: str) -> FrameRejected:
        local = self._local if isinstance(self._local, str) else self._local()
        log_rejection(reason, _peer_of(self._sock), local, self._size)
        return FrameRejected(reason)

    def addMore(self, buf: bytes) -> None:  # noqa: N802 - Thespian's name
        try:
            super().addMore(buf)
        except ValueError as exc:  # unparsable length prefix
            raise self._reject("bad length prefix") from exc
        if self._size is None and len(self._buf) > _MAX_PREFIX:
            # Thespian would keep buffering bytes that never name a length
            raise self._reject("no length prefix")
        if self._size is not None and self._size > self._codec.max_frame:
            raise self._reject("frame too large")
        if self._eager and self.isDone():
            if self._size is None:
                raise self._reject("no length prefix")
            try:
                self._opened = self._codec.open(self._buf)
            except FrameRejected as exc:
                raise self._reject(str(exc)) from None

    def _load(self, frame: bytes) -> Any:
        body = self._opened
        if body is None:
            try:
                body = self._codec.open(frame)
            except FrameRejected as exc:
                self._reject(str(exc))
                raise
        return pickle.loads(body)

    def completed(self) -> Any:
        try:
            return super().completed()
        except FrameRejected:
            if self._eager:
                raise
            return None  # an ACK that fails authentication counts as corrupted: the send is retried
