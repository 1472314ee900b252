"""The Redis outbox on a real server: what completing a dispatch forgets, and what it keeps."""

from __future__ import annotations

import pytest
from celery import Celery

from celery_defer.outbox.record import DeferRecord, ParentRef
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
    assert outbox.client.zscore(outbox.keys.finalized(), "run-1") is not None  # still due

    assert outbox.complete("run-1", ["late"]) == 0
    assert not outbox.client.exists(outbox.keys.outbox("run-1"))
    assert outbox.client.zscore(outbox.keys.finalized(), "run-1") is None
