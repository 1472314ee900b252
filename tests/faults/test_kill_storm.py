"""A kill storm: the worker running deferred runs is SIGKILLed again and again."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.slow]

PARENTS = 20
DEFERS = 3
KILLS = 4


@pytest.mark.timeout(240)
@pytest.mark.parametrize("acks_late", [False, True], ids=["acks_early", "acks_late"])
def test_every_deferred_run_completes_once_through_a_kill_storm(start_worker, app_module, seen, acks_late):
    plan = {"defers": {f"d{i}": {"sleep": 0.3} for i in range(DEFERS)}}
    results = [app_module.parent.delay(plan) for _ in range(PARENTS)]
    for _ in range(KILLS):
        worker = start_worker(acks_late=acks_late, env={"CDT_FAST_RESTORE": "1"})
        time.sleep(1.5)  # mid-batch: some runs finished, some mid-handler, some queued
        worker.kill()
    time.sleep(3.5)  # past the visibility timeout: the last worker's first sweep gives back all
    start_worker(acks_late=acks_late, env={"CDT_FAST_RESTORE": "1"})
    expected = {(result.id, f"d{i}") for result in results for i in range(DEFERS)}

    def finished() -> Counter[tuple[str, str]]:
        return Counter((run["parent"], run["defer_id"]) for run in seen("finished"))

    wait_for(lambda: set(finished()) >= expected, timeout_s=120)
    time.sleep(5)  # redeliveries, resends and duplicates show up by now
    completions = finished()
    assert set(completions) == expected  # none lost
    assert set(completions.values()) == {1}  # none twice
