"""What a deferred handler receives: :class:`DeferContext` and its parts."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, TypeVar

from celery.utils.log import get_task_logger

from celery_defer.deferred.payload import DeferCall
from celery_defer.steps.run_steps import Steps

T = TypeVar("T")


class Parent(NamedTuple):
    """The run that deferred this one."""

    run_id: str
    task_name: str
    defer_id: str


@dataclass(frozen=True, slots=True)
class DeferEvent(Generic[T]):
    """The event that started a deferred run.

    Attributes:
        name: ``defer/<function id>``.
        data: an instance of the function's schema type, else the plain ``dict``.
        id: the event's id, derived from the parent run id and the defer id.
        ts: when ``defer()`` was called, in ms since the epoch.
    """

    name: str
    data: T
    id: str
    ts: int


@dataclass(frozen=True, slots=True)
class DeferContext(Generic[T]):
    """The one argument of a deferred handler.

    Attributes:
        event: the triggering event; ``event.data`` is typed by the schema.
        run_id: the Celery task id of this deferred run.
        attempt: 0 on the first try, then 1, 2, ... on retries.
        parents: the run(s) that deferred this one.
        logger: a logger whose records carry this run's id.
        defer: :func:`celery_defer.defer`, to defer further functions from here.
        step: the run's :class:`~celery_defer.steps.run_steps.Steps` (SPEC section 6):
            ``ctx.step.run(id, fn, ...)``, ``await ctx.step.run_async(...)``,
            ``ctx.step.sleep(id, duration)``.
    """

    event: DeferEvent[T]
    run_id: str
    attempt: int
    parents: list[Parent]
    logger: logging.LoggerAdapter[logging.Logger]
    defer: DeferCall = field(repr=False)
    step: Steps = field(default_factory=Steps, repr=False)


def run_logger(function_id: str, run_id: str) -> logging.LoggerAdapter[logging.Logger]:
    """Return the ``ctx.logger`` of one deferred run.

    A Celery task logger (``celery_defer.fn.<id>``, under ``celery.task``): in a
    worker its lines carry the task name and id in Celery's task log format,
    ``celery_defer.fn.<id>[<run id>]: ...``; each record also carries
    ``defer_function`` and ``defer_run_id`` for structured handlers.
    """
    return logging.LoggerAdapter(
        _task_logger(function_id), {"defer_function": function_id, "defer_run_id": run_id}
    )


@functools.cache
def _task_logger(function_id: str) -> logging.Logger:
    # Celery's get_task_logger takes the logging module's lock and re-parents the
    # logger on every call; one per function is enough (logging keeps it anyway).
    logger: logging.Logger = get_task_logger(f"celery_defer.fn.{function_id}")
    return logger


AnyContext = DeferContext[Any]
