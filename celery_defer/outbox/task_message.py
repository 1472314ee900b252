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

The keyword arguments' JSON is written from a template of kombu's layout
(``_kwargs_text``) rather than by encoding the whole dict: only the data is
encoded, by one encoder made once. It is the text ``kombu.utils.json.dumps``
makes of ``build_message``'s dict (``tests/unit/test_task_message_text.py``).
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Sequence
from typing import Any, NamedTuple
from weakref import WeakKeyDictionary

from celery import Celery, signals
from kombu.serialization import dumps, registry
from kombu.utils import json as kombu_json
from kombu.utils.encoding import bytes_to_str

from celery_defer.deferred.message import event_name
from celery_defer.outbox.record import DeferRecord

#: What Flower shows for the (empty) positional arguments, as Celery's saferepr writes it.
_NO_ARGS_REPR = "()"
_EMPTY_EMBED: dict[str, Any] = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
_EMPTY_EMBED_JSON = '{"callbacks": null, "errbacks": null, "chain": null, "chord": null}'
#: kombu's JSON for values ``json.loads`` returns: default separators, ASCII only.
_KOMBU_JSON = json.JSONEncoder()
#: A JSON string literal, as ``json.dumps`` writes one (ASCII only).
_quote = json.encoder.encode_basestring_ascii


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
    shape: int | None  # equal for messages whose fields other than ids and arguments are equal


def batchable(app: Celery) -> bool:
    """Whether this app's messages can be built here; else ``send_task`` sends them one by one.

    Task-sent events and the old protocol 1 are ``send_task``'s business.
    """
    return not app.conf.task_send_sent_event and int(app.conf.task_protocol or 2) == 2


class _Route(NamedTuple):
    """Where a function's messages go and the header fields they share."""

    queue: Any
    exchange: str
    routing_key: str
    priority: int | None
    delivery_mode: Any
    headers: dict[str, Any]
    properties: dict[str, Any]
    shape: int


#: Each app's resolved routes, by function, queue, priority, process and thread
#: (the ``origin`` and ``reply_to`` headers name the last two).
_routes_of: WeakKeyDictionary[Celery, dict[tuple[Any, ...], _Route]] = WeakKeyDictionary()
_MAX_ROUTES = 1024
_shapes = itertools.count()


def build_task_messages(
    app: Celery, records: Sequence[DeferRecord], *, enqueued_ms: int
) -> list[TaskMessage]:
    """Return the messages that start ``records``' deferred runs, as ``send_task`` would build them.

    Routing and the header fields every message of one function shares are
    resolved once per function, queue and priority (and process and thread);
    with ``task_routes`` set (a router may look at the arguments), once per record.
    """
    per_record = bool(app.amqp.router.routes)
    routes = _routes_of.get(app)
    if routes is None or len(routes) > _MAX_ROUTES:
        routes = _routes_of[app] = {}
    here = (os.getpid(), app.thread_oid)
    codec = registry._encoders.get("json")
    stock = codec is not None and codec.encoder is kombu_json.dumps  # else someone's own json serializer
    messages = []
    for record in records:
        kwargs, kwargs_text = _kwargs(record, enqueued_ms)
        if not stock:
            kwargs_text = str(bytes_to_str(dumps(kwargs, serializer="json")[2]))
        key = (record.task_name, record.route, record.priority, *here)
        route = None if per_record else routes.get(key)
        if route is None:
            route = _route(app, record, kwargs)
            if not per_record:
                routes[key] = route
        messages.append(_message(app, record, kwargs, kwargs_text, route))
    return messages


def _kwargs(record: DeferRecord, enqueued_ms: int) -> tuple[dict[str, Any], str]:
    """``build_message``'s dict for ``record``, and the JSON kombu makes of it."""
    run_id = record.run_id
    name = event_name(record.function_id)
    data = json.loads(record.data_json)
    kwargs: dict[str, Any] = {
        "event": {
            "name": name,
            "id": run_id,
            "ts": record.ts_ms,
            "seq": record.ts_ns,
            "data": data,
        },
        "parent": {
            "run_id": record.parent.run_id,
            "task_name": record.parent.task_name,
            "defer_id": record.defer_id,
        },
        "enqueued_ms": enqueued_ms,
    }
    text = (
        f'{{"event": {{"name": {_quote(name)}, "id": {_quote(run_id)}, '
        f'"ts": {int(record.ts_ms)}, "seq": {int(record.ts_ns)}, "data": {_KOMBU_JSON.encode(data)}}}, '
        f'"parent": {{"run_id": {_quote(record.parent.run_id)}, '
        f'"task_name": {_quote(record.parent.task_name)}, "defer_id": {_quote(record.defer_id)}}}, '
        f'"enqueued_ms": {int(enqueued_ms)}}}'
    )
    return kwargs, text


def _route(app: Celery, record: DeferRecord, kwargs: dict[str, Any]) -> _Route:
    amqp = app.amqp
    options: dict[str, Any] = record.route.send_options()  # where the deferring app routes it
    if record.priority is not None:
        options["priority"] = record.priority
    task = app.tasks.get(record.task_name)
    routed: dict[str, Any] = amqp.router.route(options, record.task_name, (), kwargs, task)
    headers, properties, _, _ = amqp.create_task_message(
        record.run_id,
        record.task_name,
        (),
        {},
        reply_to=app.thread_oid,
        argsrepr=_NO_ARGS_REPR,
        kwargsrepr="",
        ignore_result=None,  # as send_task leaves it when the caller does not say
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
    return _Route(
        queue=queue,
        exchange=getattr(exchange, "name", exchange),
        routing_key=routing_key,
        priority=priority,
        delivery_mode=delivery_mode or app.conf.task_default_delivery_mode,
        headers=headers,
        properties=properties,
        shape=next(_shapes),
    )


def _message(
    app: Celery, record: DeferRecord, kwargs: dict[str, Any], kwargs_text: str, route: _Route
) -> TaskMessage:
    run_id: str = kwargs["event"]["id"]
    maxsize = app.amqp.kwargsrepr_maxsize
    headers = {
        **route.headers,
        "id": run_id,
        "root_id": record.parent.root_id or run_id,
        "parent_id": record.parent.run_id,
        "kwargsrepr": kwargs_text if len(kwargs_text) <= maxsize else kwargs_text[: maxsize - 3] + "...",
        "timelimit": list(route.headers["timelimit"]),
        "stamps": dict(route.headers["stamps"]),
    }
    properties = {**route.properties, "correlation_id": run_id}
    body = ((), kwargs, _EMPTY_EMBED)
    signals.before_task_publish.send(
        sender=record.task_name,
        body=body,
        exchange=route.exchange,
        routing_key=route.routing_key,
        declare=[route.queue],
        headers=headers,
        properties=properties,
        retry_policy={},
    )
    return TaskMessage(
        defer_id=record.defer_id,
        task_name=record.task_name,
        # kombu's JSON of the body tuple, with the kwargs' JSON (already made) spliced in.
        body=f"[[], {kwargs_text}, {_EMPTY_EMBED_JSON}]",
        content_type=registry._encoders["json"].content_type,
        content_encoding=registry._encoders["json"].content_encoding,
        headers=headers,
        properties=properties,
        priority=route.priority,
        exchange=route.exchange,
        routing_key=route.routing_key,
        queue=route.queue,
        delivery_mode=route.delivery_mode,
        celery_body=body,
        # A receiver of before_task_publish may have changed any header (tracing does).
        shape=None if signals.before_task_publish.receivers else route.shape,
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
