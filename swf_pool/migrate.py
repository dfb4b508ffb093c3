"""Versioned migrations: goose-compatible files in `sql/<backend>/NNNN_name.sql`.

The version table is goose's own (`goose_db_version`), so goose and `swf-pool migrate` can
manage the same database interchangeably.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

from .errors import SchemaNotReady

if TYPE_CHECKING:
    from .backends import Backend

_NAME = re.compile(r"(\d+)_([a-z0-9_]+)\.sql")
_UP = "-- +goose Up"
_DOWN = "-- +goose Down"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    up: str
    down: str


def migrations(backend: str) -> list[Migration]:
    """The migrations of `backend` ("postgres" or "sqlite"), in version order."""
    folder = resources.files(__package__).joinpath(f"sql/{backend}")
    found = []
    for entry in folder.iterdir():
        match = _NAME.fullmatch(entry.name)
        if match:
            up, down = _split(entry.read_text())
            found.append(Migration(int(match.group(1)), match.group(2), up, down))
    return sorted(found, key=lambda m: m.version)


def up(backend: Backend) -> list[Migration]:
    """Apply every migration not yet applied, each in its own transaction; return them."""
    applied = set(backend.applied_versions())
    todo = [m for m in migrations(backend.kind) if m.version not in applied]
    for migration in todo:
        backend.apply_migration(migration, up=True)
    return todo


def down(backend: Backend, steps: int = 1) -> list[Migration]:
    """Revert the last `steps` applied migrations, newest first; return them."""
    applied = set(backend.applied_versions())
    todo = [m for m in reversed(migrations(backend.kind)) if m.version in applied][:steps]
    for migration in todo:
        backend.apply_migration(migration, up=False)
    return todo


def status(backend: Backend) -> list[tuple[Migration, bool]]:
    """Every known migration and whether it is applied."""
    applied = set(backend.applied_versions())
    return [(m, m.version in applied) for m in migrations(backend.kind)]


def ensure_ready(backend: Backend) -> None:
    """Raise `SchemaNotReady` unless every migration this version knows is applied."""
    missing = [m for m, applied in status(backend) if not applied]
    if missing:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in missing)
        raise SchemaNotReady(
            f"{backend.description} is missing migrations {names}: run `swf-pool migrate up` "
            "(or pass migrate=True / --auto-migrate)"
        )


def _split(text: str) -> tuple[str, str]:
    _, _, rest = text.partition(_UP)
    up, _, down = rest.partition(_DOWN)
    return up.strip(), down.strip()
