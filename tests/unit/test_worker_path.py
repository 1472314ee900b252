"""A parent run on Celery's worker code path (not eager) when celery_defer's Redis is unusable.

``build_tracer(eager=False)`` is what a worker process runs for each message; no
broker is needed to call it.
"""

from __future__ import annotations

import logging

import pytest
from celery import Celery
from celery.app.trace import build_tracer

from celery_defer import ConfigurationError, DeferTask, create_defer, defer
from celery_defer.store import store_for


def run_like_a_worker(task, *args):
    tracer = build_tracer(task.name, task, eager=False, propagate=False, app=task.app)
    request = {"id": "run-1", "delivery_info": {}, "retries": 0, "is_eager": False}
    return tracer("run-1", args, {}, request)


@pytest.mark.parametrize(
    ("url", "reason"),
    [("redis://127.0.0.1:notaport/0", "not a Redis URL"), (None, "needs Redis")],
)
def test_a_parent_succeeds_when_the_library_cannot_use_redis(url, reason, caplog):
    app = Celery("w", broker="memory://", task_cls=DeferTask, set_as_current=False)
    app.conf.update(task_ignore_result=True, defer_redis_url=url)
    fn = create_defer(app, {"id": "f"}, lambda ctx: None)

    @app.task(lazy=False, shared=False)
    def parent() -> str:
        defer("x", function=fn, data={})
        return "parent result"

    with pytest.raises(ConfigurationError, match=reason):
        store_for(app)
    outcome = run_like_a_worker(parent)
    assert outcome.retval == "parent result"
    assert outcome.info is None  # no failure recorded
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("could not record defers" in message for message in errors)
