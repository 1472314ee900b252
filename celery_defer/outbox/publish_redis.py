"""Publishing a run's messages on a Redis broker: one pipelined round trip.

kombu's Redis transport turns a publish into one ``LPUSH`` of a JSON envelope
(the message, its body base64-encoded) on the queue's list, or on
``<queue>\\x06\\x16<step>`` for a priority step, each a round trip of its own.
Here every message of the run is the envelope kombu would push
(``redis_envelope``), and all go in one non-transactional pipeline, written to
the socket at once (``redis_wire``): one ``LPUSH`` per list, its messages in
call order. A stock worker cannot tell
them from ``send_task``'s (``tests/integration/test_batch_publish.py``).

Per-command replies tell which pushes landed (an ``LPUSH`` of many values is
all or nothing): what failed stays in the outbox, due. A connection lost
mid-pipeline leaves it unknown which landed; all of them then stay due, and a
copy that had landed already is a duplicate its receiver acknowledges without
running (SPEC 8.2).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any
from weakref import WeakKeyDictionary

from kombu.transport.redis import Channel as RedisChannel
from kombu.utils.json import dumps

from celery_defer.errors import PublishError
from celery_defer.outbox.redis_envelope import EnvelopeTemplate, envelope
from celery_defer.outbox.task_message import TaskMessage, announce_sent
from celery_defer.redis_wire import send_in_one_write

logger = logging.getLogger(__name__)

#: Each channel's envelope templates, by message shape (see ``TaskMessage.shape``).
_templates_of: WeakKeyDictionary[Any, dict[int, EnvelopeTemplate]] = WeakKeyDictionary()
_MAX_TEMPLATES = 1024
#: Each channel's client, with the pool it was made for. kombu makes a new
#: ``redis.Redis`` per publish (filling its reply-callback table each time, a
#: measurable part of a one-message run's send); one per channel and pool will do.
_clients_of: WeakKeyDictionary[Any, tuple[Any, Any]] = WeakKeyDictionary()


def _client(channel: Any) -> Any:
    """A client on ``channel``'s pool, as ``conn_or_acquire`` gives, made once."""
    pool = channel.pool
    cached = _clients_of.get(channel)
    if cached is None or cached[0] is not pool:
        cached = _clients_of[channel] = (pool, channel._create_client())
    return cached[1]


def pipelines(channel: Any, messages: Sequence[TaskMessage]) -> bool:
    """Whether ``messages`` can go out in one pipeline on ``channel``.

    A named exchange (a topic or fanout route) needs kombu's binding lookup:
    such runs take the one-by-one path.
    """
    return isinstance(channel, RedisChannel) and all(message.exchange == "" for message in messages)


def publish_pipelined(producer: Any, batch: Sequence[TaskMessage]) -> None:
    """LPUSH each message as kombu would, all in one round trip, in order.

    Raises:
        PublishError: some or all were not pushed; ``sent`` names those that were.
    """
    channel = producer.channel
    first_error: BaseException | None = None
    undeclared: set[str] = set()
    for queue in {message.queue.name: message.queue for message in batch}.values():
        try:
            producer.maybe_declare(queue)  # cached per connection: a round trip the first time only
        except Exception as exc:  # that queue's messages stay due; the others go
            logger.warning("declaring queue %r failed: %s", queue.name, exc)
            first_error = first_error or exc
            undeclared.add(queue.name)
    messages = [message for message in batch if message.queue.name not in undeclared]
    # Consecutive messages for one list go in one LPUSH (in order: kombu pops from
    # the other end), so the pipeline holds a command per list, not per message.
    pushes: list[tuple[str, list[TaskMessage], list[str]]] = []
    templates = _templates_of.get(channel)
    if templates is None or len(templates) > _MAX_TEMPLATES:
        templates = _templates_of[channel] = {}
    # Each copy needs a unique delivery tag (the key of kombu's unacked bookkeeping):
    # one of the channel's own, with the message's place in the batch after it.
    tag_base = f"{channel._next_delivery_tag()}."
    for place, message in enumerate(messages):
        if message.shape is None:  # one of a kind: kombu's own encoding
            built = envelope(channel, message)
            key = channel._q_for_pri(message.routing_key, channel._get_message_priority(built, reverse=False))
            text = dumps(built)
        else:
            template = templates.get(message.shape)
            if template is None:
                template = templates[message.shape] = EnvelopeTemplate(channel, message)
            key = channel._q_for_pri(message.routing_key, template.priority)
            text = template.render(message, f"{tag_base}{place}")
        if pushes and pushes[-1][0] == key:
            pushes[-1][1].append(message)
            pushes[-1][2].append(text)
        else:
            pushes.append((key, [message], [text]))
    expires: dict[str, int] = getattr(channel, "_expires", None) or {}
    commands: list[list[Any]] = [["LPUSH", key, *values] for key, _, values in pushes]
    for queue_name in {group[0].routing_key for _, group, _ in pushes} & expires.keys():
        for step in channel.priority_steps:
            commands.append(["PEXPIRE", channel._q_for_pri(queue_name, step), expires[queue_name]])
    try:
        replies = _execute(_client(channel), commands)
    except Exception as exc:
        raise PublishError(f"the pipeline of {len(messages)} messages failed: {exc}", sent=[]) from exc
    sent: list[str] = []
    for (_, group, _), pushed in zip(pushes, replies, strict=False):
        if isinstance(pushed, BaseException):
            first_error = first_error or pushed
            continue
        for message in group:
            sent.append(message.defer_id)
            announce_sent(message)
    if first_error is not None:
        raise PublishError(
            f"{len(batch) - len(sent)} of {len(batch)} messages were refused: {first_error}", sent=sent
        ) from first_error


def _execute(client: Any, commands: list[list[Any]]) -> list[Any]:
    if getattr(client, "global_keyprefix", ""):
        # kombu's prefixing client puts the prefix on keys in its own pipeline.
        with client.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            return list(pipe.execute(raise_on_error=False))
    return send_in_one_write(client, commands)
