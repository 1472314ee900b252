"""``concurrency``: at most ``limit`` runs executing at once; the rest wait in FIFO order.

A run that brings a parcel (the message that starts it again) and finds no free
slot parks in the key's line and leaves the broker: nothing polls. The run that
frees a slot hands it, in the same atomic call, to the head of the line, and
:attr:`ConcurrencyGuard.send` publishes that run's message; the slot is held for
it meanwhile, so no newcomer takes it. Without a parcel a waiter polls (it
checks back after a delay that grows with its position).

Runs given slots a moment apart are delivered to different pool processes (or
workers) and race to their handlers: a run given a slot while a run given one
before it has not begun yet waits for it (:meth:`ConcurrencyGuard.await_turn`),
at most :data:`~celery_defer.limits.backend.HANDED_PATIENCE_MS` after that run
was given its slot, so that a lost run holds the others up only that long, once.
Its turn comes when that run took its slot, a moment before its handler starts:
a run that waited then waits :data:`TURN_SETTLE_MS` more. Runs that arrive in
order learn so from their slot's acquire: no extra call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from celery_defer.limits.backend import Handoff, LeaseResult, LimitBackend
from celery_defer.limits.base import Decision, Guard, require_positive, to_ms

logger = logging.getLogger(__name__)

#: Publishes the runs a call handed a slot to.
SendHandoffs = Callable[[Sequence[Handoff]], None]

#: Assumed run duration until the first run on a key has been released.
DEFAULT_RUN_S = 1.0
#: Shortest wait handed out, so waiters never spin.
MIN_WAIT_S = 0.05
#: How often a run waiting its turn to begin asks again (ms).
TURN_POLL_MS = 5
#: Once its turn came, how long a run that waited lets the run it waited for,
#: which has just taken its slot, go ahead to its handler (ms).
TURN_SETTLE_MS = 10


def compute_wait_delay_s(
    position: int,
    avg_run_s: float | None,
    *,
    limit: int,
    lease_s: float,
    default_run_s: float = DEFAULT_RUN_S,
) -> float:
    """Seconds a waiter should wait before it asks for a slot again.

    A waiter at ``position`` (0 = next) is expected to get a slot after
    ``position // limit + 1`` average runs. The result is clamped to
    ``[MIN_WAIT_S, lease_s]``: never spin, and always check back within a lease
    so the waiter stays live in the queue.
    """
    run_s = default_run_s if avg_run_s is None else avg_run_s
    delay = (position // limit + 1) * run_s
    return min(max(delay, MIN_WAIT_S), lease_s)


class ConcurrencyGuard(Guard):
    """At most ``limit`` holders at once, with fair FIFO waiting.

    Args:
        backend: where the slots live.
        limit: slots available across all workers.
        lease_s: a slot not renewed for this long is freed (a killed worker's slot).
        waiter_ttl_s: a waiter that has not asked again for this long loses its
            place; ``2 * lease_s`` by default (a waiter checks back within a lease).
        default_run_s: run duration assumed before any run was released.
        send: publishes parked runs handed a slot; without it they are logged
            and left to their slot's lease and the recovery pass.
    """

    kind = "concurrency"
    lease_s: float

    def __init__(
        self,
        backend: LimitBackend,
        *,
        limit: int,
        lease_s: float = 60.0,
        waiter_ttl_s: float | None = None,
        default_run_s: float = DEFAULT_RUN_S,
        send: SendHandoffs | None = None,
    ) -> None:
        super().__init__(backend)
        for name, value in (
            ("limit", limit),
            ("lease_s", lease_s),
            ("default_run_s", default_run_s),
        ):
            require_positive(name, value)
        self.limit = int(limit)
        self.lease_s = float(lease_s)
        self.waiter_ttl_s = 2 * self.lease_s if waiter_ttl_s is None else float(waiter_ttl_s)
        self.default_run_s = default_run_s
        self.send = send

    def check(self, key: str, *, holder: str, parcel: str | None = None) -> Decision:
        """Take a slot (``proceed``), park in the line (with a ``parcel``) or queue (``wait``)."""
        result = self.backend.lease_acquire(
            key, holder, self.limit, to_ms(self.lease_s), to_ms(self.waiter_ttl_s), parcel=parcel
        )
        self._send(result.handoffs)
        if result.acquired:
            return Decision.proceed(behind_ms=result.behind_ms)
        if result.parked:
            return Decision.park(f"concurrency limit {self.limit}", ahead=result.position)
        delay_s = self.wait_delay_s(result)
        logger.debug("%s waits %.3fs at position %d on %s", holder, delay_s, result.position, key)
        return Decision.wait(delay_s, f"concurrency limit {self.limit}, position {result.position}")

    def wait_delay_s(self, result: LeaseResult) -> float:
        """Seconds to wait after an ``acquired=False`` result (see :func:`compute_wait_delay_s`)."""
        avg_s = None if result.avg_run_ms is None else result.avg_run_ms / 1000
        return compute_wait_delay_s(
            result.position,
            avg_s,
            limit=self.limit,
            lease_s=self.lease_s,
            default_run_s=self.default_run_s,
        )

    def await_turn(self, key: str, behind_ms: float | None, *, holder: str) -> None:
        """A run :meth:`check` found behind an unbegun run (``behind_ms``) waits for it, a while."""
        if behind_ms is None:
            return
        waited = False
        while wait_ms := self.backend.lease_turn(key, holder, behind_ms, TURN_POLL_MS):
            waited = True
            time.sleep(wait_ms / 1000)
        if waited:
            time.sleep(TURN_SETTLE_MS / 1000)

    def renew(self, key: str, *, holder: str) -> bool:
        """Extend the holder's slot by a lease; False if it was lost."""
        return self.backend.lease_renew(key, holder, to_ms(self.lease_s))

    def release(self, key: str, *, holder: str, run_s: float | None = None) -> None:
        """Free the slot (or the place in the queue or line), handing it to the next parked run.

        ``run_s`` feeds the average run time.
        """
        run_ms = None if run_s is None else run_s * 1000
        lease_ms = to_ms(self.lease_s)
        self.backend.lease_release(key, holder, run_ms, limit=self.limit, lease_ms=lease_ms, then=self._send)

    def _send(self, handoffs: Sequence[Handoff]) -> None:
        if not handoffs:
            return
        if self.send is None:
            logger.warning("%d parked runs handed a slot but nothing sends them here", len(handoffs))
            return
        self.send(handoffs)
