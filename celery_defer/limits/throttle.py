"""``throttle``: at most ``limit`` run starts per ``period``; excess runs are delayed.

A run that must wait books its start time at its first check (GCRA with
reservation): waiters get distinct start times, one interval apart, in the order
they asked, so each is put back on the queue once, for exactly its own time,
and then starts without asking again (the caller carries the booking and calls
:meth:`Throttle.begin`). A newcomer does not start ahead of a booked run that is
still to begin, and runs that come late for their booking (a backlog in the
broker's queue) take the next starts the pace allows, so the pace holds.

Late runs reach the worker bunched, and a pool process may take a run a moment
after another one booked behind it: a run kept a start before the caller's that
has not begun by then is waited for (:meth:`Throttle.await_turn`), at most an
interval and :data:`TURN_PATIENCE_MS` after that run's kept start, so that a
lost run holds the others up only that long, once.
"""

from __future__ import annotations

import math
import time

from celery_defer.limits.backend import BeginResult, LimitBackend
from celery_defer.limits.base import Decision, Guard, require_positive, to_ms

#: How long after its turn (its kept start, and one interval) an unbegun run is waited for.
TURN_PATIENCE_MS = 250
#: How often a run waiting its turn asks again.
TURN_POLL_MS = 5


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

    def begin(self, key: str, *, holder: str) -> BeginResult:
        """A run booked by :meth:`check` begins: how long it waits first, to keep the pace."""
        return self.backend.throttle_begin(key, holder, self.limit, to_ms(self.period_s), self.burst)

    def await_turn(self, key: str, begun: BeginResult, *, holder: str) -> None:
        """After its wait, a run :meth:`begin` found behind an unbegun run waits for it, a while."""
        if begun.behind_ms is None:
            return
        # Patience counts from the kept start of the run waited for, and the run
        # just behind it asks one interval later.
        patience_ms = math.ceil(to_ms(self.period_s) / self.limit) + TURN_PATIENCE_MS
        while wait_ms := self.backend.throttle_turn(key, holder, begun.behind_ms, patience_ms, TURN_POLL_MS):
            time.sleep(wait_ms / 1000)

    def leave_turn(self, key: str, begun: BeginResult, *, holder: str) -> None:
        """A run :meth:`begin` kept in line goes back to the queue instead: nobody waits for it."""
        if begun.behind_ms is not None:
            self.backend.throttle_turn(key, holder, 0.0, 0, 0)  # before every start: its turn at once
