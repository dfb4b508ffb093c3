"""Connection strings: which backend, where, and which schema.

Accepted forms (the Go library's, plus libpq key=value with a `schema` key):

    postgres://user:pass@host:5432/db?schema=workflow     (or postgresql://, ?search_path=)
    host=127.0.0.1 dbname=app schema=workflow
    sqlite:///abs/path.db   sqlite://relative.db   sqlite://:memory:   (or sqlite3://)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg.conninfo

from .errors import InvalidDsn

DEFAULT_SCHEMA = "workflow"
_SCHEMA_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_SCHEMA_KEYS = ("schema", "search_path")


@dataclass(frozen=True)
class PostgresTarget:
    """A PostgreSQL database: a libpq conninfo (without the schema) and the schema to use."""

    conninfo: str
    schema: str


@dataclass(frozen=True)
class SqliteTarget:
    """A SQLite database file (or `:memory:`)."""

    path: str


Target = PostgresTarget | SqliteTarget


def validate_schema(name: str) -> str:
    """Return `name` if it is a plain identifier (letters, digits, underscore; max 63)."""
    if not _SCHEMA_RE.fullmatch(name):
        raise InvalidDsn(
            f"invalid schema name {name!r}: use letters, digits and underscores (max 63), "
            "not starting with a digit"
        )
    return name


def parse_dsn(dsn: str) -> Target:
    """Parse a connection string; raise `InvalidDsn` naming what is wrong."""
    if not isinstance(dsn, str) or not dsn.strip():
        raise InvalidDsn("empty connection string")
    dsn = dsn.strip()
    scheme, sep, _ = dsn.partition("://")
    if not sep:
        return _parse_keyvalue(dsn)
    scheme = scheme.lower()
    if scheme in ("postgres", "postgresql"):
        return _parse_postgres_url(dsn)
    if scheme in ("sqlite", "sqlite3"):
        return _parse_sqlite(dsn)
    raise InvalidDsn(
        f"unsupported scheme {scheme!r}: use postgres://, postgresql://, sqlite:// "
        "or a libpq key=value string"
    )


def redact(dsn: str) -> str:
    """The connection string with any password replaced by `***`, for messages and logs."""
    dsn = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", dsn)
    return re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", dsn)


def _parse_postgres_url(dsn: str) -> PostgresTarget:
    try:
        parts = urlsplit(dsn)
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError as exc:
        raise InvalidDsn(f"malformed PostgreSQL URL {redact(dsn)!r}: {exc}") from None
    schema = DEFAULT_SCHEMA
    kept = []
    for key, value in query:
        if key in _SCHEMA_KEYS:
            schema = value
        else:
            kept.append((key, value))
    conninfo = urlunsplit(parts._replace(query=urlencode(kept)))
    _check_libpq(conninfo, dsn)
    return PostgresTarget(conninfo, validate_schema(schema))


def _parse_keyvalue(dsn: str) -> PostgresTarget:
    if "=" not in dsn:
        raise InvalidDsn(
            f"unrecognised connection string {redact(dsn)!r}: expected postgres://..., "
            "sqlite://... or libpq key=value pairs"
        )
    params = _check_libpq(dsn, dsn, allow=_SCHEMA_KEYS)
    schema = DEFAULT_SCHEMA
    for key in _SCHEMA_KEYS:
        schema = params.pop(key, schema)
    return PostgresTarget(psycopg.conninfo.make_conninfo(**params), validate_schema(schema))


def _check_libpq(conninfo: str, original: str, allow: tuple[str, ...] = ()) -> dict[str, str]:
    """Let libpq itself parse `conninfo`; `allow` are our own keys, hidden from it."""
    hidden = {}
    if allow:
        # libpq rejects keys it does not know, so take ours out first.
        for match in re.finditer(r"(?:^|\s)(" + "|".join(allow) + r")\s*=\s*(\S+)", conninfo):
            hidden[match.group(1)] = match.group(2)
        conninfo = re.sub(r"(?:^|\s)(" + "|".join(allow) + r")\s*=\s*\S+", " ", conninfo)
    try:
        params = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as exc:
        raise InvalidDsn(
            f"malformed PostgreSQL connection string {redact(original)!r}: {str(exc).strip()}"
        ) from None
    return {**{k: str(v) for k, v in params.items()}, **hidden}


def _parse_sqlite(dsn: str) -> SqliteTarget:
    rest = dsn.split("://", 1)[1]
    path, _, query = rest.partition("?")
    if query:
        raise InvalidDsn(f"unsupported SQLite parameters {query!r} in {dsn!r}")
    if not path:
        raise InvalidDsn(f"missing SQLite path in {dsn!r} (e.g. sqlite:///tmp/app.db)")
    return SqliteTarget(path)
