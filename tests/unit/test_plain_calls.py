"""A DeferTask behaves like a plain Celery Task wherever it is not about defers."""

from __future__ import annotations

from typing import Any

from celery import Celery, Task

from celery_defer import DeferTask, create_defer, defer


def requests_seen_by_a_task_calling_itself(base: type[Task]) -> list[tuple[Any, bool]]:
    app = Celery("plain-calls", set_as_current=False)
    app.conf.task_always_eager = True
    seen: list[tuple[Any, bool]] = []

    @app.task(bind=True, base=base, shared=False)
    def countdown(self: Task, n: int) -> int:
        seen.append((self.request.args, bool(self.request.called_directly)))
        return n if n == 0 else self(n - 1)

    assert countdown.delay(2).get() == 0
    return seen


def test_a_task_calling_itself_inside_its_run_sees_its_own_request() -> None:
    stock = requests_seen_by_a_task_calling_itself(Task)
    # Each nested plain call pushes a request of its own (what it copies from the
    # run's request differs between Celery versions: compare with stock Celery).
    assert [args for args, _ in stock] == [[2], (1,), (0,)]
    assert requests_seen_by_a_task_calling_itself(DeferTask) == stock


def test_a_nested_plain_call_is_not_a_new_attempt_and_its_defers_join_the_run() -> None:
    app = Celery("plain-calls", task_cls=DeferTask, set_as_current=False)
    app.conf.task_always_eager = True
    received: list[str] = []
    sink = create_defer(app, {"id": "sink"}, lambda ctx: received.append(ctx.parents[0].defer_id))

    @app.task(bind=True, shared=False)
    def walk(self: Task, n: int) -> None:
        defer(f"step-{n}", function=sink)
        if n:
            self(n - 1)

    walk.delay(2)
    assert received == ["step-2", "step-1", "step-0"]  # one run, one finalization, call order
