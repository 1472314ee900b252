"""A deferred run whose worker dies mid-handler runs again and completes once."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.integration.conftest import wait_for

pytestmark = pytest.mark.faults


@pytest.mark.parametrize("acks_late", [False, True], ids=["acks_early", "acks_late"])
@pytest.mark.parametrize("victim", ["whole_worker", "pool_process"])
def test_a_deferred_run_killed_mid_handler_runs_again_and_completes_once(
    start_worker, app_module, seen, acks_late, victim
):
    first = start_worker(acks_late=acks_late)
    app_module.parent.delay({"defers": {"slow": {"sleep": 3}}})
    started = wait_for(lambda: seen("run"))
    if victim == "whole_worker":
        first.kill()
        start_worker(acks_late=acks_late)
    else:
        os.kill(started[0]["pid"], signal.SIGKILL)  # the worker lives on, one process short
    # Within the claim's lease (3 s here) and a recovery interval (1 s), plus the handler's 3 s.
    wait_for(lambda: seen("finished"), timeout_s=3 + 1 + 3 + 8)
    time.sleep(4)  # a second completion would show up by now
    assert [run["defer_id"] for run in seen("run")] == ["slow", "slow"]
    assert [run["defer_id"] for run in seen("finished")] == ["slow"]
