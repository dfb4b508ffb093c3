"""The fleet: pools that register themselves, and per-type pauses and limits honoured by every
pool's claim, on both backends (the claim-level tests) and with real pools."""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from swf_pool import Client, Pool, Registry, Status, ValidationError, coordinator, queries
from swf_pool.backends import sqlite_fleet
from swf_pool.backends.sqlite_rows import format_time
from swf_pool.dsn import PostgresTarget, parse_dsn
from swf_pool.fleet import Fleet, Rate
from swf_pool.models import DUE_SINCE_SECONDS, Claimed, NextDue

from . import helpers
from .helpers import wait_until
from .test_api import KEY, Server, start, stop
from .test_cli import cli
from .test_pool import APP, cli_pool, finish, running


def claim(client: Client, types: Sequence[str], prefixes: Sequence[str] = ()) -> Counter[str]:
    claimed: list[Claimed] = client.backend.claim(
        "w1", types, prefixes, 100, lease_seconds=30, audit_full=True
    )
    return Counter(run.type for run in claimed)


def submit(client: Client, **counts: int) -> None:
    client.submit_many(
        {"type": name.replace("_", "."), "payload": i}
        for name, count in counts.items()
        for i in range(count)
    )


# -- the claim ----------------------------------------------------------------------------------


def test_a_paused_type_is_not_claimed_while_others_flow(client: Client) -> None:
    submit(client, x_a=5, x_b=5)
    fleet = Fleet(client.backend)
    assert fleet.pause("x.a").paused
    assert claim(client, ["x.a", "x.b"]) == {"x.b": 5}
    assert claim(client, [], ["x.%"]) == {}  # by prefix too
    assert [c.type for c in fleet.controls()] == ["x.a"]
    assert not fleet.resume("x.a").paused
    assert claim(client, [], ["x.%"]) == {"x.a": 5}
    assert fleet.controls() == []  # nothing holds it back any more


def test_a_concurrency_limit_caps_the_leased_runs_of_a_type(client: Client) -> None:
    submit(client, x_a=10, x_b=3)
    fleet = Fleet(client.backend)
    fleet.limit("x.a", concurrency=3)
    assert claim(client, ["x.a", "x.b"]) == {"x.a": 3, "x.b": 3}
    assert claim(client, ["x.a", "x.b"]) == {}  # three leased: no room
    leased = client.list(type="x.a", status=Status.LEASED)
    client.cancel(leased[0].id)  # one fewer leased
    assert claim(client, [], ["x.%"]) == {"x.a": 1}
    fleet.limit("x.a", concurrency=None)
    assert claim(client, ["x.a"]) == {"x.a": 6}


def test_a_rate_limit_spends_tokens_that_refill_over_time(client: Client) -> None:
    submit(client, x_a=20)
    fleet = Fleet(client.backend)
    control = fleet.limit("x.a", rate="1/h")  # a new rate starts with an empty bucket
    assert control.rate == Rate(1, 3600.0)
    assert claim(client, ["x.a"]) == {}
    fleet.limit("x.a", rate="60/m")  # one a second
    first = wait_until(lambda: claim(client, ["x.a"]), timeout=10)
    assert first == {"x.a": 1}
    assert claim(client, ["x.a"]) == {}  # that token is spent
    fleet.limit("x.a", rate=None)
    assert claim(client, ["x.a"]) == {"x.a": 19}


def test_limits_keep_what_is_not_given(client: Client) -> None:
    fleet = Fleet(client.backend)
    fleet.pause("x.a")
    fleet.limit("x.a", concurrency=2)
    control = fleet.limit("x.a", rate="5/s")
    assert (control.paused, control.concurrency, str(control.rate)) == (True, 2, "5/s")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda f: f.limit("x", rate="5/q"), "rate must look like"),
        (lambda f: f.limit("x", rate="0/m"), "between 1 and"),
        (lambda f: f.limit("x", concurrency=0), "between 1 and"),
        (lambda f: f.limit("x", concurrency=True), "must be an integer"),
        (lambda f: f.pause(""), "must not be empty"),
    ],
)
def test_bad_controls_are_refused_and_change_nothing(client: Client, call, message) -> None:  # type: ignore[no-untyped-def]
    fleet = Fleet(client.backend)
    with pytest.raises(ValidationError, match=message):
        call(fleet)
    assert fleet.controls() == []


