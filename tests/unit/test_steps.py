"""SPEC 6 in eager mode and ``.apply()``: steps kept in memory across a run's attempts."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from celery import Celery

from celery_defer import DeferTask, StepResultError, create_defer, defer, step
from celery_defer.steps.memo import eager_steps


@pytest.fixture(params=["always_eager", "apply"])
def call(request: pytest.FixtureRequest, app: Celery) -> Any:
    if request.param == "apply":
        app.conf.task_always_eager = False
        return lambda task, *args: task.apply(args=args)
    return lambda task, *args: task.delay(*args)


def test_a_step_runs_once_across_self_retry_and_returns_its_json_round_trip(app, call):
    calls: Counter[str] = Counter()
    seen: list[Any] = []

    def charge(amount: int) -> tuple[str, int]:
        calls["charge"] += 1
        return ("ch_1", amount)

    @app.task(bind=True, lazy=False, shared=False, max_retries=3)
    def parent(self: DeferTask) -> str:
        seen.append(step.run("charge", charge, 42))
        if self.request.retries < 2:
            raise self.retry(countdown=0)
        return "ok"

    assert call(parent).get() == "ok"
    assert calls["charge"] == 1
    assert seen == [["ch_1", 42]] * 3  # every attempt sees the same JSON value


def test_a_step_runs_once_across_autoretry_for(app, call):
    calls: Counter[str] = Counter()
    attempts: list[int] = []

    @app.task(bind=True, lazy=False, shared=False, autoretry_for=(ValueError,), max_retries=3)
    def parent(self: DeferTask) -> str:
        attempts.append(self.request.retries)
        step.run("send", lambda: calls.update(["send"]))
        if self.request.retries < 2:
            raise ValueError("flaky after the step")
        return "ok"

    assert call(parent).get() == "ok"
    assert attempts == [0, 1, 2]
    assert calls["send"] == 1


def test_a_deferred_runs_steps_are_kept_across_its_retries(app):
    calls: Counter[str] = Counter()
    attempts: list[int] = []

    def handler(ctx: Any) -> None:
        attempts.append(ctx.attempt)
        ctx.step.run("score", lambda: calls.update(["score"]))
        if ctx.attempt < 2:
            raise RuntimeError("planned")

    fn = create_defer(app, {"id": "scorer", "retries": 3}, handler)

    @app.task(lazy=False, shared=False)
    def parent() -> None:
        defer("score", function=fn, data={})

    parent.delay()
    assert attempts == [0, 1, 2]
    assert calls["score"] == 1


def test_a_repeated_step_id_gets_an_implicit_index_and_each_is_kept(app, call):
    calls: list[int] = []
    results: list[list[int]] = []

    def work(i: int) -> int:
        calls.append(i)
        return i * 10

    @app.task(bind=True, lazy=False, shared=False, max_retries=2)
    def parent(self: DeferTask) -> None:
        results.append([step.run("item", work, i) for i in range(3)])
        if self.request.retries == 0:
            raise self.retry(countdown=0)

    call(parent)
    assert calls == [0, 1, 2]
    assert results == [[0, 10, 20], [0, 10, 20]]


def test_an_async_fn_runs_as_a_step_and_async_handlers_await_run_async(app):
    calls: Counter[str] = Counter()
    values: list[Any] = []

    async def fetch(n: int) -> dict[str, int]:
        await asyncio.sleep(0)
        calls["fetch"] += 1
        return {"n": n}

    async def handler(ctx: Any) -> None:
        values.append(await ctx.step.run_async("fetch", fetch, 1))
        values.append(ctx.step.run("fetch-sync", fetch, 2))  # an async fn from the sync spelling
        if ctx.attempt == 0:
            raise RuntimeError("planned")

    fn = create_defer(app, {"id": "fetcher", "retries": 1}, handler)

    @app.task(lazy=False, shared=False)
    def parent() -> None:
        defer("f", function=fn, data={})

    parent.delay()
    assert calls["fetch"] == 2  # once per step, not once per attempt
    assert values == [{"n": 1}, {"n": 2}] * 2


def test_a_result_that_is_not_json_fails_the_run_without_retries_naming_the_step(app, call):
    attempts: list[int] = []

    @app.task(bind=True, lazy=False, shared=False, autoretry_for=(Exception,), max_retries=3)
    def parent(self: DeferTask) -> None:
        attempts.append(self.request.retries)
        step.run("ok", lambda: 1)
        step.run("ok", lambda: object())  # "ok:1" returns something JSON cannot hold

    result = call(parent)
    assert result.state == "FAILURE"
    assert isinstance(result.result, StepResultError)
    assert "'ok:1'" in str(result.result) and "JSON" in str(result.result)
    assert attempts == [0]


def test_a_deferred_run_whose_step_is_not_json_is_not_retried(app):
    attempts: list[int] = []

    def handler(ctx: Any) -> None:
        attempts.append(ctx.attempt)
        ctx.step.run("when", lambda: {1, 2})

    fn = create_defer(app, {"id": "bad-step", "retries": 3}, handler)

    @app.task(lazy=False, shared=False)
    def parent() -> None:
        defer("b", function=fn, data={})

    parent.delay()
    assert attempts == [0]


def test_defers_inside_a_step_are_made_once_and_run_when_the_parent_finalizes(app, call, make_fn, recorder):
    fn = make_fn()

    @app.task(bind=True, lazy=False, shared=False, max_retries=2)
    def parent(self: DeferTask) -> None:
        def notify() -> str:
            defer("receipt", function=fn, data={"attempt": self.request.retries})
            return "sent"

        step.run("notify", notify)
        if self.request.retries == 0:
            raise self.retry(countdown=0)

    call(parent)
    assert recorder.ids == ["receipt"]
    assert recorder.calls[0].event.data == {"attempt": 0}


def test_outside_a_run_a_step_just_calls_fn():
    calls: list[int] = []
    assert step.run("x", lambda n: calls.append(n) or n, 3) == 3
    assert step.run("x", lambda n: calls.append(n) or n, 4) == 4
    assert calls == [3, 4]


def test_eager_steps_are_forgotten_once_the_run_finalizes(app, call):
    @app.task(lazy=False, shared=False)
    def parent() -> int:
        return int(step.run("one", lambda: 1))

    result = call(parent)
    assert result.get() == 1
    assert eager_steps.load(result.id).entries == {}


def test_an_eager_sleep_waits_in_place_then_goes_on(app, call):
    @app.task(lazy=False, shared=False)
    def parent() -> str:
        step.sleep("nap", "10ms")
        return "awake"

    assert call(parent).get() == "awake"
