"""Operating a queue: metrics scraped from the real endpoint, status, retry, retention."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from swf_pool import (
    Client,
    EventType,
    Pool,
    RunNotFound,
    RunNotRetryable,
    Status,
    ValidationError,
)
from swf_pool.metrics import PrometheusMetrics

from . import helpers
from .helpers import count, sql, wait_until
from .test_pool import APP, running

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "examples" / "grafana-dashboard.json"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "swf_pool.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def set_state(dsn: str, ids: list[str], status: Status, age: timedelta) -> None:
    """Finish runs by hand, `age` ago (as if long past)."""
    when = datetime.now(UTC) - age
    for run_id in ids:
        if dsn.startswith("sqlite"):
            stamp = when.strftime("%Y-%m-%d %H:%M:%S.%f")
            sql(dsn, "UPDATE workflow_run SET status = ?, updated_at = ? WHERE id = ?",
                (status.value, stamp, run_id))  # fmt: skip
        else:
            sql(dsn, "UPDATE workflow_run SET status = %s, updated_at = %s WHERE id = %s",
                (status.value, when, run_id))  # fmt: skip


def scrape(server_address: tuple[str, int]) -> str:
    host, port = server_address[:2]
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def scrape_until(address: tuple[str, int], ready: Callable[[str], bool]) -> str:
    """Scrape until `ready(text)` holds; return that text."""

    def attempt() -> str | None:
        text = scrape(address)
        return text if ready(text) else None

    text = wait_until(attempt)
    assert text is not None
    return text


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one series in the text format (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# -- metrics ----------------------------------------------------------------------------------


def test_metrics_endpoint_reports_what_the_pool_did(client: Client, dsn: str) -> None:
    ok = [s.id for s in client.submit_many({"type": "t.echo", "payload": i} for i in range(7))]
    client.submit("t.die", {"on": [1, 2]}, max_attempts=2)  # kills its worker twice, then fails
    waiting = client.submit("t.unserved")  # no handler here: it waits, and ages
    # a run whose worker vanished: its lease expires and the pool rescues it
    client.submit("t.echo", "rescue me")
    client.backend.claim("gone", ["t.echo"], [], 1, lease_seconds=0.001, audit_full=True)
    metrics = PrometheusMetrics()
    address = metrics.serve(0)
    try:
        pool = Pool(client, APP, processes=2, metrics=metrics, stats_interval=0.05)
        worker = pool.worker_id
        with running(pool):
            wait_until(lambda: count_finished(client) == 9, timeout=30)
            text = scrape_until(
                address,
                lambda t: (
                    sample(t, "workflow_run_queue_depth", workflow_type="t.unserved") == 1
                    and sample(t, "swf_run_lag_seconds", workflow_type="t.unserved") > 0
                    # the database shows the end before the pool records it: wait for that too
                    and sample(t, "workflow_run_completed_total", status="succeeded") == 8
                    and sample(t, "workflow_run_failed_total") == 1
                ),
            )
    finally:
        metrics.close()
    assert sample(text, "workflow_run_claimed_total", workflow_type="t.echo", worker_id=worker) == 8
    completed = "workflow_run_completed_total"
    assert sample(text, completed, workflow_type="t.echo", status="succeeded") == 8
    assert sample(text, completed, workflow_type="t.die", status="failed") == 1
    assert sample(text, "workflow_run_failed_total", workflow_type="t.die") == 1
    attempts = "workflow_run_failed_attempts_total"
    assert sample(text, attempts, workflow_type="t.die", attempt="1") == 1
    assert sample(text, attempts, workflow_type="t.die", attempt="2") == 1
    duration = "workflow_run_execution_duration_seconds_count"
    assert sample(text, duration, workflow_type="t.echo", status="succeeded") == 8
    assert sample(text, "workflow_worker_poll_cycle_total", worker_id=worker) >= 1
    assert sample(text, "workflow_worker_last_poll_timestamp", worker_id=worker) > 0
    assert sample(text, "workflow_worker_uptime_seconds", worker_id=worker) > 0
    assert sample(text, "swf_run_rescued_total", workflow_type="t.echo") == 1
    assert sample(text, "swf_worker_process_restarts_total", worker_id=worker) == 2
    assert sample(text, "swf_claim_batch_size_count", worker_id=worker) >= 1
    assert sample(text, "swf_claim_duration_seconds_count", worker_id=worker) >= 1
    assert sample(text, "swf_run_start_latency_seconds_count", workflow_type="t.echo") == 8
    assert sample(text, "swf_worker_in_flight", worker_id=worker) == 0
    assert client.get(waiting.id).status is Status.PENDING  # type: ignore[union-attr]
    assert len(ok) == 7


def count_finished(client: Client) -> int:
    stats = client.stats()
    busy = sum(t.pending + t.leased for t in stats.types if t.type != "t.unserved")
    return 9 if busy == 0 else 0


def test_two_pools_in_one_process_keep_their_own_metrics(postgres_dsn: str) -> None:
    first, second = PrometheusMetrics(), PrometheusMetrics()
    with Client(postgres_dsn) as client:
        client.submit_many({"type": "t.echo"} for _ in range(3))
        Pool(client, APP, executor="inline", metrics=first, worker_id="a").drain()
        client.submit("t.echo")
        Pool(client, APP, executor="inline", metrics=second, worker_id="b").drain()
    one, two = first.exposition().decode(), second.exposition().decode()
    assert sample(one, "workflow_run_claimed_total", worker_id="a") == 3
    assert sample(two, "workflow_run_claimed_total", worker_id="b") == 1
    assert 'worker_id="b"' not in one


def test_the_cli_serves_metrics(sqlite_dsn: str) -> None:
    with Client(sqlite_dsn) as client:
        client.submit_many({"type": "t.echo"} for _ in range(4))
    process = subprocess.Popen(
        [sys.executable, "-m", "swf_pool.cli", "run", "--dsn", sqlite_dsn, "--app", APP,
         "--processes", "1", "--metrics-port", "0", "--poll-interval", "0.1"],
        cwd=ROOT, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        address = None
        for line in process.stderr:
            match = re.search(r"metrics at http://([\d.]+):(\d+)/metrics", line)
            if match:
                address = (match.group(1), int(match.group(2)))
                break
        assert address is not None, "the pool did not say where its metrics are"
        text = scrape_until(
            address, lambda t: sample(t, "workflow_run_completed_total", status="succeeded") == 4
        )
        assert 'workflow_type="t.echo"' in text
    finally:
        process.terminate()
        process.wait(30)
        process.stderr.close()  # type: ignore[union-attr]
    assert process.returncode == 0


def test_the_grafana_dashboard_queries_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    assert len(exprs) >= 8
    # metric names, not the label names inside by (...) and {...}
    bare = [re.sub(r"\b(by|without)\s*\([^)]*\)|\{[^}]*\}", "", e) for e in exprs]
    used = {name for e in bare for name in re.findall(r"\b(?:workflow|swf)_[a-z_]+\b", e)}
    exported = metric_names(PrometheusMetrics().registry)
    assert used and used <= exported, used - exported
    # every metric family of the pool appears on the dashboard
    families = {re.sub(r"_(bucket|count|sum|total|created)$", "", n) for n in exported}
    shown = {re.sub(r"_(bucket|count|sum|total|created)$", "", n) for n in used}
    assert families <= shown, families - shown


# -- status -----------------------------------------------------------------------------------


def test_status_shows_depth_lag_failures_and_workers(client: Client, dsn: str) -> None:
    client.submit_many({"type": "a.v1"} for _ in range(3))
    client.submit("a.v1", run_in=3600)  # not due
    client.submit("b.v1")
    failed = client.submit("b.v1", max_attempts=1).id
    client.backend.claim("w-1", ["b.v1"], [], 1, lease_seconds=60, audit_full=True)
    client.backend.register(["a.v1"])
    # one failure in the last hour, through the worker path so it has its event
    [run] = client.backend.claim("w-2", ["b.v1"], [], 1, lease_seconds=60, audit_full=True)
    from swf_pool.models import Outcome

    client.backend.complete("w-2", [Outcome(run.id, 1, Status.FAILED, error="boom")], [], True)
    assert run.id == failed
    stats = client.stats()
    by_type = {t.type: t for t in stats.types}
    assert (by_type["a.v1"].pending, by_type["a.v1"].due, by_type["a.v1"].leased) == (4, 3, 0)
    assert by_type["a.v1"].lag_seconds is not None and by_type["a.v1"].lag_seconds >= 0
    assert (by_type["b.v1"].pending, by_type["b.v1"].leased) == (0, 1)
    assert by_type["b.v1"].failed_last_hour == 1
    assert stats.workers == {"w-1": 1}
    assert stats.registered == {"a.v1": "python"}
    assert (stats.dead_tuples is not None) == (helpers.kind(client) == "postgres")
    out = cli("status", "--dsn", dsn)
    assert out.returncode == 0, out.stderr
    assert re.search(r"TYPE\s+PENDING\s+DUE\s+LEASED\s+LAG\s+FAILED 1H", out.stdout)
    assert re.search(r"a\.v1\s+4\s+3\s+0\s+\S+s\s+0", out.stdout)
    assert "workers holding leases: w-1 (1)" in out.stdout
    as_json = json.loads(cli("status", "--json", "--dsn", dsn).stdout)
    assert as_json["totals"]["pending"] == 4 and as_json["workers"] == {"w-1": 1}


def test_status_with_a_bad_dsn_is_a_clear_error() -> None:
    out = cli("status", "--dsn", "mysql://nope")
    assert out.returncode == 1 and "unsupported scheme 'mysql'" in out.stderr
    assert "Traceback" not in out.stderr


# -- runs and retry ---------------------------------------------------------------------------


def test_retry_puts_a_dead_letter_back_with_a_fresh_budget(client: Client, dsn: str) -> None:
    run_id = client.submit("t.echo", "again").id
    set_state(dsn, [run_id], Status.FAILED, timedelta(minutes=1))
    sql(dsn, "UPDATE workflow_run SET attempt = 3 WHERE status = 'failed'")
    client.retry(run_id)
    run = client.get(run_id)
    # the attempt number keeps counting, the budget grows: 3 more attempts
    assert run is not None and (run.status, run.attempt, run.max_attempts) == (
        Status.PENDING,
        3,
        6,
    )
    requeued = [e for e in client.events(run_id) if e.event_type is EventType.REQUEUED]
    assert [e.data for e in requeued] == [{"from": "failed", "attempts_used": 3}]
    Pool(client, APP, executor="inline").drain()
    run = client.get(run_id)
    assert run is not None and (run.status, run.attempt) == (Status.SUCCEEDED, 4)
    with pytest.raises(RunNotRetryable, match="is succeeded"):
        client.retry(run_id)
    with pytest.raises(RunNotFound):
        client.retry("00000000-0000-0000-0000-000000000000")
    with pytest.raises(RunNotFound):
        client.retry("not-a-uuid")


def test_a_retried_cancelled_run_still_running_cannot_take_the_new_attempts_place(
    client: Client, tmp_path: Path
) -> None:
    """Cancel a running run and retry it at once: the old execution still runs under its
    attempt; the retry's execution gets the next one, and only its outcome is stored."""
    gate = tmp_path / "gate"
    run_id = client.submit("t.gate", {"started": str(tmp_path / "started"), "gate": str(gate)}).id
    pool = Pool(client, APP, executor="thread", processes=2, heartbeat_interval=3600)
    with running(pool):
        wait_until((tmp_path / "started").exists)
        client.cancel(run_id)
        client.retry(run_id)
        (tmp_path / "started").unlink()
        wait_until((tmp_path / "started").exists)  # the retry runs too: attempt 2
        gate.touch()  # both finish now
        wait_until(lambda: client.get(run_id).status is Status.SUCCEEDED)  # type: ignore[union-attr]
        wait_until(lambda: pool.stats.discarded == 1)
    run = client.get(run_id)
    assert run is not None and run.attempt == 2 and run.result == "passed"
    assert [e.event_type for e in client.events(run_id)].count(EventType.SUCCEEDED) == 1


