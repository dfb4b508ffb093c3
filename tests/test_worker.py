"""The worker core: claiming, executing, fencing, retries and events, on both backends."""

from __future__ import annotations

import sys
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from swf_pool import (
    Audit,
    Client,
    EventType,
    Exponential,
    Fixed,
    GoBackoff,
    NoRetry,
    PermanentError,
    Pool,
    Registry,
    Run,
    Status,
)
from swf_pool.dsn import PostgresTarget, parse_dsn
from swf_pool.executors import Waker
from swf_pool.models import Claimed, Lease, LeaseState, Outcome
from swf_pool.process_executor import ProcessExecutor
from swf_pool.worker import Task

from . import apps
from .helpers import sql, wait_until


def events(client: Client, run_id: str) -> list[str]:
    return [e.event_type.value for e in client.events(run_id)]


def echo_registry(**kwargs: Any) -> Registry:
    registry = Registry()
    registry.register("echo.v1", lambda run: {"got": run.payload, "attempt": run.attempt}, **kwargs)
    return registry


def test_success_stores_result_and_full_audit(client: Client) -> None:
    run_id = client.submit("echo.v1", {"a": 1}).id
    worker = Pool(client, echo_registry(), worker_id="w1", executor="inline")
    assert worker.drain().claimed == 1
    run = client.get(run_id)
    assert run is not None
    assert (run.status, run.result, run.attempt, run.leased_by) == (
        Status.SUCCEEDED,
        {"got": {"a": 1}, "attempt": 1},
        1,
        "w1",
    )
    assert run.lease_until is None
    assert events(client, run_id) == ["created", "leased", "started", "succeeded"]
    leased = client.events(run_id)[1]
    assert leased.data == {"worker_id": "w1", "attempt": 1}


def test_claim_order_is_priority_then_age(client: Client) -> None:
    order: list[int] = []
    registry = Registry()
    registry.register("o.v1", lambda run: order.append(run.payload))
    for payload, priority in [(1, 100), (2, 5), (3, 100), (4, -1), (5, 5)]:
        client.submit("o.v1", payload, priority=priority)
    Pool(client, registry, batch_size=2, executor="inline").drain()
    assert order == [4, 2, 5, 1, 3]


def test_delayed_runs_wait_until_due(client: Client) -> None:
    later = client.submit("echo.v1", run_in=3600).id
    now = client.submit("echo.v1", run_at=datetime.now(UTC) - timedelta(seconds=1)).id
    Pool(client, echo_registry(), executor="inline").drain()
    assert client.get(later).status is Status.PENDING  # type: ignore[union-attr]
    assert client.get(now).status is Status.SUCCEEDED  # type: ignore[union-attr]


def test_failure_retries_with_go_backoff_then_fails(client: Client) -> None:
    registry = Registry()

    @registry.handler("fail.v1")
    def fail(run: Run) -> None:
        raise RuntimeError(f"boom {run.attempt}")

    run_id = client.submit("fail.v1", max_attempts=2).id
    worker = Pool(client, registry, rand=lambda: 1.0, executor="inline")
    before = datetime.now(UTC)
    worker.drain()
    run = client.get(run_id)
    assert run is not None
    assert (run.status, run.attempt, run.last_error) == (Status.PENDING, 1, "RuntimeError: boom 1")
    # attempt² minutes plus at most 10 % jitter (rand() == 1.0 gives the full 10 %)
    assert before + timedelta(seconds=66) <= run.run_at <= datetime.now(UTC) + timedelta(seconds=66)
    retried = client.events(run_id)[-1]
    assert retried.event_type is EventType.RETRIED
    trace = retried.data.pop("traceback")  # the handler's (tests/test_tracebacks.py)
    assert retried.data == {"attempt": 1, "error": "RuntimeError: boom 1"}
    assert trace.endswith("RuntimeError: boom 1\n")


class _BrokenPolicy:
    def delay(self, attempt: int, rand: float) -> float:
        raise ValueError("a bug in a user's retry policy")


