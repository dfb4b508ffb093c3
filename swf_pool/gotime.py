"""Reading the times stored as text on SQLite, in every form the Go library writes.

SQLite's `datetime()` gives `2020-01-02 03:04:05`; swf-pool writes `2020-01-02 03:04:05.123456`;
the Go library's modernc driver stores a bound `time.Time` in Go's `String()` form,
`2020-01-02 03:04:05.123456789 +0000 UTC`, with the monotonic clock reading ` m=+60.000123457`
when the value came from `time.Now()`; other drivers write RFC 3339. All are read as aware UTC
datetimes, nanoseconds truncated to microseconds.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

# Go's String(): date, time, fraction (0-9 digits), ` -0700 MST` (any abbreviation, or none as
# in `+0300 +03`), ` m=±seconds`. RFC 3339 forms that fromisoformat() refuses land here too.
_GO_TIME = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)(?:\.(\d+))?"
    r"(?: ?(Z|([+-])(\d\d):?(\d\d))(?: [^ ]+)?)?"
    r"(?: m=[+-]\d+(?:\.\d+)?)?"
)


def parse_time(text: str | None) -> datetime | None:
    """`text` as an aware UTC datetime (naive text is UTC); ValueError if it is not a time."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)  # the common forms, fast
    except (TypeError, ValueError):
        moment = _parse_go(text)
    try:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:  # e.g. Go's zero time in a zone east of UTC
        raise ValueError(f"{text!r} is not a time: out of range in UTC") from None


def _parse_go(text: object) -> datetime:
    match = _GO_TIME.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{text!r} is not a time in any form the Go library or swf-pool writes")
    year, month, day, hour, minute, second, fraction, zone, sign, hours, minutes = match.groups()
    micros = int(fraction[:6].ljust(6, "0")) if fraction else 0
    try:
        tz = None
        if zone is not None:
            offset = timedelta(hours=int(hours or 0), minutes=int(minutes or 0))
            tz = timezone(-offset if sign == "-" else offset)
        return datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micros, tz
        )
    except ValueError as exc:  # a field or the offset out of range
        raise ValueError(f"{text!r} is not a time: {exc}") from None
