"""Prefetch tuning: how many runs a pool holds beyond its free workers.

Fixed when the user sets it. Otherwise it follows how long runs take: enough to keep the
workers busy through two claims at the rate runs finish, from one per worker (long runs stay in
the table, for other pools to take) to a batch more than the claims that may be in flight
(short runs come in big claims, several at once where the round trip is long).
"""

from __future__ import annotations

import math


class Prefetch:
    def __init__(self, processes: int, batch_size: int, fixed: int | None) -> None:
        self.processes = processes
        self.batch_size = batch_size
        self.adaptive = fixed is None
        self.value = processes if fixed is None else fixed
        self.claims_at_once = 1  # the most claims in flight (set when the pool starts)
        self.run_seconds: float | None = None  # moving averages
        self.claim_seconds: float | None = None

    def per_process(self) -> int:
        """How many tasks one worker process holds: the one it runs and its share of the rest."""
        return 1 + -(-self.value // self.processes)

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
        rate = self.processes / max(self.run_seconds, 1e-6)
        wanted = math.ceil(2 * self.claim_seconds * rate)
        self.value = max(self.processes, min(wanted, (1 + self.claims_at_once) * self.batch_size))


def _average(mean: float | None, value: float) -> float:
    """An exponential moving average (the last 10 or so values count)."""
    return value if mean is None else mean + 0.1 * (value - mean)
