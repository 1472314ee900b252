"""A running deferred run leaves room in the worker's prefetch budget, as the app's early-acked tasks do.

The worker app runs with ``worker_prefetch_multiplier=1``; these workers have one
process, so the budget is one message. A deferred run keeps its message
unacknowledged until it ends (``acks_late``), which alone would fill the budget.
"""

from __future__ import annotations

from typing import Any, cast

from celery import Celery

from tests.integration.conftest import wait_for


def ask_workers(app: Celery, method: str) -> dict[str, Any]:
    """What the (one) worker answers to ``inspect().<method>()``; asked again until it answers."""
    return cast(dict[str, Any], wait_for(lambda: getattr(app.control.inspect(timeout=1, limit=1), method)()))


def reserved_ids(app: Celery) -> set[str]:
    """The ids of the messages the worker holds without running them yet."""
    return {request["id"] for requests in ask_workers(app, "reserved").values() for request in requests}


def prefetch_counts(app: Celery) -> set[Any]:
    return {stats.get("prefetch_count") for stats in ask_workers(app, "stats").values()}


def start_a_long_deferred_run(app_module: Any, seen: Any) -> None:
    parent = app_module.parent.delay({"defers": {"long": {"sleep": 6}}})
    wait_for(lambda: [run for run in seen("run") if run["parent"] == parent.id])


def test_worker_reserves_the_next_message_while_a_deferred_run_runs(start_worker, app_module, seen):
    start_worker(concurrency=1)
    wait_for(lambda: prefetch_counts(app_module.app) == {1})
    start_a_long_deferred_run(app_module, seen)
    queued = app_module.parent.delay({})
    # Well before the run's six seconds are over, the next message waits in the worker.
    wait_for(lambda: queued.id in reserved_ids(app_module.app), timeout_s=3)
    assert queued.get(timeout=20) == "ok"
    # Once runs stop coming, the budget is what the app configured again.
    wait_for(lambda: prefetch_counts(app_module.app) == {1}, timeout_s=10)


def test_an_acks_late_app_keeps_its_budget_while_a_deferred_run_runs(start_worker, app_module, seen):
    start_worker(concurrency=1, acks_late=True)
    start_a_long_deferred_run(app_module, seen)
    queued = app_module.parent.delay({})
    # Its own tasks hold their place while they run; so do deferred runs.
    for _ in range(4):
        assert queued.id not in reserved_ids(app_module.app)
        assert prefetch_counts(app_module.app) == {1}
    assert queued.get(timeout=20) == "ok"
