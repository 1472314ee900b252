"""The Redis backend of the flow-control guards: one Lua script call per operation.

Scripts live in ``celery_defer/lua/limits/`` and read the clock from Redis
(the prelude's ``redis_now_ms()``), so every host agrees on it; every key they
write gets a TTL.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import cast

from celery_defer.keys import (
    avg_key,
    began_key,
    booked_key,
    cancel_key,
    handed_key,
    kept_starts_key,
    line_key,
    parked_key,
    seen_key,
    waiters_key,
)
from celery_defer.limits.backend import (
    AVG_TTL_MS,
    BOOKING_GRACE_MS,
    DEBOUNCE_GRACE_MS,
    EWMA_ALPHA,
    HANDED_PATIENCE_MS,
    PARK_TTL_MS,
    BeginResult,
    DebounceResult,
    DebounceState,
    Handoff,
    LeaseResult,
    LimitBackend,
    SingletonMode,
    SingletonResult,
)
from celery_defer.redis_clients import StoreClient, reaching
from celery_defer.redis_io import Scripts

_SCRIPTS = (
    "concurrency_acquire",
    "concurrency_renew",
    "concurrency_release",
    "concurrency_restart",
    "concurrency_turn",
    "lines_note",
    "lines_forget",
    "throttle_take",
    "throttle_begin",
    "throttle_turn",
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


def _concurrency_keys(key: str) -> tuple[str, ...]:
    # One guard's keys only, all built beside its key (they share its hash tag).
    return (
        key,
        waiters_key(key),
        seen_key(key),
        avg_key(key),
        line_key(key),
        parked_key(key),
        handed_key(key),
    )


def _handoffs(flat: list[str]) -> tuple[Handoff, ...]:
    return tuple(Handoff(flat[i], flat[i + 1]) for i in range(0, len(flat) - 1, 2))


class RedisLimitBackend(LimitBackend):
    """Flow-control state in Redis, shared by every worker that uses the same server.

    Args:
        client: a ``redis.Redis`` or ``RedisCluster`` client made with ``decode_responses=True``
            (as :func:`celery_defer.redis_clients.connect` makes them).

    Raises:
        StoreUnavailableError: from every operation, when Redis fails.
    """

    def __init__(self, client: StoreClient) -> None:
        self._client = client
        self._call = Scripts(client, "limits", _SCRIPTS)

    def lease_acquire(
        self,
        key: str,
        holder: str,
        limit: int,
        lease_ms: int,
        waiter_ttl_ms: int,
        *,
        parcel: str | None = None,
    ) -> LeaseResult:
        args = (holder, limit, lease_ms, waiter_ttl_ms, parcel or "", PARK_TTL_MS, HANDED_PATIENCE_MS)
        reply = self._call(
            "concurrency_acquire", _concurrency_keys(key), args, doing="taking a concurrency slot"
        )
        acquired, rank, avg, parked, behind = reply[:5]
        return LeaseResult(
            acquired=bool(acquired),
            position=int(rank),
            avg_run_ms=None if avg is None else float(avg),
            parked=bool(parked),
            handoffs=_handoffs(reply[5:]),
            behind_ms=float(behind) if behind else None,
        )

    def lease_turn(self, key: str, holder: str, behind_ms: float, poll_ms: int) -> int:
        args = (holder, f"{behind_ms:.3f}", HANDED_PATIENCE_MS, poll_ms)
        return int(self._call("concurrency_turn", (handed_key(key),), args, doing="waiting for a turn"))

    def lease_renew(self, key: str, holder: str, lease_ms: int) -> bool:
        renewed = self._call("concurrency_renew", (key,), (holder, lease_ms), doing="renewing a slot")
        return bool(renewed)

    def lease_release(
        self,
        key: str,
        holder: str,
        run_ms: float | None,
        *,
        limit: int = 0,
        lease_ms: int = 0,
        then: Callable[[tuple[Handoff, ...]], None] | None = None,
    ) -> tuple[Handoff, ...]:
        args = (holder, _opt(run_ms), EWMA_ALPHA, AVG_TTL_MS, limit, lease_ms)
        keys = _concurrency_keys(key)
        if then is not None:
            # Possibly queued in a batch (a finish's round trip): the hand-offs
            # reach ``then`` once the reply is in.
            self._call(
                "concurrency_release",
                keys,
                args,
                doing="releasing a slot",
                then=lambda sent: then(_handoffs(sent)),
            )
            return ()
        return _handoffs(self._call("concurrency_release", keys, args, doing="releasing a slot"))

    def line_restart(self, key: str, limit: int, lease_ms: int) -> tuple[int, tuple[Handoff, ...]]:
        reply = self._call(
            "concurrency_restart",
            _concurrency_keys(key),
            (limit, lease_ms),
            doing="restarting a concurrency line",
        )
        return int(reply[0]), _handoffs(reply[1:])

    def lines_note(self, index_key: str, member: str) -> None:
        self._call("lines_note", (index_key,), (member, PARK_TTL_MS), doing="noting a concurrency line")

    def lines_noted(self, index_key: str) -> list[tuple[str, float]]:
        with reaching("reading the concurrency lines"):
            noted = self._client.zrange(index_key, 0, -1, withscores=True)
        return [(str(member), float(score)) for member, score in cast(list[tuple[str, float]], noted)]

    def lines_forget(self, index_key: str, member: str, noted_ms: float) -> None:
        args = (member, repr(noted_ms))
        self._call("lines_forget", (index_key,), args, doing="forgetting a concurrency line")

    def throttle_take(
        self,
        key: str,
        limit: int,
        period_ms: int,
        burst: int = 1,
        *,
        reserve: bool = False,
        holder: str = "",
    ) -> int:
        keys = (key, booked_key(key), began_key(key))
        args = (limit, period_ms, burst, "1" if reserve else "0", holder, BOOKING_GRACE_MS + period_ms)
        return int(self._call("throttle_take", keys, args, doing="checking a throttle"))

    def throttle_begin(
        self, key: str, holder: str, limit: int, period_ms: int, burst: int = 1
    ) -> BeginResult:
        keys = (booked_key(key), began_key(key), kept_starts_key(key))
        args = (limit, period_ms, burst, holder, BOOKING_GRACE_MS + period_ms)
        wait_ms, behind = self._call("throttle_begin", keys, args, doing="beginning a booked start")
        return BeginResult(int(wait_ms), float(behind) if behind else None)

    def throttle_turn(self, key: str, holder: str, start_ms: float, patience_ms: int, poll_ms: int) -> int:
        args = (holder, f"{start_ms:.3f}", patience_ms, poll_ms)
        return int(self._call("throttle_turn", (kept_starts_key(key),), args, doing="waiting for a turn"))

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
