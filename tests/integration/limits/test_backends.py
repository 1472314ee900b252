"""The limiter suite, run against every backend through the ``backend`` fixture."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

import pytest

from celery_defer.limits import LimitBackend, SingletonResult

pytestmark = pytest.mark.integration

Elapse = Callable[[float], None]
KEY = "t:limit:test"
#: Slack for Redis, where the test's own latency shortens the delays it sees.
TOLERANCE_MS = 60


def assert_delay(actual: int, expected: float, exact: bool) -> None:
    """A delay equals ``expected`` on a fake clock, or is a bit less on a real one."""
    if exact:
        assert actual == expected
    else:
        assert expected - TOLERANCE_MS <= actual <= expected


def acquire(backend: LimitBackend, holder: str, limit: int = 1, lease_ms: int = 5000) -> bool:
    return backend.lease_acquire(KEY, holder, limit, lease_ms, 5000).acquired


# -- concurrency ---------------------------------------------------------------------


def test_concurrency_limit_holds(backend: LimitBackend) -> None:
    assert acquire(backend, "a", limit=2)
    assert acquire(backend, "b", limit=2)
    c = backend.lease_acquire(KEY, "c", 2, 5000, 5000)
    d = backend.lease_acquire(KEY, "d", 2, 5000, 5000)
    assert (c.acquired, c.position) == (False, 0)
    assert (d.acquired, d.position) == (False, 1)

    backend.lease_release(KEY, "a", None)
    assert not acquire(backend, "d", limit=2)  # c is ahead and one slot is free
    assert acquire(backend, "c", limit=2)
    assert not acquire(backend, "d", limit=2)
    backend.lease_release(KEY, "b", None)
    assert acquire(backend, "d", limit=2)


def test_concurrency_same_holder_acquires_once(backend: LimitBackend) -> None:
    assert acquire(backend, "a")
    assert acquire(backend, "a")  # a redelivered run finds its own slot
    assert not acquire(backend, "b")


def test_concurrency_older_waiter_goes_before_newcomer(backend: LimitBackend, elapse: Elapse) -> None:
    assert acquire(backend, "a")
    assert not acquire(backend, "old")
    elapse(5)
    assert not acquire(backend, "young")
    elapse(5)
    assert not acquire(backend, "old")  # asking again keeps the first arrival
    backend.lease_release(KEY, "a", None)

    assert not acquire(backend, "newcomer")
    assert not acquire(backend, "young")
    assert acquire(backend, "old")
    backend.lease_release(KEY, "old", None)
    assert acquire(backend, "young")


def test_concurrency_expired_lease_frees_slot(backend: LimitBackend, elapse: Elapse) -> None:
    assert acquire(backend, "a", lease_ms=100)
    assert not acquire(backend, "b", lease_ms=100)
    elapse(150)
    assert acquire(backend, "b", lease_ms=100)
    assert not backend.lease_renew(KEY, "a", 100)


def test_concurrency_renew_keeps_slot(backend: LimitBackend, elapse: Elapse) -> None:
    assert acquire(backend, "a", lease_ms=200)
    elapse(120)
    assert backend.lease_renew(KEY, "a", 200)
    elapse(120)
    assert not acquire(backend, "b", lease_ms=200)
    assert backend.lease_renew(KEY, "a", 200)


def test_concurrency_gone_waiter_loses_its_place(backend: LimitBackend, elapse: Elapse) -> None:
    assert backend.lease_acquire(KEY, "a", 1, 5000, 100).acquired
    assert not backend.lease_acquire(KEY, "gone", 1, 5000, 100).acquired
    elapse(150)
    backend.lease_release(KEY, "a", None)
    assert backend.lease_acquire(KEY, "b", 1, 5000, 100).acquired


def test_concurrency_release_averages_run_time(backend: LimitBackend) -> None:
    assert backend.lease_acquire(KEY, "a", 1, 5000, 5000).avg_run_ms is None
    backend.lease_release(KEY, "a", 100.0)
    assert acquire(backend, "b")
    backend.lease_release(KEY, "b", 200.0)
    assert acquire(backend, "c")
    waiting = backend.lease_acquire(KEY, "d", 1, 5000, 5000)
    assert waiting.avg_run_ms == pytest.approx(130.0)  # 0.3 * 200 + 0.7 * 100


def test_concurrency_threads_never_exceed_limit(backend: LimitBackend) -> None:
    holding = 0
    most = 0
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for cycle in range(25):
                holder = f"w{n}-{cycle}"
                while not backend.lease_acquire(KEY, holder, 2, 10_000, 10_000).acquired:
                    time.sleep(0.001)
                nonlocal holding, most
                with lock:
                    holding += 1
                    most = max(most, holding)
                time.sleep(0.0005)
                with lock:
                    holding -= 1
                backend.lease_release(KEY, holder, 1.0)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(100)
    assert not errors
    assert most == 2


# -- throttle ------------------------------------------------------------------------


def test_throttle_delay_is_exact(backend: LimitBackend, elapse: Elapse, exact: bool) -> None:
    assert backend.throttle_take(KEY, 5, 2000) == 0
    delay = backend.throttle_take(KEY, 5, 2000)
    assert_delay(delay, 400, exact)
    assert backend.throttle_take(KEY, 5, 2000) > 0  # a refusal records nothing
    elapse(delay)
    assert backend.throttle_take(KEY, 5, 2000) == 0


def test_throttle_burst(backend: LimitBackend, elapse: Elapse, exact: bool) -> None:
    assert [backend.throttle_take(KEY, 5, 2000, 3) for _ in range(3)] == [0, 0, 0]
    delay = backend.throttle_take(KEY, 5, 2000, 3)
    assert_delay(delay, 400, exact)
    elapse(delay)
    assert backend.throttle_take(KEY, 5, 2000, 3) == 0
    assert backend.throttle_take(KEY, 5, 2000, 3) > 0


def test_throttle_spaces_retrying_callers(backend: LimitBackend, elapse: Elapse, exact: bool) -> None:
    interval = 400 if exact else 100
    limit, period = 5, 5 * interval
    next_try = [0.0] * (20 if exact else 8)
    starts: list[float] = []
    now = 0.0
    origin = time.monotonic()
    while len(starts) < len(next_try):
        caller = min(range(len(next_try)), key=next_try.__getitem__)
        elapse(max(0.0, next_try[caller] - now))
        now = max(now, next_try[caller]) if exact else (time.monotonic() - origin) * 1000
        delay = backend.throttle_take(KEY, limit, period)
        if delay == 0:
            starts.append(now)
            next_try[caller] = float("inf")
        else:
            next_try[caller] = now + delay
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    if exact:
        assert gaps == [interval] * (len(starts) - 1)
    else:
        assert min(gaps) >= interval - 10  # never faster than the spacing
        assert starts[-1] <= interval * len(gaps) * 3


# -- rate limit ----------------------------------------------------------------------


def test_rate_limit_counts_exactly_limit_per_window(backend: LimitBackend, elapse: Elapse) -> None:
    assert [backend.rate_hit(KEY, 3, 400) for _ in range(2)] == [True, True]
    elapse(200)
    assert [backend.rate_hit(KEY, 3, 400) for _ in range(2)] == [True, False]
    elapse(300)  # the first two left the window, the third has not
    assert [backend.rate_hit(KEY, 3, 400) for _ in range(3)] == [True, True, False]


# -- idempotency ---------------------------------------------------------------------


def test_claim_once(backend: LimitBackend, elapse: Elapse) -> None:
    assert backend.claim_once(KEY, 100)
    assert not backend.claim_once(KEY, 100)
    elapse(150)
    assert backend.claim_once(KEY, 100)


def test_claim_once_lets_the_same_holder_through(backend: LimitBackend) -> None:
    assert backend.claim_once(KEY, 5000, holder="run-1")
    assert backend.claim_once(KEY, 5000, holder="run-1")
    assert not backend.claim_once(KEY, 5000, holder="run-2")
    assert not backend.claim_once(KEY, 5000)


def test_claim_release_gives_the_key_back_only_for_its_holder(backend: LimitBackend) -> None:
    assert backend.claim_once(KEY, 5000, holder="run-1")
    backend.claim_release(KEY, "run-2")  # not the holder: nothing happens
    assert not backend.claim_once(KEY, 5000, holder="run-2")
    backend.claim_release(KEY, "run-1")
    assert backend.claim_once(KEY, 5000, holder="run-2")


# -- singleton -----------------------------------------------------------------------


def test_singleton_skip(backend: LimitBackend, elapse: Elapse) -> None:
    first = backend.singleton_acquire(KEY, "a", 100, "skip")
    assert (first.acquired, first.previous_holder) == (True, None)
    second = backend.singleton_acquire(KEY, "b", 100, "skip")
    assert (second.acquired, second.previous_holder) == (False, "a")
    assert backend.singleton_acquire(KEY, "a", 100, "skip").acquired
    backend.singleton_release(KEY, "b")  # not the holder: no effect
    assert not backend.singleton_acquire(KEY, "b", 100, "skip").acquired
    backend.singleton_release(KEY, "a")
    assert backend.singleton_acquire(KEY, "b", 100, "skip").acquired
    elapse(150)  # b's lease ran out
    assert backend.singleton_acquire(KEY, "c", 100, "skip").acquired


def test_singleton_cancel(backend: LimitBackend) -> None:
    assert backend.singleton_acquire(KEY, "a", 5000, "cancel").acquired
    taken = backend.singleton_acquire(KEY, "b", 5000, "cancel")
    assert (taken.acquired, taken.previous_holder) == (True, "a")
    assert not backend.singleton_renew(KEY, "a", 5000)
    backend.singleton_release(KEY, "a")  # the cancelled run ends: b keeps the lock
    assert backend.singleton_acquire(KEY, "c", 5000, "skip").previous_holder == "b"


def test_singleton_preempt_never_shares_the_lock(backend: LimitBackend) -> None:
    assert backend.singleton_preempt(KEY, "a", 5000) == SingletonResult(True, None)
    assert backend.singleton_preempt(KEY, "a", 5000).acquired  # its own lock, again
    assert backend.singleton_preempt(KEY, "b", 5000) == SingletonResult(False, "a", newly_asked=True)
    assert backend.singleton_preempt(KEY, "c", 5000) == SingletonResult(False, "a")  # asked once
    assert backend.singleton_renew(KEY, "a", 5000)  # "a" keeps it while it runs
    backend.singleton_release(KEY, "a")
    assert backend.singleton_preempt(KEY, "b", 5000) == SingletonResult(True, None)
    assert backend.singleton_preempt(KEY, "c", 5000) == SingletonResult(False, "b", newly_asked=True)


def test_singleton_renew_keeps_lock(backend: LimitBackend, elapse: Elapse) -> None:
    assert backend.singleton_acquire(KEY, "a", 200, "skip").acquired
    elapse(120)
    assert backend.singleton_renew(KEY, "a", 200)
    elapse(120)
    assert not backend.singleton_acquire(KEY, "b", 200, "skip").acquired


# -- debounce ------------------------------------------------------------------------


def test_debounce_superseded_wait_run(backend: LimitBackend, elapse: Elapse, exact: bool) -> None:
    assert backend.debounce_push(KEY, "e1", "p1", 200, None) == 200
    elapse(50)
    assert backend.debounce_push(KEY, "e2", "p2", 200, None) == 200
    assert backend.debounce_take(KEY, "e1", 200, None).state == "superseded"
    elapse(100)
    waiting = backend.debounce_take(KEY, "e2", 200, None)
    assert waiting.state == "wait"
    assert waiting.payload is None
    assert_delay(waiting.wait_ms, 100, exact)
    elapse(waiting.wait_ms)
    ran = backend.debounce_take(KEY, "e2", 200, None)
    assert (ran.state, ran.payload) == ("run", "p2")
    assert backend.debounce_take(KEY, "e2", 200, None).state == "superseded"


def test_debounce_timeout_caps_the_wait(backend: LimitBackend, elapse: Elapse, exact: bool) -> None:
    waits = []
    for n in range(5):  # a push every 100 ms, period 200, timeout 500
        if n:
            elapse(100)
        waits.append(backend.debounce_push(KEY, f"e{n}", f"p{n}", 200, 500))
    assert waits[:3] == [200, 200, 200]
    assert_delay(waits[3], 200, exact)  # min(200, 0 + 500 - 300)
    assert_delay(waits[4], 100, exact)  # min(200, 0 + 500 - 400)
    elapse(80)  # pushes keep coming, close to the cap
    last = backend.debounce_push(KEY, "e5", "p5", 200, 500)
    assert_delay(last, 20, exact)
    elapse(last)
    ran = backend.debounce_take(KEY, "e5", 200, 500)
    assert (ran.state, ran.payload) == ("run", "p5")
    assert backend.debounce_push(KEY, "e6", "p6", 200, 500) == 200  # a new burst
