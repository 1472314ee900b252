"""A running deferred run leaves room in the worker's prefetch budget, as an early-acked task does.

Deferred functions are ``acks_late`` whatever the app says: a worker that dies
before a run's claim must give its message back (nothing lost). Celery bounds
what a worker holds unacknowledged by ``worker_prefetch_multiplier`` x
concurrency, so a running deferred run would keep its place in that budget,
where a task of an app that acknowledges early gives its place back as a pool
process takes it. A worker busy with deferred runs would then hold nothing in
reserve and wait on the broker between runs (RabbitMQ: ~10 % of a 200 x 5
fan-out's wall time in ``bench/bench_parent.py``).

So, in a worker whose app acknowledges early (``task_acks_late`` off, Celery's
default), the consumer's budget is widened by one for each deferred run a pool
process runs, as Celery widens it for a task with an ETA. Narrowing waits
until no deferred run has been taken for :data:`SETTLE_S`: each change is a
``basic.qos`` round trip to RabbitMQ, and a steady stream of runs keeps the
budget where it is. The deferred run's own message is still acknowledged only
when the run ends.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any

from celery import Celery, bootsteps

logger = logging.getLogger(__name__)

#: Seconds without a deferred run taken before the budget narrows back.
SETTLE_S = 1.0


class Widening:
    """How far one consumer's prefetch budget (``kombu.common.QoS``) is widened for running runs."""

    def __init__(self, budget: Any) -> None:
        self.budget = budget
        self.running = 0
        self.widened = 0
        self.last_taken = 0.0
        self._lock = threading.Lock()

    def taken(self) -> None:
        """A pool process took a deferred run."""
        with self._lock:
            self.running += 1
            self.last_taken = time.monotonic()
            if self.running > self.widened:
                before = self.budget.value
                # Unlimited (0) stays unlimited; a cap (``worker_eta_task_limit``) is kept.
                self.widened += self.budget.increment_eventually(self.running - self.widened) - before

    def released(self) -> None:
        """A deferred run's message was acknowledged or rejected."""
        with self._lock:
            self.running = max(self.running - 1, 0)

    def settle(self) -> None:
        """Narrow the budget back once runs have stopped coming for a while."""
        with self._lock:
            excess = self.widened - self.running
            if excess > 0 and time.monotonic() - self.last_taken >= SETTLE_S:
                self.budget.decrement_eventually(excess)
                self.widened = self.running
                logger.debug(
                    "prefetch budget narrowed by %d: no deferred run taken for %.1f s", excess, SETTLE_S
                )


#: Each app's widening in this worker's main process, while its consumer runs.
_widenings: weakref.WeakKeyDictionary[Celery, Widening] = weakref.WeakKeyDictionary()


class PrefetchBudgetStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Lets deferred runs' requests widen the consumer's prefetch budget."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self._settling: Any = None

    def start(self, c: Any) -> None:
        # Started again, with a new budget, each time the consumer reconnects.
        if c.app.conf.task_acks_late or c.qos is None:
            return
        widening = _widenings[c.app] = Widening(c.qos)
        self._settling = c.timer.call_repeatedly(SETTLE_S / 2, widening.settle)

    def stop(self, c: Any) -> None:
        _widenings.pop(c.app, None)
        if self._settling is not None:
            self._settling.cancel()
            self._settling = None


def widening_of(app: Celery) -> Widening | None:
    """The widening of ``app``'s consumer in this process, if one runs and acknowledges early."""
    return _widenings.get(app)
