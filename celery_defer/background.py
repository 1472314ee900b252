"""Work done off the caller's thread, tried again while Redis or the broker is away.

Two callers need it. The worker's main process reports revoked, terminated and
killed runs through signals; finalizing them means Redis and broker round trips,
which must never stall the loop that feeds the pool. And a run that finalizes
while Redis is away must keep its defers and keep trying, not give up at once.

A job is a callable that returns True when done and False (or raises) to be
tried again; it is tried right away, then after 0.5 s, 1 s, 2 s, ... (capped at
``MAX_DELAY_S``) until ``budget_s`` has passed, when ``on_give_up`` says so.
One daemon thread per process, only while there is work: it ends when the last
job is done, and the next job starts another. A forked child starts afresh.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

FIRST_DELAY_S = 0.5
MAX_DELAY_S = 8.0


@dataclass(order=True)
class _Job:
    due_s: float
    seq: int
    name: str = field(compare=False)
    attempt: Callable[[], bool] = field(compare=False)
    deadline_s: float = field(compare=False)
    on_give_up: Callable[[], None] | None = field(compare=False, default=None)
    delay_s: float = field(compare=False, default=FIRST_DELAY_S)


class Background:
    """A queue of jobs and the thread that runs them."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._cond = threading.Condition(threading.Lock())
        self._jobs: list[_Job] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._running = 0

    def submit(
        self,
        name: str,
        attempt: Callable[[], bool],
        *,
        budget_s: float,
        on_give_up: Callable[[], None] | None = None,
    ) -> None:
        """Run ``attempt`` in the background until it returns True or ``budget_s`` is spent."""
        if os.getpid() != self._pid:
            self._reset()  # a forked child: the parent's thread and lock are not ours
        now = time.monotonic()
        job = _Job(now, next(self._seq), name, attempt, now + budget_s, on_give_up)
        with self._cond:
            heapq.heappush(self._jobs, job)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="celery-defer-background", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def pending(self) -> int:
        """How many jobs of this process are queued or running (a forked child has none yet)."""
        if os.getpid() != self._pid:
            return 0  # the parent's jobs, copied by the fork: its thread runs them, not ours
        with self._cond:
            return len(self._jobs) + self._running

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no job is queued or running; True if that happened in time (tests, shutdown).

        Every job ends within its budget, done or given up: ``math.inf`` waits for that.
        """
        if not self.pending():
            return True
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._jobs or self._running:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._jobs and self._jobs[0].due_s > time.monotonic():
                    self._cond.wait(self._jobs[0].due_s - time.monotonic())
                if not self._jobs:
                    # No work left: end here (under the lock, so submit() sees
                    # this thread gone and starts another for the next job).
                    self._thread = None
                    self._cond.notify_all()
                    return
                job = heapq.heappop(self._jobs)
                self._running += 1
            try:
                self._run(job)
            finally:
                with self._cond:
                    self._running -= 1
                    self._cond.notify_all()

    def _run(self, job: _Job) -> None:
        try:
            done = job.attempt()
        except Exception:
            logger.warning("%s failed; will try again", job.name, exc_info=True)
            done = False
        if done:
            return
        now = time.monotonic()
        if now + job.delay_s > job.deadline_s:
            if job.on_give_up is not None:
                job.on_give_up()
            return
        job.due_s, job.seq = now + job.delay_s, next(self._seq)
        job.delay_s = min(job.delay_s * 2, MAX_DELAY_S)
        with self._cond:
            heapq.heappush(self._jobs, job)


_default = Background()


def background() -> Background:
    """The process-wide :class:`Background` (its thread starts with the first job)."""
    return _default
