"""The Redis backend of the flow-control guards: one Lua script call per operation.

Scripts live in ``celery_defer/lua/`` and read the clock with ``TIME``, so every
host agrees on it; every key they write gets a TTL.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from importlib import resources
from typing import Any, cast

import redis

from celery_defer.errors import StoreUnavailableError
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
    avg_key,
    seen_key,
    waiters_key,
)

_SCRIPTS = (
    "concurrency_acquire",
    "concurrency_renew",
    "concurrency_release",
    "throttle_take",
    "rate_hit",
    "idempotency_claim",
    "singleton_acquire",
    "singleton_renew",
    "singleton_release",
    "debounce_push",
    "debounce_take",
)


def _lua(name: str) -> str:
    return (resources.files("celery_defer") / "lua" / f"{name}.lua").read_text("utf-8")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _opt(value: float | None) -> str:
    return "" if value is None else repr(value)


class RedisLimitBackend(LimitBackend):
    """Flow-control state in Redis, shared by every worker that uses the same server.

    Args:
        client: a ``redis.Redis`` client (``decode_responses`` either way).
    """

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._scripts = {name: client.register_script(_lua(name)) for name in _SCRIPTS}

    def _call(self, name: str, keys: Sequence[str], args: Sequence[str | int | float]) -> Any:
        try:
            return self._scripts[name](keys=list(keys), args=list(args))
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailableError(f"redis unreachable in {name}: {exc}") from exc

    def lease_acquire(
        self, key: str, holder: str, limit: int, lease_ms: int, waiter_ttl_ms: int
    ) -> LeaseResult:
        keys = (key, waiters_key(key), seen_key(key), avg_key(key))
        acquired, rank, avg = self._call(
            "concurrency_acquire", keys, (holder, limit, lease_ms, waiter_ttl_ms)
        )
        avg_text = _text(avg)
        return LeaseResult(
            acquired=bool(acquired),
            position=int(rank),
            avg_run_ms=None if avg_text is None else float(avg_text),
        )

    def lease_renew(self, key: str, holder: str, lease_ms: int) -> bool:
        return bool(self._call("concurrency_renew", (key,), (holder, lease_ms)))

    def lease_release(self, key: str, holder: str, run_ms: float | None) -> None:
        keys = (key, waiters_key(key), seen_key(key), avg_key(key))
        self._call("concurrency_release", keys, (holder, _opt(run_ms), EWMA_ALPHA, AVG_TTL_MS))

    def throttle_take(self, key: str, limit: int, period_ms: int, burst: int = 1) -> int:
        return int(self._call("throttle_take", (key,), (limit, period_ms, burst)))

    def rate_hit(self, key: str, limit: int, period_ms: int) -> bool:
        token = uuid.uuid4().hex
        return bool(self._call("rate_hit", (key,), (limit, period_ms, token)))

    def claim_once(self, key: str, ttl_ms: int, holder: str | None = None) -> bool:
        return bool(self._call("idempotency_claim", (key,), (holder or "", ttl_ms)))

    def singleton_acquire(self, key: str, holder: str, lease_ms: int, mode: SingletonMode) -> SingletonResult:
        acquired, other = self._call("singleton_acquire", (key,), (holder, lease_ms, mode))
        return SingletonResult(acquired=bool(acquired), previous_holder=_text(other))

    def singleton_renew(self, key: str, holder: str, lease_ms: int) -> bool:
        return bool(self._call("singleton_renew", (key,), (holder, lease_ms)))

    def singleton_release(self, key: str, holder: str) -> None:
        self._call("singleton_release", (key,), (holder,))

    def debounce_push(
        self, key: str, event_id: str, payload: str, period_ms: int, timeout_ms: int | None, order: int = 0
    ) -> int:
        args = (event_id, payload, period_ms, _opt(timeout_ms), DEBOUNCE_GRACE_MS, order)
        return int(self._call("debounce_push", (key,), args))

    def debounce_take(
        self, key: str, event_id: str, period_ms: int, timeout_ms: int | None
    ) -> DebounceResult:
        state, payload, wait_ms = self._call("debounce_take", (key,), (event_id, period_ms, _opt(timeout_ms)))
        return DebounceResult(
            state=cast(DebounceState, _text(state)), payload=_text(payload), wait_ms=int(wait_ms)
        )
