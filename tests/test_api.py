"""The REST API: a real `swf-pool serve` process on loopback, over both backends."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from swf_pool import Client, Pool, Status

from .helpers import sql, wait_until
from .test_operations import set_state
from .test_pool import APP
from .test_schedules import set_next

ROOT = Path(__file__).resolve().parent.parent
KEY = "s3cret-key"
V1 = "/api/v1"
MISSING = "00000000-0000-0000-0000-000000000000"


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]


@dataclass
class Server:
    base: str
    process: subprocess.Popen[str]
    output: list[str]

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        key: str | None = KEY,
        raw: bytes | None = None,
        host: str | None = None,
    ) -> Reply:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if key is not None:
            request.add_header("X-API-Key", key)
        if host is not None:
            request.add_header("Host", host)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return _reply(response.status, response.read(), dict(response.headers))
        except urllib.error.HTTPError as exc:
            with exc:
                return _reply(exc.code, exc.read(), dict(exc.headers))


def _reply(status: int, content: bytes, headers: dict[str, str]) -> Reply:
    kind = headers.get("content-type", "")
    body = json.loads(content) if kind.startswith("application/json") else content.decode()
    return Reply(status, body, headers)


def start(dsn: str, *args: str) -> Server:
    process = subprocess.Popen(
        [sys.executable, "-m", "swf_pool.cli", "serve", "--dsn", dsn, "--port", "0", *args],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    output: list[str] = []

    def read() -> None:
        assert process.stderr is not None
        output.extend(iter(process.stderr.readline, ""))
        process.stderr.close()

    threading.Thread(target=read, daemon=True).start()

    def address() -> str | None:
        for line in output:
            # our own line names the port bound (with --port 0 it said 0)
            if match := re.search(r"REST API on (http://[\d.]+:\d+)/api/v1", line):
                return match.group(1)
        assert process.poll() is None, "".join(output)
        return None

    base = wait_until(address, timeout=30)
    assert base is not None
    return Server(base, process, output)


def stop(server: Server) -> int:
    server.process.send_signal(signal.SIGTERM)
    return server.process.wait(30)


@pytest.fixture
def server(dsn: str) -> Iterator[Server]:
    running = start(dsn, "--api-key", KEY, "--max-body-bytes", "4096", "--schedules")
    try:
        yield running
    finally:
        stop(running)


def test_runs_over_http(server: Server, client: Client) -> None:
    # the Go server's request body, unchanged
    go_body = {
        "type": "email.send.v1",
        "payload": {"to": "a@example.com"},
        "priority": 5,
        "idempotency_key": "welcome:42",
        "max_attempts": 4,
        "run_after": "2030-01-01T09:00:00Z",
    }
    created = server.call("POST", f"{V1}/workflows", go_body)
    assert created.status == 201 and set(created.body) == {"id"}
    run_id = created.body["id"]
    again = server.call("POST", f"{V1}/workflows", go_body)
    assert (
        again.status == 409 and again.body["id"] == run_id and "welcome:42" in again.body["error"]
    )
    run = server.call("GET", f"{V1}/workflows/{run_id}")
    assert run.status == 200
    assert run.body["payload"] == {"to": "a@example.com"}  # JSON, not base64
    assert (run.body["priority"], run.body["max_attempts"], run.body["status"]) == (5, 4, "pending")
    assert datetime.fromisoformat(run.body["run_at"]) == datetime(2030, 1, 1, 9, tzinfo=UTC)
    # an offset PostgreSQL itself would refuse (beyond 15:59) is just a time: stored in UTC
    odd = server.call(
        "POST", f"{V1}/workflows", {"type": "x", "run_after": "2030-01-01T20:21:00+20:21"}
    )
    stored = server.call("GET", f"{V1}/workflows/{odd.body['id']}").body["run_at"]
    assert datetime.fromisoformat(stored) == datetime(2030, 1, 1, tzinfo=UTC)
    other = server.call("POST", f"{V1}/workflows", {"type": "t.echo", "payload": [1, 2]})
    listed = server.call("GET", f"{V1}/workflows?type=t.echo&status=pending&limit=10&offset=0")
    assert [r["id"] for r in listed.body] == [other.body["id"]]
    by_key = server.call("GET", f"{V1}/workflows?idempotency_key=welcome:42")
    assert [r["id"] for r in by_key.body] == [run_id]
    assert server.call("GET", f"{V1}/workflows?type=none").body == []
    capped = server.call("GET", f"{V1}/workflows?limit=5000")
    assert capped.status == 200 and len(capped.body) == 3
    Pool(client, APP, executor="inline").drain()
    done = server.call("GET", f"{V1}/workflows/{other.body['id']}")
    assert done.body["status"] == "succeeded" and done.body["result"]["payload"] == [1, 2]
    events = server.call("GET", f"{V1}/workflows/{other.body['id']}/events")
    assert [e["event_type"] for e in events.body] == ["created", "leased", "started", "succeeded"]
    cancelled = server.call("DELETE", f"{V1}/workflows/{run_id}")
    assert cancelled.status == 200 and cancelled.body == {"status": "cancelled"}
    finished = server.call("DELETE", f"{V1}/workflows/{run_id}")
    assert finished.status == 409 and "already cancelled" in finished.body["error"]
    retried = server.call("POST", f"{V1}/workflows/{run_id}/retry")
    assert retried.status == 200 and retried.body == {"status": "pending"}
    not_retryable = server.call("POST", f"{V1}/workflows/{run_id}/retry")
    assert not_retryable.status == 409 and "only failed or cancelled" in not_retryable.body["error"]


def test_schedules_over_http_and_the_servers_ticker(server: Server, dsn: str) -> None:
    go_body = {"type": "report.v1", "cron": "0 9 * * 1", "timezone": "Europe/Berlin", "payload": {}}
    created = server.call("POST", f"{V1}/schedules", go_body)
    assert created.status == 201
    schedule_id = created.body["id"]
    [listed] = server.call("GET", f"{V1}/schedules").body
    assert listed["id"] == schedule_id and listed["cron"] == "0 9 * * 1"
    assert listed["timezone"] == "Europe/Berlin" and listed["enabled"] is True
    assert "next_run_at" in listed and "NextRunAt" not in listed  # snake_case, unlike Go
    paused = server.call("PATCH", f"{V1}/schedules/{schedule_id}/pause")
    assert paused.body == {"status": "paused"}
    assert server.call("GET", f"{V1}/schedules").body[0]["enabled"] is False
    assert server.call("PATCH", f"{V1}/schedules/{schedule_id}/resume").body == {
        "status": "resumed"
    }
    changed = server.call("PATCH", f"{V1}/schedules/{schedule_id}", {"cron": "@daily"})
    assert changed.status == 200 and changed.body["cron"] == "0 0 * * *"
    # the server runs the ticker: a due schedule fires, woken by the next change made here
    set_next(dsn, schedule_id, datetime.now(UTC) - timedelta(minutes=1))
    server.call("POST", f"{V1}/schedules", {"type": "other.v1", "cron": "@yearly"})
    fired = wait_until(lambda: server.call("GET", f"{V1}/workflows?type=report.v1").body)
    assert fired[0]["idempotency_key"].startswith(f"schedule:{schedule_id}:")
    deleted = server.call("DELETE", f"{V1}/schedules/{schedule_id}")
    assert deleted.body == {"status": "deleted"}
    assert [s["type"] for s in server.call("GET", f"{V1}/schedules").body] == ["other.v1"]


def test_operations_over_http(server: Server, client: Client, dsn: str) -> None:
    assert server.call("GET", f"{V1}/health", key=None).body == {"status": "ok"}
    [failed] = [s.id for s in client.submit_many([{"type": "a.v1"}])]
    set_state(dsn, [failed], Status.FAILED, timedelta(minutes=1))
    client.submit("a.v1")
    stats = server.call("GET", f"{V1}/stats")
    assert stats.status == 200 and stats.body["totals"]["pending"] == 1
    metrics = server.call("GET", f"{V1}/metrics")
    assert metrics.status == 200
    assert 'workflow_run_queue_depth{status="pending",workflow_type="a.v1"} 1.0' in metrics.body
    document = server.call("GET", "/openapi.json", key=None)
    assert document.body["openapi"].startswith("3.") and f"{V1}/workflows" in document.body["paths"]


BAD_REQUESTS = [
    ("POST", "/workflows", b"{not json", 400, "malformed JSON"),
    ("POST", "/workflows", b"[1, 2]", 400, "must be a JSON object"),
    ("POST", "/workflows", b'{"payload": 1}', 400, "missing required field(s): type"),
    ("POST", "/workflows", b'{"type": ""}', 400, "type must not be empty"),
    ("POST", "/workflows", b'{"type": 7}', 400, "type must be a string"),
    ("POST", "/workflows", b'{"type": "a", "priority": "high"}', 400, "priority"),
    ("POST", "/workflows", b'{"type": "a", "priority": 99999999999}', 400, "priority"),
    ("POST", "/workflows", b'{"type": "a", "max_attempts": -1}', 400, "max_attempts"),
    ("POST", "/workflows", b'{"type": "a", "run_after": "tomorrow"}', 400, "RFC 3339"),
    ("POST", "/workflows", b'{"type": "a", "run_after": "2030-01-01T09:00:00"}', 400, "offset"),
    ("POST", "/workflows", b'{"type": "a", "payload": "\\u0000"}', 400, "NUL"),
    (
        "POST",
        "/workflows",
        b'{"type": "a", "run_after": "0001-01-01T00:00:00+20:21"}',
        400,
        "range",
    ),
    ("POST", "/workflows", b'{"type": "a", "payload": "' + b"x" * 5000 + b'"}', 413, "larger"),
    ("GET", "/workflows?limit=abc", None, 400, "limit must be an integer"),
    ("GET", "/workflows?limit=0", None, 400, "limit"),
    ("GET", "/workflows?offset=-1", None, 400, "offset"),
    ("GET", "/workflows?status=done", None, 400, "unknown status"),
    ("GET", "/workflows/not-a-uuid", None, 400, "id must be a UUID"),
    ("GET", f"/workflows/{MISSING}", None, 404, "not found"),
    ("GET", f"/workflows/{MISSING}/events", None, 404, "not found"),
    ("DELETE", f"/workflows/{MISSING}", None, 404, "not found"),
    ("DELETE", "/workflows/1'%20OR%20'1'='1", None, 400, "id must be a UUID"),
    ("POST", f"/workflows/{MISSING}/retry", None, 404, "not found"),
    ("POST", "/schedules", b'{"type": "a"}', 400, "missing required field(s): cron"),
    ("POST", "/schedules", b'{"type": "a", "cron": "61 * * * *"}', 400, "invalid cron"),
    ("POST", "/schedules", b'{"type": "a", "cron": "0 0 30 2 *"}', 400, "never fires"),
    ("POST", "/schedules", b'{"type": "a", "cron": "@daily", "timezone": "Mars/X"}', 400, "zone"),
    ("PATCH", f"/schedules/{MISSING}/pause", None, 404, "not found"),
    ("PATCH", f"/schedules/{MISSING}/resume", None, 404, "not found"),
    ("PATCH", f"/schedules/{MISSING}", b'{"cron": "@daily"}', 404, "not found"),
    ("DELETE", f"/schedules/{MISSING}", None, 404, "not found"),
    ("PUT", "/workflows", b"{}", 405, "not allowed"),
    ("GET", "/nowhere", None, 404, "no such endpoint"),
]


def test_client_errors_are_4xx_with_a_message_and_change_nothing(server: Server, dsn: str) -> None:
    for method, path, raw, status, message in BAD_REQUESTS:
        reply = server.call(method, V1 + path, raw=raw)
        assert (reply.status, method, path) == (status, method, path), reply.body
        assert message in reply.body["error"], (method, path, reply.body)
        assert reply.headers.get("x-request-id")
    assert server.call("GET", f"{V1}/workflows").body == []
    assert server.call("GET", f"{V1}/schedules").body == []


def test_cross_site_writes_are_refused(dsn: str) -> None:
    """Without an API key, a page on another site could post here through the operator's
    browser; browsers say where a request comes from, and that is checked."""
    running = start(dsn)
    try:
        for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
            request = urllib.request.Request(
                running.base + f"{V1}/workflows", data=b'{"type": "a"}', method="POST"
            )
            for name, value in headers.items():
                request.add_header(name, value)
            try:
                urllib.request.urlopen(request, timeout=10)
                raise AssertionError("a cross-site write was accepted")
            except urllib.error.HTTPError as exc:
                assert exc.code == 403 and b"cross-site" in exc.read()
                exc.close()
        same = urllib.request.Request(
            running.base + f"{V1}/workflows", data=b'{"type": "a"}', method="POST"
        )
        same.add_header("Origin", running.base)
        same.add_header("Sec-Fetch-Site", "same-origin")
        with urllib.request.urlopen(same, timeout=10) as response:
            assert response.status == 201
        assert len(running.call("GET", f"{V1}/workflows").body) == 1
    finally:
        assert stop(running) == 0


def test_a_server_on_loopback_answers_only_to_loopback_names(dsn: str) -> None:
    """DNS rebinding: a page on evil.example, its name pointed at 127.0.0.1, reaches a server
    on loopback through the operator's browser as a same-origin request; its Host header
    still says evil.example."""
    running = start(dsn)
    port = running.base.rsplit(":", 1)[1]
    try:
        refused = running.call(
            "POST", f"{V1}/workflows", {"type": "a"}, host=f"evil.example:{port}"
        )
        assert refused.status == 400 and "evil.example" in refused.body["error"]
        assert running.call("GET", f"{V1}/health", host=f"evil.example:{port}").status == 400
        for name in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "LOCALHOST"):
            assert running.call("GET", f"{V1}/workflows", host=name).body == [], name
    finally:
        assert stop(running) == 0
    anyone = start(dsn, "--allowed-hosts", "*")
    try:
        assert anyone.call("GET", f"{V1}/workflows", host="evil.example").status == 200
    finally:
        assert stop(anyone) == 0


def test_the_api_key_guards_everything_but_health(server: Server) -> None:
    for path in ("/workflows", "/schedules", "/stats", "/metrics", f"/workflows/{MISSING}"):
        for key in (None, "wrong", KEY + "x", ""):
            reply = server.call("GET", V1 + path, key=key)
            assert reply.status == 401 and "API key" in reply.body["error"], (path, key)
    refused = server.call("POST", f"{V1}/workflows", {"type": "a"}, key="wrong")
    assert refused.status == 401
    assert server.call("GET", f"{V1}/workflows").body == []
    assert server.call("GET", f"{V1}/health", key=None).status == 200


def test_health_reports_an_unusable_database(postgres_dsn: str) -> None:
    running = start(postgres_dsn)
    try:
        assert running.call("GET", f"{V1}/health").status == 200
        sql(postgres_dsn, "DROP SCHEMA workflow CASCADE")
        sick = running.call("GET", f"{V1}/health")
        assert sick.status == 503 and sick.body == {"error": "database unhealthy"}
        broken = running.call("GET", f"{V1}/workflows")
        assert broken.status == 503 and "run `swf-pool migrate up`" in broken.body["error"]
    finally:
        assert stop(running) == 0


def test_serve_without_the_database_is_a_clear_error() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "swf_pool.cli", "serve", "--dsn", "sqlite:///nonexistent/dir/x.db"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1 and out.stderr.startswith("swf-pool: error:")
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("host", ["127.0.0.1", "999.9.9.9"])
def test_serve_where_it_cannot_listen_is_a_clear_error(host: str) -> None:
    """A port in use, or an address that is not ours: one line, exit 1, and nothing said of
    a server that never ran (it announced the API, then uvicorn logged and exited with 3)."""
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = str(busy.getsockname()[1])
        out = subprocess.run(
            [sys.executable, "-m", "swf_pool.cli", "serve", "--dsn", "sqlite://:memory:",
             "--host", host, "--port", port],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert out.returncode == 1, out.stderr
    assert out.stderr.startswith(f"swf-pool: error: cannot serve on {host}:{port}: ")
    assert "REST API on" not in out.stderr and "Traceback" not in out.stderr


def test_the_live_server_matches_its_openapi_document(postgres_dsn: str, tmp_path: Path) -> None:
    """schemathesis against the running server: no 500s, every response as documented."""
    running = start(postgres_dsn, "--api-key", KEY)
    try:
        out = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"),
                "run",
                f"{running.base}/openapi.json",
                "--header",
                f"X-API-Key: {KEY}",
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,"
                "response_schema_conformance",
                "--max-examples",
                "25",
                "--seed",
                "1",
                "--report-dir",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            cwd=tmp_path,
            env={
                **os.environ,
                "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
                "PYTHONPATH": str(ROOT),
            },
        )
    finally:
        assert stop(running) == 0
    assert out.returncode == 0, out.stdout[-4000:]
    assert re.search(r"\d+ generated, \d+ passed", out.stdout), out.stdout[-2000:]
    assert "internal server error" not in "".join(running.output)


def test_zero_priority_and_attempts_mean_unset_as_on_the_go_server(
    server: Server, client: Client
) -> None:
    """A Go client sends 0 for the fields it leaves out; the Go server reads 0 as the default."""
    body = {"type": "a.v1", "priority": 0, "max_attempts": 0}
    created = server.call("POST", f"{V1}/workflows", body)
    assert created.status == 201
    run = client.get(created.body["id"])
    assert run is not None and (run.priority, run.max_attempts) == (100, 3)
    made = server.call(
        "POST", f"{V1}/schedules", {"type": "a.v1", "cron": "0 * * * *", "priority": 0}
    )
    assert made.status == 201
    schedule = client.schedules.get(made.body["id"])
    assert schedule is not None and (schedule.priority, schedule.max_attempts) == (100, 3)
