"""Concurrency slots, polled waiters and parked lines of the in-process backend.

The twin of ``lua/limits/concurrency_*.lua``, on plain dicts: the caller
(:class:`~celery_defer.limits.MemoryLimitBackend`) holds its lock around every
call and passes its clock's ``now``.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass

from celery_defer.limits.backend import EWMA_ALPHA, Handoff, LeaseResult


@dataclass(slots=True)
class _Waiter:
    arrival_ms: float
    seq: int
    seen_ms: float


class MemoryLeases:
    """Slots (holder -> lease end), waiters and lines per concurrency key."""

    def __init__(self) -> None:
        self._seq = itertools.count()
        self.holders: dict[str, dict[str, float]] = {}
        self.waiters: dict[str, dict[str, _Waiter]] = {}
        self.avg: dict[str, float] = {}
        self.lines: dict[str, deque[str]] = {}
        self.parked: dict[str, dict[str, str]] = {}

    def _live_holders(self, key: str, now: float) -> dict[str, float]:
        holders = self.holders.setdefault(key, {})
        for name in [h for h, expiry in holders.items() if expiry <= now]:
            del holders[name]
        return holders

    def _fill(
        self, key: str, limit: int, lease_ms: int, now: float, me: str = ""
    ) -> tuple[bool, list[Handoff]]:
        # Free slots go to the head of the line; True when ``me`` was that head.
        holders, line, parked = (
            self.holders[key],
            self.lines.setdefault(key, deque()),
            self.parked.setdefault(key, {}),
        )
        sent: list[Handoff] = []
        while len(holders) < limit and line:
            head = line.popleft()
            if head == me:
                return True, sent
            if head in parked:
                holders[head] = now + lease_ms
                sent.append(Handoff(head, parked[head]))
        return False, sent

    def acquire(
        self,
        now: float,
        key: str,
        holder: str,
        limit: int,
        lease_ms: int,
        waiter_ttl_ms: int,
        parcel: str | None,
    ) -> LeaseResult:
        holders = self._live_holders(key, now)
        waiters = self.waiters.setdefault(key, {})
        for name in [w for w, s in waiters.items() if s.seen_ms <= now - waiter_ttl_ms]:
            del waiters[name]
        avg = self.avg.get(key)
        line, parked = self.lines.setdefault(key, deque()), self.parked.setdefault(key, {})

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

    def renew(self, now: float, key: str, holder: str, lease_ms: int) -> bool:
        holders = self.holders.get(key, {})
        if holders.get(holder, now) <= now:
            holders.pop(holder, None)
            return False
        holders[holder] = now + lease_ms
        return True

    def release(
        self, now: float, key: str, holder: str, run_ms: float | None, limit: int, lease_ms: int
    ) -> tuple[Handoff, ...]:
        self.holders.setdefault(key, {}).pop(holder, None)
        self.waiters.get(key, {}).pop(holder, None)
        if self.parked.setdefault(key, {}).pop(holder, None) is not None:
            self.lines.setdefault(key, deque()).remove(holder)
        if run_ms is not None:
            old = self.avg.get(key)
            self.avg[key] = run_ms if old is None else EWMA_ALPHA * run_ms + (1 - EWMA_ALPHA) * old
        if limit < 1:
            return ()
        self._live_holders(key, now)
        return tuple(self._fill(key, limit, lease_ms, now)[1])

    def restart(self, now: float, key: str, limit: int, lease_ms: int) -> tuple[int, tuple[Handoff, ...]]:
        holders = self._live_holders(key, now)
        line, parked = self.lines.setdefault(key, deque()), self.parked.setdefault(key, {})
        line.extendleft(run for run in parked if run not in line and run not in holders)
        sent = self._fill(key, limit, lease_ms, now)[1]
        return len(parked), tuple(sent)
