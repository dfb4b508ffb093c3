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

MAX_JSON_BYTES = 16 * 1024 * 1024  # a queue carries intents, not blobs: store those elsewhere


def encode(value: Any, what: str = "payload") -> str:
    """Encode `value` as compact JSON text, or raise `InvalidPayload` naming the problem."""
    if value is None:  # what most handlers return
        return "null"
    try:
        data = orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError) as exc:
        if "Recursion limit" in str(exc):
            raise InvalidPayload(
                f"{what} is nested too deeply (orjson allows 254 levels)"
            ) from None
        raise InvalidPayload(f"{what} is not JSON-serializable: {exc}") from None
    if b"null" in data:  # NaN and infinities came out as null: look for them
        _check(value, what)
    if b"\\u0000" in data:
        raise InvalidPayload(f"{what} contains a NUL character (\\u0000), which jsonb rejects")
    if len(data) > MAX_JSON_BYTES:
        raise InvalidPayload(
            f"{what} is {len(data)} bytes of JSON; the limit is {MAX_JSON_BYTES} (16 MiB)"
        )
    return data.decode()


MAX_TEXT_CHARS = 64 * 1024  # error texts beyond this are cut (a traceback, not a novel)


def clean_text(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """`text` made storable on every backend: no NUL (PostgreSQL text rejects it), no lone
    surrogates (not UTF-8), at most `limit` characters."""
    if len(text) > limit:
        text = text[:limit] + f"... [{len(text) - limit} more characters cut]"
    text = text.replace("\x00", "")
    try:
        text.encode()
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode()
    return text


def decode(data: str | bytes | bytearray | memoryview | None) -> Any:
    """Decode JSON text or bytes (the Go library binds bytes, so SQLite may hand back BLOBs)."""
    if data is None:
        return None
    if isinstance(data, memoryview):
        data = bytes(data)
    return orjson.loads(data)


def _check(value: Any, what: str) -> None:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidPayload(f"{what} contains {value!r}, which JSON cannot represent")
    elif isinstance(value, dict):
        for item in value.values():
            _check(item, what)
    elif isinstance(value, list | tuple):
        for item in value:
            _check(item, what)
