"""The steps of the run this code is part of: ``celery_defer.step``.

``DeferTask`` opens a :class:`Steps` for each attempt and makes it current in a
``ContextVar``; ``celery_defer.step.run(...)`` finds it from any code the body
calls. Outside a run the calls go to a ``Steps`` with no run behind it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from celery_defer.config.durations import Duration
from celery_defer.parent.capture import RunCapture
from celery_defer.steps.run_steps import Steps

current_steps: ContextVar[Steps | None] = ContextVar("celery_defer_steps", default=None)


def open_steps(task: Any, capture: RunCapture) -> Steps:
    """The steps of one attempt of ``task`` (a ``DeferTask``); a sleep requeues its run."""

    def sleep(delay_s: float, reason: str) -> Any:
        return task.requeue(delay_s=delay_s, reason=reason)

    return Steps(capture, sleeper=sleep)


def steps_of_current_run() -> Steps:
    """The current attempt's steps, or steps with no run behind them."""
    steps = current_steps.get()
    return steps if steps is not None else Steps()


class StepApi:
    """``celery_defer.step``: the steps of the parent run this code runs in.

    Outside a run, :meth:`run` calls ``fn`` directly and :meth:`sleep` sleeps.
    """

    def run(self, step_id: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """See :meth:`Steps.run`."""
        return steps_of_current_run().run(step_id, fn, *args, **kwargs)

    async def run_async(self, step_id: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """See :meth:`Steps.run_async`."""
        return await steps_of_current_run().run_async(step_id, fn, *args, **kwargs)

    def sleep(self, step_id: str, duration: Duration) -> None:
        """See :meth:`Steps.sleep`."""
        steps_of_current_run().sleep(step_id, duration)


step = StepApi()
