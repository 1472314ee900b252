"""celery_defer's state on a Sentinel-managed Redis: a failover in the middle of a batch.

The state store is a master, a replica and a sentinel (``SentinelGroup``); the
broker is the session's own Redis. Parents keep coming while ``SENTINEL FAILOVER``
promotes the replica, and the test counts what ran: every deferred run once.

What makes it hold is that each script's writes count only once a replica has them
(``WAIT``, ``min_replica_acks``, 1 by default with Sentinel). Without it, writes that
reach the old master between the promotion and its demotion are lost when it resyncs
from the new one: finished runs look unfinished again and are sent a second time.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import pytest

from celery_defer.embedded_sentinel import SentinelGroup
from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.slow]

#: Parents sent before the failover starts; more follow, one every 0.2 s, until it ends.
PARENTS_BEFORE = 20
DEFERS = ("a", "b")
#: Each deferred run's handler takes this long, so some are mid-run when the replica is promoted.
HANDLER_S = 0.2


@pytest.mark.timeout(300)  # a failover alone takes 10-20 s; the batch waits on it
def test_a_failover_mid_batch_loses_no_deferred_run_and_runs_none_twice(start_worker, app_module, seen):
    with SentinelGroup() as group:
        options = json.dumps(group.transport_options)
        for _ in range(2):
            start_worker(concurrency=2, state_url=group.url, env={"CDT_STATE_OPTIONS": options})
        parents: list[str] = []
        failed_over = threading.Event()

        def fail_over_mid_batch() -> None:
            wait_for(lambda: len(parents) >= PARENTS_BEFORE, timeout_s=60)
            group.failover()
            failed_over.set()

        failover = threading.Thread(target=fail_over_mid_batch, daemon=True)
        failover.start()
        old_master = group.master_port()
        # Parents keep coming all through the failover: some finalize, and their runs
        # claim and finish, while the old master still takes writes after the promotion.
        deadline = time.monotonic() + 90
        while not failed_over.is_set() and time.monotonic() < deadline:
            plan = {"defers": {name: {"sleep": HANDLER_S} for name in DEFERS}}
            parents.append(app_module.parent.delay(plan).id)
            time.sleep(0.2)
        failover.join(timeout=5)
        assert failed_over.is_set() and group.master_port() != old_master

        expected = len(parents) * len(DEFERS)
        wait_for(lambda: len(seen("done")) >= expected, timeout_s=180, every_s=0.5)
        time.sleep(8)  # past a claim lease and a recovery pass: a second copy would run by now
        completed = Counter(event["run_id"] for event in seen("done"))
        started = Counter((run["parent"], run["defer_id"]) for run in seen("run"))
        assert len(completed) == expected, "deferred runs lost"
        assert [run for run, n in completed.items() if n > 1] == [], "deferred runs completed twice"
        assert [run for run, n in started.items() if n > 1] == [], "handlers ran twice"
        assert {parent for parent, _ in started} == set(parents)
