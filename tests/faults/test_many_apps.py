"""Two Celery apps on one Redis database and one ``defer_key_prefix``, each with its own queues.

App "a." and app "b." are the worker app with different queue prefixes, so each
routes every task to its own default queue (``a.celery``, ``b.celery``). A worker of
"b." dies after a parent's body returned and before its deferred run was sent; a
worker of "a." finds the run in its recovery pass. The record carries the route
"b." resolved at ``defer()`` time, so "a." sends it to ``b.celery``, where it waits
for a worker of "b." (none is up) instead of running on "a.". The same holds for a
run whose worker died mid-handler, sent again by "a."'s recovery pass.
"""

from __future__ import annotations

import time

import pytest
import redis

from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.slow]

A = {"CDT_QUEUE_PREFIX": "a."}
B = {"CDT_QUEUE_PREFIX": "b."}


def test_a_run_recovered_by_another_app_goes_to_its_own_apps_queue(start_worker, app_module, seen, redis_url):
    start_worker(env=A)
    b_worker = start_worker(env=B)
    parent = app_module.parent_killed.apply_async((7,), queue="b.celery")
    wait_for(lambda: seen("killing"))
    wait_for(lambda: not b_worker.alive())  # killed after the body returned, before dispatch
    assert seen("run") == []

    broker = redis.Redis.from_url(f"{redis_url}/0")
    # Only "a." is up: its recovery pass sends the run, and it waits on "b."'s queue.
    wait_for(lambda: broker.llen("b.celery") == 1, timeout_s=60)
    time.sleep(2)
    assert seen("run") == [], "the recovered run ran on the other app's worker"

    start_worker(env=B)
    runs = wait_for(lambda: seen("run"), timeout_s=30)
    time.sleep(4)  # a second copy would show up by now
    runs = seen("run")
    assert [(run["defer_id"], run["parent"], run["queue_prefix"]) for run in runs] == [
        ("after-kill", parent.id, "b.")
    ]


def test_a_run_whose_worker_died_mid_handler_is_sent_again_to_its_own_apps_queue(
    start_worker, app_module, seen, redis_url
):
    start_worker(env=A)
    b_worker = start_worker(env=B)
    parent = app_module.parent.apply_async(({"defers": {"slow": {"sleep": 6}}},), queue="b.celery")
    wait_for(lambda: seen("run"), timeout_s=30)
    b_worker.kill()  # mid-handler: its claim lapses unfinished

    broker = redis.Redis.from_url(f"{redis_url}/0")
    # "a."'s recovery pass sends the kept message again, to the queue "b." runs it from.
    wait_for(lambda: broker.llen("b.celery") >= 1, timeout_s=60)
    time.sleep(2)
    assert len(seen("run")) == 1, "the run was sent again to the other app's worker"

    start_worker(env=B)
    wait_for(lambda: seen("done"), timeout_s=60)
    time.sleep(4)  # kombu also gives back the message the dead worker held: a copy that must not run
    runs = seen("run")
    assert {(run["defer_id"], run["parent"], run["queue_prefix"]) for run in runs} == {
        ("slow", parent.id, "b.")
    }
    assert len(seen("done")) == 1
