from __future__ import annotations

import pytest

from swf_pool import ConnectError, InvalidDsn
from swf_pool.backends import open_backend
from swf_pool.dsn import PostgresTarget, SqliteTarget, parse_dsn, redact


@pytest.mark.parametrize(
    ("dsn", "schema"),
    [
        ("postgres://u:p@localhost:5432/db", "workflow"),
        ("postgresql://u@localhost/db?schema=billing", "billing"),
        ("postgres://u@localhost/db?search_path=Other_1&sslmode=disable", "Other_1"),
        ("host=localhost dbname=db", "workflow"),
        ("host=localhost dbname=db schema=jobs", "jobs"),
    ],
)
def test_postgres_forms(dsn: str, schema: str) -> None:
    target = parse_dsn(dsn)
    assert isinstance(target, PostgresTarget)
    assert target.schema == schema
    assert "schema" not in target.conninfo and "search_path" not in target.conninfo


def test_other_url_parameters_are_kept() -> None:
    target = parse_dsn("postgres://u@h/db?schema=s&sslmode=disable&application_name=x")
    assert isinstance(target, PostgresTarget)
    assert "sslmode=disable" in target.conninfo and "application_name=x" in target.conninfo


@pytest.mark.parametrize(
    ("dsn", "path"),
    [
        ("sqlite:///tmp/x.db", "/tmp/x.db"),
        ("sqlite://relative.db", "relative.db"),
        ("sqlite://:memory:", ":memory:"),
        ("sqlite3:///abs/y.db", "/abs/y.db"),
    ],
)
def test_sqlite_forms(dsn: str, path: str) -> None:
    assert parse_dsn(dsn) == SqliteTarget(path)


@pytest.mark.parametrize(
    ("dsn", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("mysql://u@h/db", "unsupported scheme 'mysql'"),
        ("postgres://u@h:notaport/db", "malformed PostgreSQL URL"),
        ('postgres://u@h/db?schema=bad"name', "invalid schema name"),
        ("postgres://u@h/db?schema=a;drop table x", "invalid schema name"),
        ("postgres://u@h/db?schema=", "invalid schema name"),
        ("host=h schema=1abc", "invalid schema name"),
        ("host=h nosuchkey=1", "malformed PostgreSQL connection string"),
        ("just some words", "unrecognised connection string"),
        ("sqlite://", "missing SQLite path"),
        ("sqlite:///x.db?mode=ro", "unsupported SQLite parameters"),
    ],
)
def test_bad_dsn_is_a_typed_error(dsn: str, message: str) -> None:
    with pytest.raises(InvalidDsn, match=message):
        parse_dsn(dsn)


def test_redact_hides_passwords() -> None:
    assert redact("postgres://me:secret@h/db") == "postgres://me:***@h/db"
    assert "secret" not in redact("host=h password=secret dbname=x")


def test_unreachable_server_is_a_connect_error_without_the_password() -> None:
    with pytest.raises(ConnectError, match="cannot connect to PostgreSQL") as info:
        open_backend("postgres://me:secret@127.0.0.1:1/db?connect_timeout=2")
    assert "secret" not in str(info.value)
    # the reason itself, on one line (only the hint was left, after a tab)
    assert "): Connection refused; Is the server running" in str(info.value)
    assert "\t" not in str(info.value)


def test_missing_database_is_named(pg_server: str) -> None:
    with pytest.raises(ConnectError, match="no_such_db"):
        open_backend(pg_server + " dbname=no_such_db")


def test_unopenable_sqlite_file_is_a_connect_error(tmp_path: object) -> None:
    with pytest.raises(ConnectError, match="cannot open SQLite"):
        open_backend(f"sqlite:///{tmp_path}/missing/dir/x.db")
