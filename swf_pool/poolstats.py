"""What a pool did: counted as it works, printed as its exit summary."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class PoolStats:
    claimed: int = 0
    succeeded: int = 0
    retried: int = 0
    failed: int = 0
    discarded: int = 0  # outcomes not written: the run was cancelled or its lease lost
    released: int = 0
    timed_out: int = 0
    claims: int = 0
    empty_claims: int = 0  # claims that found nothing (idle polls, or another pool was faster)
    flushes: int = 0
    db_errors: int = 0
    started_at: float = field(default_factory=time.monotonic)

    def summary(self) -> str:
        elapsed = max(time.monotonic() - self.started_at, 1e-9)
        done = self.succeeded + self.retried + self.failed
        return (
            f"{done} attempts in {elapsed:.1f}s ({done / elapsed:.0f}/s): "
            f"{self.succeeded} succeeded, {self.retried} retried, {self.failed} failed, "
            f"{self.discarded} discarded, {self.released} released, {self.timed_out} timed out; "
            f"{self.claims} claims, {self.flushes} flushes"
        )
