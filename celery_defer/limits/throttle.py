"""``throttle``: at most ``limit`` run starts per ``period``; excess runs are delayed.

A run that must wait books its start time at its first check (GCRA with
reservation): waiters get distinct start times, one interval apart, in the order
they asked, so each is put back on the queue once, for exactly its own time,
and then starts without asking again (the caller carries the booking and calls
:meth:`Throttle.begin`). A newcomer does not start ahead of a booked run that is
still to begin, and runs that come late for their booking (a backlog in the
broker's queue) take the next starts the pace allows, so the pace holds.
"""

from __future__ import annotations

from celery_defer.limits.backend import LimitBackend
from celery_defer.limits.base import Decision, Guard, require_positive, to_ms


class Throttle(Guard):
    """Space run starts ``period_s / limit`` apart (GCRA), allowing ``burst`` back to back.

    Args:
        backend: where the schedule lives.
        limit: starts per period.
        period_s: the period.
        burst: starts that may happen back to back before spacing applies.
    """

    kind = "throttle"

    def __init__(self, backend: LimitBackend, *, limit: int, period_s: float, burst: int = 1) -> None:
        super().__init__(backend)
        for name, value in (("limit", limit), ("period_s", period_s), ("burst", burst)):
            require_positive(name, value)
        self.limit = int(limit)
        self.period_s = float(period_s)
        self.burst = int(burst)

    def check(self, key: str, *, holder: str = "") -> Decision:
        """``proceed`` (the start is recorded) or ``wait`` until the start booked for this run."""
        wait_ms = self.backend.throttle_take(
            key, self.limit, to_ms(self.period_s), self.burst, reserve=True, holder=holder
        )
        if wait_ms == 0:
            return Decision.proceed()
        return Decision.wait(wait_ms / 1000, f"throttle {self.limit} per {self.period_s:g}s", reserved=True)

    def begin(self, key: str, *, holder: str) -> float:
        """A run booked by :meth:`check` begins: seconds to wait first, to keep the pace."""
        return self.backend.throttle_begin(key, holder, self.limit, to_ms(self.period_s), self.burst) / 1000
