"""Leases a pool holds stay held: renewals never wait on a row lock (no deadlock with a flush),
and a claim survives a crash of the server (the fence can then tell two executions apart)."""

from __future__ import annotations

import shutil
import threading

import psycopg
import pytest

from swf_pool import Client, Status
from swf_pool.models import Lease, LeaseState

from . import pgserver
from .helpers import wait_until


def test_heartbeat_does_not_wait_for_a_row_another_transaction_locks(postgres_dsn: str) -> None:
    """A flush locks the rows it completes in its own order; a renewal that waited for them
    could deadlock with it (each holding a row the other wants) and leave every lease it
    carries to expire. It skips a locked row instead, reporting it held."""
    with Client(postgres_dsn) as client:
        first, second = (client.submit("t.v1", {}).id for _ in range(2))
        claimed = client.backend.claim("w", ["t.v1"], [], 2, lease_seconds=30, audit_full=True)
        leases = [Lease(run.id, run.attempt) for run in claimed]
        with psycopg.connect(postgres_dsn, autocommit=True) as other, other.transaction():
            other.execute("SET search_path TO workflow")
            other.execute("SELECT 1 FROM workflow_run WHERE id = %s FOR UPDATE", (second,))
            states: dict[Lease, LeaseState] = {}
            beat = threading.Thread(
                target=lambda: states.update(client.backend.heartbeat("w", leases, 600, False)),
                daemon=True,
            )
            beat.start()
            # the renewal returns while the other transaction still holds its row
            wait_until(lambda: not beat.is_alive(), timeout=10)
        assert states == dict.fromkeys(leases, LeaseState.HELD)
        free, locked = (client.get(run_id) for run_id in (first, second))
        assert free and free.lease_until and locked and locked.lease_until
        assert free.lease_until > locked.lease_until  # the free row got its 600 s


@pytest.mark.skipif(shutil.which("initdb") is None, reason="PostgreSQL binaries not on PATH")
def test_a_claim_survives_a_crash_of_the_server() -> None:
    """A claim undone by a crash would be claimed again under the same worker id and attempt,
    and the first execution's result would complete the second lease. So a claim commits
    durably, even on a server whose default is `synchronous_commit = off` (as here, with the
    WAL writer slowed down so that an asynchronous commit is surely lost)."""
    with pgserver.throwaway_cluster("-c wal_writer_delay=10000") as cluster:
        with Client(cluster.conninfo, migrate=True) as client:
            run_id = client.submit("t.v1", {}).id
            with psycopg.connect(cluster.conninfo, autocommit=True) as conn:
                conn.execute("CHECKPOINT")  # the submit itself is safe on disk
            [run] = client.backend.claim("w", ["t.v1"], [], 1, lease_seconds=30, audit_full=True)
            assert run.attempt == 1
        cluster.restart("immediate")
        with Client(cluster.conninfo) as client:
            after = client.get(run_id)
            assert after is not None
            assert (after.status, after.attempt, after.leased_by) == (Status.LEASED, 1, "w")
            again = client.backend.claim("w", ["t.v1"], [], 1, lease_seconds=30, audit_full=True)
            assert again == []


def test_a_shorter_heartbeat_never_shortens_a_lease(client: Client) -> None:
    """A handler's `run.heartbeat()` asks for 30 s by default; under a 120 s lease, renewed
    every 40 s, taking it at its word let the lease expire between two renewals and the pool's
    own next claim run the same run a second time, beside the first."""
    run_id = client.submit("t.v1", {}).id
    [run] = client.backend.claim("w", ["t.v1"], [], 1, lease_seconds=120, audit_full=True)
    before = client.get(run_id)
    assert before is not None and before.lease_until is not None
    lease = Lease(run.id, run.attempt)
    assert client.backend.heartbeat("w", [lease], 30, False) == {lease: LeaseState.HELD}
    after = client.get(run_id)
    assert after is not None and after.lease_until is not None
    assert after.lease_until >= before.lease_until
    assert client.backend.claim("w", ["t.v1"], [], 1, lease_seconds=120, audit_full=True) == []
