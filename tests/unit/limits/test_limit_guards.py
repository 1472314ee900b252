"""Guards turn backend answers into decisions; pure logic on the memory backend."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from celery_defer.limits import (
    ConcurrencyGuard,
    Debounce,
    Decision,
    Idempotency,
    MemoryLimitBackend,
    RateLimit,
    Singleton,
    Throttle,
    compute_wait_delay_s,
)
from celery_defer.limits.backend import LeaseResult
from celery_defer.limits.base import to_ms

KEY = "t:limit:guard"


class Clock:
    def __init__(self) -> None:
        self.now_ms = 1_000_000.0

    def __call__(self) -> float:
        return self.now_ms


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def backend(clock: Clock) -> MemoryLimitBackend:
    return MemoryLimitBackend(clock)


@pytest.mark.parametrize(
    ("position", "avg_run_s", "limit", "expected"),
    [
        (0, None, 1, 1.0),  # no average yet: the default run time
        (0, 2.0, 1, 2.0),
        (3, 2.0, 1, 8.0),
        (3, 2.0, 2, 4.0),  # two slots drain the queue twice as fast
        (4, 2.0, 2, 6.0),
        (0, 0.001, 1, 0.05),  # never spin
        (100, 2.0, 1, 30.0),  # check back within a lease
    ],
)
def test_wait_delay(position: int, avg_run_s: float | None, limit: int, expected: float) -> None:
    assert compute_wait_delay_s(position, avg_run_s, limit=limit, lease_s=30.0) == expected


def test_to_ms() -> None:
    assert (to_ms(2), to_ms(0.0004), to_ms(0.25)) == (2000, 1, 250)


def test_concurrency_guard_waits_by_queue_position(backend: MemoryLimitBackend) -> None:
    guard = ConcurrencyGuard(backend, limit=1, lease_s=60)
    assert guard.check(KEY, holder="a") == Decision.proceed()
    first = guard.check(KEY, holder="b")
    assert (first.action, first.delay_s) == ("wait", 1.0)
    guard.release(KEY, holder="a", run_s=0.2)
    assert guard.check(KEY, holder="c").delay_s == pytest.approx(0.4)  # behind b
    assert guard.check(KEY, holder="b").action == "proceed"
    assert guard.renew(KEY, holder="b")
    assert not guard.renew(KEY, holder="a")
    assert guard.wait_delay_s(LeaseResult(False, 2, 500.0)) == pytest.approx(1.5)


def test_throttle_guard(backend: MemoryLimitBackend) -> None:
    guard = Throttle(backend, limit=5, period_s=2)
    assert guard.check(KEY).action == "proceed"
    waiting = guard.check(KEY)
    assert (waiting.action, waiting.delay_s) == ("wait", 0.4)


def test_rate_limit_guard(backend: MemoryLimitBackend) -> None:
    guard = RateLimit(backend, limit=1, period_s=60)
    assert guard.check(KEY).action == "proceed"
    assert guard.check(KEY).action == "drop"


def test_idempotency_guard(backend: MemoryLimitBackend) -> None:
    guard = Idempotency(backend)
    assert guard.check(KEY, holder="run-1").action == "proceed"
    assert guard.check(KEY, holder="run-1").action == "proceed"  # its own retry
    assert guard.check(KEY, holder="run-2").action == "drop"


def test_singleton_guard_skip_and_cancel(backend: MemoryLimitBackend) -> None:
    skip = Singleton(backend, mode="skip")
    cancel = Singleton(backend, mode="cancel")
    assert skip.check(KEY, holder="a") == Decision.proceed()
    dropped = skip.check(KEY, holder="b")
    assert dropped.action == "drop"
    assert "a" in dropped.reason
    # cancel: the newcomer names the holder to stop (once) and waits for it to end.
    asked = cancel.check(KEY, holder="c")
    assert (asked.action, asked.preempted) == ("wait", "a")
    again = cancel.check(KEY, holder="c")
    assert (again.action, again.preempted) == ("wait", None)
    assert skip.renew(KEY, holder="a")  # never two holders: "a" keeps it until it ends
    skip.release(KEY, holder="a")
    assert cancel.check(KEY, holder="c") == Decision.proceed()
    assert cancel.renew(KEY, holder="c")
    cancel.release(KEY, holder="c")
    assert skip.check(KEY, holder="d") == Decision.proceed()


def test_debounce_guard(backend: MemoryLimitBackend, clock: Clock) -> None:
    guard = Debounce(backend, period_s=5, timeout_s=60)
    assert guard.push(KEY, event_id="e1", payload='{"n": 1}') == 5.0
    clock.now_ms += 1000
    assert guard.push(KEY, event_id="e2", payload='{"n": 2}') == 5.0
    assert guard.check(KEY, holder="e1").action == "drop"
    assert guard.check(KEY, holder="e2") == Decision.wait(5.0, "debounce quiet period")
    clock.now_ms += 5000
    assert guard.check(KEY, holder="e2") == Decision.proceed(payload='{"n": 2}')


@pytest.mark.parametrize(
    "build",
    [
        lambda b: ConcurrencyGuard(b, limit=0),
        lambda b: ConcurrencyGuard(b, limit=1, lease_s=-1),
        lambda b: Throttle(b, limit=1, period_s=1, burst=0),
        lambda b: RateLimit(b, limit=True, period_s=1),
        lambda b: Singleton(b, mode="both"),  # type: ignore[arg-type]
        lambda b: Debounce(b, period_s=1, timeout_s=0),
        lambda b: Idempotency(b, ttl_s=0),
    ],
)
def test_bad_options_are_refused(
    backend: MemoryLimitBackend, build: Callable[[MemoryLimitBackend], object]
) -> None:
    with pytest.raises(ValueError):
        build(backend)
