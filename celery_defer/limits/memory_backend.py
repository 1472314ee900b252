"""An in-process backend with the same semantics as the Redis one, for tests.

Thread-safe (one lock around each operation); the clock is injectable so tests
can move time by hand instead of sleeping.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from celery_defer.keys import began_key, cancel_key
from celery_defer.limits.backend import (
    BOOKING_GRACE_MS,
    EWMA_ALPHA,
    DebounceResult,
    Handoff,
    LeaseResult,
    LimitBackend,
    SingletonMode,
    SingletonResult,
)

#: Below this many ms a wait is rounding noise, as in the Lua scripts.
_EPSILON_MS = 0.001


def wall_clock_ms() -> float:
    """Milliseconds since the epoch."""
    return time.time() * 1000.0


@dataclass(slots=True)
class _Waiter:
    arrival_ms: float
    seq: int
    seen_ms: float


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
        self._seq = itertools.count()
        self._holders: dict[str, dict[str, float]] = {}
        self._waiters: dict[str, dict[str, _Waiter]] = {}
        self._avg: dict[str, float] = {}
        self._values: dict[str, tuple[str, float]] = {}  # key -> (value, expiry ms)
        self._hits: dict[str, deque[float]] = {}
        self._debounce: dict[str, _Debounced] = {}
        self._lines: dict[str, deque[str]] = {}
        self._parked: dict[str, dict[str, str]] = {}
        self._index: dict[str, dict[str, float]] = {}
        self._booked: dict[str, dict[str, float]] = {}

    def _get(self, key: str, now: float) -> str | None:
        entry = self._values.get(key)
        if entry is None or entry[1] <= now:
            self._values.pop(key, None)
            return None
        return entry[0]

    def _fill(
        self, key: str, limit: int, lease_ms: int, now: float, me: str = ""
    ) -> tuple[bool, list[Handoff]]:
        # Free slots go to the head of the line; True when ``me`` was that head.
        holders, line, parked = self._holders[key], self._lines.setdefault(key, deque()), self._parked_of(key)
        sent: list[Handoff] = []
        while len(holders) < limit and line:
            head = line.popleft()
            if head == me:
                return True, sent
            if head in parked:
                holders[head] = now + lease_ms
                sent.append(Handoff(head, parked[head]))
        return False, sent

    def _parked_of(self, key: str) -> dict[str, str]:
        return self._parked.setdefault(key, {})

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
            now = self._clock_ms()
            holders = self._holders.setdefault(key, {})
            for name in [h for h, expiry in holders.items() if expiry <= now]:
                del holders[name]
            waiters = self._waiters.setdefault(key, {})
            for name in [w for w, s in waiters.items() if s.seen_ms <= now - waiter_ttl_ms]:
                del waiters[name]
            avg = self._avg.get(key)
            line, parked = self._lines.setdefault(key, deque()), self._parked_of(key)

            def hold(sent: list[Handoff]) -> LeaseResult:
                holders[holder] = now + lease_ms
                waiters.pop(holder, None)
                parked.pop(holder, None)
                return LeaseResult(acquired=True, position=0, avg_run_ms=avg, handoffs=tuple(sent))

            if holder in holders:
                return hold([])
            if holder in parked and holder not in line:
                line.appendleft(holder)  # its hand-over was lost: first in line again
            mine, sent = self._fill(key, limit, lease_ms, now, holder)
            if mine or (parcel is not None and len(holders) < limit and not line):
                return hold(sent)
            if parcel is not None:
                if holder not in parked:
                    line.append(holder)
                parked[holder] = parcel
                return LeaseResult(False, line.index(holder), avg, parked=True, handoffs=tuple(sent))
            queue = sorted(waiters, key=lambda w: (waiters[w].arrival_ms, waiters[w].seq))
            rank = queue.index(holder) if holder in waiters else len(queue)
            if rank < limit - len(holders):
                return hold(sent)
            if holder in waiters:
                waiters[holder].seen_ms = now
            else:
                waiters[holder] = _Waiter(now, next(self._seq), now)
            return LeaseResult(acquired=False, position=rank, avg_run_ms=avg, handoffs=tuple(sent))

    def lease_renew(self, key: str, holder: str, lease_ms: int) -> bool:
        with self._lock:
            now = self._clock_ms()
            holders = self._holders.get(key, {})
            if holders.get(holder, now) <= now:
                holders.pop(holder, None)
                return False
            holders[holder] = now + lease_ms
            return True

    def lease_release(
        self, key: str, holder: str, run_ms: float | None, *, limit: int = 0, lease_ms: int = 0
    ) -> tuple[Handoff, ...]:
        with self._lock:
            now = self._clock_ms()
            holders = self._holders.setdefault(key, {})
            holders.pop(holder, None)
            self._waiters.get(key, {}).pop(holder, None)
            if self._parked_of(key).pop(holder, None) is not None:
                self._lines.setdefault(key, deque()).remove(holder)
            if run_ms is not None:
                old = self._avg.get(key)
                new = run_ms if old is None else EWMA_ALPHA * run_ms + (1 - EWMA_ALPHA) * old
                self._avg[key] = new
            if limit < 1:
                return ()
            for name in [h for h, expiry in holders.items() if expiry <= now]:
                del holders[name]
            return tuple(self._fill(key, limit, lease_ms, now)[1])

    def line_restart(self, key: str, limit: int, lease_ms: int) -> tuple[int, tuple[Handoff, ...]]:
        with self._lock:
            now = self._clock_ms()
            holders = self._holders.setdefault(key, {})
            for name in [h for h, expiry in holders.items() if expiry <= now]:
                del holders[name]
            line, parked = self._lines.setdefault(key, deque()), self._parked_of(key)
            lost = [run for run in parked if run not in line and run not in holders]
            line.extendleft(lost)
            sent = self._fill(key, limit, lease_ms, now)[1]
            return len(parked), tuple(sent)

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

    def throttle_begin(self, key: str, holder: str, limit: int, period_ms: int, burst: int = 1) -> int:
        with self._lock:
            now = self._clock_ms()
            self._booked.get(key, {}).pop(holder, None)
            new_tat, wait = self._gcra(began_key(key), period_ms / limit, burst, now)
            self._values[began_key(key)] = (repr(new_tat), new_tat)
            return math.ceil(wait - _EPSILON_MS) if wait > _EPSILON_MS else 0

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
