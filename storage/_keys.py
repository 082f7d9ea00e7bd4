"""Key encodings of the LMDB journal: byte order of every key equals the order the journal promises.

- events:  run_id utf-8, NUL, seq as 8-byte big-endian           -> a run's events are contiguous, in seq order
- timers:  due as 8-byte order-preserving double, run_id, NUL, pos as 4-byte biased big-endian
- signals: run_id, NUL, name, NUL, inbox seq as 8-byte big-endian
- kv:      ns, NUL, key

Run ids, signal names and kv namespaces may not contain NUL (it separates the key parts); utf-8 byte
order equals code point order, so byte order equals Python's `str` order.
"""

from __future__ import annotations

import math
import struct

__all__ = [
    "SEP",
    "pack_seq",
    "unpack_seq",
    "event_key",
    "event_prefix",
    "due_bytes",
    "due_from_bytes",
    "timer_key",
    "parse_timer_key",
    "signal_key",
    "parse_signal_key",
    "kv_key",
    "name_bytes",
]

SEP = b"\x00"
_Q = struct.Struct(">Q")
_I = struct.Struct(">I")
_D = struct.Struct(">d")

pack_seq = _Q.pack
_unpack_q = _Q.unpack
_SIGN = 1 << 63
_MASK = (1 << 64) - 1
_POS_BIAS = 1 << 31


def unpack_seq(b: bytes) -> int:
    seq: int = _unpack_q(b)[0]
    return seq


def name_bytes(name: str, what: str) -> bytes:
    """utf-8 of a key part; a NUL inside would make keys ambiguous."""
    b = name.encode()
    if SEP in b:
        raise ValueError(f"invalid {what} {name!r}: may not contain NUL")
    return b


def event_prefix(run_id: str) -> bytes:
    return name_bytes(run_id, "run id") + SEP


def event_key(run_id: str, seq: int) -> bytes:
    return event_prefix(run_id) + _Q.pack(seq)


def due_bytes(due: float) -> bytes:
    """8 bytes whose unsigned byte order is the numeric order of `due` (exact for every float)."""
    d = float(due) + 0.0  # -0.0 -> 0.0, so equal times have one key
    if math.isnan(d):
        raise ValueError("timer due time is NaN")
    (bits,) = _Q.unpack(_D.pack(d))
    bits = (bits ^ _MASK) if bits & _SIGN else (bits | _SIGN)
    return _Q.pack(bits)


def due_from_bytes(b: bytes) -> float:
    (bits,) = _Q.unpack(b)
    bits = (bits ^ _SIGN) if bits & _SIGN else (bits ^ _MASK)
    return float(_D.unpack(_Q.pack(bits))[0])


def timer_key(due: float, run_id: str, pos: int) -> bytes:
    return due_bytes(due) + name_bytes(run_id, "run id") + SEP + _I.pack(pos + _POS_BIAS)


def parse_timer_key(k: bytes) -> tuple[float, str, int]:
    return due_from_bytes(k[:8]), k[8:-5].decode(), _I.unpack(k[-4:])[0] - _POS_BIAS


def signal_key(run_id: str, name: str, seq: int) -> bytes:
    return name_bytes(run_id, "run id") + SEP + name_bytes(name, "signal name") + SEP + _Q.pack(seq)


def parse_signal_key(k: bytes, prefix_len: int) -> tuple[str, int]:
    """(name, seq) of a signal key whose run part (with its NUL) is `prefix_len` bytes."""
    return k[prefix_len:-9].decode(), _unpack_q(k[-8:])[0]


def kv_key(ns: str, key: str) -> bytes:
    return name_bytes(ns, "kv namespace") + SEP + key.encode()
