"""Publishing a run's messages on an AMQP broker: one channel, no round trip per message.

With publisher confirms off (Celery's default), py-amqp's ``basic_publish``
writes the frames and returns: nothing waits for the broker. What cost a
round trip per message was Celery's ``send_task`` around it, and a declare
(which ``maybe_declare`` does once per connection and entity). So the
prebuilt messages go through ``Producer.publish`` on one channel, in call
order, each queue declared once (and asked for once a batch: kombu's
``maybe_declare`` copies the queue each time it is asked). What is left per
message is py-amqp encoding its frames, in Python, as it does for ``send_task``.

With confirms on (``broker_transport_options={"confirm_publish": True}``)
each publish waits for its confirm, as ``send_task`` would: the same
guarantee, the same cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery_defer.errors import PublishError
from celery_defer.outbox.task_message import TaskMessage, announce_sent


def publish_each(producer: Any, messages: Sequence[TaskMessage]) -> None:
    """Publish the messages one after another on ``producer``'s channel.

    Raises:
        PublishError: the broker refused one; ``sent`` names those before it.
    """
    sent: list[str] = []
    declared: set[str] = set()
    for message in messages:
        try:
            if message.queue.name not in declared:
                # Once per batch (kombu binds a copy of the queue on every declare
                # it is asked for, even a cached one), and once per connection on the wire.
                producer.maybe_declare(message.queue)
                declared.add(message.queue.name)
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