@pytest.mark.parametrize(
    "policy", [Exponential(), GoBackoff(), _BrokenPolicy()], ids=["exp", "go", "broken"]
)
def test_a_late_attempt_or_a_broken_policy_is_retried_and_stops_nothing(
    client: Client, dsn: str, policy: Any
) -> None:
    """ "Retry forever" is a large max_attempts: past attempt ~1,025 Exponential's delay
    overflowed a float, past ~64,500 the Go backoff's a date, and either error (or a bug in a
    user's policy) escaped the pool's loop and stopped it, losing what it held. The run is
    retried, at most a year ahead, and the pool goes on."""
    registry = Registry()
    registry.register("late.v1", lambda run: 1 / 0, retry=policy)
    registry.register("echo.v1", lambda run: run.payload)
    late = client.submit("late.v1", max_attempts=1_000_000).id
    sql(dsn, "UPDATE workflow_run SET attempt = 99999 WHERE type = 'late.v1'")
    other = client.submit("echo.v1", 7).id
    before = datetime.now(UTC)
    Pool(client, registry, executor="inline").drain()
    run = client.get(late)
    assert run is not None and (run.status, run.attempt) == (Status.PENDING, 100000)
    assert before < run.run_at <= datetime.now(UTC) + timedelta(days=366)
    assert client.get(other).status is Status.SUCCEEDED  # type: ignore[union-attr]


@pytest.mark.parametrize("executor", ["process", "thread", "inline"])
def test_a_handler_calling_sys_exit_fails_its_run_only(client: Client, executor: str) -> None:
    """SystemExit is not an Exception: in a thread it ended the thread silently, and the run
    stayed leased for good (its lease renewed by the pool); inline it stopped the pool."""
    registry = Registry()
    registry.register("exit.v1", lambda run: sys.exit(3), retry=NoRetry())
    registry.register("echo.v1", lambda run: run.payload)
    gone, other = client.submit("exit.v1").id, client.submit("echo.v1", 7).id
    stats = Pool(client, registry, executor=executor, processes=1, start_method="fork").drain()
    run = client.get(gone)
    assert run is not None and (run.status, run.last_error) == (Status.FAILED, "SystemExit: 3")
    assert client.get(other).status is Status.SUCCEEDED  # type: ignore[union-attr]
    assert (stats.failed, stats.succeeded) == (1, 1)


def test_attempts_run_out_into_failed(client: Client) -> None:
    registry = Registry()
    registry.register("fail.v1", lambda run: 1 / 0, retry=Fixed(0))
    run_id = client.submit("fail.v1", max_attempts=3).id
    assert Pool(client, registry, executor="inline").drain().claimed == 3
    run = client.get(run_id)
    assert run is not None
    assert (run.status, run.attempt) == (Status.FAILED, 3)
    assert run.last_error == "ZeroDivisionError: division by zero"
    assert events(client, run_id) == ["created"] + ["leased", "started", "retried"] * 2 + [
        "leased",
        "started",
        "failed",
    ]


@pytest.mark.parametrize(
    ("handler", "error"),
    [
        (
            lambda run: (_ for _ in ()).throw(PermanentError("bad input")),
            "PermanentError: bad input",
        ),
        (lambda run: {"not": {1, 2}}, "InvalidPayload: result is not JSON-serializable"),
    ],
)
def test_permanent_errors_fail_at_once(client: Client, handler: Any, error: str) -> None:
    registry = Registry()
    registry.register("p.v1", handler)
    run_id = client.submit("p.v1", max_attempts=5).id
    Pool(client, registry, executor="inline").drain()
    run = client.get(run_id)
    assert run is not None and run.status is Status.FAILED and run.attempt == 1
    assert run.last_error is not None and run.last_error.startswith(error)
    [failed] = [e for e in client.events(run_id) if e.event_type is EventType.FAILED]
    # a value that is not JSON: no traceback (its frames were swf-pool's own, none of the
    # handler's); an exception: the handler's
    assert ("traceback" in failed.data) is error.startswith("PermanentError")


def test_no_retry_policy(client: Client) -> None:
    registry = Registry()
    registry.register("n.v1", lambda run: 1 / 0, retry=NoRetry())
    run_id = client.submit("n.v1", max_attempts=5).id
    Pool(client, registry, executor="inline").drain()
    assert client.get(run_id).status is Status.FAILED  # type: ignore[union-attr]


def test_class_handlers_and_types_served(client: Client, dsn: str) -> None:
    class Doubler:
        def execute(self, run: Run) -> int:
            return int(run.payload) * 2

    registry = Registry()
    registry.register("double.v1", Doubler())
    mine = client.submit("double.v1", 21).id
    other = client.submit("other.v1", 1).id
    Pool(client, registry, executor="inline").drain()
    assert client.get(mine).result == 42  # type: ignore[union-attr]
    assert client.get(other).status is Status.PENDING  # type: ignore[union-attr]
    rows = sql(dsn, "SELECT workflow_name, runtime FROM workflow_registry")
    assert rows == [{"workflow_name": "double.v1", "runtime": "python"}]


