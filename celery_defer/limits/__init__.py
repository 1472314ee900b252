"""Flow-control primitives: one guard per config key, global across workers.

Every guard is built from keyword-only options and a backend,
:class:`RedisLimitBackend` (production) or :class:`MemoryLimitBackend` (tests)::

    backend = RedisLimitBackend(redis.Redis.from_url(url))
    key = keyspace.limit(guard.kind, function_id, key_value)  # key_value hashed there

and answers ``guard.check(key, holder=run_id) -> Decision``, where
``decision.action`` is

- ``"proceed"``: start the run now;
- ``"wait"``: re-schedule the same run after ``decision.delay_s`` seconds (a
  requeue that does not spend the retry budget), then call ``check`` again
  with the same ``holder``; unless ``decision.reserved`` (a throttle booked
  its start: carry that, and call ``Throttle.begin`` instead of checking
  again) or ``decision.parked`` (a concurrency line holds the run: end the
  attempt without a requeue; a release sends it);
- ``"drop"``: never start it; log ``decision.reason`` and count it.

Order and re-checks. Check guards in a fixed order and stop at the first that
does not proceed; a suggested order is debounce, idempotency, rate_limit,
singleton, concurrency, throttle (throttle last, so a recorded start is a real
start). A guard that said ``proceed`` consumed something (a rate-limit hit, the
debounce state, a throttle start), so do not check it again for that run: carry
the kinds already passed with the re-scheduled run. The exception is guards that
hold something while the run executes (``guard.lease_s is not None``:
concurrency and singleton): when a later guard says ``wait`` or ``drop``,
``release`` them (a waiting run must not sit on a slot) and check them again
next time. After the run, release them with ``guard.release(key,
holder=run_id, run_s=duration)``. Backend calls raise ``StoreUnavailableError``
when Redis cannot be reached.

Per guard:

- ``ConcurrencyGuard(backend, limit=5, lease_s=60, send=...)``: ``check(key,
  holder=..., parcel=message)`` takes a slot or parks the run in the key's line
  (``decision.parked``); ``release`` hands the slot to the head of the line and
  calls ``send`` with its message; ``Lines`` (``celery_defer.limits.lines``)
  restarts lines whose head was lost. Without a parcel ``check`` queues the run
  (FIFO; the delay grows with its queue position and the average run time).
  After a ``proceed``, ``await_turn(key, decision.behind_ms, holder=...)``
  waits (briefly, bounded) for runs given a slot before this one that have not
  begun yet. While the run executes keep the slot alive::

      default_keeper().register(  # celery_defer.lease_keepertoken, lease_s=guard.lease_s,
                                renew=functools.partial(guard.renew, key, holder=run_id))

  then ``default_keeper().unregister(token)`` and ``guard.release(key,
  holder=run_id, run_s=elapsed)``. A waiter that gives up should also call
  ``release`` (it leaves the queue).
- ``Throttle(backend, limit=5, period_s=2, burst=1)``: ``check`` records the start
  (``proceed``) or books the run's start and says exactly how long to ``wait``
  (``decision.reserved``); when it comes back, ``begin`` says how long to wait
  first if it came late (0 on time). Nothing to release.
- ``RateLimit(backend, limit=10, period_s=60)``: ``proceed`` (counted) or
  ``drop``. Nothing to release.
- ``Idempotency(backend, ttl_s=86400)``: the first run id to check a key value
  proceeds (and keeps proceeding on its own retries); other runs are dropped.
- ``Singleton(backend, mode="skip" | "cancel", lease_s=60)``: ``proceed`` holds
  the lock (keep it alive with the keeper as above, release after the run); in
  mode ``skip`` a run that finds it held is dropped; in mode ``cancel`` the
  newcomer gets ``wait`` with ``decision.preempted`` naming the run id to revoke
  (once per holder), and proceeds once that run released the lock or its lease
  ran out: two holders never run at once. Check it last, so that nothing is
  cancelled for a newcomer that then waits on another guard.
- ``Debounce(backend, period_s=5, timeout_s=60)``: at defer time call
  ``delay_s = guard.push(key, event_id=run_id, payload=json_text)`` and schedule
  the run with that countdown; when it runs, ``check(key, holder=run_id)``
  gives ``proceed`` with ``decision.payload`` (the latest event's data, to run
  with instead of its own), ``wait`` (check back later) or ``drop``
  (superseded by a later event).
"""

from __future__ import annotations

from celery_defer.limits.backend import (
    DebounceResult,
    LeaseResult,
    LimitBackend,
    SingletonResult,
)
from celery_defer.limits.base import Decision, Guard
from celery_defer.limits.concurrency import ConcurrencyGuard, compute_wait_delay_s
from celery_defer.limits.debounce import Debounce
from celery_defer.limits.idempotency import Idempotency
from celery_defer.limits.memory_backend import MemoryLimitBackend
from celery_defer.limits.rate_limit import RateLimit
from celery_defer.limits.redis_backend import RedisLimitBackend
from celery_defer.limits.singleton import Singleton
from celery_defer.limits.throttle import Throttle

__all__ = [
    "ConcurrencyGuard",
    "Debounce",
    "DebounceResult",
    "Decision",
    "Guard",
    "Idempotency",
    "LeaseResult",
    "LimitBackend",
    "MemoryLimitBackend",
    "RateLimit",
    "RedisLimitBackend",
    "Singleton",
    "SingletonResult",
    "Throttle",
    "compute_wait_delay_s",
]
