"""SPEC 7.5: eager mode and ``.apply()`` run deferred runs in-process, after the parent."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from celery import Celery

from celery_defer import DeferTask, NonRetriableError, create_defer, defer
from celery_defer.outbox.record import deferred_run_id


@pytest.fixture(params=["always_eager", "apply"])
def call(request: pytest.FixtureRequest, app: Celery) -> Any:
    """Run a task the two in-process ways: ``.delay()`` under task_always_eager, ``.apply()``."""
    if request.param == "apply":
        app.conf.task_always_eager = False
        return lambda task, *args: task.apply(args=args)
    return lambda task, *args: task.delay(*args)


def test_runs_start_after_the_parent_finalizes_in_call_order(app, call, make_fn, recorder):
    fn = make_fn()
    events: list[str] = []
    recorder_calls = recorder.calls

    @app.task(bind=True, lazy=False, shared=False)
    def parent(self: DeferTask, n: int) -> int:
        for i in range(n):
            defer(f"d{i}", function=fn, data={"i": i})
        events.append(f"parent body done, {len(recorder_calls)} runs so far")
        return n

    result = call(parent, 5)
    assert result.get() == 5
    assert events == ["parent body done, 0 runs so far"]
    assert recorder.ids == ["d0", "d1", "d2", "d3", "d4"]
    ctx = recorder.calls[0]
    assert ctx.run_id == deferred_run_id(result.id, "d0")
    assert ctx.attempt == 0
    assert ctx.event.name == "defer/rec"
    assert ctx.event.data == {"i": 0}
    assert ctx.parents[0].run_id == result.id
    assert ctx.parents[0].task_name == parent.name


def test_a_failed_parent_still_runs_its_defers(app, call, make_fn, recorder):
    fn = make_fn()

    @app.task(lazy=False, shared=False)
    def parent() -> None:
        defer("x", function=fn, data={})
        raise ValueError("parent failed")

    result = call(parent)
    assert result.state == "FAILURE"
    assert recorder.ids == ["x"]


def test_defers_of_a_retried_attempt_stick_and_the_first_payload_wins(app, call, make_fn, recorder):
    fn = make_fn()

    @app.task(bind=True, lazy=False, shared=False, max_retries=3)
    def parent(self: DeferTask) -> str:
        attempt = self.request.retries
        defer(f"attempt-{attempt}", function=fn, data={})
        defer("same", function=fn, data={"attempt": attempt})
        assert recorder.calls == []  # nothing runs before the run finalizes
        if attempt < 2:
            raise self.retry(countdown=0)
        return "ok"

    assert call(parent).get() == "ok"
    assert recorder.ids == ["attempt-0", "same", "attempt-1", "attempt-2"]
    same = next(ctx for ctx in recorder.calls if ctx.parents[0].defer_id == "same")
    assert same.event.data == {"attempt": 0}


def test_a_failing_deferred_run_never_reaches_the_parent(app, call):
    attempts: list[int] = []

    def flaky(ctx: Any) -> None:
        attempts.append(ctx.attempt)
        raise RuntimeError("handler failed")

    fn = create_defer(app, {"id": "flaky", "retries": 2}, flaky)
    app.conf.task_eager_propagates = True

    @app.task(lazy=False, shared=False)
    def parent() -> str:
        defer("x", function=fn, data={})
        return "parent ok"

    assert call(parent).get() == "parent ok"
    assert attempts == [0, 1, 2]


def test_non_retriable_error_fails_at_once(app, call):
    attempts: list[int] = []

    def stop(ctx: Any) -> None:
        attempts.append(ctx.attempt)
        raise NonRetriableError("no")

    fn = create_defer(app, {"id": "stop", "retries": 3}, stop)

    @app.task(lazy=False, shared=False)
    def parent() -> None:
        defer("x", function=fn, data={})

    call(parent)
    assert attempts == [0]


def test_async_handlers_and_nested_defers(app, call, make_fn, recorder):
    leaf = make_fn("leaf")
    order: list[str] = []

    @create_defer(app, {"id": "middle"})
    async def middle(ctx: Any) -> None:
        order.append("middle")
        ctx.defer("leaf", function=leaf, data={"from": ctx.run_id})

    @app.task(bind=True, lazy=False, shared=False)
    def parent(self: DeferTask) -> None:
        defer("m", function=middle, data={})
        order.append("parent")

    result = call(parent)
    assert order == ["parent", "middle"]
    middle_run = deferred_run_id(result.id, "m")
    assert recorder.calls[0].parents[0].run_id == middle_run
    assert recorder.calls[0].event.data == {"from": middle_run}


def test_the_receiver_validates_again(app, call):
    seen: list[Any] = []
    calls = {"n": 0}

    def validate(data: dict[str, Any]) -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] > 1:  # the call site passes, the receiver rejects
            raise ValueError("rejected by receiver")
        return data

    fn = create_defer(app, {"id": "picky", "schema": validate, "retries": 0}, seen.append)

    @app.task(lazy=False, shared=False)
    def parent() -> None:
        defer("x", function=fn, data={"a": 1})

    call(parent)
    assert seen == []
    assert calls["n"] == 2


def test_an_async_validator_is_awaited_by_the_receiver(app):
    # A call site skips an async schema (see test_call_site); a receiver awaits it.
    # The deferred function is applied directly here to reach the receiver side.
    got: list[Any] = []

    async def validate(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "checked": True}

    fn = create_defer(app, {"id": "async-schema", "schema": validate}, got.append)
    event = {"name": "defer/async-schema", "id": "e", "ts": 1, "data": {"a": 1}}
    parent = {"run_id": "p", "task_name": "t", "defer_id": "d"}
    fn.apply(kwargs={"event": event, "parent": parent}).get()
    assert got[0].event.data == {"a": 1, "checked": True}


def test_with_eager_propagation_a_failed_parent_still_runs_its_defers(app, make_fn, recorder):
    fn = make_fn()
    app.conf.task_eager_propagates = True

    @app.task(lazy=False, shared=False)
    def parent() -> None:
        defer("x", function=fn, data={})
        raise ValueError("parent failed")

    with pytest.raises(ValueError):
        parent.delay()
    assert recorder.ids == ["x"]


def test_the_default_is_four_retries(app):
    attempts: list[int] = []

    def always_fails(ctx: Any) -> None:
        attempts.append(ctx.attempt)
        raise RuntimeError("no")

    fn = create_defer(app, {"id": "default-retries"}, always_fails)

    @app.task(lazy=False, shared=False)
    def parent() -> None:
        defer("x", function=fn, data={})

    parent.delay()
    assert attempts == [0, 1, 2, 3, 4]


def test_a_per_task_base_works_without_task_cls_and_plain_tasks_cannot_defer(caplog):
    app = Celery("plain", set_as_current=False)  # no task_cls
    app.conf.task_always_eager = True
    seen: list[Any] = []
    fn = create_defer(app, {"id": "f"}, seen.append)

    @app.task(base=DeferTask, lazy=False, shared=False)
    def with_base() -> None:
        defer("a", function=fn, data={})

    @app.task(lazy=False, shared=False)
    def plain() -> None:
        defer("b", function=fn, data={})

    with_base.delay()
    plain.delay()
    assert [ctx.parents[0].defer_id for ctx in seen] == ["a"]
    assert any("called outside a parent run" in r.getMessage() for r in caplog.records)


def test_event_id_ts_and_logger(app, make_fn, recorder, caplog):
    fn = make_fn()

    @app.task(lazy=False, shared=False)
    def parent() -> None:
        defer("x", function=fn, data={})

    before_ms = time.time_ns() // 1_000_000
    parent.delay()
    after_ms = time.time_ns() // 1_000_000
    ctx = recorder.calls[0]
    assert ctx.event.id == ctx.run_id
    assert before_ms <= ctx.event.ts <= after_ms
    with caplog.at_level(logging.INFO):
        ctx.logger.info("hello")
    record = caplog.records[-1]
    assert (record.defer_function, record.defer_run_id) == ("rec", ctx.run_id)


def test_re_deferring_an_id_on_a_retry_is_silent(app, make_fn, recorder, caplog):
    fn = make_fn()

    @app.task(bind=True, lazy=False, shared=False, max_retries=1)
    def parent(self: DeferTask) -> None:
        defer("same", function=fn, data={"attempt": self.request.retries})
        if self.request.retries == 0:
            raise self.retry(countdown=0)

    parent.delay()
    assert [ctx.event.data for ctx in recorder.calls] == [{"attempt": 0}]
    assert [r for r in caplog.records if r.levelno >= logging.WARNING and r.name == "celery_defer"] == []


def test_a_parent_whose_retries_run_out_runs_the_defers_of_every_attempt(app, make_fn, recorder):
    fn = make_fn()

    @app.task(bind=True, lazy=False, shared=False, max_retries=2)
    def parent(self: DeferTask) -> None:
        defer(f"a{self.request.retries}", function=fn, data={})
        raise self.retry(countdown=0, exc=ValueError("still failing"))

    assert parent.delay().state == "FAILURE"
    assert recorder.ids == ["a0", "a1", "a2"]
