"""The example's verdict is not vacuous: ``check`` flags missing, extra and duplicate runs."""

from __future__ import annotations

from collections import Counter

import pytest

from example_project.check import check, count_skips, percentile
from example_project.plan import DATA_TYPES, SEND_EMAIL, expectations, order_plan
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
            attempts.append(Attempt(f"run-{order_id}-{fn}", _parent_id(order_id), fn, number, 1_100, saw))
    completed = {(_parent_id(order_id), fn): 1 for order_id, fn in expected.pairs}
    parents = {
        _parent_id(o): ParentEnd(o, order_plan(o).parent_attempts - 1, "x", 1_000)
        for o in range(1, ORDERS + 1)
    }
    states = {
        _parent_id(o): "FAILURE" if order_plan(o).fails_after_deferring else "SUCCESS"
        for o in range(1, ORDERS + 1)
    }
    return Observed(attempts, completed, parents), states, Counter(expected.skips)


def test_a_perfect_run_passes() -> None:
    observed, states, skips = _perfect_run()
    summary = check(expectations(ORDERS), observed, ORDERS_BY_PARENT, states, skips)
    assert summary.ok, summary.problems
    assert summary.latencies_ms() and set(summary.latencies_ms()) == {100}


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
    summary = check(expectations(ORDERS), observed, ORDERS_BY_PARENT, states, skips)
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
