"""Fixtures: a real PostgreSQL (one database per test, cloned from a migrated template) and a
real SQLite file per test; `dsn` runs a test once on each."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from swf_pool import Client

from . import pgserver


def _prefix() -> str:
    """Names of the databases the tests create (and drop): $SWF_TEST_DB_PREFIX, else the
    database named by $SWF_TEST_DSN (other than `postgres`), else `swf_test`."""
    given = os.environ.get("SWF_TEST_DB_PREFIX")
    if given:
        return given
    named = conninfo_to_dict(os.environ.get("SWF_TEST_DSN", "")).get("dbname")
    return str(named) if named and named != "postgres" else "swf_test"


PREFIX = _prefix()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    with pgserver.server() as conninfo:
        yield conninfo


def admin(server: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(server, autocommit=True)


def _create_database(server: str, name: str, template: str | None = None) -> None:
    query = f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")
    with admin(server) as conn:
        conn.execute(query.encode())


def _drop_database(server: str, name: str) -> None:
    with admin(server) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


@pytest.fixture(scope="session")
def pg_template(pg_server: str) -> Iterator[str]:
    name = f"{PREFIX}_template_{os.getpid()}"
    _drop_database(pg_server, name)
    _create_database(pg_server, name)
    Client(make_conninfo(pg_server, dbname=name), migrate=True).close()
    yield name
    _drop_database(pg_server, name)


@pytest.fixture
def pg_empty(pg_server: str) -> Iterator[str]:
    """A new, empty database (no schema): libpq conninfo."""
    name = f"{PREFIX}_{uuid.uuid4().hex[:12]}"
    _create_database(pg_server, name)
    yield make_conninfo(pg_server, dbname=name)
    _drop_database(pg_server, name)


@pytest.fixture
def postgres_dsn(pg_server: str, pg_template: str) -> Iterator[str]:
    """A migrated database of its own: libpq conninfo (schema `workflow`, the default)."""
    name = f"{PREFIX}_{uuid.uuid4().hex[:12]}"
    _create_database(pg_server, name, template=pg_template)
    yield make_conninfo(pg_server, dbname=name)
    _drop_database(pg_server, name)


@pytest.fixture
def sqlite_dsn(tmp_path: os.PathLike[str]) -> str:
    dsn = f"sqlite:///{tmp_path}/swf.db"
    Client(dsn, migrate=True).close()
    return dsn


@pytest.fixture(params=["postgres", "sqlite"])
def dsn(request: pytest.FixtureRequest) -> str:
    value: str = request.getfixturevalue(f"{request.param}_dsn")
    return value


@pytest.fixture
def client(dsn: str) -> Iterator[Client]:
    with Client(dsn) as c:
        yield c
