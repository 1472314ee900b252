"""Turning recorded defers into deferred runs: Celery messages, or in-process runs.

The message format is ``celery_defer.deferred.message``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from celery import Celery

from celery_defer.deferred.message import build_message
from celery_defer.outbox.record import DeferRecord
from celery_defer.store import clock_for

logger = logging.getLogger(__name__)


def publish(app: Celery, records: Sequence[DeferRecord]) -> None:
    """Send one message per record, in order, on one producer.

    Each message carries the deterministic run id of its record as task id and
    the parent's ids, so Flower links parent and child and a re-sent copy is
    recognised by the receiver.

    Raises:
        Exception: whatever the broker raised; records sent before it stay sent.
    """
    if not records:
        return
    enqueued_ms = clock_for(app).now_ms()
    with app.producer_or_acquire() as producer:
        for record in records:
            options = record.route.send_options()
            if record.priority is not None:
                options["priority"] = record.priority
            app.send_task(
                record.task_name,
                kwargs=build_message(record, enqueued_ms=enqueued_ms),
                task_id=record.run_id,
                parent_id=record.parent.run_id,
                root_id=record.parent.root_id,
                producer=producer,
                serializer="json",
                add_to_parent=False,
                **options,
            )


def run_eagerly(app: Celery, records: Sequence[DeferRecord]) -> None:
    """Run each record's deferred function in this process, in call order.

    A deferred run's failure is its own: it is logged and never reaches the parent.
    """
    enqueued_ms = clock_for(app).now_ms()
    for record in records:
        task = app.tasks.get(record.task_name)
        if task is None:
            logger.error(
                "deferred run %s of %r not started: no task %r is registered on %r",
                record.run_id,
                record.defer_id,
                record.task_name,
                app.main,
            )
            continue
        try:
            task.apply(
                kwargs=build_message(record, enqueued_ms=enqueued_ms),
                task_id=record.run_id,
                throw=False,
                priority=record.priority,
            )
        except Exception:
            # Celery re-raises a retried eager run's last error under
            # task_eager_propagates; the parent must not see it.
            logger.error("deferred run %s failed", record.run_id, exc_info=True)