def test_prefixes_match_literally_except_the_trailing_wildcard(client: Client) -> None:
    registry = Registry()
    for type_ in ("bill_ing.a", "billXing.a", "bill_ing"):
        registry.register(type_, lambda run: run.type)
    ids = {t: client.submit(t).id for t in ("bill_ing.a", "billXing.a", "bill_ing")}
    Pool(client, registry, prefixes=["bill_ing.%"], executor="inline").drain()
    status = {t: client.get(i).status for t, i in ids.items()}  # type: ignore[union-attr]
    assert status == {
        "bill_ing.a": Status.SUCCEEDED,
        "billXing.a": Status.PENDING,
        "bill_ing": Status.PENDING,
    }


def test_prefix_claims_a_type_without_handler_and_records_why(client: Client) -> None:
    run_id = client.submit("media.resize.v1").id
    Pool(client, Registry(), prefixes=["media."], worker_id="w9", executor="inline").drain()
    run = client.get(run_id)
    assert run is not None and run.status is Status.PENDING
    assert run.last_error == "LookupError: no handler for type 'media.resize.v1' on w9"


def test_two_workers_never_execute_a_run_twice(dsn: str) -> None:
    with Client(dsn) as producer:
        producer.submit_many({"type": "race.v1", "payload": i} for i in range(400))
    executed: list[str] = []
    lock = threading.Lock()

    def work(run: Run) -> None:
        with lock:
            executed.append(run.id)

    registry = Registry()
    registry.register("race.v1", work)
    errors: list[BaseException] = []

    def drain(name: str) -> None:
        try:
            with Client(dsn) as own:
                Pool(own, registry, worker_id=name, batch_size=7, executor="inline").drain()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=drain, args=(f"w{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(executed) == 400 and len(set(executed)) == 400
    with Client(dsn) as check:
        assert all(r.status is Status.SUCCEEDED for r in check.list(limit=1000))


def test_stale_worker_completion_is_rejected(client: Client) -> None:
    run_id = client.submit("echo.v1").id
    backend = client.backend
    [first] = backend.claim("old", ["echo.v1"], [], 1, lease_seconds=0.001, audit_full=True)
    # the lease expires; a second worker rescues the run
    [second] = wait_until(
        lambda: backend.claim("new", ["echo.v1"], [], 1, lease_seconds=30, audit_full=True)
    )
    assert (first.id, second.id, first.attempt, second.attempt) == (run_id, run_id, 1, 2)
    stale = Outcome(run_id, 1, Status.SUCCEEDED, result='"old"')
    assert backend.complete("old", [stale], [], True) == set()
    assert backend.complete(
        "new", [Outcome(run_id, 2, Status.SUCCEEDED, result='"new"')], [], True
    ) == {Lease(run_id, 2)}
    run = client.get(run_id)
    assert run is not None and (run.result, run.attempt, run.leased_by) == ("new", 2, "new")
    expired = [e for e in client.events(run_id) if e.event_type is EventType.LEASE_EXPIRED]
    assert [e.data for e in expired] == [{"worker_id": "old", "attempt": 1}]


def test_a_rescue_waits_its_turn_in_claim_order(client: Client) -> None:
    """Runs whose lease expired are claimed in claim order with the pending ones (priority,
    then age: the Go library's): after a crash, a pool's backlog of low-priority runs went
    before every urgent run submitted since."""
    backend = client.backend
    low = client.submit("echo.v1", priority=1000).id
    backend.claim("crashed", ["echo.v1"], [], 1, lease_seconds=0.001, audit_full=True)
    urgent = client.submit("echo.v1", priority=0).id
    lease = client.get(low).lease_until  # type: ignore[union-attr]
    assert lease is not None
    wait_until(lambda: datetime.now(UTC) > lease)
    [first] = backend.claim("w", ["echo.v1"], [], 1, lease_seconds=30, audit_full=True)
    [second] = backend.claim("w", ["echo.v1"], [], 1, lease_seconds=30, audit_full=True)
    assert (first.id, first.rescued, second.id, second.rescued) == (urgent, False, low, True)
    # one lease_expired event: none for the claim that left the rescue for later
    expired = [e for e in client.events(low) if e.event_type is EventType.LEASE_EXPIRED]
    assert [e.data for e in expired] == [{"worker_id": "crashed", "attempt": 1}]


def test_cancel_while_leased_wins_over_the_result(client: Client) -> None:
    registry = Registry()
    seen: list[bool] = []

    @registry.handler("c.v1")
    def cancel_myself(run: Run) -> str:
        seen.append(run.is_cancelled())
        client.cancel(run.id)
        seen.append(wait_until(run.is_cancelled))  # true within one heartbeat
        seen.append(run.heartbeat(60))
        return "done anyway"

    run_id = client.submit("c.v1").id
    Pool(client, registry, executor="inline", heartbeat_interval=0.05).drain()
    run = client.get(run_id)
    assert run is not None and run.status is Status.CANCELLED and run.result is None
    assert seen == [False, True, False]
    assert events(client, run_id)[-1] == "cancelled"


def test_heartbeat_extends_the_lease_and_is_recorded(client: Client) -> None:
    registry = Registry()
    leases: list[Any] = []

    @registry.handler("hb.v1")
    def beat(run: Run) -> None:
        leases.append(client.get(run.id).lease_until)  # type: ignore[union-attr]
        assert run.heartbeat(600)
        leases.append(client.get(run.id).lease_until)  # type: ignore[union-attr]

    run_id = client.submit("hb.v1").id
    Pool(client, registry, lease_seconds=30, executor="inline").drain()
    assert leases[1] - leases[0] > timedelta(seconds=500)
    beat_event = [e for e in client.events(run_id) if e.event_type is EventType.HEARTBEAT]
    assert [e.data for e in beat_event] == [{"extended_by_seconds": 600}]


def test_a_handler_beating_in_a_loop_writes_one_heartbeat_event(client: Client) -> None:
    """Every call extends the lease; the trail records the first (then one a minute)."""
    registry = Registry()
    leases: list[Any] = []

    @registry.handler("hb.v1")
    def beat(run: Run) -> None:
        for seconds in range(100, 120):
            assert run.heartbeat(seconds)
        leases.append(client.get(run.id).lease_until)  # type: ignore[union-attr]

    run_id = client.submit("hb.v1").id
    Pool(client, registry, lease_seconds=30, executor="thread", processes=1).drain()
    assert leases[0] - datetime.now(UTC) > timedelta(seconds=100)  # the last call's 119 s
    beats = [e.data for e in client.events(run_id) if e.event_type is EventType.HEARTBEAT]
    assert beats == [{"extended_by_seconds": 100}]


def test_a_crash_loop_ends_in_failed(client: Client) -> None:
    """A run that kills its worker every time: leases expire, attempts count, then failed."""
    run_id = client.submit("crash.v1", max_attempts=2).id
    backend = client.backend
    for attempt in (1, 2):
        [claimed] = wait_until(
            lambda: backend.claim("w", ["crash.v1"], [], 1, lease_seconds=0.001, audit_full=True)
        )
        assert claimed.attempt == attempt  # ... and the worker dies here
    wait_until(
        lambda: (
            client.get(run_id).status is Status.FAILED  # type: ignore[union-attr]
            or backend.claim("w", ["crash.v1"], [], 1, lease_seconds=30, audit_full=True)
        )
    )
    run = client.get(run_id)
    assert run is not None and run.status is Status.FAILED and run.attempt == 2
    assert run.last_error == (
        "lease expired on attempt 2 of 2: worker w stopped without completing it"
    )
    assert events(client, run_id)[-2:] == ["lease_expired", "failed"]


def test_heartbeat_reports_each_lease(client: Client) -> None:
    backend = client.backend
    a, b, c = (client.submit("x.v1").id for _ in range(3))
    claimed = {
        r.id: r for r in backend.claim("w", ["x.v1"], [], 3, lease_seconds=30, audit_full=True)
    }
    client.cancel(b)
    leases = [Lease(a, claimed[a].attempt), Lease(b, claimed[b].attempt), Lease(c, 99)]
    states = backend.heartbeat("w", leases, 30, False)
    held, cancelled, lost = leases
    assert states == {held: LeaseState.HELD, cancelled: LeaseState.CANCELLED, lost: LeaseState.LOST}


def test_heartbeat_tells_two_attempts_of_one_run_apart(client: Client) -> None:
    """A pool that re-claims its own expired run holds attempt 1 (lost) and 2 (held)."""
    backend = client.backend
    run_id = client.submit("x.v1").id
    backend.claim("w", ["x.v1"], [], 1, lease_seconds=0.001, audit_full=True)
    [again] = wait_until(
        lambda: backend.claim("w", ["x.v1"], [], 1, lease_seconds=30, audit_full=True)
    )
    assert again.attempt == 2
    old, new = Lease(run_id, 1), Lease(run_id, 2)
    states = backend.heartbeat("w", [old, new], 30, False)
    assert states == {old: LeaseState.LOST, new: LeaseState.HELD}
    stale = Outcome(run_id, 1, Status.SUCCEEDED, result='"old"')
    fresh = Outcome(run_id, 2, Status.SUCCEEDED, result='"new"')
    assert backend.complete("w", [stale, fresh], [], True) == {new}
    assert backend.release("w", [old, new]) == set()


def test_lean_audit_records_only_what_goes_wrong(dsn: str) -> None:
    with Client(dsn, audit=Audit.FAILURES) as client:
        registry = echo_registry()
        registry.register("bad.v1", lambda run: 1 / 0, retry=NoRetry())
        ok, bad = client.submit("echo.v1").id, client.submit("bad.v1").id
        Pool(client, registry, audit="failures", executor="inline").drain()
        assert events(client, ok) == []
        assert events(client, bad) == ["failed"]
        assert client.get(ok).status is Status.SUCCEEDED  # type: ignore[union-attr]


def test_go_library_events_and_runs_count_per_type(client: Client) -> None:
    client.submit_many({"type": t, "payload": None} for t in ["a", "a", "b"])
    registry = Registry()
    registry.register("a", lambda run: None)
    registry.register("b", lambda run: None)
    Pool(client, registry, executor="inline").drain()
    counted = Counter(r.type for r in client.list() if r.status is Status.SUCCEEDED)
    assert counted == {"a": 2, "b": 1}


def test_claims_walk_the_pending_index_whatever_the_statistics(postgres_dsn: str) -> None:
    """Statistics of a queue table are stale (here: 20,000 runs the planner has never seen);
    the claim's choice of runs must still be an ordered walk of the claim-order index, never
    a read and sort of every pending run."""
    with Client(postgres_dsn) as client:
        for _ in range(4):
            client.submit_many({"type": "a.v1"} for _ in range(5000))
    [proc] = sql(postgres_dsn, "SELECT proconfig FROM pg_proc WHERE proname = 'swf_claimable'")
    settings = set(proc["proconfig"])
    assert {"enable_bitmapscan=off", "enable_sort=off", "enable_seqscan=off"} <= settings
    body = (
        "SELECT r.id FROM workflow_run r WHERE r.status = 'pending' AND r.deleted_at IS NULL "
        "AND r.run_at <= now() AND (r.type = ANY('{a.v1}') OR r.type LIKE ANY('{}')) "
        "ORDER BY r.priority, r.created_at LIMIT 100 FOR UPDATE SKIP LOCKED"
    )
    target = parse_dsn(postgres_dsn)
    assert isinstance(target, PostgresTarget)
    with psycopg.connect(target.conninfo) as conn:  # one transaction, the function's settings
        conn.execute(b'SET LOCAL search_path TO "workflow"')
        for name in ("enable_bitmapscan", "enable_sort", "enable_seqscan"):
            conn.execute(f"SET LOCAL {name} = off".encode())
        plan = conn.execute(f"EXPLAIN (COSTS OFF) {body}".encode()).fetchall()
    text = " ".join(row[0] for row in plan)
    assert "Index Scan using swf_run_pending_idx" in text and "Sort" not in text, text


class _HoldsEveryLease:
    """The coordinator's side of an executor, for a pool that holds every lease."""

    worker_id = "w"

    def extend_lease(self, seq: int, seconds: float) -> LeaseState:
        return LeaseState.HELD

    def is_cancelled(self, seq: int) -> bool:
        return False


def test_a_stop_without_grace_hands_out_the_results_already_in() -> None:
    """`shutdown_grace=0`: a result a worker sent before the stop is read from its pipe when
    the workers are told to start nothing more, and must still reach the pool; it was dropped,
    and its run waited for its lease to expire (then ran again)."""
    waker = Waker()
    executor = ProcessExecutor(
        apps.registry, _HoldsEveryLease(), waker, 1, 1, False, 2, None, "fork"
    )
    try:
        now = datetime.now(UTC)
        executor.dispatch([Task(1, Claimed("r1", "t.echo", None, 1, 3, now, now))])
        child = executor.children[0]
        wait_until(child.conn.poll, timeout=30)  # its result waits in the pipe
        assert executor.take_unstarted() == []
        executor.closing()
        assert [(r.seq, r.ok) for r in executor.close(0)] == [(1, True)]
    finally:
        executor.terminate()
        waker.close()
