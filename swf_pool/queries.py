"""Named SQL blocks, one file per backend (`queries/<backend>.sql`), parsed once at import."""

from __future__ import annotations

import re
from importlib import resources

_BLOCK = re.compile(r"^-- ([a-z_]+) --$", re.MULTILINE)


def load(backend: str) -> dict[str, str]:
    """Map each block name of `queries/<backend>.sql` to its SQL text."""
    text = resources.files(__package__).joinpath(f"queries/{backend}.sql").read_text()
    parts = _BLOCK.split(text)
    # parts: [preamble, name1, body1, name2, body2, ...]
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}
