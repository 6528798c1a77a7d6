"""Framing and the plain-value codec used between sandbox processes.

Only plain data crosses the boundary out of untrusted code: None, bool, int, float, complex,
str, bytes, list, tuple, dict, set, frozenset. Anything else becomes an opaque handle. The
decoder (run in the trusted driver) rebuilds fresh builtin objects, so no method written by the
untrusted program (`__eq__`, `__bool__`, ...) ever runs in the trusted process.
"""
from __future__ import annotations

import base64
import json
import math
import os
import select
import struct
import time

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
MAX_DEPTH = 200
_BIG_INT_BITS = 12000  # beyond this json would hit int/str conversion limits


class WireError(Exception):
    """A peer sent something that is not a valid message."""


class WireTimeout(BaseException):
    """Deadline passed while waiting for a peer (BaseException: test code must not swallow it)."""


class Handle:
    """Reference to an object that only exists inside the untrusted process."""

    __slots__ = ("hid",)

    def __init__(self, hid: int):
        self.hid = hid


def send_message(fd: int, obj) -> None:
    data = json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()
    payload = struct.pack(">I", len(data)) + data
    view = memoryview(payload)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    chunks, remaining = [], n
    while remaining:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise WireTimeout()
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise EOFError("peer closed the channel")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def recv_message(fd: int, deadline: float | None = None):
    (size,) = struct.unpack(">I", _read_exact(fd, 4, deadline))
    if size > MAX_MESSAGE_BYTES:
        raise WireError(f"message of {size} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        return json.loads(_read_exact(fd, size, deadline))
    except ValueError as exc:
        raise WireError(f"undecodable message: {exc}") from None


def encode_value(value, store_handle=None, depth: int = 0):
    """Encode plain data; other objects go to `store_handle(value, depth)`, which returns their
    encoding (usually a handle), or raise TypeError when no `store_handle` is given."""
    if depth > MAX_DEPTH:
        raise TypeError("value nested too deeply")
    kind = type(value)
    if value is None or kind is bool or kind is str:
        return value
    if kind is int:
        return {"$I": hex(value)} if value.bit_length() > _BIG_INT_BITS else value
    if kind is float:
        return value if math.isfinite(value) else {"$F": repr(value)}
    if kind is list:
        return [encode_value(v, store_handle, depth + 1) for v in value]
    if kind is tuple:
        return {"$t": [encode_value(v, store_handle, depth + 1) for v in value]}
    if kind is dict:
        return {"$d": [[encode_value(k, store_handle, depth + 1), encode_value(v, store_handle, depth + 1)]
                       for k, v in value.items()]}
    if kind is set or kind is frozenset:
        tag = "$s" if kind is set else "$fs"
        return {tag: [encode_value(v, store_handle, depth + 1) for v in value]}
    if kind is bytes:
        return {"$b": base64.b64encode(value).decode()}
    if kind is complex:
        return {"$c": [encode_value(value.real), encode_value(value.imag)]}
    if kind is Handle:
        return {"$h": [value.hid, None]}
    if store_handle is None:
        raise TypeError(f"cannot send a {kind.__name__} to the sandbox")
    return store_handle(value, depth)


def decode_value(data, resolve_handle=None, depth: int = 0):
    """Rebuild plain data from `encode_value` output; handles go through `resolve_handle`."""
    if depth > MAX_DEPTH:
        raise WireError("value nested too deeply")
    if data is None or type(data) in (bool, int, float, str):
        return data
    if type(data) is list:
        return [decode_value(v, resolve_handle, depth + 1) for v in data]
    if type(data) is not dict or len(data) != 1:
        raise WireError("malformed value")
    (tag, body), = data.items()
    sub = lambda v: decode_value(v, resolve_handle, depth + 1)  # noqa: E731
    if tag == "$I":
        return int(body, 16)
    if tag == "$F":
        if body not in ("nan", "inf", "-inf"):
            raise WireError("malformed float")
        return float(body)
    if tag == "$t":
        return tuple(sub(v) for v in body)
    if tag == "$d":
        return {sub(k): sub(v) for k, v in body}
    if tag == "$s":
        return {sub(v) for v in body}
    if tag == "$fs":
        return frozenset(sub(v) for v in body)
    if tag == "$b":
        return base64.b64decode(body)
    if tag == "$c":
        return complex(sub(body[0]), sub(body[1]))
    if tag == "$h":
        if resolve_handle is None or type(body) is not list or len(body) != 2 or type(body[0]) is not int:
            raise WireError("unexpected handle")
        return resolve_handle(body[0], body[1] if type(body[1]) is bool else None)
    raise WireError(f"unknown tag {tag!r}")
