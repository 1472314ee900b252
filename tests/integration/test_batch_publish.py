"""A finalizing run's messages go to the broker together, and are the messages Celery would send.

On Redis all of them go in one pipelined round trip; on RabbitMQ on one channel.
Each test compares with what ``app.send_task`` puts on the same broker for the
same record, so a stock worker, Flower and ``inspect`` cannot tell them apart;
a partly refused batch leaves exactly the refused records due.
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from celery.signals import after_task_publish, before_task_publish
from kombu import Connection, Queue

from celery_defer import DeferTask, create_defer
from celery_defer.deferred.message import build_message
from celery_defer.outbox.publish import publish
from celery_defer.outbox.record import DeferRecord, ParentRef
from celery_defer.store import store_for
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

AMQP_URL = os.environ.get("CDT_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
PRIORITY_SEP = "\x06\x16"


def make_app(broker_url: str, state_url: str, **conf: Any) -> Celery:
    app = Celery("batchpub", broker=broker_url, task_cls=DeferTask, set_as_current=False)
    app.conf.update(defer_redis_url=state_url, **conf)
    create_defer(app, {"id": "plain"}, lambda ctx: None)
    create_defer(app, {"id": "routed"}, lambda ctx: None)
    return app


def a_record(function_id: str, *, queue: str | None = None, priority: int | None = None) -> DeferRecord:
    parent = ParentRef(str(uuid.uuid4()), "the-root", "shop.order_placed")
    data = json.dumps({"to": "a@b.com", "n": 1, "text": 'héllo "quoted"'})
    return DeferRecord(
        "send", f"celery_defer.fn.{function_id}", function_id, data, time.time_ns(), parent, queue, priority
    )


def send_task_copy(app: Celery, record: DeferRecord, enqueued_ms: int) -> None:
    """What the outbox sent before it batched: one ``send_task`` per record."""
    options: dict[str, Any] = {}
    if record.queue is not None:
        options["queue"] = record.queue
    if record.priority is not None:
        options["priority"] = record.priority
    app.send_task(
        record.task_name,
        kwargs=build_message(record, enqueued_ms=enqueued_ms),
        task_id=record.run_id,
        parent_id=record.parent.run_id,
        root_id=record.parent.root_id,
        serializer="json",
        add_to_parent=False,
        **options,
    )


def only_message(client: redis.Redis) -> tuple[str, dict[str, Any]]:
    """The one message on the broker: its list and its envelope; the list is emptied."""
    keys = [key.decode() for key in client.keys("*") if client.type(key) == b"list"]
    assert len(keys) == 1, keys
    raw = client.rpop(keys[0])
    assert client.llen(keys[0]) == 0
    return keys[0], json.loads(raw)


@pytest.fixture
def broker(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(f"{redis_url}/5")
    yield client
    client.close()


@pytest.mark.parametrize(
    ("queue", "priority"), [(None, None), ("parked", 3), ("parked", 9)], ids=["default", "prio3", "prio9"]
)
def test_redis_message_is_the_one_send_task_pushes(redis_url, broker, queue, priority, monkeypatch):
    app = make_app(f"{redis_url}/5", f"{redis_url}/2")
    record = a_record("plain", queue=queue, priority=priority)
    monkeypatch.setattr("celery_defer.outbox.publish.clock_for", lambda app: _FixedClock())

    send_task_copy(app, record, enqueued_ms=_FixedClock.MS)
    theirs_key, theirs = only_message(broker)
    publish(app, [record])
    ours_key, ours = only_message(broker)

    assert ours_key == theirs_key  # the same list: queue and priority step
    if priority:
        assert ours_key == f"{queue}{PRIORITY_SEP}{priority}"
    # The same body document: what a stock worker decodes and runs (the data is
    # spliced in as the call site encoded it, so the text may differ in spacing).
    assert json.loads(base64.b64decode(ours.pop("body"))) == json.loads(base64.b64decode(theirs.pop("body")))
    ours_props, theirs_props = ours.pop("properties"), theirs.pop("properties")
    assert ours_props.pop("delivery_tag") != theirs_props.pop("delivery_tag")  # unique per message
    assert ours_props == theirs_props
    ours_headers, theirs_headers = ours.pop("headers"), theirs.pop("headers")
    # Flower's "kwargs" column: the JSON of the arguments rather than their repr.
    assert json.loads(ours_headers.pop("kwargsrepr")) == build_message(record, enqueued_ms=_FixedClock.MS)
    theirs_headers.pop("kwargsrepr")
    # send_task leaves it None on Celery 5.7 and False on 5.4; workers read both as False.
    assert not ours_headers.pop("ignore_result") and not theirs_headers.pop("ignore_result")
    assert ours_headers == theirs_headers
    assert ours_headers["id"] == record.run_id
    assert ours_headers["parent_id"] == record.parent.run_id
    assert ours_headers["root_id"] == "the-root"
    assert ours == theirs  # content type and encoding


class _FixedClock:
    MS = 1_700_000_000_000

    def now_ms(self) -> int:
        return self.MS


@pytest.mark.parametrize("function_id", ["routed", "plain"])
def test_redis_batch_routes_as_send_task_does(redis_url, broker, function_id):
    app = make_app(
        f"{redis_url}/5",
        f"{redis_url}/2",
        task_routes={"celery_defer.fn.routed": {"queue": "by-route"}},
    )
    records = [a_record(function_id), a_record(function_id, queue="explicit"), a_record(function_id)]
    for record in records:
        send_task_copy(app, record, enqueued_ms=1)
    theirs = {key: broker.llen(key) for key in broker.keys("*") if broker.type(key) == b"list"}
    broker.flushdb()
    publish(app, records)
    ours = {key: broker.llen(key) for key in broker.keys("*") if broker.type(key) == b"list"}
    assert ours == theirs
    expected_default = b"by-route" if function_id == "routed" else b"celery"
    assert ours == {expected_default: 2, b"explicit": 1}


def test_a_batch_keeps_call_order_within_each_queue(redis_url, broker):
    app = make_app(f"{redis_url}/5", f"{redis_url}/2")
    parent = ParentRef("p-1", "p-1", "shop.t")
    records = [
        DeferRecord(f"d{i}", "celery_defer.fn.plain", "plain", "{}", i, parent, "q-odd" if i % 2 else None)
        for i in range(10)
    ]
    publish(app, records)
    popped: dict[str, list[str]] = {"celery": [], "q-odd": []}
    for queue, ids in popped.items():
        while (raw := broker.rpop(queue)) is not None:  # kombu pops from this end
            ids.append(json.loads(raw)["headers"]["id"])
    assert popped["celery"] == [records[i].run_id for i in range(0, 10, 2)]
    assert popped["q-odd"] == [records[i].run_id for i in range(1, 10, 2)]


def test_a_partly_refused_batch_leaves_exactly_the_refused_due_and_recovery_sends_them_once(
    start_worker, app_module, seen, redis_url
):
    """The broker refuses the pushes to one list; the others are sent and cleared.

    The parked function's list (priority 3) holds a string, so Redis answers its
    LPUSH with WRONGTYPE inside the same pipeline that delivers the rest.
    """
    broker = redis.Redis.from_url(f"{redis_url}/0")
    blocked = f"{app_module.queue('parked')}{PRIORITY_SEP}3"
    broker.set(blocked, "not a list")
    start_worker(queues="celery")
    result = app_module.parent.delay({"defers": {"a": {}, "b": {}}, "parked": {"p1": {}, "p2": {}}})
    wait_for(lambda: len(seen("finished")) == 2)
    outbox = store_for(app_module.app).outbox
    assert sorted(record.defer_id for record in outbox.pending_records(result.id)) == ["p1", "p2"]

    broker.delete(blocked)
    start_worker(queues="parked")  # the first worker's recovery pass sends them here
    wait_for(lambda: len(seen("finished")) == 4, timeout_s=40)
    time.sleep(3)  # a second copy of anything would have run by now
    runs = sorted(run["defer_id"] for run in seen("run"))
    assert runs == ["a", "b", "p1", "p2"]
    wait_for(lambda: outbox.pending_records(result.id) == [])


def test_a_push_refused_after_its_queue_was_declared_leaves_exactly_its_records_due(
    start_worker, app_module, seen, redis_url
):
    """The queue is declared (cached on the connection); then its list's LPUSH fails.

    The declare cannot catch it: only the push's own reply, read in its place
    among the batch's replies, tells which records were sent and may be cleared.
    """
    broker = redis.Redis.from_url(f"{redis_url}/0")
    blocked = f"{app_module.queue('parked')}{PRIORITY_SEP}3"
    outbox = store_for(app_module.app).outbox
    start_worker(queues="celery", concurrency=1)  # one process, one producer connection
    first = app_module.parent.delay({"parked": {"p0": {}}})
    wait_for(lambda: broker.llen(blocked) == 1 and outbox.pending_records(first.id) == [])
    broker.rename(blocked, "stash")
    broker.set(blocked, "not a list")
    second = app_module.parent.delay({"defers": {"a": {}, "b": {}}, "parked": {"p1": {}, "p2": {}}})
    wait_for(lambda: len(seen("finished")) == 2)
    assert sorted(record.defer_id for record in outbox.pending_records(second.id)) == ["p1", "p2"]

    broker.delete(blocked)
    broker.rename("stash", blocked)
    start_worker(queues="parked")  # the first worker's recovery pass sends them here
    wait_for(lambda: len(seen("finished")) == 5, timeout_s=40)
    time.sleep(3)  # a second copy of anything would have run by now
    assert sorted(run["defer_id"] for run in seen("run")) == ["a", "b", "p0", "p1", "p2"]
    wait_for(lambda: outbox.pending_records(second.id) == [])


@pytest.fixture
def rabbitmq() -> Iterator[Connection]:
    conn = Connection(AMQP_URL, connect_timeout=3)
    try:
        conn.ensure_connection(max_retries=1, timeout=3)
    except Exception as exc:
        pytest.skip(f"RabbitMQ does not answer at {AMQP_URL}: {exc!r}")
    try:
        yield conn
    finally:
        conn.release()


def test_amqp_message_is_the_one_send_task_publishes(rabbitmq, redis_url, monkeypatch):
    name = f"cdt-batch-{uuid.uuid4().hex[:10]}"
    app = make_app(AMQP_URL, f"{redis_url}/2", task_queue_max_priority=10)
    monkeypatch.setattr("celery_defer.outbox.publish.clock_for", lambda app: _FixedClock())
    record = a_record("plain", queue=name, priority=4)
    queue = Queue(name, channel=rabbitmq.channel(), max_priority=10)
    try:
        send_task_copy(app, record, enqueued_ms=_FixedClock.MS)
        publish(app, [record, record])
        theirs = wait_for(lambda: queue.get(no_ack=True))
        ours = [wait_for(lambda: queue.get(no_ack=True)) for _ in range(2)]
        assert queue.get(no_ack=True) is None
        for message in ours:
            assert json.loads(message.body) == json.loads(theirs.body)
            assert message.properties["priority"] == 4
            ours_headers, theirs_headers = dict(message.headers), dict(theirs.headers)
            assert json.loads(ours_headers.pop("kwargsrepr")) == json.loads(message.body)[1]
            theirs_headers.pop("kwargsrepr")
            assert not ours_headers.pop("ignore_result") and not theirs_headers.pop("ignore_result")
            assert ours_headers == theirs_headers
            ours_props, theirs_props = dict(message.properties), dict(theirs.properties)
            ours_props.pop("application_headers"), theirs_props.pop("application_headers")  # the headers
            assert ours_props == theirs_props
            assert message.delivery_info["routing_key"] == name
    finally:
        queue.delete()
        app.close()


def test_amqp_frames_carry_every_size_and_order_without_producer_publish(rabbitmq, redis_url, monkeypatch):
    """The run's frames are written at once (kombu's publish is never called); bodies
    larger than a frame are split into body frames; each queue keeps call order."""
    names = [f"cdt-frames-{uuid.uuid4().hex[:10]}" for _ in range(2)]
    app = make_app(AMQP_URL, f"{redis_url}/2")
    monkeypatch.setattr("celery_defer.outbox.publish.clock_for", lambda app: _FixedClock())
    sizes = [10, 300_000, 0, 5_000, 1]  # 300 kB spans several frames of RabbitMQ's 128 kB
    records = []
    for i, size in enumerate(sizes):
        parent = ParentRef(str(uuid.uuid4()), f"root-é-{i}", "shop.order_placed")
        data = json.dumps({"i": i, "text": "é" * size}, ensure_ascii=False)
        records.append(
            DeferRecord(f"d{i}", "celery_defer.fn.plain", "plain", data, time.time_ns(), parent, names[i % 2])
        )
    queues = [Queue(name, channel=rabbitmq.channel()) for name in names]

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Producer.publish was called: the frames path was not taken")

    monkeypatch.setattr("kombu.Producer.publish", refuse)
    try:
        for queue in queues:
            queue.declare()
        publish(app, records)
        got = {name: [] for name in names}
        for queue in queues:
            while (message := wait_for(lambda q=queue: q.get(no_ack=True), timeout_s=5)) is not None:
                got[queue.name].append(message)
                if len(got[queue.name]) == len(records[queues.index(queue) :: 2]):
                    break
        for queue in queues:
            assert queue.get(no_ack=True) is None
            expected = [record for record in records if record.queue == queue.name]
            bodies = [json.loads(message.body) for message in got[queue.name]]
            assert [body[1] for body in bodies] == [
                build_message(record, enqueued_ms=_FixedClock.MS) for record in expected
            ]
            for message, record in zip(got[queue.name], expected, strict=True):
                assert message.headers["id"] == message.properties["correlation_id"] == record.run_id
                assert message.headers["parent_id"] == record.parent.run_id
                assert message.headers["root_id"] == record.parent.root_id
                assert len(message.headers["kwargsrepr"]) <= app.amqp.kwargsrepr_maxsize
    finally:
        for queue in queues:
            queue.delete()
        app.close()


def test_headers_added_by_a_publish_signal_receiver_are_sent(redis_url, broker):
    """Tracing libraries add headers in ``before_task_publish``; batching must keep them."""
    app = make_app(f"{redis_url}/5", f"{redis_url}/2")
    records = [a_record("plain"), a_record("plain")]

    def add_trace(headers: dict[str, Any], **_: Any) -> None:
        headers["trace"] = f"trace-of-{headers['id']}"

    seen_after: list[str] = []

    def count_sent(headers: dict[str, Any], **_: Any) -> None:
        seen_after.append(headers["id"])

    before_task_publish.connect(add_trace)
    after_task_publish.connect(count_sent)
    try:
        publish(app, records)
    finally:
        before_task_publish.disconnect(add_trace)
        after_task_publish.disconnect(count_sent)
    sent = [json.loads(broker.rpop("celery"))["headers"] for _ in records]
    assert [headers["trace"] for headers in sent] == [f"trace-of-{record.run_id}" for record in records]
    assert seen_after == [record.run_id for record in records]
