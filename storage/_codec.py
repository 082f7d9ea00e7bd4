"""Record codec: versioned header + CRC32 per record, payloads via pickle/cloudpickle or JSON.

Record formats (the header's first byte). Every format this code ever wrote stays readable:

- 1: CRC32 of the body alone. From 3b4b081 until format 2 existed, records still marked 1 were
  written with the CRC of format 2 (seeded with version and codec id), so a format-1 record is
  accepted under either rule.
- 2: CRC32 of the body seeded with the version and codec id, so a flipped version or codec byte is
  a checksum failure too.
- 3 (written now): records as in format 2. What changed is the environment: an engine's data
  directory may hold a shard map (kv namespace "cluster": shards owned by member nodes journal their
  runs on those nodes), which a release reading only formats up to 2 would ignore - it would start
  those shards' runs in the wrong journal. Such a release refuses a format-3 environment instead.

A record of a format newer than FORMAT_VERSION raises JournalVersionError naming both formats;
one older than OLDEST_FORMAT_VERSION would too. Changing what is written means a new format number.
"""

from __future__ import annotations

import json
import pickle
import struct
import zlib
from typing import Any, NoReturn

import cloudpickle

from actorflow.errors import JournalCorrupt, JournalVersionError, PayloadError

FORMAT_VERSION = 3  # written by this code
OLDEST_FORMAT_VERSION = 1  # read by this code: every format from here to FORMAT_VERSION
DEFAULT_MAX_PAYLOAD = 2 * 1024 * 1024

CODEC_PICKLE = 1
CODEC_JSON = 2

# header: format version (B), codec id (B), crc32 of body seeded with the version and codec id (I)
_HEADER = struct.Struct(">BBI")
HEADER_SIZE = _HEADER.size

_SIMPLE = (type(None), bool, int, float, str, bytes)
_PICKLE_SEED = (FORMAT_VERSION << 8) | CODEC_PICKLE
_PICKLE_HEADER = _HEADER.pack
_pickle_dumps = pickle.dumps
_crc32 = zlib.crc32