# -- pools --------------------------------------------------------------------------------------


def test_a_pool_registers_beats_and_leaves(client: Client) -> None:
    fleet = Fleet(client.backend)
    pool = Pool(client, APP, processes=2, executor="thread", heartbeat_interval=0.05)
    with running(pool):
        [member] = wait_until(lambda: [p for p in fleet.pools() if p.id == pool.worker_id])
        assert (member.processes, member.executor, member.lost) == (2, "thread", False)
        assert "t.echo" in member.types and member.pid > 0 and member.host
        first = member.last_seen
        assert first is not None
        wait_until(lambda: fleet.pools()[0].last_seen != first)  # renewed while idle
        client.submit_many({"type": "t.echo", "payload": i} for i in range(20))
        wait_until(lambda: len(client.list(status=Status.SUCCEEDED)) == 20)
    assert fleet.pools() == []  # a clean stop removes its row


def test_a_killed_pool_shows_as_lost_then_disappears(dsn: str) -> None:
    fleet_client = Client(dsn)
    fleet = Fleet(fleet_client.backend)
    # a short lease: a heartbeat every 0.2 s, lost after 0.6 s, forgotten after 12 s
    proc = cli_pool(dsn, "--processes", "1", "--lease", "0.6")
    try:
        [member] = wait_until(fleet.pools, timeout=30)
        assert not member.lost
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        wait_until(lambda: fleet.pools()[0].lost)  # 3 beats missed
        wait_until(lambda: fleet.pools() == [], timeout=30)  # 60 beats missed
    finally:
        finish(proc)
        fleet_client.close()


def test_a_paused_type_waits_and_resume_wakes_the_pool(postgres_dsn: str) -> None:
    with Client(postgres_dsn) as client:
        fleet = Fleet(client.backend)
        fleet.pause("t.echo")
        # a long poll: only the NOTIFY of `resume` can wake the pool within the deadline
        pool = Pool(client, APP, processes=1, executor="thread", poll_interval=60)
        with running(pool):
            held = client.submit("t.echo", 1).id
            other = client.submit("t.nap", 0).id
            wait_until(lambda: client.get(other).status is Status.SUCCEEDED)  # type: ignore[union-attr]
            assert client.get(held).status is Status.PENDING  # type: ignore[union-attr]
            fleet.resume("t.echo")
            wait_until(lambda: client.get(held).status is Status.SUCCEEDED, timeout=20)  # type: ignore[union-attr]


def test_a_drain_ends_with_a_paused_backlog(dsn: str) -> None:
    with Client(dsn) as client:
        submit(client, t_echo=5, t_nap=0)
        Fleet(client.backend).pause("t.echo")
        stats = Pool(client, APP, processes=1, executor="thread").drain()
        assert stats.claimed == 0
        assert len(client.list(type="t.echo", status=Status.PENDING)) == 5


def test_a_type_at_its_limit_is_not_claimed_in_a_loop(dsn: str) -> None:
    """Its one place held by another pool, a type with a backlog is not due: the pool waits
    for its poll (an hour here) instead of claiming nothing again at once, thousands of times
    a second (the backlog counted as due, the claim skipped it for its limit, and so on)."""
    with Client(dsn) as client:
        submit(client, t_echo=4)
        Fleet(client.backend).limit("t.echo", concurrency=1)
        assert claim(client, ["t.echo"]) == {"t.echo": 1}  # the other pool's run
        assert client.backend.next_due(["t.echo"], []) == NextDue(None, held_back=True)
        pool = Pool(client, APP, processes=1, executor="thread", poll_interval=3600)
        with running(pool):
            wait_until(lambda: pool.stats.claims >= 1)
            # a loop would pass 20 claims in a few milliseconds
            with pytest.raises(AssertionError, match="condition not met"):
                wait_until(lambda: pool.stats.claims > 20, timeout=0.5)
        assert pool.stats.claimed == 0


