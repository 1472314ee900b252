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

The keyword arguments' JSON is written in kombu's layout (``_kwargs_text``)
with the data spliced in as the call site encoded it, rather than by encoding
a dict: nothing is decoded or encoded again. The receiver decodes exactly
``build_message``'s dict (``tests/unit/test_task_message_text.py``), and the
dicts themselves are made only for whoever asks: a router that looks at the
arguments, a receiver of Celery's publish signals.
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

from celery_defer.deferred.message import build_message, event_name
from celery_defer.outbox.record import DeferRecord

#: What Flower shows for the (empty) positional arguments, as Celery's saferepr writes it.
_NO_ARGS_REPR = "()"
_EMPTY_EMBED: dict[str, Any] = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
_EMPTY_EMBED_JSON = '{"callbacks": null, "errbacks": null, "chain": null, "chord": null}'
#: A JSON string literal, as ``json.dumps`` writes one (ASCII only).
_quote = json.encoder.encode_basestring_ascii


class TaskMessage:
    """One deferred run's message: what ``kombu.Producer.publish`` takes, serialized.

    The fields every broker path reads are set at once; the header and property
    dicts and the body Celery's publish signals carry are made when first asked
    for (by the AMQP path, the one-by-one Redis path, a signal receiver): the
    Redis template path renders a run's messages without them.
    """

    __slots__ = (
        "_celery_body",
        "_enqueued_ms",
        "_headers",
        "_properties",
        "_record",
        "defer_id",
        "kwargs_text",
        "kwargsrepr",
        "parent_id",
        "root_id",
        "route",
        "run_id",
        "shape",
        "task_name",
    )

    def __init__(
        self,
        record: DeferRecord,
        run_id: str,
        kwargs_text: str,
        kwargsrepr: str,
        route: _Route,
        enqueued_ms: int,
    ) -> None:
        self.defer_id = record.defer_id
        self.task_name = record.task_name
        self.run_id = run_id
        self.root_id = record.parent.root_id or run_id
        self.parent_id = record.parent.run_id
        self.kwargs_text = kwargs_text
        self.kwargsrepr = kwargsrepr
        self.route = route
        #: Equal for messages whose fields other than ids and arguments are equal (None: one of a kind).
        self.shape: int | None = route.shape
        self._record = record
        self._enqueued_ms = enqueued_ms
        self._headers: dict[str, Any] | None = None
        self._properties: dict[str, Any] | None = None
        self._celery_body: tuple[Any, ...] | None = None

    @property
    def body(self) -> str:
        """kombu's JSON of the body tuple, with the kwargs' JSON (already made) spliced in."""
        return f"[[], {self.kwargs_text}, {_EMPTY_EMBED_JSON}]"

    @property
    def content_type(self) -> str:
        return str(registry._encoders["json"].content_type)

    @property
    def content_encoding(self) -> str:
        return str(registry._encoders["json"].content_encoding)

    @property
    def priority(self) -> int | None:
        return self.route.priority

    @property
    def exchange(self) -> str:
        return self.route.exchange

    @property
    def routing_key(self) -> str:
        return self.route.routing_key

    @property
    def queue(self) -> Any:
        """The kombu ``Queue`` (declared before the first publish to it)."""
        return self.route.queue

    @property
    def delivery_mode(self) -> Any:
        return self.route.delivery_mode

    @property
    def headers(self) -> dict[str, Any]:
        if self._headers is None:
            self._headers = {
                **self.route.headers,
                "id": self.run_id,
                "root_id": self.root_id,
                "parent_id": self.parent_id,
                "kwargsrepr": self.kwargsrepr,
                "timelimit": list(self.route.headers["timelimit"]),
                "stamps": dict(self.route.headers["stamps"]),
            }
        return self._headers

    @property
    def properties(self) -> dict[str, Any]:
        if self._properties is None:
            self._properties = {**self.route.properties, "correlation_id": self.run_id}
        return self._properties

    @property
    def celery_body(self) -> tuple[Any, ...]:
        """(args, kwargs, embed): what Celery's publish signals carry."""
        if self._celery_body is None:
            self._celery_body = ((), build_message(self._record, enqueued_ms=self._enqueued_ms), _EMPTY_EMBED)
        return self._celery_body


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
    maxsize = app.amqp.kwargsrepr_maxsize
    # A receiver of before_task_publish may change any header (tracing does): then
    # each message is built in full, handed to it, and encoded on its own.
    announced = bool(signals.before_task_publish.receivers)
    messages = []
    for record in records:
        run_id = record.run_id
        if stock:
            text = _kwargs_text(record, run_id, enqueued_ms)
        else:
            text = str(
                bytes_to_str(dumps(build_message(record, enqueued_ms=enqueued_ms), serializer="json")[2])
            )
        key = (record.task_name, record.route, record.priority, *here)
        route = None if per_record else routes.get(key)
        if route is None:
            route = _route(app, record, run_id, build_message(record, enqueued_ms=enqueued_ms))
            if not per_record:
                routes[key] = route
        kwargsrepr = text if len(text) <= maxsize else text[: maxsize - 3] + "..."
        message = TaskMessage(record, run_id, text, kwargsrepr, route, enqueued_ms)
        if announced:
            _announce(message)
        messages.append(message)
    return messages


def _kwargs_text(record: DeferRecord, run_id: str, enqueued_ms: int) -> str:
    """The JSON text of ``build_message``'s dict for ``record``, laid out as kombu writes it.

    The data goes in as the call site encoded it (compact, strict JSON): the
    receiver decodes the same document either way.
    """
    return (
        f'{{"event": {{"name": {_quote(event_name(record.function_id))}, "id": {_quote(run_id)}, '
        f'"ts": {int(record.ts_ns) // 1_000_000}, "seq": {int(record.ts_ns)}, "data": {record.data_json}}}, '
        f'"parent": {{"run_id": {_quote(record.parent.run_id)}, '
        f'"task_name": {_quote(record.parent.task_name)}, "defer_id": {_quote(record.defer_id)}}}, '
        f'"enqueued_ms": {int(enqueued_ms)}}}'
    )


def _route(app: Celery, record: DeferRecord, run_id: str, kwargs: dict[str, Any]) -> _Route:
    amqp = app.amqp
    options: dict[str, Any] = record.route.send_options()  # where the deferring app routes it
    if record.priority is not None:
        options["priority"] = record.priority
    task = app.tasks.get(record.task_name)
    routed: dict[str, Any] = amqp.router.route(options, record.task_name, (), kwargs, task)
    headers, properties, _, _ = amqp.create_task_message(
        run_id,
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


def _announce(message: TaskMessage) -> None:
    """Celery's ``before_task_publish``, with the dicts its receivers may change."""
    message.shape = None  # its headers are its own now: encoded on their own, not from a template
    signals.before_task_publish.send(
        sender=message.task_name,
        body=message.celery_body,
        exchange=message.exchange,
        routing_key=message.routing_key,
        declare=[message.queue],
        headers=message.headers,
        properties=message.properties,
        retry_policy={},
    )


def announce_sent(message: TaskMessage) -> None:
    """Celery's ``after_task_publish`` for a message the broker took."""
    if not signals.after_task_publish.receivers:
        return
    signals.after_task_publish.send(
        sender=message.task_name,
        body=message.celery_body,
        headers=message.headers,
        exchange=message.exchange,
        routing_key=message.routing_key,
    )
