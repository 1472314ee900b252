"""The example's verdict is not vacuous: ``check`` flags missing, extra and duplicate runs
and runs beyond a concurrency limit."""

from __future__ import annotations

from collections import Counter

import pytest

from example_project.check import Summary, check, count_skips, peak_in_window, percentile
from example_project.functions import FLOW_LIMITS
from example_project.plan import (
    AUDIT_LOG,
    DATA_TYPES,
    SCORE_ORDER,
    SEND_EMAIL,
    FlowLimits,
    expectations,
    order_plan,
)
from example_project.results import Attempt, Observed, ParentEnd

ORDERS = 12


def _parent_id(order_id: int) -> str:
    return f"00000000-0000-4000-8000-{order_id:012d}"


ORDERS_BY_PARENT = {_parent_id(order_id): order_id for order_id in range(1, ORDERS + 1)}


def _perfect_run() -> tuple[Observed, dict[str, str], Counter[str]]:
    expected = expectations(ORDERS)
    attempts: list[Attempt] = []
    for order_id, fn in sorted(expected.pairs):
        retries = order_plan(order_id).expected_retries()[fn]
        for number in range(retries + 1):
            saw = {"type": DATA_TYPES[fn]}
            start_ms = 1_100 + 50 * order_id  # send-email: 20 starts a second
            attempts.append(Attempt(f"run-{order_id}-{fn}", _parent_id(order_id), fn, number, start_ms, saw))
    completed = {(_parent_id(order_id), fn): 1 for order_id, fn in expected.pairs}
    parents = {
        _parent_id(o): ParentEnd(o, order_plan(o).parent_attempts - 1, "x", 1_000)
        for o in range(1, ORDERS + 1)
    }
    states = {
        _parent_id(o): "FAILURE" if order_plan(o).fails_after_deferring else "SUCCESS"
        for o in range(1, ORDERS + 1)
    }
    max_active = {SEND_EMAIL: 3, SCORE_ORDER: 2, AUDIT_LOG: 4}
    charges = {o: 1 for o in range(1, ORDERS + 1)}
    return Observed(attempts, completed, parents, max_active, charges), states, Counter(expected.skips)


def _check(observed: Observed, states: dict[str, str], skips: Counter[str]) -> Summary:
    return check(expectations(ORDERS), observed, ORDERS_BY_PARENT, states, skips, limits=FLOW_LIMITS)


def test_a_perfect_run_passes() -> None:
    observed, states, skips = _perfect_run()
    summary = _check(observed, states, skips)
    assert summary.ok, summary.problems
    assert sorted(set(summary.latencies_ms())) == [100 + 50 * o for o in range(1, ORDERS + 1)]
    assert {row.function: row.max_active for row in summary.rows} == {
        SEND_EMAIL: 3,
        SCORE_ORDER: 2,
        AUDIT_LOG: 4,
    }


def test_the_shop_uses_concurrency_and_throttle() -> None:
    assert FLOW_LIMITS[SEND_EMAIL] == FlowLimits(concurrency=3, throttle=(20, 1.0, 5))
    assert FLOW_LIMITS[SCORE_ORDER] == FlowLimits(concurrency=2, concurrency_key="event.data.customer")
    assert FLOW_LIMITS[AUDIT_LOG] == FlowLimits()
    assert {order_plan(o).customer for o in range(1, 5)} == {"acme", "globex"}


@pytest.mark.parametrize(
    ("function", "seen", "problem"),
    [
        (SEND_EMAIL, 4, "send-email: 4 runs executed at once, concurrency limit 3"),
        (SCORE_ORDER, 3, "score-order: 3 runs executed at once per event.data.customer, concurrency limit 2"),
        (AUDIT_LOG, 0, "audit-log: no handler was seen executing"),
    ],
)
def test_concurrency_beyond_the_limit_or_unobserved_is_flagged(
    function: str, seen: int, problem: str
) -> None:
    observed, states, skips = _perfect_run()
    observed.max_active[function] = seen
    summary = _check(observed, states, skips)
    assert not summary.ok
    assert any(problem in line for line in summary.problems), summary.problems


def test_throttle_figures_are_reported_not_judged() -> None:
    observed, states, skips = _perfect_run()
    summary = _check(observed, states, skips)
    (stats,) = summary.throttles
    sends = expectations(ORDERS).runs[SEND_EMAIL]
    assert (stats.function, stats.starts, stats.peak) == (SEND_EMAIL, sends, sends)
    assert stats.per_s is not None and stats.per_s < 20
    # Starts far beyond the throttle: still no problem, only figures.
    squeezed = [
        Attempt(a.run_id, a.parent_id, a.function, a.attempt, 1_000, a.saw) for a in observed.attempts
    ]
    summary = _check(
        Observed(squeezed, observed.completed, observed.parents, observed.max_active, observed.charges),
        states,
        skips,
    )
    assert summary.ok, summary.problems
    assert summary.throttles[0].peak == sends and summary.throttles[0].per_s is None


def test_peak_in_window_counts_a_half_open_window() -> None:
    assert peak_in_window([], 1000) == 0
    assert peak_in_window([0, 999, 1000, 1500, 1998, 1999], 1000) == 4
    assert peak_in_window([0, 1000, 2000], 1000) == 1


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda obs: obs.completed.pop((_parent_id(1), "audit-log")), "audit-log did not complete"),
        (lambda obs: obs.completed.update({(_parent_id(2), "score-order"): 2}), "completed 2x"),
        (
            lambda obs: obs.completed.update({(_parent_id(5), SEND_EMAIL): 1}),
            "order 5: send-email ran but must not have",
        ),
        (
            lambda obs: obs.attempts.append(Attempt("r", _parent_id(3), "audit-log", 0, 1_200, {})),
            "repeated: [0]",
        ),
    ],
)
def test_wrong_runs_are_flagged(mutate: object, problem: str) -> None:
    observed, states, skips = _perfect_run()
    mutate(observed)  # type: ignore[operator]
    summary = _check(observed, states, skips)
    assert not summary.ok
    assert any(problem in line for line in summary.problems), summary.problems


def test_skips_are_counted_from_celery_defer_log_lines() -> None:
    run_id = _parent_id(5)
    log = (
        f"[...: ERROR/ForkPoolWorker-1] defer('send-email') skipped in run {run_id} "
        "(example_project.order_placed): data failed the schema of 'send-email': ...\n"
        "defer('send-email') skipped in run 11111111-1111-4111-8111-111111111111 (other): ...\n"
    )
    assert count_skips(log, ORDERS_BY_PARENT) == Counter({"send-email": 1})


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([5, 1, 3, 2, 4], 50) == 3
    assert percentile(list(range(1, 101)), 95) == 95


def test_a_card_charged_twice_or_never_is_flagged() -> None:
    observed, states, skips = _perfect_run()
    summary = _check(observed, states, skips)
    assert summary.charges is not None
    assert (summary.charges.charges, summary.charges.charged_once) == (ORDERS, ORDERS)
    assert summary.charges.retried == expectations(ORDERS).parent_retries
    charges = {**observed.charges, 3: 2}
    del charges[4]
    summary = _check(
        Observed(observed.attempts, observed.completed, observed.parents, observed.max_active, charges),
        states,
        skips,
    )
    assert summary.problems == [
        "order 3: card charged 2x, expected once",
        "order 4: card charged 0x, expected once",
    ]
