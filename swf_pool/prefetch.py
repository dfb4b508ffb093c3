"""Prefetch tuning: how many runs a pool holds beyond those it can run at once.

What it can run at once, its `slots`, is processes x the runs each executes at once (one, or
`--concurrency` for a worker process with an event loop). The prefetch is fixed when the user
sets it. Otherwise it follows how long runs take: enough to keep the slots busy through two
claims at the rate runs finish, from one per slot (long runs stay in the table, for other
pools to take) to a batch more than the claims that may be in flight (short runs come in big
claims, several at once where the round trip is long).
"""

from __future__ import annotations

import math


class Prefetch:
    def __init__(
        self, processes: int, concurrency: int, batch_size: int, fixed: int | None
    ) -> None:
        self.processes = processes
        self.concurrency = concurrency  # runs one worker executes at once
        self.slots = processes * concurrency
        self.batch_size = batch_size
        self.adaptive = fixed is None
        self.value = self.slots if fixed is None else fixed
        self.claims_at_once = 1  # the most claims in flight (set when the pool starts)
        self.run_seconds: float | None = None  # moving averages
        self.claim_seconds: float | None = None

    def per_process(self) -> int:
        """How many tasks one worker process holds: those it runs and its share of the rest."""
        return self.concurrency + -(-self.value // self.processes)

    def ran(self, seconds: float) -> None:
        """A handler ran for `seconds`."""
        if self.adaptive:
            self.run_seconds = _average(self.run_seconds, seconds)

    def claimed(self, seconds: float) -> None:
        """A claim took `seconds`."""
        if not self.adaptive:
            return
        self.claim_seconds = _average(self.claim_seconds, seconds)
        if self.run_seconds is None:
            return
        rate = self.slots / max(self.run_seconds, 1e-6)
        wanted = math.ceil(2 * self.claim_seconds * rate)
        self.value = max(self.slots, min(wanted, (1 + self.claims_at_once) * self.batch_size))


def _average(mean: float | None, value: float) -> float:
    """An exponential moving average (the last 10 or so values count)."""
    return value if mean is None else mean + 0.1 * (value - mean)
