"""A deferred run's Celery task message, built once, ready for any broker.

``app.send_task`` builds, routes and publishes one message per call; its cost
is what a parent with many defers paid. Here each record becomes the message
Celery itself would send (``app.amqp.create_task_message``, protocol 2, routed
by ``app.amqp.router`` from ``task_routes``/``queue=``, priority in the
properties), and the broker-specific modules (``publish_redis``,
``publish_amqp``) hand a whole run's messages to the broker together. Flower,
``inspect`` and any stock worker see an ordinary task message: the record's run
id as task id, the parent's ``parent_id``/``root_id``.

``argsrepr``/``kwargsrepr`` (what Flower shows as arguments) are the message's
JSON text cut to Celery's size limits rather than ``saferepr`` of the objects:
the same document, at a fraction of the cost.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from celery import Celery, signals
from kombu.serialization import dumps
from kombu.utils.encoding import bytes_to_str

from celery_defer.deferred.message import build_message
from celery_defer.outbox.record import DeferRecord

#: The JSON of the (empty) positional arguments, and what Flower shows for them.
_NO_ARGS_REPR = "()"
_EMPTY_EMBED_JSON = '{"callbacks": null, "errbacks": null, "chain": null, "chord": null}'


class TaskMessage(NamedTuple):
    """One deferred run's message: what ``kombu.Producer.publish`` takes, serialized."""

    defer_id: str
    task_name: str
    body: bytes | str
    content_type: str
    content_encoding: str
    headers: dict[str, Any]
    properties: dict[str, Any]
    priority: int | None
    exchange: str
    routing_key: str
    queue: Any  # kombu.Queue (declared before the first publish to it)
    delivery_mode: Any
    celery_body: tuple[Any, ...]  # (args, kwargs, embed): what Celery's publish signals carry


def _embed_json(embed: dict[str, Any]) -> str:
    if not any(embed.values()):
        return _EMPTY_EMBED_JSON
    return str(bytes_to_str(dumps(embed, serializer="json")[2]))


def batchable(app: Celery) -> bool:
    """Whether this app's messages can be built here; else ``send_task`` sends them one by one.

    Task-sent events and the old protocol 1 are ``send_task``'s business.
    """
    return not app.conf.task_send_sent_event and int(app.conf.task_protocol or 2) == 2


def build_task_message(app: Celery, record: DeferRecord, *, enqueued_ms: int) -> TaskMessage:
    """Return the message that starts ``record``'s deferred run, as ``send_task`` would build it."""
    amqp = app.amqp
    options: dict[str, Any] = {}
    if record.queue is not None:
        options["queue"] = record.queue
    if record.priority is not None:
        options["priority"] = record.priority
    kwargs = build_message(record, enqueued_ms=enqueued_ms)
    task = app.tasks.get(record.task_name)
    routed: dict[str, Any] = amqp.router.route(options, record.task_name, (), kwargs, task)
    content_type, content_encoding, kwargs_json = dumps(kwargs, serializer="json")
    kwargsrepr = kwargsrepr_source = bytes_to_str(kwargs_json)
    if len(kwargsrepr) > amqp.kwargsrepr_maxsize:
        kwargsrepr = kwargsrepr[: amqp.kwargsrepr_maxsize - 3] + "..."
    headers, properties, body, _ = amqp.create_task_message(
        record.run_id,
        record.task_name,
        (),
        kwargs,
        reply_to=app.thread_oid,
        root_id=record.parent.root_id,
        parent_id=record.parent.run_id,
        argsrepr=_NO_ARGS_REPR,
        kwargsrepr=kwargsrepr,
    )
    queue = routed.pop("queue", None) or amqp.default_queue
    exchange: Any = routed.pop("exchange", None)
    routing_key: Any = routed.pop("routing_key", None)
    exchange_type = routed.pop("exchange_type", None) or getattr(queue.exchange, "type", "direct")
    priority = routed.pop("priority", None)
    delivery_mode = routed.pop("delivery_mode", None) or queue.exchange.delivery_mode
    properties.update(routed)
    # As Celery's send_task_message: a direct route without exchange or key goes
    # straight to its queue (the anonymous exchange).
    if (not exchange or not routing_key) and exchange_type == "direct":
        exchange, routing_key = "", queue.name
    elif exchange is None:
        exchange = queue.exchange.name or amqp.default_exchange.name
        routing_key = routing_key or queue.routing_key or app.conf.task_default_routing_key
    if hasattr(exchange, "name"):
        exchange = exchange.name
    signals.before_task_publish.send(
        sender=record.task_name,
        body=body,
        exchange=exchange,
        routing_key=routing_key,
        declare=[queue],
        headers=headers,
        properties=properties,
        retry_policy={},
    )
    # kombu's JSON of the body tuple, with the kwargs' JSON (already made) spliced in.
    data = f"[[], {kwargsrepr_source}, {_embed_json(body[2])}]"
    return TaskMessage(
        defer_id=record.defer_id,
        task_name=record.task_name,
        body=data,
        celery_body=body,
        content_type=content_type,
        content_encoding=content_encoding,
        headers=headers,
        properties=properties,
        priority=priority,
        exchange=exchange,
        routing_key=routing_key,
        queue=queue,
        delivery_mode=delivery_mode or app.conf.task_default_delivery_mode,
    )


def announce_sent(message: TaskMessage) -> None:
    """Celery's ``after_task_publish`` for a message the broker took."""
    signals.after_task_publish.send(
        sender=message.task_name,
        body=message.celery_body,
        headers=message.headers,
        exchange=message.exchange,
        routing_key=message.routing_key,
    )
