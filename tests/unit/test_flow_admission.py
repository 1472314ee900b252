"""Admission through a function's guards, on the in-memory backend (pure logic)."""

from __future__ import annotations

import pytest

from celery_defer.config.options import validate_config
from celery_defer.deferred.admission import FlowControl
from celery_defer.deferred.context import DeferEvent
from celery_defer.errors import StoreUnavailableError
from celery_defer.keys import KeySpace
from celery_defer.limits import MemoryLimitBackend

KEYS = KeySpace("test")


def flow(config: dict, backend: MemoryLimitBackend, fn_id: str = "f") -> FlowControl:
    options = validate_config({"id": fn_id, **config})
    return FlowControl(fn_id, options.flow, backend, lease_s=60)


def event(**data: object) -> DeferEvent[dict]:
    return DeferEvent("defer/f", dict(data), "e", 0)


class ThrottleDown(MemoryLimitBackend):
    """A backend whose throttle cannot be reached."""

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
        raise StoreUnavailableError("redis unreachable in throttle_take")


def test_a_guard_that_cannot_reach_redis_raises_and_nothing_stays_held():
    backend = ThrottleDown()
    guarded = flow({"concurrency": 1, "throttle": {"limit": 5, "period": "1s"}}, backend)
    with pytest.raises(StoreUnavailableError):
        guarded.admit(KEYS, event(), "run-1", [], {})
    # The slot run-1 took before the throttle failed was given back.
    only_concurrency = flow({"concurrency": 1}, backend)
    assert only_concurrency.admit(KEYS, event(), "run-2", [], {}).action == "proceed"


def test_a_wait_releases_what_was_held_and_remembers_what_was_consumed():
    backend = MemoryLimitBackend()
    guarded = flow(
        {
            "rate_limit": {"limit": 10, "period": "1m"},
            "concurrency": 1,
            "throttle": {"limit": 1, "period": "1h"},
        },
        backend,
    )
    first = guarded.admit(KEYS, event(), "run-1", [], {})
    assert first.action == "proceed"
    second = guarded.admit(KEYS, event(), "run-2", [], {})
    assert (second.action, second.kind) == ("wait", "concurrency")
    guarded.release(first.held, "run-1", 0.1)
    third = guarded.admit(KEYS, event(), "run-2", second.passed, {})
    assert (third.action, third.kind) == ("wait", "throttle")  # 1 start per hour
    assert third.held == []  # the slot is not kept while it waits
    assert "rate_limit" in third.passed  # the hit is not counted twice


def test_keys_separate_limits_and_app_scope_shares_them():
    backend = MemoryLimitBackend()
    per_user = flow({"concurrency": {"limit": 1, "key": "event.data.user"}}, backend)
    assert per_user.admit(KEYS, event(user="a"), "r1", [], {}).action == "proceed"
    assert per_user.admit(KEYS, event(user="b"), "r2", [], {}).action == "proceed"
    assert per_user.admit(KEYS, event(user="a"), "r3", [], {}).action == "wait"

    shared_a = flow({"concurrency": {"limit": 1, "scope": "app"}}, backend, "a")
    shared_b = flow({"concurrency": {"limit": 1, "scope": "app"}}, backend, "b")
    assert shared_a.admit(KEYS, event(), "s1", [], {}).action == "proceed"
    assert shared_b.admit(KEYS, event(), "s2", [], {}).action == "wait"


def test_drops_say_which_guard_and_why():
    backend = MemoryLimitBackend()
    once = flow({"idempotency": "event.data.order"}, backend)
    assert once.admit(KEYS, event(order=1), "r1", [], {}).action == "proceed"
    dropped = once.admit(KEYS, event(order=1), "r2", [], {})
    assert (dropped.action, dropped.kind) == ("drop", "idempotency")
    assert dropped.reason.startswith("idempotency")


def test_a_run_dropped_by_a_later_guard_gives_its_idempotency_key_back():
    backend = MemoryLimitBackend()
    guarded = flow({"idempotency": "event.data.order", "rate_limit": {"limit": 1, "period": "1h"}}, backend)
    assert guarded.admit(KEYS, event(order=1), "r1", [], {}).action == "proceed"
    dropped = guarded.admit(KEYS, event(order=2), "r2", [], {})
    assert (dropped.action, dropped.kind) == ("drop", "rate_limit")
    # order 2 never ran: a later legitimate run of it is not a duplicate.
    only_idempotency = flow({"idempotency": "event.data.order"}, backend)
    assert only_idempotency.admit(KEYS, event(order=2), "r3", [], {}).action == "proceed"
    assert only_idempotency.admit(KEYS, event(order=1), "r4", [], {}).action == "drop"


def test_a_run_abandoned_before_it_starts_gives_its_idempotency_key_back():
    backend = MemoryLimitBackend()
    guarded = flow({"idempotency": "event.data.order", "concurrency": 1}, backend)
    assert guarded.admit(KEYS, event(order=1), "r1", [], {}).action == "proceed"
    waiting = guarded.admit(KEYS, event(order=2), "r2", [], {})
    assert waiting.action == "wait"
    guarded.abandon(KEYS, event(order=2), "r2")  # e.g. its timeouts.start ran out
    later = guarded.admit(KEYS, event(order=2), "r3", [], {})
    assert (later.action, later.kind) == ("wait", "concurrency")  # not dropped as a duplicate


def test_singleton_cancel_cancels_only_once_every_other_guard_proceeds_and_never_shares_the_lock():
    backend = MemoryLimitBackend()
    guarded = flow(
        {
            "singleton": {"key": "event.data.k", "mode": "cancel"},
            "concurrency": {"limit": 1, "key": "event.data.slot"},
        },
        backend,
    )
    old = guarded.admit(KEYS, event(k=1, slot="a"), "old", [], {})
    assert (old.action, old.preempted) == ("proceed", None)
    other = guarded.admit(KEYS, event(k=2, slot="b"), "other", [], {})
    assert other.action == "proceed"
    # The newcomer waits for slot b: it must neither cancel "old" nor free its lock.
    waiting = guarded.admit(KEYS, event(k=1, slot="b"), "new", [], {})
    assert (waiting.action, waiting.kind, waiting.preempted) == ("wait", "concurrency", None)
    lock = next(key for guard, key in old.held if guard.kind == "singleton")
    assert backend.singleton_renew(lock, "old", 60_000)  # "old" still holds its lock
    guarded.release(other.held, "other", 0.1)
    # Every other guard proceeds now: "old" is named to cancel, once, and the
    # newcomer waits for it to end, holding nothing.
    cancelling = guarded.admit(KEYS, event(k=1, slot="b"), "new", waiting.passed, {})
    assert (cancelling.action, cancelling.kind, cancelling.preempted) == ("wait", "singleton", "old")
    assert cancelling.held == []
    still = guarded.admit(KEYS, event(k=1, slot="b"), "new", cancelling.passed, {})
    assert (still.action, still.preempted) == ("wait", None)
    assert backend.singleton_renew(lock, "old", 60_000)  # the lock is never shared
    guarded.release(old.held, "old", 0.1)  # the cancelled run ends
    started = guarded.admit(KEYS, event(k=1, slot="b"), "new", still.passed, {})
    assert (started.action, started.preempted) == ("proceed", None)
    assert not backend.singleton_renew(lock, "old", 60_000)
