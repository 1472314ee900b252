"""Publishing a run's messages on an AMQP broker: one channel, one write.

With publisher confirms off (Celery's default), py-amqp's ``basic_publish``
writes the frames and returns: nothing waits for the broker. What cost a
round trip per message was Celery's ``send_task`` around it, and a declare
(which ``maybe_declare`` does once per connection and entity); what cost
most after that was py-amqp encoding each message's properties in Python.
So each queue is declared once a batch, the messages are framed from
per-function templates (``amqp_frames``) and the run's frames go out in one
write. Messages a template does not fit go through ``Producer.publish``, in
call order, as they are met.

With confirms on (``broker_transport_options={"confirm_publish": True}``)
each publish waits for its confirm, as ``send_task`` would: the same
guarantee, the same cost.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any
from weakref import WeakKeyDictionary

from celery_defer.errors import PublishError
from celery_defer.outbox.amqp_frames import FrameTemplate, frames_apply, write_frames
from celery_defer.outbox.task_message import TaskMessage, announce_sent

logger = logging.getLogger(__name__)

#: Each channel's frame templates, by message shape (``None``: that shape takes ``Producer.publish``).
_templates_of: WeakKeyDictionary[Any, dict[int, FrameTemplate | None]] = WeakKeyDictionary()
_MAX_TEMPLATES = 1024


def publish_each(producer: Any, messages: Sequence[TaskMessage]) -> None:
    """Publish the messages in order on ``producer``'s channel.

    Raises:
        PublishError: the broker refused one; ``sent`` names those before it.
    """
    channel = producer.channel
    sent: list[str] = []
    declared: set[str] = set()
    framed = frames_apply(channel)
    pending: list[TaskMessage] = []  # framed, not yet written
    pending_frames: list[bytes] = []

    def flush() -> None:
        if not pending:
            return
        try:
            write_frames(channel, pending_frames)
        except Exception as exc:
            # Which frames the socket took is unknown: all of them stay due (a copy
            # that did land is a duplicate its receiver acknowledges unrun).
            raise PublishError(f"writing {len(pending)} messages failed: {exc}", sent=sent) from exc
        for message in pending:
            sent.append(message.defer_id)
            announce_sent(message)
        pending.clear()
        pending_frames.clear()

    for message in messages:
        try:
            if message.queue.name not in declared:
                # Once per batch (kombu binds a copy of the queue on every declare
                # it is asked for, even a cached one), and once per connection on the wire.
                producer.maybe_declare(message.queue)
                declared.add(message.queue.name)
        except Exception as exc:
            flush()
            raise PublishError(
                f"message {len(sent) + 1} of {len(messages)} was refused: {exc}", sent=sent
            ) from exc
        template = _template(channel, message) if framed else None
        if template is not None:
            pending.append(message)
            pending_frames.append(template.render(message))
            continue
        flush()
        try:
            producer.publish(
                message.body,
                exchange=message.exchange,
                routing_key=message.routing_key,
                content_type=message.content_type,
                content_encoding=message.content_encoding,
                headers=dict(message.headers),
                priority=0 if message.priority is None else message.priority,
                delivery_mode=message.delivery_mode,
                declare=[],
                retry=False,
                **message.properties,
            )
        except Exception as exc:
            raise PublishError(
                f"message {len(sent) + 1} of {len(messages)} was refused: {exc}", sent=sent
            ) from exc
        sent.append(message.defer_id)
        announce_sent(message)
    flush()


def _template(channel: Any, message: TaskMessage) -> FrameTemplate | None:
    if message.shape is None:
        return None
    templates = _templates_of.get(channel)
    if templates is None or len(templates) > _MAX_TEMPLATES:
        templates = _templates_of[channel] = {}
    if message.shape not in templates:
        try:
            templates[message.shape] = FrameTemplate(channel, message)
        except Exception as exc:
            logger.info("messages of %s are published one by one: %s", message.task_name, exc)
            templates[message.shape] = None
    return templates[message.shape]
