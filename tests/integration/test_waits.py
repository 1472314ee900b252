"""Waiting without polling (issue 9, item 3), with real workers sharing one Redis.

Behind a throttle a waiting run books its start when it first asks and is put
back on the queue once, for that time; behind a concurrency limit it parks in a
line and the run that frees a slot sends it. Either way runs start in the order
they first asked, each delivered at most twice.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from typing import Any

import pytest

from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

RUNS = 8


def of(events: list[dict[str, Any]], fn: str) -> list[dict[str, Any]]:
    return [event for event in events if event["fn"] == f"defer/{fn}"]


def ask_one_by_one(app_module: Any, fn: str, *, every_s: float) -> None:
    # One parent per run, spaced out, so the order they first ask in is plain.
    for index in range(RUNS):
        app_module.fan_out.delay(fn, [{"i": index, "sleep": 0.3 if fn == "fifo-line" else 0}])
        time.sleep(every_s)


def first_asked(seen: Any, fn: str) -> list[str]:
    order: list[str] = []
    for event in of(seen("delivered"), fn):
        if event["run_id"] not in order:
            order.append(event["run_id"])
    return order


def bare_ignored(logs: str, fn: str) -> list[str]:
    """Celery's own ``Task <name>[<id>] ignored`` lines for the runs of ``fn``."""
    return [
        line for line in logs.splitlines() if f"celery_defer.fn.{fn}[" in line and line.endswith("] ignored")
    ]


def test_throttled_runs_start_in_the_order_they_asked_each_put_back_once(start_worker, app_module, seen):
    workers = [start_worker(concurrency=2), start_worker(concurrency=2)]
    ask_one_by_one(app_module, "fifo-throttle", every_s=0.1)  # faster than the pace (one per 0.4 s)
    wait_for(lambda: len(of(seen("end"), "fifo-throttle")) == RUNS, timeout_s=60)
    starts = of(seen("start"), "fifo-throttle")
    assert [event["run_id"] for event in starts] == first_asked(seen, "fifo-throttle")
    deliveries = Counter(event["run_id"] for event in of(seen("delivered"), "fifo-throttle"))
    assert max(deliveries.values()) == 2  # waited: put back on the queue once, never more
    times = [event["t"] for event in starts]
    assert min(later - earlier for earlier, later in itertools.pairwise(times)) >= 0.4 * 0.85
    logs = "".join(worker.log() for worker in workers)
    assert "waiting on throttle of fifo-throttle" in logs  # the wait, said as what it is
    assert not bare_ignored(logs, "fifo-throttle")  # and not once more as Celery's bare "ignored"


def test_parked_runs_start_first_come_first_served_and_the_limit_holds(start_worker, app_module, seen):
    workers = [start_worker(concurrency=2), start_worker(concurrency=2)]
    ask_one_by_one(app_module, "fifo-line", every_s=0.05)  # each run takes 0.3 s: a line forms
    wait_for(lambda: len(of(seen("end"), "fifo-line")) == RUNS, timeout_s=60)
    starts = of(seen("start"), "fifo-line")
    assert [event["run_id"] for event in starts] == first_asked(seen, "fifo-line")
    assert max(event["total"] for event in starts) == 1  # across both workers
    deliveries = Counter(event["run_id"] for event in of(seen("delivered"), "fifo-line"))
    assert max(deliveries.values()) == 2  # parked once, sent once by the run before it
    logs = "".join(worker.log() for worker in workers)
    assert "parked in the concurrency line of fifo-line" in logs
    assert not bare_ignored(logs, "fifo-line")


def park_after_two_hogs(app_module: Any, seen: Any, tags: list[str]) -> None:
    """Two runs of ``fifo-pair`` take both slots; runs tagged ``tags`` then park in that order."""
    app_module.fan_out.delay("fifo-pair", [{"i": "hog", "sleep": 1.2}, {"i": "hog", "sleep": 1.2}])
    wait_for(lambda: len(of(seen("start"), "fifo-pair")) == 2)
    for count, tag in enumerate(tags, start=3):
        app_module.fan_out.delay("fifo-pair", [{"i": tag}])
        wait_for(lambda count=count: len(of(seen("delivered"), "fifo-pair")) == count)
        time.sleep(0.15)  # it parks before the next one asks


def started(seen: Any) -> list[tuple[str, float]]:
    return [(event["data"]["i"], event["t"]) for event in of(seen("start"), "fifo-pair")]


def test_runs_handed_slots_a_moment_apart_begin_in_the_order_they_were_handed(start_worker, app_module, seen):
    start_worker(concurrency=4)
    # Both hogs end at once: "a" is handed the first slot, "b" the second, but
    # a's message is sent 0.1 s late, so b reaches a pool process first.
    park_after_two_hogs(app_module, seen, ["hand-over-late", "b"])
    wait_for(lambda: len(of(seen("end"), "fifo-pair")) == 4, timeout_s=30)
    assert [tag for tag, _ in started(seen)] == ["hog", "hog", "hand-over-late", "b"]
    assert max(event["total"] for event in of(seen("start"), "fifo-pair")) == 2


def test_a_run_handed_a_slot_and_lost_holds_the_line_up_only_a_while(start_worker, app_module, seen):
    start_worker(concurrency=4)
    park_after_two_hogs(app_module, seen, ["hand-over-lost", "b", "c"])
    wait_for(lambda: len(of(seen("end"), "fifo-pair")) == 5, timeout_s=30)
    [lost] = seen("lost")
    starts = dict(started(seen)[2:])
    assert starts["b"] - lost["t"] < 0.25 + 0.5  # waited for the lost run at most its patience
    # c is not held up by it again; the lost run starts once its slot's lease
    # (defer_lease=3 s) ran out and the line was restarted.
    assert starts["b"] < starts["c"] < starts["hand-over-lost"]
    assert starts["hand-over-lost"] - lost["t"] > 3
    assert max(event["total"] for event in of(seen("start"), "fifo-pair")) == 2