def test_bulk_retry_filters_by_status_type_and_age(client: Client, dsn: str) -> None:
    old = [s.id for s in client.submit_many({"type": "a.v1"} for _ in range(2))]
    recent = [s.id for s in client.submit_many({"type": "a.v1"} for _ in range(5))]
    other = [s.id for s in client.submit_many({"type": "b.v1"} for _ in range(2))]
    cancelled = client.submit("a.v1").id
    set_state(dsn, old, Status.FAILED, timedelta(days=2))
    set_state(dsn, recent + other, Status.FAILED, timedelta(minutes=5))
    client.cancel(cancelled)
    seen: list[tuple[int, int]] = []
    done = client.retry_many(
        type="a.v1", since=timedelta(hours=1), batch=2, progress=lambda d, s: seen.append((d, s))
    )
    assert done == 5 and seen[-1] == (5, 5) and len(seen) == 3
    assert {client.get(i).status for i in recent} == {Status.PENDING}  # type: ignore[union-attr]
    assert {client.get(i).status for i in old + other} == {Status.FAILED}  # type: ignore[union-attr]
    assert client.get(cancelled).status is Status.CANCELLED  # type: ignore[union-attr]
    # a run id with filters: refused (the filters were ignored, the run retried whatever)
    both = cli("runs", "retry", other[0], "--status", "cancelled", "--dsn", dsn)
    assert both.returncode == 2 and "a run id or filters" in both.stderr
    assert client.get(other[0]).status is Status.FAILED  # type: ignore[union-attr]
    out = cli("runs", "retry", "--status", "failed", "--type", "b.v1", "--dsn", dsn)
    assert out.returncode == 0 and "requeued 2 failed run(s)" in out.stdout
    assert client.retry_many(status="cancelled") == 1
    with pytest.raises(ValidationError, match="failed or cancelled"):
        client.retry_many(status="succeeded")
    with pytest.raises(ValidationError, match="since must be positive"):
        client.retry_many(since=timedelta(hours=-1))
    with pytest.raises(ValidationError, match="batch"):
        client.retry_many(batch=0)


