"""The test setup itself: with no server running, it starts and stops a throwaway cluster."""

from __future__ import annotations

import os
import shutil

import psycopg
import pytest

from . import pgserver


@pytest.mark.skipif(shutil.which("initdb") is None, reason="PostgreSQL binaries not on PATH")
def test_throwaway_cluster_starts_and_is_removed() -> None:
    with pgserver.throwaway_cluster() as cluster, psycopg.connect(cluster.conninfo) as conn:
        assert conn.execute("SHOW fsync").fetchone() == ("off",)
        folder = conn.execute("SHOW data_directory").fetchone()[0]  # type: ignore[index]
    assert not pgserver.answers(cluster.conninfo + " connect_timeout=2")
    assert not os.path.exists(folder)
