"""Torture fixtures: where handlers record their side effects."""

from __future__ import annotations

from pathlib import Path

import pytest

from .apps import create_effects_table


@pytest.fixture
def effects(dsn: str, tmp_path: Path) -> str:
    """PostgreSQL: a table in the test's own database; SQLite: a file of its own."""
    target = f"sqlite:///{tmp_path}/effects.db" if dsn.startswith("sqlite") else dsn
    create_effects_table(target)
    return target
