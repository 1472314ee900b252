"""Turning recorded defers into deferred runs: Celery messages, or in-process runs.

The message format is ``celery_defer.deferred.message``; the task message around
it is built once per record (``task_message``) and a run's messages go to the
broker together: in one pipeline on Redis (``publish_redis``), on one channel
without a round trip each on AMQP (``publish_amqp``). Other kombu transports,
task-sent events and protocol 1 take ``app.send_task``, one message at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from celery import Celery

from celery_defer.deferred.message import build_message
from celery_defer.errors import PublishError
from celery_defer.outbox.publish_amqp import publish_each
from celery_defer.outbox.publish_redis import pipelines, publish_pipelined
from celery_defer.outbox.record import DeferRecord
from celery_defer.outbox.task_message import batchable, build_task_messages
from celery_defer.store import clock_for

logger = logging.getLogger(__name__)


def publish(app: Celery, records: Sequence[DeferRecord]) -> None:
    """Send one message per record, in order, on one producer.

    Each message carries the deterministic run id of its record as task id and
    the parent's ids, so Flower links parent and child and a re-sent copy is
    recognised by the receiver.

    Raises:
        PublishError: not every message was taken; its ``sent`` names the
            records that were (they stay sent), with the broker's error as cause.
    """
    if not records:
        return
    enqueued_ms = clock_for(app).now_ms()
    with app.producer_or_acquire() as producer:
        if not batchable(app):
            _send_each(app, producer, records, enqueued_ms)
            return
        try:
            messages = build_task_messages(app, records, enqueued_ms=enqueued_ms)
        except Exception as exc:
            raise PublishError(f"building the messages failed: {exc}", sent=[]) from exc
        if pipelines(producer.channel, messages):
            publish_pipelined(producer, messages)
        else:
            publish_each(producer, messages)


def _send_each(app: Celery, producer: Any, records: Sequence[DeferRecord], enqueued_ms: int) -> None:
    sent: list[str] = []
    for record in records:
        options = record.route.send_options()
        if record.priority is not None:
            options["priority"] = record.priority
        try:
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
        except Exception as exc:
            raise PublishError(f"message {len(sent) + 1} of {len(records)} failed: {exc}", sent=sent) from exc
        sent.append(record.defer_id)


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
