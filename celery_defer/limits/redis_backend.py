"""The Redis backend of the flow-control guards: one Lua script call per operation.

Scripts live in ``celery_defer/lua/limits/`` and read the clock from Redis
(the prelude's ``redis_now_ms()``), so every host agrees on it; every key they
write gets a TTL.
"""

from __future__ import annotations

import uuid
from typing import cast

from celery_defer.keys import avg_key, cancel_key, seen_key, waiters_key
from celery_defer.limits.backend import (
    AVG_TTL_MS,
    DEBOUNCE_GRACE_MS,
    EWMA_ALPHA,
    DebounceResult,
    DebounceState,
    LeaseResult,
    LimitBackend,
    SingletonMode,
    SingletonResult,
)
from celery_defer.redis_io import Scripts, StoreClient

_SCRIPTS = (
    "concurrency_acquire",
    "concurrency_renew",
    "concurrency_release",
    "throttle_take",
    "rate_hit",
    "idempotency_claim",
    "idempotency_release",
    "singleton_acquire",
    "singleton_preempt",
    "singleton_renew",
    "singleton_release",
    "debounce_push",
    "debounce_take",
)


def _opt(value: float | None) -> str:
    return "" if value is None else repr(value)


class RedisLimitBackend(LimitBackend):
    """Flow-control state in Redis, shared by every worker that uses the same server.

    Args:
        client: a ``redis.Redis`` or ``RedisCluster`` client made with ``decode_responses=True``
            (as :func:`celery_defer.redis_io.connect` makes them).

    Raises:
        StoreUnavailableError: from every operation, when Redis fails.
    """

    def __init__(self, client: StoreClient) -> None:
        self._call = Scripts(client, "limits", _SCRIPTS)

    def lease_acquire(
        self, key: str, holder: str, limit: int, lease_ms: int, waiter_ttl_ms: int
    ) -> LeaseResult:
        keys = (key, waiters_key(key), seen_key(key), avg_key(key))
        args = (holder, limit, lease_ms, waiter_ttl_ms)
        acquired, rank, avg = self._call("concurrency_acquire", keys, args, doing="taking a concurrency slot")
        return LeaseResult(
            acquired=bool(acquired),
            position=int(rank),
            avg_run_ms=None if avg is None else float(avg),
        )

    def lease_renew(self, key: str, holder: str, lease_ms: int) -> bool:
        renewed = self._call("concurrency_renew", (key,), (holder, lease_ms), doing="renewing a slot")
        return bool(renewed)

    def lease_release(self, key: str, holder: str, run_ms: float | None) -> None:
        keys = (key, waiters_key(key), seen_key(key), avg_key(key))
        args = (holder, _opt(run_ms), EWMA_ALPHA, AVG_TTL_MS)
        self._call("concurrency_release", keys, args, doing="releasing a slot")

    def throttle_take(self, key: str, limit: int, period_ms: int, burst: int = 1) -> int:
        return int(
            self._call("throttle_take", (key,), (limit, period_ms, burst), doing="checking a throttle")
        )

    def rate_hit(self, key: str, limit: int, period_ms: int) -> bool:
        token = uuid.uuid4().hex
        return bool(self._call("rate_hit", (key,), (limit, period_ms, token), doing="checking a rate limit"))

    def claim_once(self, key: str, ttl_ms: int, holder: str | None = None) -> bool:
        args = (holder or "", ttl_ms)
        return bool(self._call("idempotency_claim", (key,), args, doing="claiming an idempotency key"))

    def claim_release(self, key: str, holder: str) -> None:
        self._call("idempotency_release", (key,), (holder,), doing="giving back an idempotency key")

    def singleton_acquire(self, key: str, holder: str, lease_ms: int, mode: SingletonMode) -> SingletonResult:
        args = (holder, lease_ms, mode)
        acquired, other = self._call("singleton_acquire", (key,), args, doing="taking a singleton lock")
        return SingletonResult(acquired=bool(acquired), previous_holder=other or None)

    def singleton_preempt(self, key: str, holder: str, lease_ms: int) -> SingletonResult:
        args = (holder, lease_ms)
        keys = (key, cancel_key(key))
        acquired, other, asked = self._call("singleton_preempt", keys, args, doing="taking a singleton lock")
        return SingletonResult(
            acquired=bool(acquired), previous_holder=other or None, newly_asked=bool(asked)
        )

    def singleton_renew(self, key: str, holder: str, lease_ms: int) -> bool:
        args = (holder, lease_ms)
        return bool(self._call("singleton_renew", (key,), args, doing="renewing a singleton lock"))

    def singleton_release(self, key: str, holder: str) -> None:
        self._call("singleton_release", (key,), (holder,), doing="releasing a singleton lock")

    def debounce_push(
        self, key: str, event_id: str, payload: str, period_ms: int, timeout_ms: int | None, order: int = 0
    ) -> int:
        args = (event_id, payload, period_ms, _opt(timeout_ms), DEBOUNCE_GRACE_MS, order)
        return int(self._call("debounce_push", (key,), args, doing="pushing a debounced event"))

    def debounce_take(
        self, key: str, event_id: str, period_ms: int, timeout_ms: int | None
    ) -> DebounceResult:
        args = (event_id, period_ms, _opt(timeout_ms))
        state, payload, wait_ms = self._call("debounce_take", (key,), args, doing="checking a debounce")
        return DebounceResult(state=cast(DebounceState, state), payload=payload or None, wait_ms=int(wait_ms))
