"""The Celery app the parent-side benchmarks (``bench/bench_parent.py``) run in a real worker.

Configured from the environment so the benchmark process and its worker agree:
``CDB_REDIS_URL`` (the private Redis: state in db 2, timestamps in db 3),
``CDB_BROKER_URL`` (the broker; the Redis db 0 by default), ``CDB_PREFIX``
(put before every queue name, so runs sharing a RabbitMQ do not meet) and
``CDB_PHASES`` (time each step of a parent's dispatch: ``bench/parent_phases.py``).

Timestamps are ``time.time()`` written at Celery's ``task_prerun``: the benchmark
process and the worker run on one host, so they share the clock.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from struct import pack
from typing import Any

import redis
from amqp import Message as AmqpMessage
from amqp.channel import Channel as AmqpChannel
from amqp.serialization import dumps as amqp_dumps
from celery import Celery
from celery.signals import task_prerun

from celery_defer import DeferTask, create_defer, defer

REDIS_URL = os.environ.get("CDB_REDIS_URL", "redis://127.0.0.1:1")
BROKER_URL = os.environ.get("CDB_BROKER_URL") or f"{REDIS_URL}/0"
PREFIX = os.environ.get("CDB_PREFIX", "")
#: Where the children of the parent-cost benchmark go: no worker consumes it while it runs.
SINK = f"{PREFIX}sink"

app = Celery("parent_app", broker=BROKER_URL, backend=f"{REDIS_URL}/1", task_cls=DeferTask)
app.conf.update(
    task_default_queue=f"{PREFIX}celery",
    control_exchange=f"{PREFIX}celery",
    event_exchange=f"{PREFIX}celeryev",
    defer_redis_url=f"{REDIS_URL}/2",
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    task_serializer="json",
)

_stamps = redis.Redis.from_url(f"{REDIS_URL}/3")
if os.environ.get("CDB_PHASES"):
    from bench import parent_phases

    parent_phases.install(_stamps)
DATA = {"to": "someone@example.com", "subject": "Your order", "body": "Thanks! " * 8}


@task_prerun.connect
def _stamp_start(sender: Any = None, task_id: str = "", **_: Any) -> None:
    """Each task start: ``start:<task id>`` = when, ``starts`` += the id."""
    now = time.time()
    _stamps.set(f"start:{task_id}", repr(now))


def _child_body(ctx: Any) -> None:
    _stamps.incr("children")


sink_child = create_defer(app, {"id": "sink-child", "queue": SINK}, _child_body)
child = create_defer(app, {"id": "child"}, _child_body)


@app.task(name="bench.plain_child")
def plain_child(**kwargs: Any) -> None:
    """The baseline child: a plain task with a message of the same data."""
    _stamps.incr("children")


@app.task(name="bench.tick")
def tick() -> None:
    """Does nothing: its start is when the worker was free again."""


@app.task(name="bench.defers")
def defers(n: int) -> None:
    for i in range(n):
        defer(f"d{i}", function=sink_child, data=DATA)


@app.task(name="bench.applies")
def applies(n: int) -> None:
    for _ in range(n):
        plain_child.apply_async(kwargs={"data": DATA}, queue=SINK)


#: What ``bench.floor`` sends, made on its first call: AMQP frames by channel id, or a Redis envelope.
_floor_messages: dict[Any, bytes] = {}


@app.task(name="bench.floor")
def floor(n: int) -> None:
    """``n`` copies of one plain child's message, made once, sent in one write.

    What the broker takes for ``n`` messages with no Python spent per message:
    the part of a parent's cost that no way of sending can take off.
    """
    with app.producer_or_acquire() as producer:
        channel = producer.channel
        if isinstance(channel, AmqpChannel):
            frames = _floor_messages.get(channel.channel_id)
            if frames is None:
                frames = _floor_messages[channel.channel_id] = _amqp_frames(channel)
            channel.connection.transport.write(frames * n)
            return
        envelope = _floor_messages.get("redis")
        if envelope is None:
            scratch = f"{SINK}-floor"
            plain_child.apply_async(kwargs={"data": DATA}, queue=scratch)
            envelope = _floor_messages["redis"] = channel.client.rpop(scratch)
        channel.client.lpush(SINK, *[envelope] * n)


def _amqp_frames(channel: Any) -> bytes:
    """The frames of one ``plain_child`` message to the sink, as Celery would publish it."""
    task_id = str(uuid.uuid4())
    message = app.amqp.as_task_v2(task_id, plain_child.name, args=(), kwargs={"data": DATA}, root_id=task_id)
    body = json.dumps(message.body).encode()
    props = AmqpMessage(
        body,
        content_type="application/json",
        content_encoding="utf-8",
        application_headers=dict(message.headers),
        delivery_mode=2,
        priority=0,
        **message.properties,
    )._serialize_properties()
    channel.queue_declare(SINK, durable=True, auto_delete=False)

    def frame(kind: int, payload: bytes) -> bytes:
        return pack(">BHI", kind, channel.channel_id, len(payload)) + payload + b"\xce"

    publish = pack(">HH", 60, 40) + amqp_dumps("Bssbb", (0, "", SINK, 0, 0))
    return frame(1, publish) + frame(2, pack(">HHQ", 60, 0, len(body)) + props) + frame(3, body)


@app.task(name="bench.empty")
def empty(n: int) -> None:
    """The same task with no sends: what any task costs on this worker."""


@app.task(name="bench.finish_then_defer")
def finish_then_defer() -> None:
    defer("one", function=child, data=DATA)
    _stamps.set(f"finished:{finish_then_defer.request.id}", repr(time.time()))


@app.task(name="bench.finish_plain")
def finish_plain() -> None:
    _stamps.set(f"finished:{finish_plain.request.id}", repr(time.time()))


@app.task(name="bench.fan_defer")
def fan_defer(n: int) -> None:
    for i in range(n):
        defer(f"c{i}", function=child, data=DATA)


@app.task(name="bench.fan_apply")
def fan_apply(n: int) -> None:
    for _ in range(n):
        plain_child.apply_async(kwargs={"data": DATA})


@app.task(name="bench.fan_defer_sink")
def fan_defer_sink(n: int) -> None:
    """``fan_defer`` with children no worker runs: the parents' share of the e2e."""
    for i in range(n):
        defer(f"c{i}", function=sink_child, data=DATA)
    _stamps.incr("parents")


@app.task(name="bench.fan_apply_sink")
def fan_apply_sink(n: int) -> None:
    """``fan_apply`` with children no worker runs: the parents' share of the e2e."""
    for _ in range(n):
        plain_child.apply_async(kwargs={"data": DATA}, queue=SINK)
    _stamps.incr("parents")


@app.task(name="bench.fan_start")
def fan_start(n: int) -> None:
    """The same deferred function as ``fan_defer``'s children, started by hand from the body."""
    for i in range(n):
        child.start(DATA, id=f"{fan_start.request.id}:c{i}")
