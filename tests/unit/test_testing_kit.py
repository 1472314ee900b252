"""celery_defer.testing: capture_defers, the captured_defers fixture, make_context."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from celery import Celery
from pydantic import BaseModel

from celery_defer import DeferTask, create_defer, defer
from celery_defer.errors import SchemaRejected
from celery_defer.testing import CapturedDefer, capture_defers, make_context

#: Nothing listens here: a library that tried to reach Redis would log or fail.
UNREACHABLE_REDIS = "redis://127.0.0.1:9/0"


class Email(BaseModel):
    to: str
    body: str


@pytest.fixture
def offline_app() -> Celery:
    """An eager app whose Redis and broker cannot be reached."""
    app = Celery("offline", task_cls=DeferTask, broker=UNREACHABLE_REDIS, set_as_current=False)
    app.conf.task_always_eager = True
    app.conf.task_store_eager_result = False
    app.conf.defer_redis_url = UNREACHABLE_REDIS
    return app


def library_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        f"{r.levelname} {r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.name.startswith("celery_defer")
    ]


@pytest.mark.parametrize("how", ["delay", "apply", "plain call"])
def test_defers_of_a_run_are_captured_and_nothing_runs_or_touches_redis(offline_app, recorder, caplog, how):
    fn = create_defer(offline_app, {"id": "send", "schema": Email}, recorder)

    @offline_app.task(lazy=False, shared=False)
    def order_placed(order_id: int) -> int:
        defer("mail", function=fn, data={"to": f"{order_id}@x", "body": "hi"})
        return order_id

    caplog.set_level(logging.DEBUG)
    with capture_defers() as captured:
        if how == "delay":
            parent_id: str | None = order_placed.delay(7).id
        elif how == "apply":
            parent_id = order_placed.apply(args=(7,)).id
        else:
            order_placed(7)  # a task called as a plain function: no run
            parent_id = None
    assert captured == [CapturedDefer("mail", fn, "send", {"to": "7@x", "body": "hi"}, parent_id)]
    assert recorder.calls == []
    assert "_celery_defer_store" not in offline_app.__dict__
    assert library_records(caplog) == []


def test_a_failed_and_retried_run_is_captured_once_it_finalizes(offline_app, make_fn):
    fn = create_defer(offline_app, {"id": "f"}, lambda ctx: None)

    @offline_app.task(bind=True, lazy=False, shared=False, max_retries=2)
    def parent(self: DeferTask) -> None:
        defer("same", function=fn, data={"attempt": self.request.retries})
        defer(f"a{self.request.retries}", function=fn, data={})
        if self.request.retries < 2:
            raise self.retry(countdown=0)
        raise ValueError("failed for good")

    with capture_defers() as captured:
        assert parent.delay().state == "FAILURE"
    assert [(c.id, c.data) for c in captured] == [
        ("same", {"attempt": 0}),
        ("a0", {}),
        ("a1", {}),
        ("a2", {}),
    ]


def test_skipped_calls_are_logged_and_not_captured(offline_app, caplog):
    fn = create_defer(offline_app, {"id": "send", "schema": Email}, lambda ctx: None)
    with capture_defers() as captured:
        defer("bad", function=fn, data={"to": 1})
        defer("good", function=fn, data=Email(to="a", body="b"))
        defer("good", function=fn, data=Email(to="c", body="d"))
    assert [(c.id, c.data, c.parent_run_id) for c in captured] == [("good", {"to": "a", "body": "b"}, None)]
    messages = library_records(caplog)
    assert "data failed the schema of 'send'" in messages[0]
    assert "already used" in messages[1]


def test_outside_the_block_defer_goes_its_normal_way(offline_app, caplog):
    fn = create_defer(offline_app, {"id": "f"}, lambda ctx: None)
    with capture_defers() as captured:
        pass
    defer("late", function=fn, data={})
    assert captured == []
    assert "called outside a parent run" in library_records(caplog)[0]


def test_the_fixture_captures_for_the_whole_test(offline_app, captured_defers):
    fn = create_defer(offline_app, {"id": "f"}, lambda ctx: None)

    @offline_app.task(lazy=False, shared=False)
    def parent() -> None:
        defer("x", function=fn, data={"n": 1})

    result = parent.delay()
    assert [(c.id, c.function, c.parent_run_id) for c in captured_defers] == [("x", fn, result.id)]


def test_a_failing_eager_task_that_never_deferred_logs_nothing(caplog):
    # task_cls app-wide and no Redis at all: the failure is the task's own business.
    app = Celery("no-redis", task_cls=DeferTask, set_as_current=False)
    app.conf.task_always_eager = True

    @app.task(lazy=False, shared=False)
    def fails() -> None:
        raise ValueError("boom")

    caplog.set_level(logging.DEBUG)
    assert fails.delay().state == "FAILURE"
    assert fails.apply().state == "FAILURE"
    assert library_records(caplog) == []


def test_a_failing_eager_task_never_reaches_a_configured_redis(offline_app, caplog):
    @offline_app.task(lazy=False, shared=False)
    def fails() -> None:
        raise ValueError("boom")

    caplog.set_level(logging.DEBUG)
    assert fails.delay().state == "FAILURE"
    assert "_celery_defer_store" not in offline_app.__dict__
    assert library_records(caplog) == []


def test_make_context_validates_like_the_receiver_and_captures_ctx_defer(offline_app, captured_defers):
    seen: list[Any] = []
    follow_up = create_defer(offline_app, {"id": "follow-up"}, lambda ctx: None)

    def handler(ctx: Any) -> str:
        seen.append(ctx.event.data)
        ctx.defer("next", function=follow_up, data={"to": ctx.event.data.to})
        ctx.logger.info("sent")
        return "ok"

    fn = create_defer(offline_app, {"id": "send", "schema": Email}, handler)
    ctx = make_context(fn, {"to": "a@b", "body": "hi"}, attempt=2, run_id="run-1")
    assert fn.handler(ctx) == "ok"
    assert seen == [Email(to="a@b", body="hi")]
    assert (ctx.run_id, ctx.attempt, ctx.event.name, ctx.event.id) == ("run-1", 2, "defer/send", "run-1")
    expected = [CapturedDefer("next", follow_up, "follow-up", {"to": "a@b"}, "run-1")]
    assert ctx.defer.captured == expected  # type: ignore[attr-defined]
    assert captured_defers == expected


def test_make_context_refuses_what_a_worker_would_refuse(offline_app):
    fn = create_defer(offline_app, {"id": "send", "schema": Email}, lambda ctx: None)
    with pytest.raises(SchemaRejected, match="to"):
        make_context(fn, {"to": 1, "body": "x"})
    with pytest.raises(TypeError, match="JSON object"):
        make_context(fn, [1, 2])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="create_defer"):
        make_context(print, {})  # type: ignore[arg-type]