def test_a_place_freed_by_our_own_run_is_taken_at_once(dsn: str) -> None:
    """With no poll to come (an hour), each completion under a concurrency limit of one lets
    the next run of the backlog be claimed: the drain runs them all, one at a time."""
    with Client(dsn) as client:
        submit(client, t_echo=5)
        Fleet(client.backend).limit("t.echo", concurrency=1)
        pool = Pool(client, APP, processes=2, executor="thread", poll_interval=3600)
        assert pool.drain().succeeded == 5


def test_a_drain_waits_for_a_place_held_by_another_pool(dsn: str) -> None:
    """A backlog held back by a concurrency limit is work left: the drain ended at once, its
    runs pending, while another pool's run held the place (here until its lease expires)."""
    with Client(dsn) as client:
        submit(client, t_echo=2)
        Fleet(client.backend).limit("t.echo", concurrency=1)
        client.backend.claim("gone", ["t.echo"], [], 1, lease_seconds=0.5, audit_full=True)
        pool = Pool(client, APP, processes=1, executor="thread", poll_interval=0.1)
        assert pool.drain().succeeded == 2  # its own, and the other's rescued


def test_a_drain_waits_for_the_tokens_of_a_rate_limited_backlog(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However far the next token (here beyond the drain's wait for delayed runs, made 0 s):
    the runs are due, only throttled. The drain ended with them pending."""
    monkeypatch.setattr(coordinator, "DRAIN_WAIT_SECONDS", 0.0)
    with Client(dsn) as client:
        submit(client, t_echo=3)
        Fleet(client.backend).limit("t.echo", rate="10/s")
        pool = Pool(client, APP, processes=1, executor="thread", poll_interval=3600)
        assert pool.drain().succeeded == 3


def test_the_next_due_run_is_found_without_walking_a_held_backlog(dsn: str) -> None:
    """Asked after every short claim (after every completion while a type waits at its
    limit), `next_due` read each run of the held backlog. Counted on PostgreSQL by the rows
    its plan reads, on SQLite by the virtual machine's steps."""
    with Client(dsn) as client:
        submit(client, t_echo=2000)
        hour_ago = format_time(datetime.now(UTC) - timedelta(hours=1))  # due a while
        mark = "%s" if client.backend.kind == "postgres" else "?"
        helpers.sql(dsn, f"UPDATE workflow_run SET run_at = {mark}", (hour_ago,))  # noqa: S608
        Fleet(client.backend).limit("t.echo", concurrency=1)
        claim(client, ["t.echo"])
        later = client.submit("t.nap", 0, run_in=60).id
        run = client.get(later)
        assert run is not None
        assert client.backend.next_due(["t.echo", "t.nap"], []) == NextDue(run.run_at, True)
        assert _next_due_cost(dsn, ["t.echo", "t.nap"]) < 200
        # a place frees (here: a higher limit) after the claim: its backlog is due at once
        Fleet(client.backend).limit("t.echo", concurrency=2)
        due = client.backend.next_due(["t.echo", "t.nap"], [])
        assert due.at is not None and due.at <= datetime.now(UTC) and not due.held_back


def _next_due_cost(dsn: str, types: list[str]) -> int:
    """Rows of workflow_run read (PostgreSQL), or tens of virtual machine steps (SQLite)."""
    target = parse_dsn(dsn)
    if isinstance(target, PostgresTarget):
        params = {"types": types, "prefixes": [], "since": DUE_SINCE_SECONDS}
        [row] = helpers.sql(
            dsn, "EXPLAIN (ANALYZE, FORMAT JSON) " + queries.load("postgres")["next_due"], params
        )
        return _rows_of(row["QUERY PLAN"][0]["Plan"])
    steps = 0

    def step() -> int:
        nonlocal steps
        steps += 1
        return 0  # go on

    db = sqlite3.connect(target.path)
    db.row_factory = sqlite3.Row
    db.set_progress_handler(step, 10)
    moment = datetime.now(UTC)
    match = {"types": json.dumps(types), "prefixes": "[]", "now": format_time(moment)}
    sqlite_fleet.next_due(db, match, moment)
    db.close()
    return steps


def _rows_of(node: dict[str, Any]) -> int:
    """The rows of workflow_run a plan's nodes read (kept or filtered out)."""
    own = 0
    if node.get("Relation Name") == "workflow_run":
        kept = node["Actual Rows"] + node.get("Rows Removed by Filter", 0)
        own = kept * node["Actual Loops"]
    return own + sum(_rows_of(child) for child in node.get("Plans", []))


def test_a_rate_limited_backlog_is_due_with_its_next_token(dsn: str) -> None:
    with Client(dsn) as client:
        submit(client, t_echo=3)
        Fleet(client.backend).limit("t.echo", rate="10/s")  # an empty bucket: 0.1 s a token
        due = client.backend.next_due(["t.echo"], [])
        assert due.at is not None and not due.held_back and due.throttled
        assert 0 < (due.at - datetime.now(UTC)).total_seconds() <= 0.1
        pool = Pool(client, APP, processes=1, executor="thread", poll_interval=3600)
        assert pool.drain().succeeded == 3


def test_four_pools_never_lease_more_than_the_limit(postgres_dsn: str) -> None:
    with Client(postgres_dsn) as client:
        Fleet(client.backend).limit("t.nap", concurrency=3)
        client.submit_many({"type": "t.nap", "payload": 0.02} for _ in range(60))
        client.submit_many({"type": "t.echo", "payload": i} for i in range(200))
        pools = [cli_pool(postgres_dsn, "--processes", "2", "--poll-interval", "0.05")
                 for _ in range(4)]  # fmt: skip
        seen: list[int] = []
        done = threading.Event()

        def sample() -> None:
            query = "SELECT count(*) AS n FROM workflow.workflow_run " \
                    "WHERE type = 't.nap' AND status = 'leased'"  # fmt: skip
            while not done.is_set():
                seen.append(helpers.sql(postgres_dsn, query)[0]["n"])
                time.sleep(0.003)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            wait_until(
                lambda: len(client.list(status=Status.SUCCEEDED, limit=1000)) == 260, timeout=90
            )
        finally:
            done.set()
            sampler.join()
            for proc in pools:
                proc.send_signal(signal.SIGTERM)
            for proc in pools:
                finish(proc)
        assert max(seen) <= 3 and len(seen) > 50
        assert 3 in seen  # the limit was reached, not merely respected by an idle fleet


def test_handler_declared_limits_are_written_when_a_pool_starts(client: Client) -> None:
    registry = Registry()

    @registry.handler("x.limited", concurrency=2, rate="30/m")
    def limited(run: object) -> None:
        return None

    Pool(client, registry, processes=1, executor="thread").drain()
    [control] = Fleet(client.backend).controls()
    assert (control.type, control.concurrency, control.rate) == ("x.limited", 2, Rate(30, 60))


# -- the operator's ways in ---------------------------------------------------------------------


@pytest.fixture
def api(dsn: str) -> Iterator[Server]:
    """`swf-pool serve` on the test's database, with an API key."""
    served = start(dsn, "--api-key", KEY)
    try:
        yield served
    finally:
        stop(served)


def test_rest_lists_pools_and_steers_types(api: Server, client: Client) -> None:
    pool = Pool(client, APP, processes=1, executor="thread", heartbeat_interval=0.05)
    with running(pool):
        workers = wait_until(lambda: api.call("GET", "/api/v1/workers").body)
        assert [w["id"] for w in workers] == [pool.worker_id]
        assert workers[0]["state"] == "live" and workers[0]["executor"] == "thread"
        assert 'swf_pools{state="live"} 1.0' in api.call("GET", "/api/v1/metrics").body
    assert api.call("POST", "/api/v1/types/x.a/pause").body["paused"] is True
    limits = api.call("PUT", "/api/v1/types/x.a/limits", {"concurrency": 3, "rate": "2/s"})
    assert limits.status == 200
    assert limits.body == {"type": "x.a", "paused": True, "concurrency": 3, "rate": "2/s"}
    assert api.call("PUT", "/api/v1/types/x.a/limits", {"rate": None}).body["rate"] is None
    assert api.call("PUT", "/api/v1/types/x.a/limits", {"rate": "5/q"}).status == 400
    assert api.call("PUT", "/api/v1/types/x.a/limits", {"speed": 1}).status == 400
    assert api.call("POST", "/api/v1/types/x.a/resume").body["paused"] is False
    assert api.call("GET", "/api/v1/types").body == [
        {"type": "x.a", "paused": False, "concurrency": 3, "rate": None}
    ]


def test_cli_lists_pools_and_steers_types(dsn: str) -> None:
    assert cli("types", "pause", "x.a", "--dsn", dsn).stdout.split()[-4:] == [
        "x.a", "paused", "-", "-"
    ]  # fmt: skip
    out = cli("types", "limit", "x.a", "--concurrency", "4", "--rate", "100/m", "--dsn", dsn)
    assert out.returncode == 0 and "4" in out.stdout and "100/m" in out.stdout
    shown = cli("status", "--dsn", dsn).stdout
    assert "paused or limited types: x.a (paused, at most 4 at once, 100/m)" in shown
    assert json.loads(cli("status", "--json", "--dsn", dsn).stdout)["controls"][0]["paused"]
    listed = json.loads(cli("types", "list", "--json", "--dsn", dsn).stdout)
    assert listed == [{"type": "x.a", "paused": True, "concurrency": 4, "rate": "100/m"}]
    bad = cli("types", "limit", "x.a", "--rate", "often", "--dsn", dsn)
    assert bad.returncode == 2 and "rate must look like" in bad.stderr
    nothing = cli("types", "limit", "x.a", "--dsn", dsn)
    assert nothing.returncode == 1 and "give --concurrency and/or --rate" in nothing.stderr
    assert cli("workers", "--dsn", dsn).stdout.strip() == "no pools"
    proc = cli_pool(dsn, "--processes", "1")
    try:
        with Client(dsn) as client:
            wait_until(Fleet(client.backend).pools, timeout=30)
        [pool] = json.loads(cli("workers", "--json", "--dsn", dsn).stdout)
        assert pool["state"] == "live" and pool["processes"] == 1
        assert "live" in cli("workers", "--dsn", dsn).stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        finish(proc)


def test_dashboard_shows_pools_and_pauses_a_type(api: Server, client: Client) -> None:
    client.submit("t.echo", 1)
    pool = Pool(client, APP, processes=1, executor="thread", heartbeat_interval=0.05)
    Fleet(client.backend).pause("t.echo")
    with running(pool):
        page: str = wait_until(lambda: _page(api, pool.worker_id) or "")
        assert "paused" in page and ">Resume<" in page
    form = urllib.request.Request(api.base + "/types/resume", b"type=t.echo", method="POST")
    form.add_header("Content-Type", "application/x-www-form-urlencoded")
    form.add_header("X-API-Key", KEY)
    with urllib.request.urlopen(form, timeout=30) as answer:  # the redirect, followed
        assert "resumed t.echo" in answer.read().decode()
    assert Fleet(client.backend).controls() == []


def _page(api: Server, pool_id: str) -> str | None:
    """The overview, once it lists the pool."""
    body = api.call("GET", "/ui/overview").body
    return body if pool_id in body else None


@pytest.mark.timeout(240)
def test_a_rate_limit_holds_over_a_minute_across_two_pools(postgres_dsn: str) -> None:
    """600/min over a minute-long window, two pools claiming as fast as they can."""
    with Client(postgres_dsn) as client:
        client.fleet.limit("t.echo", rate="600/m")
        client.submit_many({"type": "t.echo", "payload": i} for i in range(1500))
        pools = [cli_pool(postgres_dsn, "--processes", "2", "--poll-interval", "0.05")
                 for _ in range(2)]  # fmt: skip
        query = "SELECT min(created_at) AS first, now() AS now FROM workflow.workflow_event " \
                "WHERE event_type = 'leased'"  # fmt: skip
        try:
            first = wait_until(lambda: helpers.sql(postgres_dsn, query)[0]["first"], timeout=30)
            wait_until(
                lambda: (helpers.sql(postgres_dsn, query)[0]["now"] - first).total_seconds() > 61,
                timeout=90,
                interval=0.5,
            )
        finally:
            for proc in pools:
                proc.send_signal(signal.SIGTERM)
            for proc in pools:
                finish(proc)
        started = helpers.sql(
            postgres_dsn,
            "SELECT count(*) AS n FROM workflow.workflow_event WHERE event_type = 'leased' "
            "AND created_at >= %(first)s AND created_at < %(first)s + interval '60 seconds'",
            {"first": first},
        )[0]["n"]
        assert 540 <= started <= 660, started