def test_runs_commands(client: Client, dsn: str) -> None:
    run_id = client.submit("t.echo", {"n": 1}).id
    Pool(client, APP, executor="inline").drain()
    listed = cli("runs", "list", "--dsn", dsn, "--status", "succeeded")
    assert run_id in listed.stdout and "succeeded" in listed.stdout
    shown = cli("runs", "show", run_id, "--dsn", dsn)
    assert shown.returncode == 0
    assert re.search(r"status:\s+succeeded", shown.stdout)
    assert [line.split()[3] for line in shown.stdout.split("events:\n")[1].splitlines()] == [
        "created",
        "leased",
        "started",
        "succeeded",
    ]
    events = json.loads(cli("runs", "events", run_id, "--json", "--dsn", dsn).stdout)
    assert [e["event_type"] for e in events][-1] == "succeeded"
    whole = json.loads(cli("runs", "show", run_id, "--json", "--dsn", dsn).stdout)
    assert whole["run"]["result"]["payload"] == {"n": 1}
    pending = client.submit("t.echo").id
    assert cli("runs", "cancel", pending, "--dsn", dsn).stdout.strip() == f"cancelled {pending}"
    again = cli("runs", "cancel", pending, "--dsn", dsn)
    assert again.returncode == 1 and "already cancelled" in again.stderr
    missing = cli("runs", "show", "00000000-0000-0000-0000-000000000000", "--dsn", dsn)
    assert missing.returncode == 1 and "not found" in missing.stderr
    retried = cli("runs", "retry", pending, "--dsn", dsn)
    assert retried.stdout.strip() == f"requeued {pending}"


