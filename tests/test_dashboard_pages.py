"""The dashboard's pages as HTML (no browser needed): what a finished run shows, the chart's
scale and its last minute, the colours of the event labels, and a client that goes away."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from swf_pool import Client, Pool
from swf_pool.dashboard import THROUGHPUT_MINUTES, _throughput

from .test_api import KEY, start, stop
from .test_pool import APP

CSS = Path(__file__).resolve().parent.parent / "swf_pool" / "static" / "app.css"


def test_a_finished_run_shows_no_lease_holder(sqlite_dsn: str) -> None:
    with Client(sqlite_dsn) as client:
        run_id = client.submit("t.echo", 1).id
        Pool(client, APP, executor="inline").drain()
    server = start(sqlite_dsn, "--api-key", KEY)
    try:
        page = server.call("GET", f"/runs/{run_id}")
        assert page.status == 200
        assert "lease holder" not in page.body and "last worker" in page.body
    finally:
        stop(server)


def test_the_chart_leaves_out_the_minute_under_way_and_has_a_scale(sqlite_dsn: str) -> None:
    now = datetime(2026, 12, 4, 12, 30, 40, tzinfo=UTC)
    this_minute = now.replace(second=0)
    series = [(this_minute - timedelta(minutes=1), 50, 2), (this_minute, 7, 0)]
    chart = _throughput(series, now)
    assert chart["total_succeeded"] == 57  # counted, the 7 of the minute under way, not drawn
    last = chart["succeeded"].split()[-1]
    assert last.endswith(",0.0")  # the last point is the whole minute before: at the top
    assert chart["last"] == "12:29 UTC" and chart["minutes"] == THROUGHPUT_MINUTES
    server = start(sqlite_dsn, "--api-key", KEY)
    try:
        page = server.call("GET", "/").body
        assert "min ago" in page and "/min</span>" in page  # the axes' labels
    finally:
        stop(server)


def test_the_leased_event_label_is_not_painted_like_the_depth_bar() -> None:
    """The depth bar's `leased` colour must not leak into `<span class="event leased">`."""
    rules = [line.split("{")[0].strip() for line in CSS.read_text().splitlines() if "{" in line]
    assert ".leased" not in rules and ".pending" not in rules
    assert any("td.bar .leased" in rule for rule in rules)


def test_a_client_that_goes_away_mid_body_is_not_an_error(sqlite_dsn: str) -> None:
    server = start(sqlite_dsn, "--api-key", KEY)
    try:
        address = urlsplit(server.base)
        with socket.create_connection((address.hostname, address.port), timeout=10) as conn:
            conn.sendall(
                b"POST /api/v1/workflows HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                + f"X-API-Key: {KEY}\r\nContent-Type: application/json\r\n".encode()
                + b'Content-Length: 1000\r\n\r\n{"type": '
            )
        # the server still answers, and logged no error for it
        assert server.call("GET", "/api/v1/health").status == 200
    finally:
        stop(server)
    output = "".join(server.output)
    assert "ERROR" not in output and "Traceback" not in output, output
