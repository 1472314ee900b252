"""How a consumer's prefetch budget widens for running deferred runs and narrows back (prefetch.py)."""

from __future__ import annotations

import pytest
from kombu.common import QoS

from celery_defer.deferred import prefetch
from celery_defer.deferred.prefetch import SETTLE_S, Widening


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [100.0]
    monkeypatch.setattr(prefetch.time, "monotonic", lambda: now[0])
    return now


def budget(value: int, max_prefetch: int | None = None) -> QoS:
    return QoS(lambda prefetch_count: None, value, max_prefetch=max_prefetch)


def test_each_running_run_widens_the_budget_by_one(clock: list[float]) -> None:
    widening = Widening(qos := budget(2))
    widening.taken()
    widening.taken()
    assert qos.value == 4
    widening.released()
    widening.taken()  # a place freed by a run that ended is used again, not added
    assert qos.value == 4


def test_the_budget_narrows_only_once_runs_stop_coming(clock: list[float]) -> None:
    widening = Widening(qos := budget(2))
    widening.taken()
    widening.taken()
    widening.released()
    widening.released()
    widening.settle()
    assert qos.value == 4  # runs may still be coming: each change is a round trip on RabbitMQ
    clock[0] += SETTLE_S
    widening.settle()
    assert qos.value == 2


def test_narrowing_keeps_the_places_of_runs_still_running(clock: list[float]) -> None:
    widening = Widening(qos := budget(1))
    widening.taken()
    widening.taken()
    widening.released()
    clock[0] += SETTLE_S
    widening.settle()
    assert qos.value == 2


def test_a_capped_budget_stays_within_its_cap_and_narrows_back_to_where_it_was(clock: list[float]) -> None:
    widening = Widening(qos := budget(2, max_prefetch=3))
    for _ in range(3):
        widening.taken()
    assert qos.value == 3
    for _ in range(3):
        widening.released()
    clock[0] += SETTLE_S
    widening.settle()
    assert qos.value == 2


def test_an_unlimited_budget_stays_unlimited(clock: list[float]) -> None:
    widening = Widening(qos := budget(0))
    widening.taken()
    widening.released()
    clock[0] += SETTLE_S
    widening.settle()
    assert qos.value == 0
