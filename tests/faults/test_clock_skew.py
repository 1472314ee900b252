"""Hosts whose clocks disagree still agree on run times: they read Redis TIME.

A worker started with ``CDT_CLOCK_SKEW_S`` plays a host whose wall clock is off.
"""

from __future__ import annotations

import time

import pytest
from celery import Celery

from celery_defer.config.options import validate_config
from celery_defer.deferred.message import DeferMessage
from celery_defer.deferred.timeouts import check_timeouts, now_ms
from celery_defer.errors import DeferredRunTimeoutError
from tests.faults.tally import completions, executions
from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SKEW_S = "30"


def test_a_run_enqueued_by_a_host_whose_clock_is_behind_is_not_timed_out(start_worker, app_module, seen):
    # The parent's host is 30 s behind: by its stamp, the run has waited 30 s
    # of its 1 s timeouts.start by the time a correct host receives it.
    start_worker(queues="skewed", env={"CDT_CLOCK_SKEW_S": f"-{SKEW_S}"})
    start_worker(queues="late")
    result = app_module.parent.apply_async(({"impatient": True},), queue="skewed")
    assert result.get(timeout=20) == "ok"
    wait_for(lambda: completions(seen, result.id, ["impatient"])["impatient"] == 1)
    assert executions(seen, result.id) == {"impatient": 1}
    assert not [event for event in seen("failed") if event["fn"] == "celery_defer.fn.impatient"]


def test_timeouts_finish_counts_from_a_start_stamped_by_a_host_whose_clock_is_ahead(redis_url, monkeypatch):
    # Two apps play two hosts on one Redis: each has its own store and clock.
    def host() -> Celery:
        app = Celery("host", set_as_current=False)
        app.conf.defer_redis_url = f"{redis_url}/2"
        return app

    ahead, correct = host(), host()
    options = validate_config({"id": "f", "timeouts": {"finish": "1s"}})
    true_time_ns = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: true_time_ns() + 30 * 10**9)
    started_ms = now_ms(ahead)  # the first attempt starts on the host 30 s ahead
    monkeypatch.setattr(time, "time_ns", true_time_ns)
    message = DeferMessage("defer/f", "e", 0, 0, {}, "p", "t", "d", started_ms=started_ms)
    check_timeouts(options, message, correct)  # just started: within the limit
    time.sleep(1.2)
    with pytest.raises(DeferredRunTimeoutError, match=r"timeouts.finish=1.0s \(running 1\.[2-9]"):
        check_timeouts(options, message, correct)


def test_debounce_keeps_the_latest_defer_across_hosts_whose_clocks_disagree(start_worker, app_module, seen):
    # The first event comes from a host 30 s ahead, the second, later, from a
    # correct one: by host clocks the second is 30 s older and loses.
    start_worker(queues="skewed", env={"CDT_CLOCK_SKEW_S": SKEW_S})
    start_worker()
    app_module.fan_out.apply_async(("debounced", [{"k": "x", "v": 1}]), queue="skewed").get(timeout=20)
    time.sleep(0.2)
    app_module.fan_out.delay("debounced", [{"k": "x", "v": 2}]).get(timeout=20)
    ended = wait_for(lambda: [run for run in seen("end") if run["fn"] == "defer/debounced"], timeout_s=20)
    time.sleep(2)  # room for a second run, were there one
    ended = [run for run in seen("end") if run["fn"] == "defer/debounced"]
    assert [run["data"]["v"] for run in ended] == [2]
