"""An in-process backend with the same semantics as the Redis one, for tests.

Thread-safe (one lock around each operation); the clock is injectable so tests
can move time by hand instead of sleeping.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from celery_defer.keys import began_key, cancel_key
from celery_defer.limits.backend import (
    BOOKING_GRACE_MS,
    BeginResult,
    DebounceResult,
    Handoff,
    LeaseResult,
    LimitBackend,
    SingletonMode,
    SingletonResult,
)
from celery_defer.limits.memory_leases import MemoryLeases

#: Below this many ms a wait is rounding noise, as in the Lua scripts.
_EPSILON_MS = 0.001


def wall_clock_ms() -> float:
    """Milliseconds since the epoch."""
    return time.time() * 1000.0


@dataclass(slots=True)
class _Debounced:
    event_id: str
    payload: str
    first_ms: float
    last_ms: float
    order: int = 0


class MemoryLimitBackend(LimitBackend):
    """Flow-control state in this process only.

    Args:
        clock_ms: returns the current time in ms; wall clock when omitted.
    """

    def __init__(self, clock_ms: Callable[[], float] = wall_clock_ms) -> None:
        self._clock_ms = clock_ms
        self._lock = threading.Lock()
        self._leases = MemoryLeases()
        self._values: dict[str, tuple[str, float]] = {}  # key -> (value, expiry ms)
        self._hits: dict[str, deque[float]] = {}
        self._debounce: dict[str, _Debounced] = {}
        self._index: dict[str, dict[str, float]] = {}
        self._booked: dict[str, dict[str, float]] = {}
        self._kept: dict[str, dict[str, float]] = {}

    def _get(self, key: str, now: float) -> str | None:
        entry = self._values.get(key)
        if entry is None or entry[1] <= now:
            self._values.pop(key, None)
            return None
        return entry[0]

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
        with self._lock:
            return self._leases.acquire(self._clock_ms(), key, holder, limit, lease_ms, waiter_ttl_ms, parcel)

    def lease_turn(self, key: str, holder: str, behind_ms: float, poll_ms: int) -> int:
        # One process: no turns kept here (lease_acquire never sets behind_ms).
        return 0

    def lease_renew(self, key: str, holder: str, lease_ms: int) -> bool:
        with self._lock:
            return self._leases.renew(self._clock_ms(), key, holder, lease_ms)

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
        with self._lock:
            handoffs = self._leases.release(self._clock_ms(), key, holder, run_ms, limit, lease_ms)
        if then is None:
            return handoffs
        then(handoffs)
        return ()

    def line_restart(self, key: str, limit: int, lease_ms: int) -> tuple[int, tuple[Handoff, ...]]:
        with self._lock:
            return self._leases.restart(self._clock_ms(), key, limit, lease_ms)

    def lines_note(self, index_key: str, member: str) -> None:
        with self._lock:
            self._index.setdefault(index_key, {})[member] = float(math.floor(self._clock_ms()))

    def lines_noted(self, index_key: str) -> list[tuple[str, float]]:
        with self._lock:
            return sorted(self._index.get(index_key, {}).items(), key=lambda item: item[1])

    def lines_forget(self, index_key: str, member: str, noted_ms: float) -> None:
        with self._lock:
            index = self._index.get(index_key, {})
            if index.get(member) == noted_ms:
                del index[member]

    def _gcra(self, key: str, interval: float, burst: int, now: float) -> tuple[float, float]:
        tat = max(float(self._get(key, now) or 0.0), now)
        return tat + interval, tat + interval - burst * interval - now

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
        with self._lock:
            now = self._clock_ms()
            interval = period_ms / limit
            new_tat, wait = self._gcra(key, interval, burst, now)
            if not reserve:
                if wait > _EPSILON_MS:
                    return math.ceil(wait - _EPSILON_MS)
                self._values[key] = (repr(new_tat), new_tat)
                return 0
            booked = self._booked.setdefault(key, {})
            for run in [r for r, at in booked.items() if at < now - BOOKING_GRACE_MS - period_ms]:
                del booked[run]
            began_tat, began_wait = self._gcra(began_key(key), interval, burst, now)
            self._values[key] = (repr(new_tat), new_tat)
            if wait <= _EPSILON_MS and began_wait <= _EPSILON_MS and not booked:
                self._values[began_key(key)] = (repr(began_tat), began_tat)
                return 0
            wait_ms = max(math.ceil(wait - _EPSILON_MS), 1)
            booked[holder] = now + wait_ms
            return wait_ms

    def throttle_begin(
        self, key: str, holder: str, limit: int, period_ms: int, burst: int = 1
    ) -> BeginResult:
        with self._lock:
            now = self._clock_ms()
            interval = period_ms / limit
            booked, kept = self._booked.setdefault(key, {}), self._kept.setdefault(key, {})

            def behind(start: float) -> float | None:
                if not any(at < start - _EPSILON_MS for at in kept.values()):
                    return None
                kept[holder] = start  # kept until its turn comes: runs behind it wait too
                return start

            if holder in kept:
                booked.pop(holder, None)
                start = kept.pop(holder)
                return BeginResult(max(0, math.ceil(start - now - _EPSILON_MS)), behind(start))
            tat = max(float(self._get(began_key(key), now) or 0.0), now)
            mine = booked.pop(holder, None)
            if mine is not None:
                for before in sorted((r for r, at in booked.items() if at < mine), key=booked.__getitem__):
                    tat += interval
                    kept[before] = tat - burst * interval
                    del booked[before]
            self._values[began_key(key)] = (repr(tat + interval), tat + interval)
            start = tat + interval - burst * interval
            if start - now > _EPSILON_MS:
                return BeginResult(math.ceil(start - now - _EPSILON_MS), behind(start))
            return BeginResult(0, behind(now))

    def throttle_turn(self, key: str, holder: str, start_ms: float, patience_ms: int, poll_ms: int) -> int:
        with self._lock:
            now = self._clock_ms()
            kept = self._kept.setdefault(key, {})
            before = {run: at for run, at in kept.items() if at < start_ms - _EPSILON_MS}
            for run in [run for run, at in before.items() if at + patience_ms <= now]:
                del kept[run]  # given up: no later run asks about it
            until = max(before.values(), default=-math.inf) + patience_ms
            if until <= now:
                kept.pop(holder, None)
                return 0
            return max(1, min(poll_ms, math.ceil(until - now)))

    def rate_hit(self, key: str, limit: int, period_ms: int) -> bool:
        with self._lock:
            now = self._clock_ms()
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= now - period_ms:
                hits.popleft()
            if len(hits) >= limit:
                return False
            hits.append(now)
            return True

    def claim_once(self, key: str, ttl_ms: int, holder: str | None = None) -> bool:
        with self._lock:
            now = self._clock_ms()
            current = self._get(key, now)
            if current is None:
                self._values[key] = (holder or "", now + ttl_ms)
                return True
            return bool(holder) and current == holder

    def claim_release(self, key: str, holder: str) -> None:
        with self._lock:
            if holder and self._get(key, self._clock_ms()) == holder:
                del self._values[key]

    def singleton_acquire(self, key: str, holder: str, lease_ms: int, mode: SingletonMode) -> SingletonResult:
        with self._lock:
            now = self._clock_ms()
            other = self._get(key, now)
            if other == holder:
                other = None
            if other is not None and mode == "skip":
                return SingletonResult(acquired=False, previous_holder=other)
            self._values[key] = (holder, now + lease_ms)
            return SingletonResult(acquired=True, previous_holder=other)

    def singleton_preempt(self, key: str, holder: str, lease_ms: int) -> SingletonResult:
        with self._lock:
            now = self._clock_ms()
            other = self._get(key, now)
            if other is None or other == holder:
                self._values[key] = (holder, now + lease_ms)
                return SingletonResult(acquired=True, previous_holder=None)
            marker = cancel_key(key)
            if self._get(marker, now) == other:
                return SingletonResult(acquired=False, previous_holder=other)
            self._values[marker] = (other, now + lease_ms)
            return SingletonResult(acquired=False, previous_holder=other, newly_asked=True)

    def singleton_renew(self, key: str, holder: str, lease_ms: int) -> bool:
        with self._lock:
            now = self._clock_ms()
            if self._get(key, now) != holder:
                return False
            self._values[key] = (holder, now + lease_ms)
            return True

    def singleton_release(self, key: str, holder: str) -> None:
        with self._lock:
            if self._get(key, self._clock_ms()) == holder:
                del self._values[key]

    def debounce_push(
        self, key: str, event_id: str, payload: str, period_ms: int, timeout_ms: int | None, order: int = 0
    ) -> int:
        with self._lock:
            now = self._clock_ms()
            previous = self._debounce.get(key)
            if previous is not None and order < previous.order:
                return 0
            first = now if previous is None else previous.first_ms
            self._debounce[key] = _Debounced(event_id, payload, first, now, order)
            wait = float(period_ms)
            if timeout_ms is not None:
                wait = min(wait, first + timeout_ms - now)
            return math.ceil(max(wait, 0.0))

    def debounce_take(
        self, key: str, event_id: str, period_ms: int, timeout_ms: int | None
    ) -> DebounceResult:
        with self._lock:
            now = self._clock_ms()
            state = self._debounce.get(key)
            if state is None or state.event_id != event_id:
                return DebounceResult(state="superseded", payload=None, wait_ms=0)
            due = state.last_ms + period_ms
            if timeout_ms is not None:
                due = min(due, state.first_ms + timeout_ms)
            if due - now > _EPSILON_MS:
                wait_ms = math.ceil(due - now - _EPSILON_MS)
                return DebounceResult(state="wait", payload=None, wait_ms=wait_ms)
            del self._debounce[key]
            return DebounceResult(state="run", payload=state.payload, wait_ms=0)
