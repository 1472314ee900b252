"""Records survive the outbox round trip, keep their order, and map to stable run ids."""

from __future__ import annotations

import json

from celery_defer.deferred.message import build_message
from celery_defer.outbox.record import DeferRecord, ParentRef, decode_outbox, deferred_run_id

PARENT = ParentRef("run-1", "root-1", "shop.order_placed")


def make(defer_id: str, data: str = '{"a":1}') -> DeferRecord:
    return DeferRecord(defer_id, "celery_defer.fn.f", "f", data, 1700000000123456789, PARENT, "q", 5)


def test_run_ids_depend_only_on_parent_run_and_defer_id():
    assert deferred_run_id("run-1", "send") == deferred_run_id("run-1", "send")
    assert deferred_run_id("run-1", "send") != deferred_run_id("run-2", "send")
    assert deferred_run_id("run-1", "send") != deferred_run_id("run-1", "send2")
    # No separator ambiguity: ("a", "b:c") and ("a:b", "c") differ.
    assert deferred_run_id("a", "b:c") != deferred_run_id("a:b", "c")


def test_encode_decode_round_trip_with_awkward_ids_and_unicode():
    record = make('id with | and \n "quotes"', '{"text":"h\\u00e9\\nllo","n":[1,2]}')
    assert DeferRecord.decode(record.encode()) == record


def test_outbox_values_decode_in_recorded_order():
    values = [f"{seq}|{make(f'd{seq}').encode()}" for seq in (3, 1, 2)]  # as a decoding client reads them
    assert [r.defer_id for r in decode_outbox(values)] == ["d1", "d2", "d3"]


def test_message_carries_event_and_parent():
    kwargs = build_message(make("send"), enqueued_ms=5)
    assert kwargs["event"] == {
        "name": "defer/f",
        "id": deferred_run_id("run-1", "send"),
        "ts": 1700000000123,
        "seq": 1700000000123456789,
        "data": {"a": 1},
    }
    assert kwargs["parent"] == {
        "run_id": "run-1",
        "task_name": "shop.order_placed",
        "defer_id": "send",
    }
    json.dumps(kwargs)  # JSON only, nothing else


def test_record_head_is_the_compact_json_of_its_fields():
    awkward = 'a "q" \\ é \u2603 \U0001f600 \x01'
    for record in (
        make("send"),
        DeferRecord(awkward, awkward, awkward, "{}", 1, ParentRef(awkward, awkward, awkward), None, None),
        DeferRecord("d", "t", "f", "{}", 2, PARENT, "q", 0, exchange=awkward, routing_key="rk.1"),
    ):
        head, _, _ = record.encode().partition("\n")
        doc = {
            "id": record.defer_id,
            "task": record.task_name,
            "fn": record.function_id,
            "ts": record.ts_ns,
            "run": record.parent.run_id,
            "root": record.parent.root_id,
            "ptask": record.parent.task_name,
            "q": record.queue,
            "p": record.priority,
        }
        if record.exchange is not None:
            doc["x"] = record.exchange
        if record.routing_key is not None:
            doc["rk"] = record.routing_key
        assert head == json.dumps(doc, separators=(",", ":"))
        assert DeferRecord.decode(record.encode()) == record