class Codec:
    """Turns values into self-checking records and back; refuses what it cannot keep."""

    __slots__ = ("codec_id", "max_payload")

    def __init__(self, kind: str = "pickle", max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        if kind not in ("pickle", "json"):
            raise ValueError(f"unknown codec {kind!r}: use 'pickle' or 'json'")
        if max_payload <= 0:
            raise ValueError("max_payload must be positive")
        self.codec_id = CODEC_PICKLE if kind == "pickle" else CODEC_JSON
        self.max_payload = max_payload

    # --- bodies -----------------------------------------------------------------------------
    def dumps(self, value: Any, what: str = "payload") -> bytes:
        """Serialize `value` to a body (no header); PayloadError names the offending type."""
        if self.codec_id == CODEC_JSON:
            try:
                body = json.dumps(value, separators=(",", ":"), default=_json_default).encode()
            except (TypeError, ValueError) as exc:
                raise PayloadError(
                    f"cannot serialize {what} of type {type(value).__name__} as JSON: {exc}",
                    type_name=type(value).__name__,
                ) from exc
        else:
            try:
                body = pickle.dumps(value, protocol=5)
            except Exception:
                try:
                    body = cloudpickle.dumps(value, protocol=5)
                except Exception as exc:
                    raise PayloadError(
                        f"cannot serialize {what} of type {type(value).__name__}: {exc}",
                        type_name=type(value).__name__,
                    ) from exc
        if len(body) > self.max_payload:
            raise PayloadError(
                f"{what} of type {type(value).__name__} is {len(body)} bytes, "
                f"over the {self.max_payload}-byte limit",
                type_name=type(value).__name__,
                size=len(body),
                limit=self.max_payload,
            )
        return body

    def loads_body(self, codec_id: int, body: bytes) -> Any:
        if codec_id == CODEC_JSON:
            return json.loads(body)
        return pickle.loads(body)

    # --- records ----------------------------------------------------------------------------
    def encode(self, value: Any, what: str = "payload") -> bytes:
        """A full record: header (version, codec, crc32) followed by the body."""
        if self.codec_id == CODEC_PICKLE:  # the hot path (one per event written), inlined
            try:
                body = _pickle_dumps(value, 5)
            except Exception:  # noqa: BLE001 - dumps() below tries cloudpickle, or names the type
                pass
            else:
                if len(body) <= self.max_payload:
                    return _PICKLE_HEADER(FORMAT_VERSION, CODEC_PICKLE, _crc32(body, _PICKLE_SEED)) + body
        body = self.dumps(value, what)
        cid = self.codec_id
        return _HEADER.pack(FORMAT_VERSION, cid, zlib.crc32(body, (FORMAT_VERSION << 8) | cid)) + body

    def encode_with_body(self, value: Any, what: str = "payload") -> tuple[bytes, bytes]:
        """A full record and its body (so the caller can take the journaled copy without re-encoding)."""
        body = self.dumps(value, what)
        return _HEADER.pack(FORMAT_VERSION, self.codec_id, _crc(FORMAT_VERSION, self.codec_id, body)) + body, body

    def decode(self, record: bytes | memoryview, where: str = "record") -> Any:
        """Check and decode a record; JournalCorrupt / JournalVersionError name `where`."""
        if len(record) < HEADER_SIZE:
            raise JournalCorrupt(f"{where}: truncated record ({len(record)} bytes)", where=where)
        version, codec_id, crc = _HEADER.unpack_from(record, 0)
        body = bytes(record[HEADER_SIZE:])
        if version == FORMAT_VERSION or version == 2:
            ok = _crc(version, codec_id, body) == crc
        elif version == 1:
            ok = zlib.crc32(body) == crc or _crc(version, codec_id, body) == crc
        elif version == 0:  # no format 0 was ever written: a zeroed header
            ok = False
        else:
            raise_version(version, where)
        if not ok or codec_id not in (CODEC_PICKLE, CODEC_JSON):
            raise JournalCorrupt(f"{where}: checksum mismatch, record is corrupt", where=where)
        try:
            return self.loads_body(codec_id, body)
        except Exception as exc:
            raise JournalCorrupt(f"{where}: cannot decode record: {exc}", where=where) from exc

    def readback(self, record: bytes, what: str, value: Any) -> Any:
        """Decode a record just encoded from `value`: the journaled copy, or PayloadError naming the
        type inside `value` that cannot be loaded back (e.g. a class whose unpickling raises), so
        such a value is refused before it is written rather than found unreadable on replay."""
        try:
            return self.loads_body(record[1], record[HEADER_SIZE:])
        except Exception as exc:  # noqa: BLE001 - any failure to load means the record is unusable
            raise self._unreadable(value, what, exc) from exc

    def _unreadable(self, value: Any, what: str, exc: BaseException) -> PayloadError:
        culprit = _culprit(self, value)
        name = type(culprit).__name__
        return PayloadError(
            f"{what} cannot be read back after encoding: the {name} inside does not load "
            f"({type(exc).__name__}: {exc}); make it picklable both ways (or pass plain data)",
            type_name=name,
        )

    def roundtrip(self, value: Any, what: str = "payload") -> Any:
        """The journaled copy of `value` (what a replay would see)."""
        if type(value) in _SIMPLE:
            if type(value) in (str, bytes) and len(value) > self.max_payload:
                self.dumps(value, what)
            return value
        body = self.dumps(value, what)
        try:
            return self.loads_body(self.codec_id, body)
        except Exception as exc:  # noqa: BLE001 - see readback
            raise self._unreadable(value, what, exc) from exc


def _culprit(codec: Codec, value: Any, depth: int = 0) -> Any:
    """The innermost part of `value` that does not survive dumps+loads (only on the error path)."""
    parts: list[Any] = []
    if isinstance(value, dict):
        parts = [*value.keys(), *value.values()]
    elif isinstance(value, (list, tuple, set, frozenset)):
        parts = list(value)
    if depth < 8:
        for part in parts:
            try:
                codec.loads_body(codec.codec_id, codec.dumps(part))
            except Exception:  # noqa: BLE001 - this part is (or holds) the culprit
                return _culprit(codec, part, depth + 1)
    return value


def raise_version(found: int, where: str) -> NoReturn:
    """JournalVersionError for a format this code cannot read, naming it and the ones it can."""
    if found > FORMAT_VERSION:
        advice = "upgrade actorflow to read it"
    else:
        advice = "read it with an older actorflow and migrate its runs"
    raise JournalVersionError(
        f"{where}: written in journal format {found}; this actorflow reads formats "
        f"{OLDEST_FORMAT_VERSION} to {FORMAT_VERSION}: {advice}",
        where=where,
        found=found,
        supported=FORMAT_VERSION,
        oldest=OLDEST_FORMAT_VERSION,
    )


def _crc(version: int, codec_id: int, body: bytes) -> int:
    # seeding with the header bytes makes a flipped version or codec byte a checksum failure too
    return zlib.crc32(body, (version << 8) | codec_id)


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"object of type {type(value).__name__} is not JSON serializable")
