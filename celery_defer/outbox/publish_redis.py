"""Publishing a run's messages on a Redis broker: one pipelined round trip.

kombu's Redis transport turns a publish into one ``LPUSH`` of a JSON envelope
(the message, its body base64-encoded) on the queue's list, or on
``<queue>\\x06\\x16<step>`` for a priority step, each a round trip of its own.
This module builds the very envelope kombu would push, with the channel's own
helpers (``prepare_message``, the body encoding and delivery tag of
``basic_publish``, ``_q_for_pri`` for the priority list), and sends every
message of the run in one non-transactional pipeline. A stock worker cannot
tell them from ``send_task``'s; ``tests/integration/test_batch_publish.py``
compares the bytes.

Per-command replies tell which pushes landed: what failed stays in the outbox,
due. A connection lost mid-pipeline leaves it unknown which landed; all of
them then stay due, and a copy that had landed already is a duplicate its
receiver acknowledges without running (SPEC 8.2).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from kombu.entity import maybe_delivery_mode
from kombu.transport.redis import Channel as RedisChannel
from kombu.utils.json import dumps

from celery_defer.errors import PublishError
from celery_defer.outbox.task_message import TaskMessage, announce_sent

logger = logging.getLogger(__name__)


def pipelines(channel: Any, messages: Sequence[TaskMessage]) -> bool:
    """Whether ``messages`` can go out in one pipeline on ``channel``.

    A named exchange (a topic or fanout route) needs kombu's binding lookup:
    such runs take the one-by-one path.
    """
    return isinstance(channel, RedisChannel) and all(message.exchange == "" for message in messages)


def publish_pipelined(producer: Any, messages: Sequence[TaskMessage]) -> None:
    """LPUSH each message as kombu would, all in one round trip, in order.

    Raises:
        PublishError: some or all were not pushed; ``sent`` names those that were.
    """
    channel = producer.channel
    for queue in {id(message.queue): message.queue for message in messages}.values():
        producer.maybe_declare(queue)  # cached per connection: a round trip the first time only
    expires: dict[str, int] = getattr(channel, "_expires", None) or {}
    commands_of: list[int] = []
    with channel.conn_or_acquire() as client, client.pipeline(transaction=False) as pipe:
        for message in messages:
            envelope = _envelope(channel, message)
            queue_name = message.routing_key
            priority = channel._get_message_priority(envelope, reverse=False)
            pipe.lpush(channel._q_for_pri(queue_name, priority), dumps(envelope))
            commands = 1
            if queue_name in expires:
                for step in channel.priority_steps:
                    pipe.pexpire(channel._q_for_pri(queue_name, step), expires[queue_name])
                commands += len(channel.priority_steps)
            commands_of.append(commands)
        try:
            replies = pipe.execute(raise_on_error=False)
        except Exception as exc:
            raise PublishError(f"the pipeline of {len(messages)} messages failed: {exc}", sent=[]) from exc
    sent: list[str] = []
    first_error: BaseException | None = None
    position = 0
    for message, commands in zip(messages, commands_of, strict=True):
        pushed = replies[position]
        position += commands
        if isinstance(pushed, BaseException):
            first_error = first_error or pushed
            continue
        sent.append(message.defer_id)
        announce_sent(message)
    if first_error is not None:
        raise PublishError(
            f"{len(messages) - len(sent)} of {len(messages)} messages were refused: {first_error}", sent=sent
        ) from first_error


def _envelope(channel: Any, message: TaskMessage) -> dict[str, Any]:
    # Producer.publish then Channel.basic_publish, as kombu runs them.
    properties = dict(message.properties)
    properties["delivery_mode"] = maybe_delivery_mode(message.delivery_mode)
    envelope: dict[str, Any] = channel.prepare_message(
        message.body,
        message.priority,
        message.content_type,
        message.content_encoding,
        dict(message.headers),
        properties,
    )
    channel._inplace_augment_message(envelope, message.exchange, message.routing_key)
    return envelope
