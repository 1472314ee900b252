"""An eager Celery app: parent runs and deferred runs in this process, no servers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from celery import Celery

from celery_defer import DeferTask, create_defer


class Recorder:
    """A deferred function that records every context it is called with."""

    def __init__(self) -> None:
        self.calls: list[Any] = []

    def __call__(self, ctx: Any) -> None:
        self.calls.append(ctx)

    @property
    def ids(self) -> list[str]:
        return [ctx.parents[0].defer_id for ctx in self.calls]


@pytest.fixture
def app() -> Celery:
    app = Celery("unit", task_cls=DeferTask, set_as_current=False)
    app.conf.task_always_eager = True
    app.conf.task_store_eager_result = False
    return app


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def make_fn(app: Celery, recorder: Recorder) -> Callable[..., Any]:
    def make(fn_id: str = "rec", **config: Any) -> Any:
        return create_defer(app, {"id": fn_id, **config}, recorder)

    return make
