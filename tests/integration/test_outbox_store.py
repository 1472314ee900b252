"""The Redis outbox on a real server: what completing a dispatch forgets, and what it keeps."""

from __future__ import annotations

import logging
import time

import pytest
import redis
from celery import Celery

from celery_defer.embedded_redis import free_port
from celery_defer.outbox.record import DeferRecord, ParentRef
from celery_defer.outbox.recovery import recover_once
from celery_defer.store import store_for

pytestmark = pytest.mark.integration


def record(defer_id: str) -> DeferRecord:
    parent = ParentRef("run-1", "run-1", "shop.order_placed")
    return DeferRecord(defer_id, "celery_defer.fn.f", "f", "{}", 1, parent)


def test_completing_a_dispatch_forgets_only_the_published_records(redis_url: str) -> None:
    app = Celery("outbox", set_as_current=False)
    app.conf.defer_redis_url = redis_url
    outbox = store_for(app).outbox
    published = outbox.record("run-1", [record("a"), record("b")], final=True)
    # A record lands after the run's records were read for publishing.
    outbox.record("run-1", [record("late")], final=True)

    assert outbox.complete("run-1", [r.defer_id for r in published]) == 1
    assert [r.defer_id for r in outbox.pending_records("run-1")] == ["late"]
    assert outbox.client.zscore(outbox.keys.finalized("run-1"), "run-1") is not None  # still due

    assert outbox.complete("run-1", ["late"]) == 0
    assert not outbox.client.exists(outbox.keys.outbox("run-1"))
    assert outbox.client.zscore(outbox.keys.finalized("run-1"), "run-1") is None


def test_a_run_of_thousands_of_defers_is_recorded_in_call_order_and_cleared_whole(redis_url: str) -> None:
    # 4,500 records are 9,000 values: more than one Lua call may unpack at once.
    app = Celery("outbox", set_as_current=False)
    app.conf.defer_redis_url = redis_url
    outbox = store_for(app).outbox
    ids = [f"d{i}" for i in range(4500)]

    published = outbox.record("run-1", [record(i) for i in ids], final=True)

    assert [r.defer_id for r in published] == ids
    assert [r.defer_id for r in outbox.pending_records("run-1")] == ids
    assert outbox.complete("run-1", ids) == 0
    assert not outbox.client.exists(outbox.keys.outbox("run-1"))


def test_the_first_record_of_an_id_is_kept_whichever_call_brings_it(redis_url: str) -> None:
    app = Celery("outbox", set_as_current=False)
    app.conf.defer_redis_url = redis_url
    outbox = store_for(app).outbox
    first, again = record("a"), record("a")._replace(data_json='{"again": true}')

    outbox.record("run-1", [first, record("b"), again], final=False)  # twice in one call
    outbox.record("run-1", [again, record("c")], final=True)  # and in a later one

    kept = outbox.pending_records("run-1")
    assert [(r.defer_id, r.data_json) for r in kept] == [("a", "{}"), ("b", "{}"), ("c", "{}")]


def test_a_recovery_pass_that_could_not_send_leaves_the_run_for_the_next_pass(redis_url: str) -> None:
    # Two views of one fleet: the broker away (a port nobody listens on), then back.
    away = Celery("recovery", broker=f"redis://127.0.0.1:{free_port()}/0", set_as_current=False)
    back = Celery("recovery", broker=f"{redis_url}/0", set_as_current=False)
    for app in (away, back):
        app.conf.defer_redis_url = f"{redis_url}/2"
        app.conf.task_publish_retry = False
        app.conf.broker_connection_timeout = 0.5
    outbox = store_for(back).outbox
    outbox.record("run-1", [record("a")], final=True)
    outbox.client.zadd(outbox.keys.finalized("run-1"), {"run-1": 0})  # its dispatch grace is over

    assert recover_once(away) == []
    assert [r.defer_id for r in recover_once(back)] == ["a"]  # the next pass, not one lease later
    assert redis.Redis.from_url(f"{redis_url}/0").llen("celery") == 1
    assert outbox.pending_records("run-1") == []


def test_a_clearing_nobody_waits_for_is_done_and_one_the_server_refused_is_logged(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = Celery("outbox", set_as_current=False)
    app.conf.defer_redis_url = redis_url
    outbox = store_for(app).outbox
    published = outbox.record("run-1", [record("a"), record("b")], final=True)
    assert outbox.complete_later("run-1", [r.defer_id for r in published])
    deadline = time.monotonic() + 5
    while outbox.pending_records("run-1") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert outbox.pending_records("run-1") == []
    assert outbox.client.zscore(outbox.keys.finalized("run-1"), "run-1") is None

    outbox.client.set(outbox.keys.outbox("run-2"), "not a hash")
    assert outbox.complete_later("run-2", ["a"])
    with caplog.at_level(logging.WARNING, logger="celery_defer.outbox.redis_outbox"):
        outbox.record("run-3", [record("c")], final=False)  # the next call reads the refusal
    assert "run run-2: sent, but the outbox was not cleared (WRONGTYPE" in caplog.text
