"""JSON in and out, through orjson, with the checks the database needs.

orjson writes NaN and infinities as `null` without a word, and PostgreSQL's jsonb refuses the
`\\u0000` escape; both would corrupt or fail a write later, so they are refused here, before
anything reaches the database.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from .errors import InvalidPayload

MAX_DEPTH = 200  # orjson's own limit is 254; leave room for the wrapping jsonb values


def encode(value: Any, what: str = "payload") -> str:
    """Encode `value` as compact JSON text, or raise `InvalidPayload` naming the problem."""
    _check(value, what, 0)
    try:
        data = orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise InvalidPayload(f"{what} is not JSON-serializable: {exc}") from None
    if b"\\u0000" in data:
        raise InvalidPayload(f"{what} contains a NUL character (\\u0000), which jsonb rejects")
    return data.decode()


def decode(data: str | bytes | bytearray | memoryview | None) -> Any:
    """Decode JSON text or bytes (the Go library binds bytes, so SQLite may hand back BLOBs)."""
    if data is None:
        return None
    if isinstance(data, memoryview):
        data = bytes(data)
    return orjson.loads(data)


def _check(value: Any, what: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise InvalidPayload(f"{what} is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidPayload(f"{what} contains {value!r}, which JSON cannot represent")
    elif isinstance(value, dict):
        for item in value.values():
            _check(item, what, depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            _check(item, what, depth + 1)
