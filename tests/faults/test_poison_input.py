"""Input that once poisoned workers is refused at the call site; its siblings run once.

Data nested ~600 levels deep made the worker's main process die while pickling
the job for its pool, on every delivery; an id with a lone surrogate made the
whole attempt's outbox write fail and a valid sibling get lost.
"""

from __future__ import annotations

import time

import pytest

from celery_defer.parent.snapshot import MAX_DATA_DEPTH
from tests.faults.tally import completions, executions
from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_data_nested_too_deep_is_refused_and_the_worker_lives_on(start_worker, app_module, seen):
    worker = start_worker()
    result = app_module.parent.delay({"defers": {"ok": {"n": 1}}, "deep": 600})
    assert result.get(timeout=20) == "ok"
    wait_for(lambda: completions(seen, result.id, ["ok"])["ok"] == 1)
    time.sleep(2)  # room for the refused one to show up, were it sent
    assert executions(seen, result.id) == {"ok": 1}
    assert completions(seen, result.id, ["ok", "deep"]) == {"ok": 1}
    assert worker.alive()
    assert f"defer('deep') skipped in run {result.id}" in worker.log()
    assert f"nested deeper than {MAX_DATA_DEPTH} levels" in worker.log()
    again = app_module.parent.delay({"defers": {"after": {}}})
    assert again.get(timeout=20) == "ok"
    wait_for(lambda: completions(seen, again.id, ["after"])["after"] == 1)


def test_an_id_that_is_not_utf8_is_refused_and_its_siblings_run_once(start_worker, app_module, seen):
    worker = start_worker()
    plan = {"defers": {"ok": {"n": 1}, "bad-\udc80": {"n": 2}, "ok2": {"n": 3}}}
    # The parent's own message goes as JSON: msgpack cannot carry the surrogate.
    result = app_module.parent.apply_async((plan,), serializer="json")
    assert result.get(timeout=20) == "ok"
    wait_for(lambda: sum(completions(seen, result.id, ["ok", "ok2"]).values()) == 2)
    time.sleep(1)
    assert executions(seen, result.id) == {"ok": 1, "ok2": 1}
    assert completions(seen, result.id, ["ok", "ok2"]) == {"ok": 1, "ok2": 1}
    assert "cannot be encoded as UTF-8" in worker.log()
    assert "could not record defers" not in worker.log()
