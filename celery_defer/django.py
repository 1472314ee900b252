"""Django: ``DjangoDeferTask`` (DeferTask with Django's on-commit methods) and ``defer_on_commit``.

Celery's Django fixup makes ``celery.contrib.django.task.DjangoTask`` the app's
task class only when the app has no task class of its own, so an app made with
``task_cls=DeferTask`` has no ``delay_on_commit``. Give the app
``task_cls=DjangoDeferTask`` (or ``"celery_defer.django:DjangoDeferTask"``) to
have both: the fixup keeps a task class it is given.

Needs the ``django`` extra.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping
from typing import Any

from celery import Task, shared_task
from celery.contrib.django.task import DjangoTask
from django.db import transaction
from pydantic import BaseModel

from celery_defer import DeferTask, defer
from celery_defer.config.options import FunctionOptions
from celery_defer.config.schemas import encode_plain
from celery_defer.errors import CeleryDeferError

logger = logging.getLogger("celery_defer")

#: The task that makes the ``defer()`` call of :func:`defer_on_commit` once the transaction committed.
RELAY_TASK = "celery_defer.defer_after_commit"


class DjangoDeferTask(DeferTask, DjangoTask):  # type: ignore[misc]
    """:class:`~celery_defer.DeferTask` with ``delay_on_commit`` and ``apply_async_on_commit``.

    ``task.delay_on_commit(...)`` sends the run when the current database
    transaction commits (nothing if it rolls back); the run may call
    :func:`celery_defer.defer` like any ``DeferTask`` run.
    """

    abstract = True


def defer_on_commit(
    id: str, *, function: Any, data: Mapping[str, Any] | BaseModel | None = None, using: str | None = None
) -> None:
    """Defer ``function`` from code that is not a Celery run, once the transaction commits.

    For Django views and signals: ``defer()`` needs a parent run, and a view is
    none. This snapshots ``data`` as JSON now and, when the transaction on
    ``using`` commits, sends a small ``DeferTask`` run (``celery_defer.defer_after_commit``)
    that makes the ``defer()`` call; from there it is durable like any other defer.
    Nothing is sent if the transaction rolls back. Outside a transaction
    (autocommit) it is sent at once.

    Like ``defer()`` it returns ``None`` and never raises: a bad call is logged
    on the ``celery_defer`` logger at ERROR and skipped.

    Args:
        id: the defer id in the relay run (one relay run per call).
        function: a deferred function made by :func:`celery_defer.create_defer`.
        data: a ``dict`` or pydantic model, valid for the function's schema.
        using: the database alias whose transaction to wait for.
    """
    options: FunctionOptions | None = getattr(function, "__celery_defer_options__", None)
    if options is None:
        logger.error(
            "defer_on_commit(%r) skipped: %r was not made by celery_defer.create_defer", id, function
        )
        return
    try:
        data_json = _snapshot(options, data)
    except (CeleryDeferError, TypeError, ValueError) as exc:
        logger.error("defer_on_commit(%r) skipped: %s", id, exc)
        return
    send = functools.partial(_send_relay, function.app, id, options.task_name, data_json)
    transaction.on_commit(send, using=using)


def _snapshot(options: FunctionOptions, data: object) -> str:
    # Checked in the view too, so a mistake is logged where it was made.
    if data is None:
        data = {}
    if not isinstance(data, (Mapping, BaseModel)):
        raise TypeError(f"data must be a dict or a pydantic model, got {type(data).__name__}")
    if options.schema is not None:
        return options.schema.to_json(data)
    if isinstance(data, BaseModel):
        return data.model_dump_json()
    return encode_plain(data)


def _send_relay(app: Any, defer_id: str, task_name: str, data_json: str) -> None:
    kwargs = {"defer_id": defer_id, "function": task_name, "data_json": data_json}
    try:
        # Through the task object, not send_task, so that eager mode runs it in place.
        app.tasks[RELAY_TASK].apply_async(kwargs=kwargs)
    except Exception:
        logger.error("defer_on_commit(%r): the relay run could not be sent", defer_id, exc_info=True)


@shared_task(name=RELAY_TASK, base=DeferTask, bind=True)  # type: ignore[untyped-decorator]
def defer_after_commit(self: Task, defer_id: str, function: str, data_json: str) -> None:
    """Make the ``defer()`` call a :func:`defer_on_commit` asked for; it starts when this run ends."""
    deferred = self.app.tasks.get(function)
    if deferred is None:
        logger.error("defer_on_commit(%r) skipped: this worker has no task %s", defer_id, function)
        return
    defer(defer_id, function=deferred, data=json.loads(data_json))