# -- retention --------------------------------------------------------------------------------


def test_prune_deletes_old_finished_runs_and_their_events(client: Client, dsn: str) -> None:
    ids = {
        status: [s.id for s in client.submit_many({"type": "a.v1"} for _ in range(7))]
        for status in (Status.SUCCEEDED, Status.CANCELLED, Status.FAILED)
    }
    for status, group in ids.items():
        set_state(dsn, group[:5], status, timedelta(days=40))
        set_state(dsn, group[5:], status, timedelta(days=1))
    fresh = client.submit("a.v1").id  # pending: never pruned, however old
    set_state(dsn, [fresh], Status.PENDING, timedelta(days=400))
    events_before = count(dsn, "workflow_event")
    assert client.prune(timedelta(days=30), dry_run=True, batch=4) == 10
    assert count(dsn) == 22
    progress: list[tuple[int, int]] = []
    pruned = client.prune(
        timedelta(days=30), batch=4, progress=lambda d, s: progress.append((d, s))
    )
    assert pruned == 10 and progress[-1] == (10, 22) and len(progress) == 6
    remaining = {r["id"] for r in sql(dsn, "SELECT id FROM workflow_run")}
    gone = set(ids[Status.SUCCEEDED][:5] + ids[Status.CANCELLED][:5])
    assert {str(i) for i in remaining} & gone == set()
    assert count(dsn) == 12 and count(dsn, "workflow_event") == events_before - 10
    assert client.prune(timedelta(days=30), statuses=["failed"]) == 5
    with pytest.raises(ValidationError, match="statuses must be"):
        client.prune(timedelta(days=30), statuses=["pending"])
    with pytest.raises(ValidationError, match="older_than must be positive"):
        client.prune(timedelta(0))


def test_prune_command(client: Client, dsn: str) -> None:
    old = [s.id for s in client.submit_many({"type": "a.v1"} for _ in range(3))]
    set_state(dsn, old, Status.SUCCEEDED, timedelta(days=40))
    dry = cli("prune", "--older-than", "30d", "--dry-run", "--dsn", dsn)
    assert dry.returncode == 0 and "would delete 3 succeeded,cancelled run(s)" in dry.stdout
    assert count(dsn) == 3
    done = cli("prune", "--older-than", "30d", "--batch", "2", "--dsn", dsn)
    assert "deleted 3 succeeded,cancelled run(s) older than 30d" in done.stdout
    assert count(dsn) == 0
    bad = cli("prune", "--older-than", "soon", "--dsn", dsn)
    assert bad.returncode == 2 and "invalid duration 'soon'" in bad.stderr


def test_the_pool_prunes_when_asked(client: Client, dsn: str) -> None:
    old = [s.id for s in client.submit_many({"type": "a.v1"} for _ in range(3))]
    set_state(dsn, old, Status.SUCCEEDED, timedelta(days=40))
    pool = Pool(client, APP, executor="inline", prune_older_than=timedelta(days=30))
    with running(pool):
        wait_until(lambda: count(dsn) == 0)


SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
}


def metric_names(registry: CollectorRegistry) -> set[str]:
    """Every series name a registry can export, used or not yet (for checking dashboards)."""
    names = set()
    for family in registry.collect():
        for suffix in SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names
