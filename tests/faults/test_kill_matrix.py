"""The parent side under SIGKILL of its whole worker, at every point that matters.

Each case counts, per defer id, the deferred runs that started and those that
finished: every recorded defer runs to completion exactly once.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.integration.conftest import wait_for

pytestmark = pytest.mark.faults

# What the killed worker had taken from the broker comes back after 3 s (see workerapp).
FAST_RESTORE = {"CDT_FAST_RESTORE": "1"}

# What each kill point leaves: which defers were recorded by an attempt whose body returned.
EXPECTED = {
    ("after_body", False): {"early", "late"},
    ("after_body", True): {"early", "late"},
    ("after_dispatch", False): {"early", "late"},
    ("after_dispatch", True): {"early", "late"},
    ("after_result", False): {"early", "late"},
    ("after_result", True): {"early", "late"},
    # The retry was never sent: without acks_late the run ends with what attempt 0 recorded;
    # with it the broker gives attempt 0 back, and the run goes on to its end.
    ("before_retry_sent", False): {"early"},
    ("before_retry_sent", True): {"early", "late"},
    # Attempt 1 never returned: without acks_late recovery finalizes the run when its
    # lease runs out; with it attempt 1 is delivered again and finishes.
    ("mid_attempt", False): {"early"},
    ("mid_attempt", True): {"early", "late"},
}


@pytest.mark.parametrize("acks_late", [False, True], ids=["acks_early", "acks_late"])
@pytest.mark.parametrize(
    "point", ["after_body", "after_dispatch", "after_result", "before_retry_sent", "mid_attempt"]
)
def test_each_recorded_defer_runs_once_whatever_the_kill_point(
    start_worker, app_module, seen, point, acks_late
):
    first = start_worker(acks_late=acks_late, env=FAST_RESTORE)
    app_module.parent_kill_at.delay(point)
    wait_for(lambda: seen("killing"), timeout_s=30)
    wait_for(lambda: not first.alive())
    # Past the visibility timeout, so the next worker's first sweep gives back what the
    # dead one held (kombu 5.4 sweeps at start, then every 100 s).
    time.sleep(3.5)

    # Only this worker takes the deferred runs (see kill_recorder in workerapp).
    start_worker(acks_late=acks_late, queues="celery,kill-children", env=FAST_RESTORE)
    expected = EXPECTED[(point, acks_late)]
    wait_for(lambda: {run["defer_id"] for run in seen("finished")} >= expected, timeout_s=90)
    time.sleep(4)  # redelivery, recovery and any duplicate show up by now
    started = Counter(run["defer_id"] for run in seen("run"))
    finished = Counter(run["defer_id"] for run in seen("finished"))
    assert finished == Counter(expected)
    assert started == Counter(expected)
    # First payload wins: "early" keeps the data of the attempt that first recorded it.
    assert [run["data"] for run in seen("run") if run["defer_id"] == "early"] == [{"attempt": 0}]
